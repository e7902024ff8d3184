//! `cartero check` against `cartero serve` in every wire setting, and against deliberately
//! broken servers (a small fake here, with one fault each): it names the failed clause and
//! finishes in bounded time. Also `cartero trace` in front of a server.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cartero::engine::{is_valid_birth_date, parse_port};
use cartero::wire::{Push, PushNames, Reply, Request, RequestDecoder};
use cartero::WireSettings;
use common::{serve, BIN};
use tokio_util::codec::Decoder;

/// Runs `cartero check server` and returns its exit code, its lines and how long it took.
fn check(port: u16, extra: &[&str]) -> (i32, Vec<String>, Duration) {
    let started = Instant::now();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["check", "server", addr.as_str()];
    args.extend_from_slice(extra);
    let out = Command::new(BIN).args(&args).output().expect("cartero check runs");
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    (out.status.code().unwrap_or(-1), lines, started.elapsed())
}

fn failed(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("FAIL"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_checker_passes_cartero_serve_in_every_wire_setting() {
    for (codes, names) in [("ascii", "spaced"), ("ascii", "underscored"), ("raw", "spaced"), ("raw", "underscored")] {
        let (_server, port) = serve(&["--codes", codes, "--push-names", names]);
        let (code, lines, _) = check(port, &["--codes", codes, "--push-names", names]);
        assert_eq!(code, 0, "{lines:#?}");
        let summary = lines.last().unwrap();
        assert!(summary.starts_with("check: ") && summary.ends_with(" passed, 0 failed"), "{summary}");
        for clause in ["A1", "A4", "A5", "A6", "A7", "A8", "A9"] {
            assert!(lines.iter().any(|l| l.starts_with(&format!("PASS {clause} "))), "{clause}: {lines:#?}");
        }
        assert!(!lines.iter().any(|l| l.starts_with("SKIP")), "{lines:#?}");
        let (code, lines, _) = check(port, &["--auto"]);
        assert_eq!(code, 0, "{lines:#?}");
        assert_eq!(lines[0], format!("detected: result codes {codes}, push names {names}"));
    }
    let (_server, port) = serve(&["--course", "2025"]);
    let (code, lines, _) = check(port, &["--auto"]);
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines[0], "detected: result codes raw, push names spaced");
}

#[test]
fn a_raw_code_where_ascii_is_expected_fails_with_the_cause_and_json_says_so() {
    let (_server, port) = serve(&["--codes", "raw"]);
    let (code, lines, _) = check(port, &[]);
    assert_eq!(code, 1);
    let r1 = lines.iter().find(|l| l.starts_with("FAIL R1")).expect("R1 fails");
    assert!(r1.contains("result code in raw encoding, not ascii"), "{r1}");
    let (code, json, _) = check(port, &["--json"]);
    assert_eq!(code, 1);
    assert_eq!(json.len(), 1);
    assert!(json[0].starts_with("{\"server\":\"127.0.0.1:") && json[0].contains("\"clause\":\"R1\""), "{}", json[0]);
    assert!(json[0].contains("\"passed\":") && !json[0].contains("\"failed\":0"), "{}", json[0]);
}

// --------------------------------------------------------------------- a server with faults

#[derive(Clone, Copy, Default)]
struct Faults {
    ids_per_recipient: bool,
    no_ack: bool,
    crash_on_empty_connection: bool,
    never_answer: bool,
    /// SEND's id as 4 big-endian bytes after the code, as one public C server does.
    binary_ids: bool,
    /// SEND from a sender that is not connected answers 2, as some public servers do.
    send_needs_connected_sender: bool,
    /// DISCONNECT, SEND and UNREGISTER from any IP.
    no_ip_rules: bool,
    /// A refused push is not retried.
    no_retry: bool,
    /// UNREGISTER keeps the user's pending messages for the next user of the alias.
    keeps_mail: bool,
    /// CONNECT accepts port 0 (and the user is connected at it).
    accepts_port_zero: bool,
    /// Pending messages are pushed before the CONNECT reply is written.
    pushes_before_reply: bool,
    /// One delivery at a time for the whole server: a slow listener holds up everyone.
    serial_deliveries: bool,
    /// CONNECTEDUSERS reads the operation alone, answers by the requester's IP and closes.
    connectedusers_reads_operation_only: bool,
    /// A push that fails loses its message.
    loses_failed_pushes: bool,
}

/// Held during every delivery by the serial_deliveries fault.
static SERIAL: Mutex<()> = Mutex::new(());

/// Pending messages: sender, id, body.
type Pending = VecDeque<(Vec<u8>, u32, Vec<u8>)>;

#[derive(Default)]
struct User {
    listener: Option<SocketAddr>,
    last_id: u32,
    pending: Pending,
}

#[derive(Default)]
struct State {
    users: HashMap<Vec<u8>, User>,
    /// Pending messages of unregistered users (the keeps_mail fault).
    kept: HashMap<Vec<u8>, Pending>,
    connected: Vec<Vec<u8>>,
}

fn push_to(addr: SocketAddr, push: &Push, faults: Faults) -> bool {
    // A refused push is retried for 2 s (SPEC 2.3: the listener may start after the reply).
    let until = Instant::now() + if faults.no_retry { Duration::ZERO } else { Duration::from_secs(2) };
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let ok = push.to_bytes(PushNames::Spaced).map(|b| s.write_all(&b).is_ok()).unwrap_or(false);
    let _ = s.shutdown(Shutdown::Write);
    ok && s.read_to_end(&mut Vec::new()).is_ok()
}

/// Pushes what `to` has pending, oldest first, with acknowledgements unless faulty. A push
/// that fails leaves its message pending and the user disconnected (SPEC 3).
fn deliver(state: &Mutex<State>, to: &[u8], faults: Faults) {
    let _serial = faults.serial_deliveries.then(|| SERIAL.lock().unwrap_or_else(|e| e.into_inner()));
    loop {
        let (addr, next) = {
            let mut st = state.lock().unwrap();
            let Some(user) = st.users.get_mut(to) else { return };
            let Some(addr) = user.listener else { return };
            let Some(next) = user.pending.pop_front() else { return };
            (addr, next)
        };
        let (sender, id, body) = next;
        if !push_to(addr, &Push::Message { sender: sender.clone().into(), id, body: body.clone().into() }, faults) {
            let mut st = state.lock().unwrap();
            if let Some(user) = st.users.get_mut(to) {
                user.listener = None;
                if !faults.loses_failed_pushes {
                    user.pending.push_front((sender, id, body));
                }
            }
            st.connected.retain(|a| a[..] != to[..]);
            return;
        }
        let ack_to = state.lock().unwrap().users.get(&sender).and_then(|u| u.listener);
        if let (Some(addr), false) = (ack_to, faults.no_ack) {
            push_to(addr, &Push::Ack { id }, faults);
        }
    }
}

fn answer(state: &Mutex<State>, peer: IpAddr, request: &Request, faults: Faults) -> (Reply, Option<Vec<u8>>) {
    use cartero::wire::{
        ConnectReply as C, ConnectedUsersReply as L, DisconnectReply as D, RegisterReply as R, SendReply as S,
        UnregisterReply as U,
    };
    let mut st = state.lock().unwrap();
    match request {
        Request::Register { alias, birth_date, .. } => {
            if st.users.contains_key(&alias[..]) {
                return (Reply::Register(R::AliasInUse), None);
            }
            if birth_date.as_ref().is_some_and(|d| !is_valid_birth_date(d)) {
                return (Reply::Register(R::Error), None);
            }
            let pending = st.kept.remove(&alias[..]).unwrap_or_default();
            st.users.insert(alias.to_vec(), User { pending, ..User::default() });
            (Reply::Register(R::Ok), None)
        }
        Request::Unregister { alias }
            if st
                .users
                .get(&alias[..])
                .and_then(|u| u.listener)
                .is_some_and(|l| l.ip() != peer && !faults.no_ip_rules) =>
        {
            (Reply::Unregister(U::Error), None)
        }
        Request::Unregister { alias } => match st.users.remove(&alias[..]) {
            Some(user) => {
                if faults.keeps_mail {
                    st.kept.insert(alias.to_vec(), user.pending);
                }
                st.connected.retain(|a| a[..] != alias[..]);
                (Reply::Unregister(U::Ok), None)
            }
            None => (Reply::Unregister(U::NoSuchUser), None),
        },
        Request::Connect { alias, port } => match (st.users.get_mut(&alias[..]), parse_port(port)) {
            (None, _) => (Reply::Connect(C::NoSuchUser), None),
            (Some(u), _) if u.listener.is_some() => (Reply::Connect(C::AlreadyConnected), None),
            (Some(u), None) if faults.accepts_port_zero && &port[..] == b"0" => {
                u.listener = Some(SocketAddr::new(peer, 0));
                st.connected.push(alias.to_vec());
                (Reply::Connect(C::Ok), None)
            }
            (Some(_), None) => (Reply::Connect(C::Error), None),
            (Some(u), Some(port)) => {
                u.listener = Some(SocketAddr::new(peer, port));
                st.connected.push(alias.to_vec());
                (Reply::Connect(C::Ok), Some(alias.to_vec()))
            }
        },
        Request::Disconnect { alias } => match st.users.get_mut(&alias[..]) {
            None => (Reply::Disconnect(D::NoSuchUser), None),
            Some(u) if u.listener.is_none() => (Reply::Disconnect(D::NotConnected), None),
            Some(u) if u.listener.is_some_and(|l| l.ip() != peer && !faults.no_ip_rules) => {
                (Reply::Disconnect(D::Error), None)
            }
            Some(u) => {
                u.listener = None;
                st.connected.retain(|a| a[..] != alias[..]);
                (Reply::Disconnect(D::Ok), None)
            }
        },
        Request::Send { sender, recipient, body } => {
            if !st.users.contains_key(&sender[..]) || !st.users.contains_key(&recipient[..]) {
                return (Reply::Send(S::NoSuchUser), None);
            }
            let sender_at = st.users[&sender[..]].listener;
            if faults.send_needs_connected_sender && sender_at.is_none()
                || sender_at.is_some_and(|l| l.ip() != peer && !faults.no_ip_rules)
            {
                return (Reply::Send(S::Error), None);
            }
            // The fault: count per recipient instead of per sender.
            let counter = if faults.ids_per_recipient { &recipient[..] } else { &sender[..] };
            let id = {
                let u = st.users.get_mut(counter).unwrap();
                u.last_id += 1;
                u.last_id
            };
            st.users.get_mut(&recipient[..]).unwrap().pending.push_back((sender.to_vec(), id, body.to_vec()));
            (Reply::Send(S::Ok { id }), Some(recipient.to_vec()))
        }
        Request::ConnectedUsers { alias } => match alias.as_ref().map(|a| st.users.get(&a[..])) {
            Some(None) => (Reply::ConnectedUsers(L::Error), None),
            Some(Some(u)) if u.listener.is_none() => (Reply::ConnectedUsers(L::NotConnected), None),
            _ => {
                (Reply::ConnectedUsers(L::Ok { users: st.connected.iter().map(|a| a.clone().into()).collect() }), None)
            }
        },
        // A 2022/23 server: the operations of SPEC 8 are not among its own.
        Request::Users { .. } | Request::SendAttach { .. } => (Reply::failure(request.operation()), None),
    }
}

/// Starts the fake server; it stops by itself after a while.
fn fake_server(faults: Faults) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    let crashed = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until && !crashed.load(Ordering::Relaxed) {
            let Ok((mut stream, peer)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let (state, crashed) = (state.clone(), crashed.clone());
            std::thread::spawn(move || {
                stream.set_nonblocking(false).unwrap();
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                let mut bytes = Vec::new();
                if faults.connectedusers_reads_operation_only {
                    // Reads up to the operation's NUL, one byte at a time, as a C server would.
                    let mut byte = [0u8; 1];
                    while let Ok(1) = stream.read(&mut byte) {
                        bytes.push(byte[0]);
                        if byte[0] == 0 {
                            break;
                        }
                    }
                    if bytes == b"CONNECTEDUSERS\0" {
                        let (reply, _) = answer(&state, peer.ip(), &Request::ConnectedUsers { alias: None }, faults);
                        let mut out = BytesMut::new();
                        reply.encode(WireSettings::default().codes, &mut out);
                        let _ = stream.write_all(&out);
                        return; // closed with the alias unread
                    }
                }
                let _ = (&mut stream).take(8192).read_to_end(&mut bytes);
                if bytes.is_empty() && faults.crash_on_empty_connection {
                    crashed.store(true, Ordering::Relaxed); // the "crash": it stops accepting
                    return;
                }
                if faults.never_answer {
                    std::thread::sleep(Duration::from_secs(10));
                    return;
                }
                let mut buf = BytesMut::from(&bytes[..]);
                let mut decoder = RequestDecoder::new();
                let (reply, then_deliver) = match decoder.decode_eof(&mut buf) {
                    // A 2022/23 server: SPEC 8's operations are unknown, closed unanswered.
                    Ok(Some(Request::Users { .. } | Request::SendAttach { .. })) => return,
                    Ok(Some(request)) => answer(&state, peer.ip(), &request, faults),
                    _ => match decoder.operation() {
                        Some(op) => (Reply::failure(op), None),
                        None => return,
                    },
                };
                let mut out = BytesMut::new();
                reply.encode(WireSettings::default().codes, &mut out);
                if let (true, Reply::Send(cartero::wire::SendReply::Ok { id })) = (faults.binary_ids, &reply) {
                    out = BytesMut::from(&[&b"0\0"[..], &id.to_be_bytes()].concat()[..]);
                }
                if let (true, Some(to)) = (faults.pushes_before_reply, &then_deliver) {
                    deliver(&state, to, faults);
                }
                let _ = stream.write_all(&out);
                drop(stream);
                if let Some(to) = then_deliver {
                    deliver(&state, &to, faults);
                }
            });
        }
    });
    port
}

#[test]
fn a_faithful_fake_passes_so_the_faults_below_are_what_fails() {
    let port = fake_server(Faults::default());
    let (code, lines, _) = check(port, &[]);
    assert_eq!(failed(&lines), Vec::<String>::new(), "{lines:#?}");
    assert_eq!(code, 0);
    // A 2022/23 server: the clauses of the 2025/26 course are skipped, in one line.
    let skips: Vec<&String> = lines.iter().filter(|l| l.starts_with("SKIP")).collect();
    assert_eq!(skips.len(), 1, "{lines:#?}");
    assert!(skips[0].contains("does not answer USERS"), "{}", skips[0]);
}

#[test]
fn ids_per_recipient_fail_the_per_sender_clause() {
    let port = fake_server(Faults { ids_per_recipient: true, ..Faults::default() });
    let (code, lines, _) = check(port, &[]);
    assert_eq!(code, 1);
    let failed = failed(&lines);
    assert!(failed.contains(&"S5".to_string()), "{lines:#?}");
    let s5 = lines.iter().find(|l| l.starts_with("FAIL S5")).unwrap();
    assert!(s5.contains("expected: 0, id 1") && s5.contains("got: 0, id 3"), "{s5}");
}

#[test]
fn a_server_without_acknowledgements_fails_the_ack_clauses() {
    let port = fake_server(Faults { no_ack: true, ..Faults::default() });
    let (code, lines, elapsed) = check(port, &["--timeout", "1s"]);
    assert_eq!(code, 1);
    let failed = failed(&lines);
    for clause in ["P5", "P6", "P9"] {
        assert!(failed.contains(&clause.to_string()), "{clause}: {lines:#?}");
    }
    assert!(!failed.contains(&"P2".to_string()), "messages still arrive: {lines:#?}");
    assert!(elapsed < Duration::from_secs(60));
}

#[test]
fn a_server_that_crashes_on_an_empty_connection_fails_b4_and_the_checker_finishes() {
    let port = fake_server(Faults { crash_on_empty_connection: true, ..Faults::default() });
    let (code, lines, elapsed) = check(port, &["--timeout", "1s"]);
    assert_eq!(code, 1);
    let b4 = lines.iter().find(|l| l.contains(" B4 ")).expect("B4 reported");
    assert!(b4.starts_with("FAIL") && b4.contains("cannot connect"), "{b4}");
    assert!(elapsed < Duration::from_secs(60));
}

#[test]
fn a_binary_send_id_is_read_by_the_client_and_named_by_the_checker() {
    let port = fake_server(Faults { binary_ids: true, ..Faults::default() });
    let mut client = common::Proc::start(&["client", "-s", "127.0.0.1", "-p", &port.to_string()]);
    client.type_line("REGISTER ana");
    client.type_line("SEND ana hola");
    client.expect(&["s> REGISTER OK", "s> SEND OK - MESSAGE 1"]);
    drop(client);
    let (code, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(code, 1);
    let s3 = lines.iter().find(|l| l.contains(" S3 ")).expect("S3 reported");
    assert!(s3.starts_with("FAIL") && s3.contains("4 binary bytes (big-endian)"), "{s3}");
}

#[test]
fn a_server_that_never_answers_stops_the_check_early_with_one_summary_line() {
    let port = fake_server(Faults { never_answer: true, ..Faults::default() });
    let (code, lines, _) = check(port, &["--timeout", "300ms"]);
    assert_eq!(code, 1);
    // R1 and R3 fail; R2's set-up (a REGISTER of its own) is the second request unanswered.
    assert_eq!(failed(&lines), ["R1", "R3"], "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("SKIP R2: not run, its set-up failed: no reply")), "{lines:#?}");
    let summary = lines.last().unwrap();
    assert_eq!(
        summary,
        "check: stopped after R3: the server stopped answering (3 requests in a row got no answer); 0 passed, 2 failed"
    );
}

#[test]
fn auto_detection_works_with_a_server_that_wants_a_connected_sender() {
    let port = fake_server(Faults { send_needs_connected_sender: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--auto", "--timeout", "1s"]);
    assert_eq!(lines[0], "detected: result codes ascii, push names spaced", "{lines:#?}");
}

/// Every clause is deterministic: three runs against the same faulty server fail the same
/// clauses.
#[test]
fn three_runs_give_the_same_result() {
    let port = fake_server(Faults { ids_per_recipient: true, ..Faults::default() });
    let runs: Vec<Vec<String>> = (0..3).map(|_| failed(&check(port, &["--timeout", "1s"]).1)).collect();
    assert!(!runs[0].is_empty());
    assert!(runs.iter().all(|r| r == &runs[0]), "{runs:#?}");
}

#[test]
fn the_ip_rules_are_checked_from_another_loopback_address() {
    let (_server, port) = serve(&[]);
    let (code, lines, _) = check(port, &[]);
    assert_eq!(code, 0, "{lines:#?}");
    for clause in ["I1", "I2", "I3"] {
        let line = lines.iter().find(|l| l.contains(&format!(" {clause} "))).expect(clause);
        assert!(line.starts_with("PASS") && line.contains("(from 127.0.0.2)"), "{line}");
    }
    for clause in ["P13", "P14", "P15", "P16", "B5"] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("PASS {clause} "))), "{clause}: {lines:#?}");
    }
    // A server without the IP rules fails them.
    let port = fake_server(Faults { no_ip_rules: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(failed(&lines), ["I1", "I2", "I3"], "{lines:#?}");
}

#[test]
fn a_server_that_pushes_once_fails_the_late_listener_clause_alone() {
    let port = fake_server(Faults { no_retry: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(failed(&lines), ["P13"], "{lines:#?}");
}

#[test]
fn mail_kept_after_unregister_fails_u6_without_waiting_on_a_clock() {
    let port = fake_server(Faults { keeps_mail: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(failed(&lines), ["U6"], "{lines:#?}");
    let u6 = lines.iter().find(|l| l.starts_with("FAIL U6")).unwrap();
    assert!(u6.contains("\"never to be seen\""), "{u6}");
}

#[test]
fn a_server_that_is_down_is_said_once_first() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(BIN).args(["check", "server", &format!("127.0.0.1:{port}")]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("cartero: cannot connect to the server at 127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn the_overall_deadline_ends_the_run_and_names_the_last_clause() {
    // No acknowledgements: every ack clause waits its whole timeout, so 2 s end the run early.
    let port = fake_server(Faults { no_ack: true, ..Faults::default() });
    let (code, lines, _) = check(port, &["--timeout", "1s", "--deadline", "2s"]);
    assert_eq!(code, 1);
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with("check: stopped after ") && summary.contains("the overall deadline passed"),
        "{summary}"
    );
    let (_, json, _) = check(port, &["--timeout", "1s", "--deadline", "2s", "--json"]);
    assert!(json[0].contains("\"stopped\":{\"after\":"), "{}", json[0]);
}

#[test]
fn trace_shows_each_exchange_and_flags_deviations() {
    let (_server, port) = serve(&["--codes", "raw", "--push-names", "underscored"]);
    let listen = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let to = format!("127.0.0.1:{port}");
    let listen_s = listen.to_string();
    let mut trace = common::Proc::start(&[
        "trace",
        "--listen",
        &listen_s,
        "--to",
        &to,
        "--listener-proxy",
        "--max-connections",
        "5",
    ]);
    let first = trace.line();
    assert!(first.starts_with("tracing 127.0.0.1:"), "{first}");
    let c = cartero::client::blocking::Client::new("127.0.0.1", listen).with_timeout(Duration::from_secs(5));
    c.register("Ana", "ana", "01/01/2000").unwrap();
    let ana = cartero::client::blocking::Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    c.connect("ana", ana.port()).unwrap();
    c.send("ana", "ana", "hola").unwrap();
    assert!(matches!(ana.recv_timeout(Duration::from_secs(5)), Ok(Push::Message { .. })), "pushes pass through");
    // An unknown operation and a request with no end.
    let mut raw = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    raw.write_all(b"HELLO\0").unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    let _ = raw.read_to_end(&mut Vec::new());
    let mut raw = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    raw.write_all(b"UNREGISTER\0ana").unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    let _ = raw.read_to_end(&mut Vec::new());
    let (code, rest, _) = trace.finish();
    assert_eq!(code, 0);
    let all = rest.join("\n");
    assert!(
        all.contains(
            "REGISTER \"Ana\" \"ana\" \"01/01/2000\" => 0  [SPEC: result code in raw encoding, expected ascii]"
        ),
        "{all}"
    );
    assert!(all.contains("SEND \"ana\" \"ana\" \"hola\" => 0, id 1"), "{all}");
    assert!(
        all.contains(
            "push to \"ana\": SEND_MESSAGE \"ana\" 1 \"hola\"  [SPEC: push spelled underscored, expected spaced]"
        ),
        "{all}"
    );
    assert!(all.contains("(unknown operation \"HELLO\") => (no reply)"), "{all}");
    assert!(
        all.contains("(incomplete UNREGISTER request) => 2  [SPEC: connection ended before the message was complete]"),
        "{all}"
    );
    // The push's line comes after the line of the SEND that caused it.
    let send_at = rest.iter().position(|l| l.contains("SEND \"ana\" \"ana\" \"hola\"")).unwrap();
    let push_at = rest.iter().position(|l| l.contains("push to \"ana\": SEND_MESSAGE")).unwrap();
    assert!(send_at < push_at, "{all}");
}

/// Answers wrong whatever the state are flagged: a 300-byte field, port 99999 and 31/02
/// accepted (by a fake that accepts everything).
#[test]
fn trace_names_bad_requests_and_flags_what_must_never_be_accepted() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = fake.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in fake.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = (&mut s).take(4096).read_to_end(&mut Vec::new());
            let _ = s.write_all(b"0\0");
        }
    });
    let listen = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (to, listen_s) = (format!("127.0.0.1:{port}"), listen.to_string());
    let mut trace = common::Proc::start(&["trace", "--listen", &listen_s, "--to", &to, "--max-connections", "4"]);
    assert!(trace.line().starts_with("tracing "));
    let long = "x".repeat(300);
    let requests: [&[u8]; 4] = [
        b"BONJOUR\0",
        &[b"REGISTER\0Ana\0".as_slice(), long.as_bytes(), b"\001/01/2000\0"].concat(),
        b"CONNECT\0ana\099999\0",
        b"REGISTER\0Ana\0ana\031/02/2000\0",
    ];
    for bytes in requests {
        let mut raw = TcpStream::connect(("127.0.0.1", listen)).unwrap();
        raw.write_all(bytes).unwrap();
        raw.shutdown(Shutdown::Write).unwrap();
        let _ = raw.read_to_end(&mut Vec::new());
    }
    let (code, rest, _) = trace.finish();
    assert_eq!(code, 0);
    let all = rest.join("\n");
    assert!(all.contains("(unknown operation \"BONJOUR\")"), "{all}");
    assert!(all.contains("(REGISTER request not valid: ") && all.contains("was accepted]"), "{all}");
    assert!(all.contains("[SPEC: port \"99999\" is not 1..65535 but was accepted]"), "{all}");
    assert!(all.contains("[SPEC: birth date \"31/02/2000\" is not a real date but was accepted]"), "{all}");
}

#[test]
fn trace_decodes_the_course_2025_operations_pushes_and_get_file() {
    let (_server, port) = serve(&["--course", "2025"]);
    let listen = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (to, listen_s) = (format!("127.0.0.1:{port}"), listen.to_string());
    let mut trace = common::Proc::start(&[
        "trace",
        "--listen",
        &listen_s,
        "--to",
        &to,
        "--listener-proxy",
        "--codes",
        "raw",
        "--max-connections",
        "5",
    ]);
    assert!(trace.line().starts_with("tracing 127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("apuntes.txt");
    std::fs::write(&notes, b"tema 1").unwrap();
    let notes = notes.to_str().unwrap();
    let c = cartero::client::blocking::Client::new("127.0.0.1", listen).with_timeout(Duration::from_secs(5));
    c.register_alias("ana").unwrap();
    let offers = cartero::messaging::files::Offers::new();
    let ana = cartero::client::blocking::Listener::bind_offering("127.0.0.1".parse().unwrap(), offers.clone()).unwrap();
    c.connect("ana", ana.port()).unwrap();
    c.send_attach("ana", "ana", "mira", notes).unwrap();
    assert!(offers.offer(notes.as_bytes()));
    assert!(matches!(ana.recv_timeout(Duration::from_secs(5)), Ok(Push::AttachMessage { .. })));
    assert!(matches!(ana.recv_timeout(Duration::from_secs(5)), Ok(Push::AttachAck { .. })));
    let cartero::wire::UsersReply::Ok { users } = c.users(Some(b"ana")).unwrap() else { panic!("USERS") };
    // The address the server lists is the tracer's stand-in listener: GETFILE goes through it.
    let addr = std::net::SocketAddr::new(users[0].ip, users[0].port);
    let copy = dir.path().join("copia.txt");
    let form = cartero::messaging::files::AnswerForm::Auto;
    assert_eq!(cartero::messaging::files::get_file(addr, b"bob", notes.as_bytes(), &copy, form).unwrap(), 6);
    c.users(Some(b"nobody")).unwrap();
    let (code, rest, _) = trace.finish();
    assert_eq!(code, 0);
    let all = rest.join("\n");
    assert!(all.contains(&format!("SENDATTACH \"ana\" \"ana\" \"mira\" \"{notes}\" => 0, id 1")), "{all}");
    assert!(all.contains(&format!("push to \"ana\": SEND MESSAGE ATTACH \"ana\" 1 \"mira\" \"{notes}\"")), "{all}");
    assert!(all.contains(&format!("push to \"ana\": SEND MESS ATTACH ACK 1 \"{notes}\"")), "{all}");
    assert!(all.contains("USERS \"ana\" => 0, 1 users: ana :: 127.0.0.1 :: "), "{all}");
    assert!(all.contains(&format!("get file from \"ana\": \"GET FILE\" \"bob\" \"{notes}\" => OK, 6 bytes")), "{all}");
    assert!(all.contains("USERS \"nobody\" => 2"), "{all}");
    assert!(!all.contains("[SPEC:"), "no deviation: {all}");
}

/// Issue 16 item 11: each group of clauses sets up its own users, so one fault fails its own
/// clause and nothing after it.
#[test]
fn a_port_zero_accepted_fails_c2_alone() {
    let port = fake_server(Faults { accepts_port_zero: true, ..Faults::default() });
    let (code, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(code, 1);
    assert_eq!(failed(&lines), ["C2"], "{lines:#?}");
}

#[test]
fn a_push_before_the_connect_reply_fails_p14_the_same_in_three_runs() {
    let port = fake_server(Faults { pushes_before_reply: true, ..Faults::default() });
    // The default 3 s step timeout, longer than this server's own waits (2 s of retries, 1 s
    // for a listener's close), so the outcome never hangs on which timer fires first.
    let runs: Vec<Vec<String>> = (0..3).map(|_| failed(&check(port, &[]).1)).collect();
    // P13 and P16 too: this server retries a refused push for 2 s before it replies, so a
    // client that listens only after the reply never gets it; and it holds the SEND's reply
    // while a slow listener holds its push.
    for run in &runs {
        assert_eq!(run, &["P13", "P14", "P16"], "{runs:#?}");
    }
}

#[test]
fn a_server_that_delivers_one_at_a_time_fails_the_slow_listener_clause_alone() {
    let port = fake_server(Faults { serial_deliveries: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--timeout", "2s"]);
    assert_eq!(failed(&lines), ["P16"], "{lines:#?}");
}

#[test]
fn a_lost_failed_push_fails_the_dead_listener_clause_alone() {
    let port = fake_server(Faults { loses_failed_pushes: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(failed(&lines), ["P15"], "{lines:#?}");
}

/// Issue 16 item 12: a server that reads CONNECTEDUSERS alone (the statement's form) and
/// closes over the alias it did not read is still serving, and its list still counts; only
/// the clause that needs the alias read fails, and says why.
#[test]
fn connectedusers_read_without_its_alias_is_not_taken_for_a_reset() {
    let port = fake_server(Faults { connectedusers_reads_operation_only: true, ..Faults::default() });
    let (_, lines, _) = check(port, &["--timeout", "1s"]);
    assert_eq!(failed(&lines), ["L2"], "{lines:#?}");
    let l2 = lines.iter().find(|l| l.starts_with("FAIL L2")).unwrap();
    assert!(l2.contains("the alias after the operation was not read"), "{l2}");
}

#[test]
fn a_listener_address_that_cannot_be_used_is_said_once_and_nothing_runs() {
    let (_server, port) = serve(&[]);
    let out = Command::new(BIN)
        .args(["check", "server", &format!("127.0.0.1:{port}"), "--listen-host", "192.0.2.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("cartero: cannot open a listener on 192.0.2.1: "), "{stderr}");
}
