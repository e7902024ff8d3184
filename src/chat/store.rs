//! The chat's durable history: SQLite in the data directory (`--data DIR`, file `chat.db`).
//!
//! The engine hands out each message for the history as an [`Append`](crate::chat::Append);
//! the server queues its record on a [`Committer`], whose thread writes the records queued
//! so far in one transaction (group commit), trims each target to its last
//! `history_per_target` messages, and reports back; only then are the messages forwarded. A
//! transaction returns once SQLite has fsync'd it (WAL, `synchronous=FULL`), so a message
//! that reached anyone survives a crash. One server owns a store at a time (exclusive
//! locking mode).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::chat::engine::{Record, Target};

/// The database file inside the data directory (beside `cartero serve`'s `cartero.db`).
pub(crate) const DB_FILE: &str = "chat.db";
/// What `meta.kind` holds in a chat store, and its schema version.
const KIND: &str = "cartero-chat";
const SCHEMA_VERSION: &str = "1";
/// Records written in one transaction at most.
const MAX_BATCH: usize = 4096;

/// Why the history store cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use {path} as the data directory: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("the store {path} is in use by another server (stop it, or pick another --data)")]
    Locked { path: PathBuf },
    #[error("the store {path} is corrupt or not a cartero chat store: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the disk holding {path} is full")]
    Full { path: PathBuf },
    #[error("cannot write the store {path}: {detail}")]
    Unwritable { path: PathBuf, detail: String },
    #[error("the store {path} failed: {detail}")]
    Other { path: PathBuf, detail: String },
}

impl StoreError {
    fn from_sqlite(path: &Path, e: rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        let detail = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path },
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt { path, detail },
            Some(ErrorCode::DiskFull) => StoreError::Full { path },
            Some(
                ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::SystemIoFailure,
            ) => StoreError::Unwritable { path, detail },
            _ => StoreError::Other { path, detail },
        }
    }
}

/// An open history store. Not shared between threads: the server gives it to a
/// [`Committer`].
pub struct Store {
    conn: Connection,
    path: PathBuf,
    per_target: usize,
}

/// A target as three columns: kind 0 the broadcasts, 1 a room (`a`), 2 two users (`a` < `b`).
fn columns(target: &Target) -> (i64, &str, &str) {
    match target {
        Target::Broadcasts => (0, "", ""),
        Target::Room(room) => (1, room, ""),
        Target::Pair(a, b) => (2, a, b),
    }
}

impl Store {
    /// Opens the store in `dir` (created if missing), taking it for this process alone; it
    /// keeps the last `per_target` messages of each target.
    pub fn open(dir: &Path, per_target: usize) -> Result<Store, StoreError> {
        if dir.exists() && !dir.is_dir() {
            let source = io::Error::other("it is a file, not a directory");
            return Err(StoreError::Directory { path: dir.to_path_buf(), source });
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let err = |e| StoreError::from_sqlite(&path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(err)?;
        conn.busy_timeout(Duration::ZERO).map_err(err)?;
        // Exclusive before WAL: no shared-memory index, and the lock is kept while open.
        conn.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(())).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other { path, detail: format!("journal mode is {mode}, not wal") });
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS history (
                 seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL,
                 sender TEXT NOT NULL, millis INTEGER NOT NULL, content TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS history_by_target ON history (kind, a, b, seq);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('kind', 'cartero-chat'), ('schema', '1');
             COMMIT;",
        )
        .map_err(err)?;
        let get = |key: &str| -> Result<Option<String>, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(err)
        };
        let (kind, version) = (get("kind")?, get("schema")?);
        if kind.as_deref() != Some(KIND) || version.as_deref() != Some(SCHEMA_VERSION) {
            let detail = format!("kind {kind:?}, schema {version:?}; expected {KIND:?}, {SCHEMA_VERSION:?}");
            return Err(StoreError::Corrupt { path, detail });
        }
        Ok(Store { conn, path, per_target })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caps the database at `pages` pages, so that writes past it fail as on a full disk
    /// (for tests of that failure).
    pub fn set_max_pages(&mut self, pages: u32) -> Result<(), StoreError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| StoreError::from_sqlite(&self.path, e))
    }

    /// Hands every stored message to `each`, oldest first; returns how many there were.
    pub fn load(&mut self, mut each: impl FnMut(Record)) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::from_sqlite(&path, e);
        let mut stmt =
            self.conn.prepare("SELECT kind, a, b, sender, millis, content FROM history ORDER BY seq").map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(err)? {
            let (kind, a, b): (i64, String, String) =
                (row.get(0).map_err(err)?, row.get(1).map_err(err)?, row.get(2).map_err(err)?);
            let target = match kind {
                0 => Target::Broadcasts,
                1 => Target::Room(a),
                2 => Target::Pair(a, b),
                _ => return Err(StoreError::Corrupt { path, detail: format!("a message of kind {kind}") }),
            };
            let millis: i64 = row.get(4).map_err(err)?;
            each(Record {
                target,
                from: row.get(3).map_err(err)?,
                millis: millis.max(0) as u64,
                content: row.get(5).map_err(err)?,
            });
            count += 1;
        }
        Ok(count)
    }

    /// Writes `records` in one transaction and trims their targets to the last `per_target`
    /// messages; when this returns `Ok` they are on disk. On an error nothing of the batch
    /// is kept.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::from_sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut touched = HashSet::new();
        for record in records {
            if self.per_target == 0 {
                break;
            }
            let (kind, a, b) = columns(&record.target);
            tx.prepare_cached(
                "INSERT INTO history (kind, a, b, sender, millis, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![kind, a, b, record.from, record.millis.min(i64::MAX as u64) as i64, record.content])
            })
            .map_err(err)?;
            touched.insert(&record.target);
        }
        for target in touched {
            let (kind, a, b) = columns(target);
            tx.prepare_cached(
                "DELETE FROM history WHERE kind = ?1 AND a = ?2 AND b = ?3 AND seq <= (SELECT seq FROM history \
                 WHERE kind = ?1 AND a = ?2 AND b = ?3 ORDER BY seq DESC LIMIT 1 OFFSET ?4)",
            )
            .and_then(|mut s| s.execute(params![kind, a, b, self.per_target.min(i64::MAX as usize) as i64]))
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// The thread that writes a store: records queued in order, written in batches, each batch
/// reported once it is on disk (or failed).
pub struct Committer {
    queue: Option<mpsc::Sender<(u64, Record)>>,
    next_seq: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread. `done(last, result)` is called on it after each batch: every record
    /// queued with a number up to `last`, and not reported before, is stored (or failed).
    pub fn start(
        mut store: Store,
        mut done: impl FnMut(u64, Result<(), StoreError>) + Send + 'static,
    ) -> io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<(u64, Record)>();
        let thread = std::thread::Builder::new().name("cartero-chat-store".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let result = store.append(batch.iter().map(|(_, r)| r));
                if let Err(e) = &result {
                    tracing::error!("history write failed: {e}; its messages were refused with ERROR|500");
                }
                done(batch.last().map_or(0, |(seq, _)| *seq), result);
            }
        })?;
        Ok(Committer { queue: Some(tx), next_seq: 1, thread: Some(thread) })
    }

    /// Queues `record`; returns its number, or `None` if the thread is gone (the record
    /// cannot be stored).
    pub fn queue(&mut self, record: Record) -> Option<u64> {
        let seq = self.next_seq;
        self.queue.as_ref()?.send((seq, record)).ok()?;
        self.next_seq += 1;
        Some(seq)
    }

    /// Writes what is queued, then stops the thread and closes the store.
    pub fn finish(mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: Target, content: &str) -> Record {
        Record { target, from: "ana".into(), millis: 1, content: content.into() }
    }

    fn all(store: &mut Store) -> Vec<Record> {
        let mut out = Vec::new();
        store.load(|r| out.push(r)).unwrap();
        out
    }

    #[test]
    fn appends_trim_each_target_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 3).unwrap();
        let room = Target::Room("#sala".into());
        let pair = Target::pair("bob", "ana");
        let records: Vec<Record> = (0..5).map(|i| record(room.clone(), &format!("r{i}"))).collect();
        store.append(&records).unwrap();
        store.append(&[record(pair.clone(), "p"), record(Target::Broadcasts, "b")]).unwrap();
        store.append(&[record(room.clone(), "r5")]).unwrap();
        drop(store);
        let mut store = Store::open(dir.path(), 3).unwrap();
        let contents: Vec<String> = all(&mut store).into_iter().map(|r| r.content).collect();
        assert_eq!(contents, ["r3", "r4", "p", "b", "r5"]);
        assert_eq!(all(&mut store)[2].target, Target::Pair("ana".into(), "bob".into()));
    }

    #[test]
    fn a_full_disk_fails_the_whole_batch_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 10_000).unwrap();
        store.append(&[record(Target::Broadcasts, "kept")]).unwrap();
        store.set_max_pages(8).unwrap();
        let big: Vec<Record> = (0..50).map(|_| record(Target::Broadcasts, &"x".repeat(1000))).collect();
        assert!(matches!(store.append(&big), Err(StoreError::Full { .. })), "the cap is reached");
        store.append(&[record(Target::Broadcasts, "after")]).unwrap();
        let contents: Vec<String> = all(&mut store).into_iter().map(|r| r.content).collect();
        assert_eq!(contents, ["kept", "after"]);
    }

    #[test]
    fn bad_data_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(Store::open(&file, 1), Err(StoreError::Directory { .. })));
        let corrupt = dir.path().join("c");
        std::fs::create_dir(&corrupt).unwrap();
        std::fs::write(corrupt.join(DB_FILE), vec![7u8; 8192]).unwrap();
        assert!(matches!(Store::open(&corrupt, 1), Err(StoreError::Corrupt { .. })));
        let _held = Store::open(&dir.path().join("d"), 1).unwrap();
        assert!(matches!(Store::open(&dir.path().join("d"), 1), Err(StoreError::Locked { .. })));
    }
}
