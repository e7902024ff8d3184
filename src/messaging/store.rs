//! Durable state: the engine's users, connections, mailboxes and id counters in SQLite.
//!
//! The store keeps the state itself (tables of users and pending messages), not a log, so a
//! restart reads it in one pass. The engine hands out every change of state as a
//! [`Change`]; [`Store::commit`] writes a batch of them in one transaction, which returns
//! only once SQLite has fsync'd it (WAL mode, `synchronous=FULL`). One server owns a store
//! at a time: the database is opened in exclusive locking mode, and a second server fails
//! at start with [`StoreError::Locked`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::messaging::engine::{Change, MessageRecord, UserRecord};

/// The database file inside the data directory.
pub const DB_FILE: &str = "cartero.db";
/// Version 1: users and messages. Version 2 (course 2025/26): `messages.file`, the attached
/// file's name of a SENDATTACH message (NULL for SEND). Version 3: each user's registration
/// identity (`users.uid`, from the counter `meta.next_uid`, never reused), the sender's one
/// of each message (`messages.sender_uid`) and the acknowledgements owed (`acks`), so that
/// an acknowledgement owed before a restart is pushed after it, and only to the registration
/// that sent the message. Older stores are migrated when opened.
const SCHEMA_VERSION: &str = "3";

/// Why the store cannot be opened, read or written. Each says which store and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use {path} as the data directory: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("the store {path} is in use by another server (stop it, or pick another --data)")]
    Locked { path: PathBuf },
    #[error("the store {path} is corrupt or not a cartero store: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the disk holding {path} is full")]
    Full { path: PathBuf },
    #[error("cannot write the store {path}: {detail}")]
    Unwritable { path: PathBuf, detail: String },
    #[error("the store {path} failed: {detail}")]
    Other { path: PathBuf, detail: String },
    #[error("cannot reach the database {store}: {detail}")]
    Unreachable { store: String, detail: String },
    #[error("the database {store} is in use by another server (stop it, or pick another database)")]
    InUse { store: String },
    #[error("the database {store} failed: {detail}")]
    Database { store: String, detail: String },
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

/// An open store. Not shared between threads: the server gives it to one committer thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The order number the next connected user gets (CONNECTEDUSERS lists by it).
    next_conn_order: i64,
    /// The uid the next registered user gets (kept in `meta`, so never reused).
    next_uid: u64,
}

impl Store {
    /// Opens the store in `dir` (created if missing), taking it for this process alone.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if dir.exists() && !dir.is_dir() {
            let source = std::io::Error::other("it is a file, not a directory");
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
        conn.execute_batch("PRAGMA synchronous = FULL").map_err(err)?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS users (
                 alias BLOB PRIMARY KEY, full_name BLOB NOT NULL, birth_date BLOB,
                 last_id INTEGER NOT NULL, conn_ip TEXT, conn_port INTEGER, conn_order INTEGER,
                 uid INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY, recipient BLOB NOT NULL, sender BLOB NOT NULL,
                 id INTEGER NOT NULL, body BLOB NOT NULL, file BLOB, sender_uid INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, sender, id);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '3');
             COMMIT;",
        )
        .map_err(err)?;
        let read_version = || -> Result<Option<String>, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).optional().map_err(err)
        };
        // Stores of older versions (the CREATEs above changed nothing in them).
        if read_version()?.as_deref() == Some("1") {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 ALTER TABLE messages ADD COLUMN file BLOB;
                 UPDATE meta SET value = '2' WHERE key = 'schema';
                 COMMIT;",
            )
            .map_err(err)?;
        }
        if read_version()?.as_deref() == Some("2") {
            // Users get uids in alias order; a message's sender is the user of its alias now
            // (what a version 2 server assumed), or none if that alias is gone.
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 ALTER TABLE users ADD COLUMN uid INTEGER NOT NULL DEFAULT 0;
                 UPDATE users SET uid = (SELECT COUNT(*) FROM users u WHERE u.alias <= users.alias);
                 INSERT INTO meta (key, value) VALUES ('next_uid', (SELECT COUNT(*) + 1 FROM users));
                 ALTER TABLE messages ADD COLUMN sender_uid INTEGER NOT NULL DEFAULT 0;
                 UPDATE messages SET sender_uid = COALESCE((SELECT uid FROM users WHERE alias = messages.sender), 0);
                 UPDATE meta SET value = '3' WHERE key = 'schema';
                 COMMIT;",
            )
            .map_err(err)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS acks (
                 seq INTEGER PRIMARY KEY, alias BLOB NOT NULL, uid INTEGER NOT NULL,
                 id INTEGER NOT NULL, file BLOB
             );
             CREATE INDEX IF NOT EXISTS acks_by_alias ON acks (alias, id);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('next_uid', '1');",
        )
        .map_err(err)?;
        let version = read_version()?;
        if version.as_deref() != Some(SCHEMA_VERSION) {
            return Err(StoreError::Corrupt {
                path,
                detail: format!("schema version {version:?}, expected {SCHEMA_VERSION}"),
            });
        }
        let next_uid: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'next_uid'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let next_uid = next_uid
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| StoreError::Corrupt { path: path.clone(), detail: "bad next_uid".into() })?;
        let max_order: Option<i64> =
            conn.query_row("SELECT MAX(conn_order) FROM users", [], |r| r.get(0)).map_err(err)?;
        Ok(Store { conn, path, next_conn_order: max_order.unwrap_or(0) + 1, next_uid })
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

    /// Everything stored: users (connected ones in connection order) and pending messages
    /// (in acceptance order), ready for [`Engine::restore`](crate::messaging::engine::Engine::restore).
    pub fn load(&mut self) -> Result<(Vec<UserRecord>, Vec<MessageRecord>), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::from_sqlite(&path, e);
        let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), detail };
        let mut acks: HashMap<Vec<u8>, Vec<(u32, Option<Bytes>)>> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT a.alias, a.id, a.file FROM acks a JOIN users u ON u.alias = a.alias AND u.uid = a.uid ORDER BY a.seq")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let alias: Vec<u8> = row.get(0).map_err(err)?;
            let file = row.get::<_, Option<Vec<u8>>>(2).map_err(err)?.map(Bytes::from);
            acks.entry(alias).or_default().push((row.get(1).map_err(err)?, file));
        }
        drop(rows);
        drop(stmt);
        let mut users = Vec::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT alias, full_name, birth_date, last_id, conn_ip, conn_port, uid FROM users ORDER BY conn_order",
            )
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let alias: Vec<u8> = row.get(0).map_err(err)?;
            let ip: Option<String> = row.get(4).map_err(err)?;
            let port: Option<u16> = row.get(5).map_err(err)?;
            let connection = match (ip, port) {
                (Some(ip), Some(port)) => {
                    let ip = ip.parse().map_err(|_| corrupt(format!("bad address {ip:?} for a user")))?;
                    Some(SocketAddr::new(ip, port))
                }
                _ => None,
            };
            let owed = if connection.is_some() { acks.remove(&alias).unwrap_or_default() } else { Vec::new() };
            users.push(UserRecord {
                full_name: Bytes::from(row.get::<_, Vec<u8>>(1).map_err(err)?),
                birth_date: row.get::<_, Option<Vec<u8>>>(2).map_err(err)?.map(Bytes::from),
                last_id: row.get(3).map_err(err)?,
                connection,
                uid: row.get::<_, i64>(6).map_err(err)?.max(0) as u64,
                acks: owed,
                alias: Bytes::from(alias),
            });
        }
        drop(rows);
        drop(stmt);
        let mut messages = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT recipient, sender, id, body, file, sender_uid FROM messages ORDER BY seq")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            messages.push(MessageRecord {
                recipient: Bytes::from(row.get::<_, Vec<u8>>(0).map_err(err)?),
                sender: Bytes::from(row.get::<_, Vec<u8>>(1).map_err(err)?),
                id: row.get(2).map_err(err)?,
                body: Bytes::from(row.get::<_, Vec<u8>>(3).map_err(err)?),
                file: row.get::<_, Option<Vec<u8>>>(4).map_err(err)?.map(Bytes::from),
                sender_uid: row.get::<_, i64>(5).map_err(err)?.max(0) as u64,
            });
        }
        Ok((users, messages))
    }

    /// Writes `changes` in one transaction; when this returns `Ok` they are on disk. On an
    /// error nothing of the batch is kept.
    pub fn commit<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::from_sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut next_order = self.next_conn_order;
        let mut next_uid = self.next_uid;
        for change in changes {
            match change {
                Change::Registered { alias, full_name, birth_date } => {
                    tx.prepare_cached(
                        "INSERT INTO users (alias, full_name, birth_date, last_id, uid) VALUES (?1, ?2, ?3, 0, ?4)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![&alias[..], &full_name[..], birth_date.as_deref(), next_uid as i64])
                    })
                    .map_err(err)?;
                    next_uid += 1;
                }
                Change::Unregistered { alias } => {
                    tx.prepare_cached("DELETE FROM users WHERE alias = ?1")
                        .and_then(|mut s| s.execute([&alias[..]]))
                        .map_err(err)?;
                    tx.prepare_cached("DELETE FROM messages WHERE recipient = ?1")
                        .and_then(|mut s| s.execute([&alias[..]]))
                        .map_err(err)?;
                    tx.prepare_cached("DELETE FROM acks WHERE alias = ?1")
                        .and_then(|mut s| s.execute([&alias[..]]))
                        .map_err(err)?;
                }
                Change::Connected { alias, addr } => {
                    tx.prepare_cached(
                        "UPDATE users SET conn_ip = ?1, conn_port = ?2, conn_order = ?3 WHERE alias = ?4",
                    )
                    .and_then(|mut s| s.execute(params![addr.ip().to_string(), addr.port(), next_order, &alias[..]]))
                    .map_err(err)?;
                    next_order += 1;
                }
                Change::Disconnected { alias } => {
                    tx.prepare_cached(
                        "UPDATE users SET conn_ip = NULL, conn_port = NULL, conn_order = NULL WHERE alias = ?1",
                    )
                    .and_then(|mut s| s.execute([&alias[..]]))
                    .map_err(err)?;
                    tx.prepare_cached("DELETE FROM acks WHERE alias = ?1")
                        .and_then(|mut s| s.execute([&alias[..]]))
                        .map_err(err)?;
                }
                Change::Stored { recipient, sender, id, body, file } => {
                    tx.prepare_cached(
                        "INSERT INTO messages (recipient, sender, id, body, file, sender_uid) \
                         VALUES (?1, ?2, ?3, ?4, ?5, (SELECT uid FROM users WHERE alias = ?2))",
                    )
                    .and_then(|mut s| s.execute(params![&recipient[..], &sender[..], id, &body[..], file.as_deref()]))
                    .map_err(err)?;
                    tx.prepare_cached("UPDATE users SET last_id = ?1 WHERE alias = ?2")
                        .and_then(|mut s| s.execute(params![id, &sender[..]]))
                        .map_err(err)?;
                }
                Change::Removed { recipient, sender, id } => {
                    tx.prepare_cached(
                        "DELETE FROM messages WHERE seq = \
                         (SELECT MIN(seq) FROM messages WHERE recipient = ?1 AND sender = ?2 AND id = ?3)",
                    )
                    .and_then(|mut s| s.execute(params![&recipient[..], &sender[..], id]))
                    .map_err(err)?;
                }
                Change::AckOwed { sender, id, file } => {
                    tx.prepare_cached(
                        "INSERT INTO acks (alias, uid, id, file) \
                         VALUES (?1, (SELECT uid FROM users WHERE alias = ?1), ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![&sender[..], id, file.as_deref()]))
                    .map_err(err)?;
                }
                Change::AckDone { sender, id } => {
                    tx.prepare_cached(
                        "DELETE FROM acks WHERE seq = (SELECT MIN(seq) FROM acks WHERE alias = ?1 AND id = ?2)",
                    )
                    .and_then(|mut s| s.execute(params![&sender[..], id]))
                    .map_err(err)?;
                }
            }
        }
        if next_uid != self.next_uid {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'next_uid'")
                .and_then(|mut s| s.execute([next_uid.to_string()]))
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.next_conn_order = next_order;
        self.next_uid = next_uid;
        Ok(())
    }

    /// A durable write of 64 KiB (rewritten in place each time), to tell whether the store
    /// can take writes again: a few bytes could still fit on an all but full disk.
    pub fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', randomblob(65536))", [])
            .map(|_| ())
            .map_err(|e| StoreError::from_sqlite(&self.path, e))
    }
}

/// The store a server writes to: SQLite in a directory, or a PostgreSQL database. Both take
/// the engine's change stream and give back what [`Engine::restore`](crate::messaging::engine::Engine::restore) needs.
pub enum AnyStore {
    Sqlite(Store),
    Postgres(Box<crate::messaging::pg::PgStore>),
}

impl AnyStore {
    /// What logs call it: the SQLite file's path, or `postgres://user@host:port/db`.
    pub fn describe(&self) -> String {
        match self {
            AnyStore::Sqlite(s) => s.path().display().to_string(),
            AnyStore::Postgres(s) => s.name().to_string(),
        }
    }

    pub fn load(&mut self) -> Result<(Vec<UserRecord>, Vec<MessageRecord>), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.load(),
            AnyStore::Postgres(s) => s.load(),
        }
    }

    pub fn commit<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.commit(changes),
            AnyStore::Postgres(s) => s.commit(changes),
        }
    }

    pub fn probe(&mut self) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.probe(),
            AnyStore::Postgres(s) => s.probe(),
        }
    }
}
