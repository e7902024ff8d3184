//! The SQLite store: an engine restored from it equals the engine before, and every way a
//! store can be unusable gives its own clear error.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use cartero::engine::{Change, DeliveryOutcome, Engine, EngineConfig};
use cartero::store::{Store, StoreError, DB_FILE};
use cartero::Request;
use proptest::prelude::*;

const ALIASES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Register(usize),
    Unregister(usize),
    Connect(usize, u16),
    Disconnect(usize),
    Send(usize, usize, u8),
    SendAttach(usize, usize, u8),
    Deliver(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..ALIASES.len();
    prop_oneof![
        2 => u.clone().prop_map(Op::Register),
        1 => u.clone().prop_map(Op::Unregister),
        2 => (u.clone(), 1u16..=65535).prop_map(|(a, p)| Op::Connect(a, p)),
        1 => u.clone().prop_map(Op::Disconnect),
        4 => (u.clone(), u.clone(), any::<u8>()).prop_map(|(s, r, n)| Op::Send(s, r, n)),
        2 => (u.clone(), u, any::<u8>()).prop_map(|(s, r, n)| Op::SendAttach(s, r, n)),
        3 => any::<bool>().prop_map(Op::Deliver),
    ]
}

/// Everything a restart must keep, in a comparable form.
/// A message: sender, id, body, file, and whether its sender is the registration of that
/// alias now (uids differ between engines; what they say about identity may not).
type Mail = Vec<(Bytes, u32, Bytes, Option<Bytes>, bool)>;
type Acks = Vec<(u32, Option<Bytes>)>;
type Summary = (Vec<(Bytes, Bytes, Option<Bytes>, u32, Option<SocketAddr>, Mail, Acks)>, Vec<Bytes>);

fn summary(e: &Engine) -> Summary {
    let mut users: Vec<_> = e
        .registry()
        .iter()
        .map(|(alias, u)| {
            let mail = u
                .mailbox
                .iter()
                .map(|m| {
                    let same = e.registry().get(&m.sender).is_some_and(|s| s.uid() == m.sender_uid());
                    (m.sender.clone(), m.id, m.body.clone(), m.file.clone(), same)
                })
                .collect();
            let acks = u.acks().cloned().collect();
            let conn = u.connection.map(|c| c.addr);
            (alias.clone(), u.full_name.clone(), u.birth_date.clone(), u.last_id, conn, mail, acks)
        })
        .collect();
    users.sort();
    (users, e.registry().connected().cloned().collect())
}

fn run_and_commit(ops: &[Op], store: &mut Store, batch: usize) -> Engine {
    let mut e = Engine::new(EngineConfig { record_changes: true, record_events: false, ..EngineConfig::default() });
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let b = |i: usize| Bytes::from_static(ALIASES[i].as_bytes());
    let mut pending: Vec<Change> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Register(u) => {
                let date = if u % 2 == 0 { Some(Bytes::from_static(b"01/01/2000")) } else { None };
                e.handle_request(
                    ip,
                    &Request::Register { full_name: Bytes::from(format!("Name {u}")), alias: b(u), birth_date: date },
                );
            }
            Op::Unregister(u) => {
                e.handle_request(ip, &Request::Unregister { alias: b(u) });
            }
            Op::Connect(u, p) => {
                e.handle_request(ip, &Request::Connect { alias: b(u), port: Bytes::from(p.to_string()) });
            }
            Op::Disconnect(u) => {
                e.handle_request(ip, &Request::Disconnect { alias: b(u) });
            }
            Op::Send(s, r, n) => {
                e.handle_request(
                    ip,
                    &Request::Send {
                        sender: b(s),
                        recipient: b(r),
                        body: Bytes::from(vec![b'a' + n % 26; 1 + n as usize]),
                    },
                );
            }
            Op::SendAttach(s, r, n) => {
                e.handle_request(
                    ip,
                    &Request::SendAttach {
                        sender: b(s),
                        recipient: b(r),
                        body: Bytes::from(vec![b'a' + n % 26; 1 + n as usize]),
                        file: Bytes::from(format!("/home/{s}/file{n}.txt")),
                    },
                );
            }
            Op::Deliver(ok) => {
                e.mark_durable(e.change_seq());
                if let Some(d) = e.poll_delivery(Instant::now()) {
                    let outcome = if ok { DeliveryOutcome::Delivered } else { DeliveryOutcome::Failed };
                    e.handle_delivery_result(d.id, outcome).unwrap();
                }
            }
        }
        pending.extend(std::iter::from_fn(|| e.poll_change()));
        if n % batch == 0 {
            store.commit(&pending).unwrap();
            pending.clear();
        }
    }
    store.commit(&pending).unwrap();
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_engine_restored_from_the_store_equals_the_engine_before(ops in proptest::collection::vec(op(), 1..80), batch in 1usize..8) {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let mut store = Store::open(dir.path()).unwrap();
            run_and_commit(&ops, &mut store, batch)
        };
        // Reopened, as after a restart.
        let mut store = Store::open(dir.path()).unwrap();
        let (users, messages) = store.load().unwrap();
        let restored = Engine::restore(EngineConfig::default(), users, messages).unwrap();
        prop_assert_eq!(summary(&restored), summary(&before));
    }
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().expect("the second open fails");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another server"), "{err}");
}

#[test]
fn a_corrupt_store_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0xAB; 8192]).unwrap();
    let err = Store::open(dir.path()).err().expect("garbage is refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(DB_FILE), "{err}");
}

#[test]
fn a_data_path_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file).err().expect("a file is not a directory");
    assert!(matches!(err, StoreError::Directory { .. }), "{err}");
    assert!(
        err.to_string().ends_with("it is a file, not a directory"),
        "says what is wrong, not \"File exists\": {err}"
    );
}

#[test]
fn a_full_store_fails_the_whole_batch_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let reg = |i: usize| Change::Registered {
        alias: Bytes::from(format!("user{i:05}")),
        full_name: Bytes::from(vec![b'n'; 200]),
        birth_date: None,
    };
    store.commit(&[reg(0)]).unwrap();
    store.set_max_pages(8).unwrap();
    let mut committed = 1;
    let err = loop {
        let batch: Vec<Change> = (committed..committed + 10).map(reg).collect();
        match store.commit(&batch) {
            Ok(()) => committed += 10,
            Err(e) => break e,
        }
        assert!(committed < 100_000, "the cap never bit");
    };
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(store.probe().is_err(), "still full");
    let (users, _) = store.load().unwrap();
    assert_eq!(users.len(), committed, "the failed batch left nothing behind");
    store.set_max_pages(1_000_000).unwrap();
    store.probe().unwrap();
}

/// A data directory written before SENDATTACH (schema 1, these exact statements) opens,
/// keeps its users and messages, and takes attached messages from then on.
#[test]
fn a_store_of_the_old_schema_is_migrated_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS users (
                 alias BLOB PRIMARY KEY, full_name BLOB NOT NULL, birth_date BLOB,
                 last_id INTEGER NOT NULL, conn_ip TEXT, conn_port INTEGER, conn_order INTEGER
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY, recipient BLOB NOT NULL, sender BLOB NOT NULL,
                 id INTEGER NOT NULL, body BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, sender, id);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1');
             INSERT INTO users (alias, full_name, birth_date, last_id) VALUES (x'616e61', x'416e61', NULL, 1);
             INSERT INTO users (alias, full_name, birth_date, last_id) VALUES (x'626f62', x'426f62', NULL, 0);
             INSERT INTO messages (recipient, sender, id, body) VALUES (x'626f62', x'616e61', 1, x'686f6c61');
             COMMIT;",
        )
        .unwrap();
    }
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    {
        let mut store = Store::open(dir.path()).unwrap();
        let (users, messages) = store.load().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(messages.len(), 1);
        assert_eq!((messages[0].id, &messages[0].body[..], &messages[0].file), (1, &b"hola"[..], &None));
        let change =
            Change::Stored { recipient: b("bob"), sender: b("ana"), id: 2, body: b("mira"), file: Some(b("/tmp/x")) };
        store.commit(&[change]).unwrap();
    }
    // Opened again: already at the new version, nothing migrated twice.
    let mut store = Store::open(dir.path()).unwrap();
    let (users, messages) = store.load().unwrap();
    let engine = Engine::restore(EngineConfig::default(), users, messages).unwrap();
    let mail: Vec<_> = engine.registry().get(b"bob").unwrap().mailbox.iter().map(|m| (m.id, m.file.clone())).collect();
    assert_eq!(mail, [(1, None), (2, Some(b("/tmp/x")))]);
    assert_eq!(engine.registry().get(b"ana").unwrap().last_id, 2);
}

#[test]
fn a_store_of_an_unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE meta SET value = '9' WHERE key = 'schema'", []).unwrap();
    drop(conn);
    let err = Store::open(dir.path()).err().expect("an unknown version is refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

/// A data directory of schema 2 (these exact statements) opens as version 3: its users get
/// distinct uids, each message's sender is the user of that alias, and the counter of uids
/// goes on past them.
#[test]
fn a_store_of_schema_2_is_migrated_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS users (
                 alias BLOB PRIMARY KEY, full_name BLOB NOT NULL, birth_date BLOB,
                 last_id INTEGER NOT NULL, conn_ip TEXT, conn_port INTEGER, conn_order INTEGER
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY, recipient BLOB NOT NULL, sender BLOB NOT NULL,
                 id INTEGER NOT NULL, body BLOB NOT NULL, file BLOB
             );
             CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, sender, id);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '2');
             INSERT INTO users (alias, full_name, birth_date, last_id) VALUES (x'616e61', x'416e61', NULL, 1);
             INSERT INTO users (alias, full_name, birth_date, last_id) VALUES (x'626f62', x'426f62', NULL, 0);
             INSERT INTO messages (recipient, sender, id, body) VALUES (x'626f62', x'616e61', 1, x'686f6c61');
             INSERT INTO messages (recipient, sender, id, body, file) VALUES (x'626f62', x'676f6e65', 7, x'78', x'2f66');
             COMMIT;",
        )
        .unwrap();
    }
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    {
        let mut store = Store::open(dir.path()).unwrap();
        let (users, messages) = store.load().unwrap();
        let uids: HashSet<u64> = users.iter().map(|u| u.uid).collect();
        assert_eq!(uids.len(), 2, "{users:?}");
        assert!(!uids.contains(&0));
        let ana = users.iter().find(|u| u.alias == b("ana")).unwrap().uid;
        assert_eq!(messages[0].sender_uid, ana);
        assert_eq!(messages[1].sender_uid, 0, "the sender is gone");
        store.commit(&[Change::Registered { alias: b("eve"), full_name: b("Eve"), birth_date: None }]).unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    let (users, _) = store.load().unwrap();
    let uids: HashSet<u64> = users.iter().map(|u| u.uid).collect();
    assert_eq!(uids.len(), 3, "a new user gets a uid of its own: {users:?}");
}

/// The uid counter is kept, not derived from the users there are: a user registered after
/// the newest one left gets a new uid, so a message of the one who left is not its own.
#[test]
fn uids_are_never_reused_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let reg = |a: &str| Change::Registered { alias: b(a), full_name: b(a), birth_date: None };
    {
        let mut store = Store::open(dir.path()).unwrap();
        let sent = Change::Stored { recipient: b("bob"), sender: b("ana"), id: 1, body: b("x"), file: None };
        store.commit(&[reg("bob"), reg("ana"), sent, Change::Unregistered { alias: b("ana") }]).unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[reg("ana")]).unwrap();
    let (users, messages) = store.load().unwrap();
    let ana = users.iter().find(|u| u.alias == b("ana")).unwrap().uid;
    assert_ne!(messages[0].sender_uid, ana);
    let engine = Engine::restore(EngineConfig::default(), users, messages).unwrap();
    let m = engine.registry().get(b"bob").unwrap().mailbox.front().unwrap().clone();
    assert_ne!(engine.registry().get(b"ana").unwrap().uid(), m.sender_uid());
}
