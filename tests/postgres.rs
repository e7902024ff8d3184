//! `cartero serve --store postgres://...` on a real PostgreSQL 15 cluster that each test starts
//! and stops (tests/common/pg.rs): a restart and a kill -9 keep everything answered, a
//! database that is down at start or lost while running, a second server on the same
//! database, and two servers migrating one database at once.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartero::client::blocking::{Client, Listener};
use cartero::messaging::pg::PgStore;
use cartero::store::StoreError;
use cartero::wire::{ConnectReply, RegisterReply, SendReply};
use cartero::Push;
use common::pg::Cluster;
use common::{interrupt, wait, Proc, LIMIT};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn client(port: u16) -> Client {
    Client::new("127.0.0.1", port).with_timeout(LIMIT)
}

/// `cartero serve` on the cluster's database; returns it and its port.
fn serve(cluster: &Cluster, extra: &[&str]) -> (Proc, u16) {
    let url = cluster.url();
    let mut args = vec!["serve", "-p", "0", "--bind", "127.0.0.1", "--store", url.as_str()];
    args.extend_from_slice(extra);
    let mut server = Proc::start(&args);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    let port = port.parse().unwrap();
    server.expect(&["s>"]);
    (server, port)
}

#[test]
fn a_restart_and_a_kill_9_keep_users_connections_mailboxes_counters_and_acknowledgements() {
    let cluster = Cluster::start();
    let bob = Listener::bind(LOCAL).unwrap();
    // ana's listener takes the acknowledgement's connection and stalls it.
    let ana = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
    {
        let (server, port) = serve(&cluster, &[]);
        let c = client(port);
        for u in ["ana", "bob", "eve"] {
            assert_eq!(c.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
        }
        assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
        for i in 1..=3 {
            assert_eq!(c.send("ana", "eve", format!("kept {i}")).unwrap(), SendReply::Ok { id: i });
        }
        interrupt(&server.child);
        let (code, _, stderr) = server.finish();
        assert_eq!(code, 0, "{stderr}");
    }
    let (mut server, port) = serve(&cluster, &["--delivery-timeout", "60s"]);
    let c = client(port);
    assert_eq!(c.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::AliasInUse);
    assert_eq!(c.connect("ana", ana.local_addr().unwrap().port()).unwrap(), ConnectReply::Ok);
    assert_eq!(c.send("ana", "bob", "live").unwrap(), SendReply::Ok { id: 4 });
    assert_eq!(bob.recv_timeout(LIMIT).unwrap(), Push::Message { sender: "ana".into(), id: 4, body: "live".into() });
    let stalled = accept_within(&ana);
    // A later write answered 0 means everything before it is committed.
    assert_eq!(c.register("zed", "zed", "01/01/2000").unwrap(), RegisterReply::Ok);
    server.child.kill().unwrap();
    wait(&mut server.child);
    drop(stalled);

    let (_server, port) = serve(&cluster, &[]);
    let c = client(port);
    // The acknowledgement owed to ana is pushed again, at her listener.
    let mut push = accept_within(&ana);
    push.set_read_timeout(Some(LIMIT)).unwrap();
    let mut bytes = Vec::new();
    push.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"SEND MESS ACK\x004\x00");
    drop(push);
    // ana's counter goes on; eve's mailbox is whole and in order.
    assert_eq!(c.send("ana", "eve", "after the crash").unwrap(), SendReply::Ok { id: 5 });
    let eve = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("eve", eve.port()).unwrap(), ConnectReply::Ok);
    let ids: Vec<u32> = (0..4)
        .map(|_| match eve.recv_timeout(LIMIT).unwrap() {
            Push::Message { id, .. } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3, 5]);
}

fn accept_within(listener: &std::net::TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < LIMIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no connection to accept in time: {e}"),
        }
    }
}

#[test]
fn kill_9_during_a_send_load_loses_no_answered_message_and_reuses_no_id() {
    let cluster = Cluster::start();
    let senders = ["s0", "s1", "s2"];
    let (mut server, port) = serve(&cluster, &[]);
    let c = client(port);
    for u in senders.iter().chain(&["r"]) {
        assert_eq!(c.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
    }
    let answered: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = senders
        .iter()
        .map(|s| {
            let (answered, stop, s) = (answered.clone(), stop.clone(), s.to_string());
            std::thread::spawn(move || {
                let c = Client::new("127.0.0.1", port).with_timeout(Duration::from_secs(2));
                for n in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match c.send(&s, "r", format!("{s} #{n}")) {
                        Ok(SendReply::Ok { id }) => answered.lock().unwrap().entry(s.clone()).or_default().push(id),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while answered.lock().unwrap().values().map(Vec::len).sum::<usize>() < 100 && start.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.child.kill().unwrap();
    wait(&mut server.child);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let total: usize = answered.values().map(Vec::len).sum();
    assert!(total >= 100, "the load ran: {total} answers");

    let (_server, port) = serve(&cluster, &[]);
    let c = client(port);
    for (s, ids) in &answered {
        let SendReply::Ok { id } = c.send(s, "r", "after the crash").unwrap() else { panic!("SEND after restart") };
        assert!(id > *ids.iter().max().unwrap(), "{s} got id {id} again");
    }
    let r = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("r", r.port()).unwrap(), ConnectReply::Ok);
    let mut per_sender: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut after = 0;
    let start = Instant::now();
    while after < answered.len() && start.elapsed() < LIMIT * 6 {
        if let Ok(Push::Message { sender, id, body }) = r.recv_timeout(Duration::from_millis(100)) {
            after += usize::from(body == "after the crash");
            per_sender.entry(String::from_utf8_lossy(&sender).into()).or_default().push(id);
        }
    }
    for (s, ids) in &answered {
        let delivered = &per_sender[s];
        assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{s}: out of order or duplicated: {delivered:?}");
        for id in ids {
            assert!(delivered.contains(id), "{s}: message {id} was answered but never delivered");
        }
    }
}

#[test]
fn a_database_that_is_down_at_start_stops_the_start_with_one_clear_line() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind((LOCAL, 0)).unwrap().local_addr().unwrap().port();
    let url = format!("postgres://cartero:secret@127.0.0.1:{port}/cartero");
    let server = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--store", &url]);
    let (code, out, stderr) = server.finish();
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("cartero:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&format!("cannot reach the database postgres://cartero@127.0.0.1:{port}/cartero")));
    assert!(!stderr.contains("secret"), "the password is never printed: {stderr}");
}

#[test]
fn a_second_server_on_the_same_database_is_refused_and_migrating_at_once_is_safe() {
    let cluster = Cluster::start();
    // Two servers open a fresh database at the same moment: both migrate without error, and
    // exactly one owns it.
    let url = cluster.url();
    let opened: Vec<Result<PgStore, StoreError>> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..2).map(|_| s.spawn(|| PgStore::open(&url))).collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let owners = opened.iter().filter(|r| r.is_ok()).count();
    assert_eq!(owners, 1, "{:?}", opened.iter().map(|r| r.as_ref().err().map(|e| e.to_string())).collect::<Vec<_>>());
    for r in &opened {
        if let Err(e) = r {
            assert!(matches!(e, StoreError::InUse { .. }), "{e}");
        }
    }
    drop(opened);
    // A second `cartero serve` while one runs: one clear line, exit non-zero.
    let (_first, _) = serve(&cluster, &[]);
    let second = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--store", &url]);
    let (code, _, stderr) = second.finish();
    assert_ne!(code, 0);
    assert!(stderr.contains("is in use by another server"), "{stderr}");
}

#[test]
fn a_database_lost_while_running_refuses_writes_then_recovers() {
    let cluster = Cluster::start();
    let (_server, port) = serve(&cluster, &[]);
    let c = client(port);
    assert_eq!(c.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::Ok);
    assert_eq!(c.register("bob", "bob", "01/01/2000").unwrap(), RegisterReply::Ok);
    cluster.pg_ctl_stop();
    // Writes fail with "any other error", never 0.
    assert_eq!(c.send("ana", "bob", "lost?").unwrap(), SendReply::Error);
    assert_eq!(c.register("eve", "eve", "01/01/2000").unwrap(), RegisterReply::Error);
    cluster.pg_ctl_start();
    // The server reconnects by itself and serves writes again, from what was committed.
    let start = Instant::now();
    let reply = loop {
        let reply = c.send("ana", "bob", "after the outage").unwrap();
        if reply != SendReply::Error || start.elapsed() > LIMIT * 2 {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(reply, SendReply::Ok { id: 1 });
    assert_eq!(c.register("eve", "eve", "01/01/2000").unwrap(), RegisterReply::Ok);
}
