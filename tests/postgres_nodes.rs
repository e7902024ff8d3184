//! `cartero serve --store postgres://... --shared`: N identical nodes on one PostgreSQL
//! database (a real PostgreSQL cluster each test starts and stops, tests/common/pg.rs). A user
//! registered on one node, connected on another and written to through a third; one sender's
//! concurrent SENDs through all nodes; nodes starting at once on a fresh database; a node
//! killed with -9 under load; the database lost while nodes run, or down at their start; a
//! node's connection pool exhausted; nodes whose clocks are skewed (under faketime).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartero::client::blocking::{Client, Listener};
use cartero::wire::{ConnectReply, ConnectedUsersReply, RegisterReply, SendReply};
use cartero::Push;
use common::pg::Cluster;
use common::{wait, Proc, LIMIT};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn client(port: u16) -> Client {
    Client::new("127.0.0.1", port).with_timeout(LIMIT)
}

/// Starts `cartero serve --shared` on the cluster's database without waiting for it.
fn launch(cluster: &Cluster, extra: &[&str]) -> Proc {
    let url = cluster.url();
    let mut args = vec!["serve", "-p", "0", "--bind", "127.0.0.1", "--store", url.as_str(), "--shared"];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// Waits for a launched node's start lines; returns its port.
fn ready(node: &mut Proc) -> u16 {
    let init = node.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    let port = port.parse().unwrap();
    node.expect(&["s>"]);
    port
}

/// `n` nodes on the cluster's database, started one after the other.
fn nodes(cluster: &Cluster, n: usize, extra: &[&str]) -> Vec<(Proc, u16)> {
    (0..n)
        .map(|_| {
            let mut node = launch(cluster, extra);
            let port = ready(&mut node);
            (node, port)
        })
        .collect()
}

fn message_id(push: Push) -> (String, u32) {
    match push {
        Push::Message { sender, id, .. } => (String::from_utf8_lossy(&sender).into_owned(), id),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn register_on_a_connect_on_b_send_on_c_delivers_and_acknowledges() {
    let cluster = Cluster::start();
    let nodes = nodes(&cluster, 3, &[]);
    let (a, b, c) = (client(nodes[0].1), client(nodes[1].1), client(nodes[2].1));
    for u in ["ana", "bob", "eve"] {
        assert_eq!(a.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
    }
    // Every node sees what another committed.
    assert_eq!(b.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::AliasInUse);
    assert_eq!(c.register("bob", "bob", "01/01/2000").unwrap(), RegisterReply::AliasInUse);

    let bob = Listener::bind(LOCAL).unwrap();
    let ana = Listener::bind(LOCAL).unwrap();
    assert_eq!(b.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::AlreadyConnected);
    assert_eq!(c.connect("ana", ana.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(
        a.connected_users(Some(b"ana")).unwrap(),
        ConnectedUsersReply::Ok { users: vec!["bob".into(), "ana".into()] }
    );

    assert_eq!(c.send("ana", "bob", "hello from C").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(
        bob.recv_timeout(LIMIT).unwrap(),
        Push::Message { sender: "ana".into(), id: 1, body: "hello from C".into() }
    );
    assert_eq!(ana.recv_timeout(LIMIT).unwrap(), Push::Ack { id: 1 });

    // The id counter is the database's: the next SEND, through another node, gets 2.
    assert_eq!(a.send("ana", "eve", "stored").unwrap(), SendReply::Ok { id: 2 });
    let eve = Listener::bind(LOCAL).unwrap();
    assert_eq!(b.connect("eve", eve.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(eve.recv_timeout(LIMIT).unwrap(), Push::Message { sender: "ana".into(), id: 2, body: "stored".into() });
    assert_eq!(ana.recv_timeout(LIMIT).unwrap(), Push::Ack { id: 2 });
    // Nothing is pushed twice.
    assert!(bob.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(eve.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn concurrent_sends_of_one_sender_through_three_nodes_get_unique_gap_free_ids_delivered_in_order() {
    let cluster = Cluster::start();
    let nodes = nodes(&cluster, 3, &[]);
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let first = client(ports[0]);
    for u in ["s", "r"] {
        assert_eq!(first.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
    }
    const THREADS: usize = 12;
    const EACH: usize = 40;
    let ids: Vec<u32> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let port = ports[t % ports.len()];
                scope.spawn(move || {
                    let c = client(port);
                    (0..EACH)
                        .map(|n| match c.send("s", "r", format!("{t}.{n}")).unwrap() {
                            SendReply::Ok { id } => id,
                            other => panic!("SEND {t}.{n}: {other:?}"),
                        })
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let expected: Vec<u32> = (1..=(THREADS * EACH) as u32).collect();
    assert_eq!(sorted, expected, "ids are unique and without gaps");

    // The mailbox comes out in id order, through whichever node delivers it.
    let r = Listener::bind(LOCAL).unwrap();
    assert_eq!(client(ports[1]).connect("r", r.port()).unwrap(), ConnectReply::Ok);
    let mut delivered = Vec::new();
    while delivered.len() < expected.len() {
        let (sender, id) = message_id(r.recv_timeout(LIMIT).expect("the whole mailbox is delivered"));
        assert_eq!(sender, "s");
        delivered.push(id);
    }
    assert_eq!(delivered, expected);
}

#[test]
fn nodes_starting_at_once_on_a_fresh_database_all_serve_and_a_single_server_is_refused() {
    let cluster = Cluster::start();
    // Three nodes migrate the same fresh database at the same moment.
    let mut launched: Vec<Proc> = (0..3).map(|_| launch(&cluster, &[])).collect();
    let ports: Vec<u16> = launched.iter_mut().map(ready).collect();
    let mut registered = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let alias = format!("user{i}");
        assert_eq!(client(*port).register(&alias, &alias, "01/01/2000").unwrap(), RegisterReply::Ok);
        registered.insert(alias, *port);
    }
    for port in &ports {
        for alias in registered.keys() {
            assert_eq!(client(*port).register(alias, alias, "01/01/2000").unwrap(), RegisterReply::AliasInUse);
        }
    }
    // A single (unshared) server would answer from a stale memory: it is refused.
    let url = cluster.url();
    let single = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--store", &url]);
    let (code, _, stderr) = single.finish();
    assert_ne!(code, 0);
    assert!(stderr.contains("is in use by another server"), "{stderr}");
    // And a node is refused while a single server owns the database.
    drop(launched);
    let start = Instant::now();
    let mut single = loop {
        let mut single = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--store", &url]);
        // The killed nodes' sessions end a moment after them.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| single.line())) {
            Ok(line) if line.starts_with("s> init server") => break single,
            _ if start.elapsed() < LIMIT => std::thread::sleep(Duration::from_millis(200)),
            _ => panic!("a single server could not start after the nodes stopped"),
        }
    };
    single.expect(&["s>"]);
    let node = launch(&cluster, &[]);
    let (code, _, stderr) = node.finish();
    assert_ne!(code, 0);
    assert!(stderr.contains("is in use by another server"), "{stderr}");
}

#[test]
fn kill_9_of_a_node_under_load_loses_no_answered_message_reuses_no_id_and_deliveries_resume() {
    let cluster = Cluster::start();
    let mut nodes = nodes(&cluster, 3, &[]);
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let senders = ["s0", "s1", "s2"];
    let c = client(ports[1]);
    for u in senders.iter().chain(&["r"]) {
        assert_eq!(c.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
    }
    let r = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("r", r.port()).unwrap(), ConnectReply::Ok);

    let answered: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let total = |answered: &Mutex<BTreeMap<String, Vec<u32>>>| total_of(&answered.lock().unwrap());
    let threads: Vec<_> = senders
        .iter()
        .map(|s| {
            let (answered, stop, s, ports) = (answered.clone(), stop.clone(), s.to_string(), ports.clone());
            std::thread::spawn(move || {
                // Each SEND through the next node: a dead node's turn is skipped.
                for n in 0..20_000usize {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let c = Client::new("127.0.0.1", ports[n % ports.len()]).with_timeout(Duration::from_secs(5));
                    if let Ok(SendReply::Ok { id }) = c.send(&s, "r", format!("{s} #{n}")) {
                        answered.lock().unwrap().entry(s.clone()).or_default().push(id);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while total(&answered) < 150 && start.elapsed() < LIMIT * 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Node 0 dies mid-load, most likely with requests and a push in flight.
    nodes[0].0.child.kill().unwrap();
    wait(&mut nodes[0].0.child);
    let killed_at = total(&answered);
    while total(&answered) < killed_at + 150 && start.elapsed() < LIMIT * 6 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(total_of(&answered) >= killed_at + 150, "the load went on after the kill: {}", total_of(&answered));
    for (s, ids) in &answered {
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{s}: an id was given twice");
    }

    // Every answered message arrives (a push cut by the kill may arrive twice), in id order.
    let mut delivered: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let missing = |delivered: &BTreeMap<String, Vec<u32>>| {
        answered.iter().any(|(s, ids)| ids.iter().any(|id| !delivered.get(s).is_some_and(|d| d.contains(id))))
    };
    let start = Instant::now();
    while missing(&delivered) && start.elapsed() < LIMIT * 3 {
        if let Ok(push) = r.recv_timeout(Duration::from_millis(200)) {
            let (sender, id) = message_id(push);
            delivered.entry(sender).or_default().push(id);
        }
    }
    for (s, ids) in &answered {
        let got = delivered.get(s).cloned().unwrap_or_default();
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{s}: out of order: {got:?}");
        for id in ids {
            assert!(got.contains(id), "{s}: message {id} was answered but never delivered");
        }
    }
}

fn total_of(answered: &BTreeMap<String, Vec<u32>>) -> usize {
    answered.values().map(Vec::len).sum()
}

#[test]
fn a_database_lost_while_nodes_run_is_answered_with_errors_then_they_recover() {
    let cluster = Cluster::start();
    let nodes = nodes(&cluster, 2, &[]);
    let (a, b) = (client(nodes[0].1), client(nodes[1].1));
    assert_eq!(a.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::Ok);
    assert_eq!(b.register("bob", "bob", "01/01/2000").unwrap(), RegisterReply::Ok);
    cluster.pg_ctl_stop();
    // Any other error, never 0, and no hang.
    assert_eq!(a.send("ana", "bob", "lost?").unwrap(), SendReply::Error);
    assert_eq!(b.send("ana", "bob", "lost?").unwrap(), SendReply::Error);
    assert_eq!(b.register("eve", "eve", "01/01/2000").unwrap(), RegisterReply::Error);
    cluster.pg_ctl_start();
    for c in [&a, &b] {
        let start = Instant::now();
        while c.register("probe", "probe", "01/01/2000").unwrap() == RegisterReply::Error && start.elapsed() < LIMIT {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Nothing of the failed requests was kept: the first id is 1, eve registers now.
    assert_eq!(b.send("ana", "bob", "after the outage").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(a.register("eve", "eve", "01/01/2000").unwrap(), RegisterReply::Ok);
    // Deliveries resume: the control connections were opened again.
    let bob = Listener::bind(LOCAL).unwrap();
    assert_eq!(a.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(
        bob.recv_timeout(LIMIT).unwrap(),
        Push::Message { sender: "ana".into(), id: 1, body: "after the outage".into() }
    );
    assert_eq!(a.send("ana", "bob", "live").unwrap(), SendReply::Ok { id: 2 });
    assert_eq!(message_id(bob.recv_timeout(LIMIT).unwrap()), ("ana".into(), 2));
}

#[test]
fn an_exhausted_pool_answers_any_other_error_after_its_wait_never_hangs() {
    let cluster = Cluster::start();
    let mut node = launch(&cluster, &["--pool", "1", "--pool-wait", "300ms", "--request-timeout", "2s"]);
    let port = ready(&mut node);
    let c = client(port);
    assert_eq!(c.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::Ok);
    assert_eq!(c.register("bob", "bob", "01/01/2000").unwrap(), RegisterReply::Ok);
    // Another client of the database holds the users' table: the node's one connection is
    // stuck behind it, and the other requests find no connection free.
    let mut blocker = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE cartero_users IN ACCESS EXCLUSIVE MODE").unwrap();
    let replies: Vec<SendReply> = std::thread::scope(|scope| {
        let sends: Vec<_> =
            (0..6).map(|i| scope.spawn(move || client(port).send("ana", "bob", format!("{i}")))).collect();
        sends.into_iter().map(|t| t.join().unwrap().unwrap()).collect()
    });
    assert!(replies.iter().all(|r| *r == SendReply::Error), "{replies:?}");
    tx.rollback().unwrap();
    drop(blocker);
    let start = Instant::now();
    let reply = loop {
        let reply = c.send("ana", "bob", "free again").unwrap();
        if reply != SendReply::Error || start.elapsed() > LIMIT {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reply, SendReply::Ok { id: 1 });
}

#[test]
fn a_node_with_its_database_down_at_start_says_so_in_one_line() {
    let port = std::net::TcpListener::bind((LOCAL, 0)).unwrap().local_addr().unwrap().port();
    let url = format!("postgres://cartero:secret@127.0.0.1:{port}/cartero");
    let node = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--store", &url, "--shared"]);
    let (code, out, stderr) = node.finish();
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("cartero:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&format!("cannot reach the database postgres://cartero@127.0.0.1:{port}/cartero")));
    assert!(!stderr.contains("secret"), "the password is never printed: {stderr}");
}

#[test]
fn nodes_with_skewed_clocks_retry_a_refused_push_by_the_database_clock_and_deliver() {
    let cluster = Cluster::start();
    // libfaketime (scripts/test.sh installs faketime) shifts every clock of the process it is
    // preloaded into. Preloaded into the node itself, not through the `faketime` program,
    // which forks: the node would outlive the test when the program is killed.
    let url = cluster.url();
    let library = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|arch| Some(arch.ok()?.path().join("faketime/libfaketimeMT.so.1")))
        .find(|path| path.exists())
        .expect("libfaketime is installed (Debian: faketime)");
    let library = library.to_str().unwrap();
    let skewed: Vec<(Proc, u16)> = ["+2d", "-3h"]
        .iter()
        .map(|shift| {
            let args = ["serve", "-p", "0", "--bind", "127.0.0.1", "--store", &url, "--shared"];
            let env = [("LD_PRELOAD", library), ("FAKETIME", *shift)];
            let mut node = Proc::start_with_env(common::BIN, &args, &env);
            let port = ready(&mut node);
            (node, port)
        })
        .collect();
    let (a, b) = (client(skewed[0].1), client(skewed[1].1));
    for u in ["ana", "bob"] {
        assert_eq!(a.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
    }
    let ana = Listener::bind(LOCAL).unwrap();
    assert_eq!(b.connect("ana", ana.port()).unwrap(), ConnectReply::Ok);
    // bob connects (through the node two days ahead) with a listener that is not up yet: the
    // pushes refused within two seconds of the CONNECT, as the database counts them, are retried.
    let port = std::net::TcpListener::bind((LOCAL, 0)).unwrap().local_addr().unwrap().port();
    assert_eq!(a.connect("bob", port).unwrap(), ConnectReply::Ok);
    assert_eq!(b.send("ana", "bob", "skewed").unwrap(), SendReply::Ok { id: 1 });
    std::thread::sleep(Duration::from_millis(300));
    let bob = std::net::TcpListener::bind((LOCAL, port)).unwrap();
    let mut push = accept_within(&bob);
    push.set_read_timeout(Some(LIMIT)).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut push, &mut bytes).unwrap();
    assert!(bytes.starts_with(b"SEND MESSAGE\0ana\0"), "{bytes:?}");
    assert!(bytes.ends_with(b"skewed\0"), "{bytes:?}");
    drop(push);
    assert_eq!(ana.recv_timeout(LIMIT).unwrap(), Push::Ack { id: 1 });
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
