//! Durable chat history (issue 17): `cartero chat serve --data DIR` keeps broadcasts, room
//! messages and private messages in SQLite, each on disk before it is forwarded; the history
//! survives a restart and a kill -9, is trimmed to the per-target limit, and a store that
//! cannot be used stops the server at start with one line, or refuses the message while
//! running.

mod common;

use std::path::Path;

use cartero::chat::server::{Server, ServerConfig};
use cartero::chat::store::Store;
use cartero::chat::Target;
use common::chat::{serve, Raw};
use common::{interrupt, wait, Proc, LIMIT};

fn chat_serve(data: &Path, extra: &[&str]) -> (Proc, u16) {
    // No per-address limits: every test client comes from 127.0.0.1.
    let data = data.to_str().unwrap();
    serve(&[&["--data", data, "--max-per-ip", "0", "--rate", "0"], extra].concat())
}

/// HISTORY of `target`: the replayed lines without their time stamps, then the end.
fn history(raw: &mut Raw, target: &str, n: u32) -> Vec<String> {
    raw.send(&format!("HISTORY|{target}|{n}"));
    let mut lines = Vec::new();
    loop {
        let line = raw.event().expect("a line");
        if line == format!("HISTORY_END|{target}") {
            return lines;
        }
        // HISTORY|target|sender|millis|content
        let fields: Vec<&str> = line.splitn(5, '|').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert!(fields[3].parse::<u64>().is_ok_and(|m| m > 0), "{line}");
        lines.push(format!("{}|{}", fields[2], fields[4]));
    }
}

/// Messages of every kind, each seen by its recipients (so acknowledged by the server).
fn chat_a_little(port: u16) -> (Raw, Raw) {
    let mut ana = Raw::join(port, "ana");
    let mut bob = Raw::join(port, "bob");
    ana.send("JOIN|#sala");
    ana.expect_events(&["JOINED|#sala|ana"]);
    bob.send("JOIN|#sala");
    ana.expect_events(&["JOINED|#sala|ana,bob"]);
    bob.expect_events(&["JOINED|#sala|ana,bob"]);
    ana.send("ROOM|#sala|hola sala");
    ana.expect_events(&["ROOM|#sala|ana|hola sala"]);
    bob.expect_events(&["ROOM|#sala|ana|hola sala"]);
    bob.send("BROADCAST|hola a todos");
    ana.expect_events(&["BROADCAST|bob|hola a todos"]);
    bob.expect_events(&["BROADCAST|bob|hola a todos"]);
    ana.send("MESSAGE|bob|hola bob");
    bob.expect_events(&["MESSAGE|ana|hola bob"]);
    (ana, bob)
}

fn check_history(port: u16) {
    let mut ana = Raw::join(port, "ana");
    ana.send("JOIN|#sala");
    ana.expect_events(&["JOINED|#sala|ana"]);
    assert_eq!(history(&mut ana, "#sala", 10), ["ana|hola sala"]);
    assert_eq!(history(&mut ana, "*", 10), ["bob|hola a todos"]);
    assert_eq!(history(&mut ana, "bob", 10), ["ana|hola bob"]);
    let mut carl = Raw::join(port, "carl");
    assert_eq!(history(&mut carl, "bob", 10), Vec::<String>::new(), "never anyone else's private messages");
}

#[test]
fn history_survives_kill_9_right_after_the_messages_were_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = chat_serve(dir.path(), &[]);
    let _clients = chat_a_little(port);
    server.child.kill().unwrap(); // SIGKILL: nothing is flushed on the way out
    server.child.wait().unwrap();
    let (mut server, port) = chat_serve(dir.path(), &[]);
    check_history(port);
    // A normal stop (Ctrl-C) keeps it too, and the next server can take the store at once.
    interrupt(&server.child);
    assert_eq!(wait(&mut server.child), 0);
    let (_server, port) = chat_serve(dir.path(), &[]);
    check_history(port);
}

#[test]
fn under_load_what_anyone_received_before_a_kill_9_is_stored_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = chat_serve(dir.path(), &[]);
    let mut observer = Raw::join(port, "observer");
    let senders: Vec<Raw> = (0..4).map(|i| Raw::join(port, &format!("s{i}"))).collect();
    let reader = std::thread::spawn(move || {
        let mut received = Vec::new();
        while let Some(line) = observer.line() {
            if let Some(content) = line.strip_prefix("BROADCAST|") {
                received.push(content.to_string());
            }
        }
        received
    });
    for (i, mut sender) in senders.into_iter().enumerate() {
        let burst: String = (0..300).map(|n| format!("BROADCAST|m{i}-{n}\n")).collect();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut sender.stream, burst.as_bytes());
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut sender.stream, &mut sink);
        });
    }
    // Some messages forwarded, and more on their way: kill -9 in the middle.
    let log_lines = (0..200).map(|_| server.line()).filter(|l| l.starts_with("s> BROADCAST")).count();
    assert!(log_lines > 0);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let received = reader.join().unwrap();
    assert!(!received.is_empty());
    let mut store = Store::open(dir.path(), 10_000).unwrap();
    let mut stored = Vec::new();
    store.load(|r| stored.push(format!("{}|{}", r.from, r.content))).unwrap();
    assert!(
        stored.starts_with(&received),
        "received {} messages, stored {}: what was received is not what was stored first",
        received.len(),
        stored.len()
    );
}

#[test]
fn each_target_keeps_its_last_messages_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = chat_serve(dir.path(), &["--history-per-target", "3"]);
    let mut ana = Raw::join(port, "ana");
    for i in 0..5 {
        ana.send(&format!("BROADCAST|b{i}"));
        ana.expect_events(&[&format!("BROADCAST|ana|b{i}")]);
    }
    ana.send("JOIN|#sala");
    ana.expect_events(&["JOINED|#sala|ana"]);
    ana.send("ROOM|#sala|r");
    ana.expect_events(&["ROOM|#sala|ana|r"]);
    assert_eq!(history(&mut ana, "*", 100), ["ana|b2", "ana|b3", "ana|b4"]);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let (_server, port) = chat_serve(dir.path(), &["--history-per-target", "3"]);
    let mut ana = Raw::join(port, "ana");
    assert_eq!(history(&mut ana, "*", 100), ["ana|b2", "ana|b3", "ana|b4"]);
    assert_eq!(history(&mut ana, "*", 2), ["ana|b3", "ana|b4"]);
    ana.send("JOIN|#sala");
    ana.expect_events(&["JOINED|#sala|ana"]);
    assert_eq!(history(&mut ana, "#sala", 100), ["ana|r"]);
    drop(ana);
    // The store itself holds no more than the limit per target.
    drop(_server);
    let mut store = Store::open(dir.path(), 3).unwrap();
    let mut broadcasts = 0;
    store.load(|r| broadcasts += usize::from(r.target == Target::Broadcasts)).unwrap();
    assert_eq!(broadcasts, 3);
}

/// Runs `cartero chat serve --data <data>`: it must exit non-zero with one line on stderr.
fn refused(data: &Path) -> String {
    let data = data.to_str().unwrap();
    let (code, lines, stderr) =
        Proc::start(&["chat", "serve", "-p", "0", "--bind", "127.0.0.1", "--data", data]).finish();
    assert_ne!(code, 0, "{lines:?} {stderr}");
    assert!(lines.is_empty(), "it never started: {lines:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("cartero: "), "{stderr}");
    stderr
}

#[test]
fn a_data_directory_that_cannot_be_used_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    assert!(refused(&file).contains("it is a file, not a directory"));
    assert!(refused(&file.join("below")).contains("cannot use"));
    // Unwritable even for root: /proc takes no new directories.
    assert!(refused(Path::new("/proc/cartero-chat-test")).contains("cannot use"));
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("chat.db"), vec![0x5a; 4096]).unwrap();
    assert!(refused(&corrupt).contains("is corrupt or not a cartero chat store"));
    // One server per store.
    let (_server, _port) = chat_serve(&dir.path().join("taken"), &[]);
    assert!(refused(&dir.path().join("taken")).contains("in use by another server"));
}

#[test]
fn a_failed_write_refuses_the_message_and_forwards_nothing_unstored() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), 10_000).unwrap();
    store.set_max_pages(24).unwrap(); // about 96 KiB: the disk fills after some messages
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        runtime.block_on(async move {
            let config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
            let server = Server::bind_with(config, Some(store)).await.unwrap();
            port_tx.send(server.local_addr().unwrap().port()).unwrap();
            server
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        })
    });
    let port = port_rx.recv_timeout(LIMIT).unwrap();
    let mut ana = Raw::join(port, "ana");
    let mut bob = Raw::join(port, "bob");
    let mut forwarded = Vec::new();
    let refused = loop {
        assert!(forwarded.len() < 1000, "the capped store never filled");
        let content = format!("m{}-{}", forwarded.len(), "x".repeat(900));
        ana.send(&format!("BROADCAST|{content}"));
        match ana.event().expect("a line") {
            line if line == format!("BROADCAST|ana|{content}") => forwarded.push(content),
            line => {
                assert_eq!(line, "ERROR|500|No se pudo guardar el mensaje");
                break content;
            }
        }
    };
    assert!(!forwarded.is_empty(), "some messages fit");
    // Bob got exactly the stored ones: the refused one never reached him.
    for content in &forwarded {
        assert_eq!(bob.event().expect("a line"), format!("BROADCAST|ana|{content}"));
    }
    bob.send("BROADCAST|x");
    let next = bob.event().expect("a line");
    assert!(next == "BROADCAST|bob|x" || next == "ERROR|500|No se pudo guardar el mensaje", "{next}");
    if next == "BROADCAST|bob|x" {
        ana.expect_events(&["BROADCAST|bob|x"]);
    }
    assert!(!history(&mut ana, "*", 100).iter().any(|l| l.ends_with(&refused)), "history holds no refused message");
    stop_tx.send(()).unwrap();
    server.join().unwrap();
    let mut store = Store::open(dir.path(), 10_000).unwrap();
    let mut stored = Vec::new();
    store.load(|r| stored.push(r.content)).unwrap();
    stored.retain(|c| c != "x");
    assert_eq!(stored, forwarded, "what was forwarded is what was stored");
}
