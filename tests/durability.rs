//! Nothing lost, whatever happens: restarts, kill -9 under load, stores that cannot be used,
//! a full disk, slow or stuck listeners, idle and slowloris connections, and a server short of
//! file descriptors. Everything runs on 127.0.0.1 and is bounded in count and time.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartero::client::blocking::{Client, Listener};
use cartero::wire::{ConnectReply, ConnectedUsersReply, RegisterReply, SendReply};
use cartero::Push;
use common::{interrupt, serve, wait, Proc, LIMIT};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn client(port: u16) -> Client {
    Client::new("127.0.0.1", port).with_timeout(LIMIT)
}

fn durable(dir: &std::path::Path, extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["--data", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    serve(&args)
}

/// Receives pushes until `done` says enough, or the time limit passes.
fn collect(listener: &Listener, mut done: impl FnMut(&[Push]) -> bool) -> Vec<Push> {
    let mut got = Vec::new();
    let start = Instant::now();
    while !done(&got) && start.elapsed() < LIMIT * 3 {
        if let Ok(push) = listener.recv_timeout(Duration::from_millis(100)) {
            got.push(push);
        }
    }
    got
}

#[test]
fn a_restart_keeps_users_connections_mailboxes_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let bob = Listener::bind(LOCAL).unwrap();
    {
        let (server, port) = durable(dir.path(), &[]);
        let c = client(port);
        for u in ["ana", "bob", "eve"] {
            assert_eq!(c.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
        }
        assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
        for i in 1..=3 {
            assert_eq!(c.send("ana", "eve", format!("kept {i}")).unwrap(), SendReply::Ok { id: i });
        }
        assert_eq!(c.send("ana", "bob", "live").unwrap(), SendReply::Ok { id: 4 });
        assert_eq!(
            bob.recv_timeout(LIMIT).unwrap(),
            Push::Message { sender: "ana".into(), id: 4, body: "live".into() }
        );
        interrupt(&server.child);
        let (code, _, stderr) = server.finish();
        assert_eq!(code, 0, "{stderr}");
    }
    let (_server, port) = durable(dir.path(), &[]);
    let c = client(port);
    assert_eq!(c.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::AliasInUse);
    // bob was connected and still is, at the same listener.
    assert_eq!(c.connected_users(Some(b"bob")).unwrap(), ConnectedUsersReply::Ok { users: vec!["bob".into()] });
    // ana's counter goes on from 4.
    assert_eq!(c.send("ana", "eve", "after the restart").unwrap(), SendReply::Ok { id: 5 });
    let eve = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("eve", eve.port()).unwrap(), ConnectReply::Ok);
    let got = collect(&eve, |g| g.len() == 4);
    let ids: Vec<u32> = got.iter().map(|p| if let Push::Message { id, .. } = p { *id } else { 0 }).collect();
    assert_eq!(ids, [1, 2, 3, 5]);
}

#[test]
fn kill_9_during_a_send_load_loses_no_answered_message_and_reuses_no_id() {
    let dir = tempfile::tempdir().unwrap();
    let senders = ["s0", "s1", "s2", "s3"];
    let (mut server, port) = durable(dir.path(), &[]);
    let c = client(port);
    for u in senders.iter().chain(&["r"]) {
        c.register(u, u, "01/01/2000").unwrap();
    }
    // Four senders fire SENDs at the offline "r" until the server dies under them.
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
    // Let some answers come back, then kill -9.
    let start = Instant::now();
    while answered.lock().unwrap().values().map(Vec::len).sum::<usize>() < 200 && start.elapsed() < LIMIT {
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
    assert!(total >= 200, "the load ran: {total} answers");

    let (_server, port) = durable(dir.path(), &[]);
    let c = client(port);
    // No id is used twice: each sender's next id is past every id it was answered.
    for (s, ids) in &answered {
        let SendReply::Ok { id } = c.send(s, "r", "after the crash").unwrap() else { panic!("SEND after restart") };
        assert!(id > *ids.iter().max().unwrap(), "{s} got id {id} again");
    }
    // Every message answered with an id is delivered, once, in order per sender.
    let r = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("r", r.port()).unwrap(), ConnectReply::Ok);
    let wanted: HashSet<(String, u32)> =
        answered.iter().flat_map(|(s, ids)| ids.iter().map(move |&id| (s.clone(), id))).collect();
    let got = collect(&r, |g| {
        let seen: HashSet<(String, u32)> = g
            .iter()
            .filter_map(|p| {
                if let Push::Message { sender, id, .. } = p {
                    Some((String::from_utf8_lossy(sender).into(), *id))
                } else {
                    None
                }
            })
            .collect();
        wanted.is_subset(&seen)
            && g.iter().filter(|p| matches!(p, Push::Message { body, .. } if body == "after the crash")).count()
                == answered.len()
    });
    let mut per_sender: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for p in &got {
        if let Push::Message { sender, id, .. } = p {
            per_sender.entry(String::from_utf8_lossy(sender).into()).or_default().push(*id);
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
fn unusable_stores_stop_the_start_with_one_clear_line() {
    // Locked by another server.
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = durable(dir.path(), &[]);
    let second = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--data", dir.path().to_str().unwrap()]);
    let (code, _, stderr) = second.finish();
    assert_eq!(code, 1);
    assert!(stderr.contains("in use by another server"), "{stderr}");

    // Corrupt.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(cartero::store::DB_FILE), vec![0x5A; 4096]).unwrap();
    let server = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--data", dir.path().to_str().unwrap()]);
    let (code, _, stderr) = server.finish();
    assert_eq!(code, 1);
    assert!(stderr.contains("is corrupt or not a cartero store"), "{stderr}");

    // Not a directory.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let server = Proc::start(&["serve", "-p", "0", "--bind", "127.0.0.1", "--data", file.to_str().unwrap()]);
    let (code, _, stderr) = server.finish();
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot use") && stderr.contains("as the data directory"), "{stderr}");
}

/// A small tmpfs of our own, to fill up. Needs the right to mount (root, as in CI here).
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path.to_str()?])
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then_some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_keeps_serving_reads_and_recovers() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the store's own tests cover a full store");
        return;
    };
    let data = disk.path.join("data");
    let (mut server, port) = durable(&data, &[]);
    let c = client(port);
    c.register("ana", "ana", "01/01/2000").unwrap();
    let ana = Listener::bind(LOCAL).unwrap();
    c.connect("ana", ana.port()).unwrap();
    // Fill the disk.
    let filler = disk.path.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    // Writes fail with "any other error", and nothing is taken for done.
    let mut refused = Vec::new();
    for i in 0..2_000 {
        let alias = format!("u{i:04}");
        match c.register(format!("Full Name {i:04} {}", "x".repeat(200)), &alias, "01/01/2000").unwrap() {
            RegisterReply::Ok => {}
            RegisterReply::Error => {
                refused.push(alias);
                if refused.len() == 3 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused.len(), 3, "the disk never filled");
    // The console says FAIL for what the client was refused, never OK.
    let first_refused = format!("s> REGISTER {} FAIL", refused[0]);
    loop {
        let line = server.line();
        assert_ne!(line, format!("s> REGISTER {} OK", refused[0]), "the console claimed a refused REGISTER");
        if line == first_refused {
            break;
        }
    }
    // Reads go on.
    assert_eq!(c.connected_users(Some(b"ana")).unwrap(), ConnectedUsersReply::Ok { users: vec!["ana".into()] });
    // Space comes back: the server recovers by itself and takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    loop {
        if c.register("late", "late", "01/01/2000").unwrap() == RegisterReply::Ok {
            break;
        }
        assert!(start.elapsed() < LIMIT, "the server never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.send("late", "ana", "after recovery").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(
        ana.recv_timeout(LIMIT).unwrap(),
        Push::Message { sender: "late".into(), id: 1, body: "after recovery".into() }
    );
}

/// A listener that accepts and then reads one byte a second.
fn trickle_listener() -> (u16, std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    listener.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stopping.load(Ordering::Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(false).unwrap();
                held.push(s);
            }
            for s in &mut held {
                let mut byte = [0u8; 1];
                s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
                let _ = s.read(&mut byte);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    (port, t, stop)
}

#[test]
fn slow_listeners_time_out_and_free_the_only_delivery_worker() {
    let (_server, port) = serve(&["--max-deliveries", "1", "--delivery-timeout", "1s"]);
    let c = client(port);
    for u in ["ana", "slow", "never", "bob"] {
        c.register(u, u, "01/01/2000").unwrap();
    }
    let (trickle_port, trickle, stop) = trickle_listener();
    let never = std::net::TcpListener::bind((LOCAL, 0)).unwrap(); // accepted by the kernel, never read
    c.connect("slow", trickle_port).unwrap();
    c.connect("never", never.local_addr().unwrap().port()).unwrap();
    let bob = Listener::bind(LOCAL).unwrap();
    c.connect("bob", bob.port()).unwrap();
    c.send("ana", "slow", "x".repeat(200)).unwrap();
    c.send("ana", "never", "y".repeat(200)).unwrap();
    c.send("ana", "bob", "through").unwrap();
    // With one worker, bob's push can only go once the slow ones gave it back.
    assert_eq!(bob.recv_timeout(LIMIT).unwrap(), Push::Message { sender: "ana".into(), id: 3, body: "through".into() });
    let start = Instant::now();
    while c.connected_users(Some(b"bob")).unwrap() != (ConnectedUsersReply::Ok { users: vec!["bob".into()] }) {
        assert!(start.elapsed() < LIMIT, "the slow users were never disconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
}

#[test]
fn two_thousand_idle_connections_and_a_slowloris_do_not_stop_service() {
    let (_server, port) = serve(&["--request-timeout", "3s"]);
    let addr = SocketAddr::new(LOCAL, port);
    let idle: Vec<TcpStream> = (0..2_000).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let slowloris = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for &b in b"REGISTER\0Slow Loris\0loris\001/01/20" {
            if stopping.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let c = client(port);
    assert_eq!(c.register("ana", "ana", "01/01/2000").unwrap(), RegisterReply::Ok);
    assert_eq!(c.register_alias("bob").unwrap(), RegisterReply::Ok);
    let bob = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(c.send("ana", "bob", "hi").unwrap(), SendReply::Ok { id: 1 });
    assert!(matches!(bob.recv_timeout(LIMIT), Ok(Push::Message { .. })));
    stop.store(true, Ordering::Relaxed);
    slowloris.join().unwrap();
    drop(idle);
}

#[test]
fn with_64_file_descriptors_the_server_refuses_what_it_must_and_recovers() {
    let mut server = {
        let script = format!("ulimit -n 64 && exec {} serve -p 0 --bind 127.0.0.1 --memory", common::BIN);
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let first = lines.next().unwrap().unwrap();
        std::thread::spawn(move || for _ in lines {});
        let port: u16 = first.rsplit(':').next().unwrap().parse().unwrap();
        (child, port)
    };
    let port = server.1;
    let addr = SocketAddr::new(LOCAL, port);
    // More connections than the server has descriptors for.
    let flood: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.0.try_wait().unwrap().is_none(), "the server died under the flood");
    drop(flood);
    // Once the load is gone it serves again.
    let c = Client::new("127.0.0.1", port).with_timeout(Duration::from_secs(2));
    let start = Instant::now();
    loop {
        if matches!(c.register_alias("after"), Ok(RegisterReply::Ok)) {
            break;
        }
        assert!(start.elapsed() < LIMIT * 2, "the server never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.register_alias("after").unwrap(), RegisterReply::AliasInUse);
    let _ = server.0.kill();
    let _ = server.0.wait();
}

/// Accepts one connection within the time limit.
fn accept_within(listener: &std::net::TcpListener) -> TcpStream {
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

/// Waits for the server's console line `want`.
fn await_line(server: &mut Proc, want: &str) {
    while server.line() != want {}
}

/// Issue 16, item 18: an acknowledgement owed when the server is killed is pushed after the
/// restart, and an acknowledgement of a message sent by a user who has since left goes to no
/// one, even to a newer user of the same alias.
#[test]
fn kill_9_keeps_the_acknowledgements_owed_and_whom_they_are_owed_to() {
    let dir = tempfile::tempdir().unwrap();
    // ana's listener accepts the acknowledgement's connection and then stalls it.
    let ana = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
    let ana_port = ana.local_addr().unwrap().port();
    let bob = Listener::bind(LOCAL).unwrap();
    let eve = Listener::bind(LOCAL).unwrap();
    let (mut server, port) = durable(dir.path(), &["--delivery-timeout", "60s"]);
    let c = client(port);
    for u in ["ana", "bob", "eve", "dave"] {
        assert_eq!(c.register(u, u, "01/01/2000").unwrap(), RegisterReply::Ok);
    }
    // The first eve sends to dave, who is offline, and leaves; another eve takes the alias.
    assert_eq!(c.send("eve", "dave", "from the first eve").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(c.unregister("eve").unwrap(), cartero::wire::UnregisterReply::Ok);
    assert_eq!(c.register("Another Eve", "eve", "02/02/2002").unwrap(), RegisterReply::Ok);
    assert_eq!(c.connect("eve", eve.port()).unwrap(), ConnectReply::Ok);
    // ana's message reaches bob; its acknowledgement to ana is in flight, stalled.
    assert_eq!(c.connect("ana", ana_port).unwrap(), ConnectReply::Ok);
    assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(c.send("ana", "bob", "hola").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(bob.recv_timeout(LIMIT).unwrap(), Push::Message { sender: "ana".into(), id: 1, body: "hola".into() });
    let stalled = accept_within(&ana);
    // A later write answered 0 means everything before it is on disk.
    assert_eq!(c.register("zed", "zed", "01/01/2000").unwrap(), RegisterReply::Ok);
    server.child.kill().unwrap();
    wait(&mut server.child);
    drop(stalled);

    let (mut server, port) = durable(dir.path(), &[]);
    let c = client(port);
    // The acknowledgement still owed is pushed to ana, at the listener she connected.
    let mut push = accept_within(&ana);
    push.set_read_timeout(Some(LIMIT)).unwrap();
    let mut bytes = Vec::new();
    push.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"SEND MESS ACK\x001\x00");
    drop(push);
    // dave gets the first eve's message; its acknowledgement goes to no one.
    let dave = Listener::bind(LOCAL).unwrap();
    assert_eq!(c.connect("dave", dave.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(
        dave.recv_timeout(LIMIT).unwrap(),
        Push::Message { sender: "eve".into(), id: 1, body: "from the first eve".into() }
    );
    await_line(&mut server, "s> SEND MESSAGE 1 FROM eve TO dave");
    // Had an acknowledgement been queued for the new eve, it would go out before this.
    assert_eq!(c.send("dave", "eve", "hi").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(eve.recv_timeout(LIMIT).unwrap(), Push::Message { sender: "dave".into(), id: 1, body: "hi".into() });
}
