//! One end-to-end suite, run against every server: `cartero serve` and the C server of
//! `examples/c/server.c` (built here on include/cartero.h and libcartero.a, with
//! -Wall -Wextra -Werror and AddressSanitizer/UBSan). Real TCP on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cartero::client::blocking::{Client, Listener};
use cartero::wire::{ConnectReply, DisconnectReply, RegisterReply, SendReply};
use cartero::Push;
use common::{interrupt, spec6_session, Proc, LIMIT};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Rust,
    C,
    /// `cartero serve --store postgres://...` on a throwaway PostgreSQL cluster.
    RustOnPostgres,
}

/// A server under test, with the database it keeps its state in, if any (stopped after it).
struct Running {
    proc: Proc,
    cluster: Option<common::pg::Cluster>,
}

impl std::ops::Deref for Running {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// The directory cargo builds into (this test runs from `<target>/<profile>/deps`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf()
}

/// `libcartero.a`, which `cargo test` does not make by itself: built here, once, by the cargo
/// running this test, in this test's profile.
fn static_library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
            let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            build.args(["build", "--lib", "--locked", "--manifest-path"]).arg(&manifest);
            if profile_dir().file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            // Its output is shown only when it fails, so it does not mix with the tests'.
            let built = build.output().expect("cargo runs");
            assert!(built.status.success(), "the static library builds:\n{}", String::from_utf8_lossy(&built.stderr));
            let lib = profile_dir().join("libcartero.a");
            assert!(lib.exists(), "{} was built", lib.display());
            lib
        })
        .clone()
}

/// Compiles a C program of the repository against the static library, once per test run.
fn compile_c(source: &str, name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = profile_dir().join("c-tests").join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let lib = static_library();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join(source))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-o"])
        .arg(&out)
        .status()
        .expect("a C compiler (cc) runs");
    assert!(status.success(), "{source} compiles cleanly");
    out
}

fn c_server() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| compile_c("examples/c/server.c", "server"))
}

/// Starts a server of `kind` on a free loopback port, in memory (or on its own PostgreSQL
/// cluster); returns it and its port.
fn start(kind: Kind, extra: &[&str]) -> (Running, u16) {
    let cluster = matches!(kind, Kind::RustOnPostgres).then(common::pg::Cluster::start);
    let url = cluster.as_ref().map(|c| c.url()).unwrap_or_default();
    let mut args = vec!["-p", "0", "--bind", "127.0.0.1"];
    match kind {
        Kind::RustOnPostgres => args.extend(["--store", url.as_str()]),
        _ => args.push("--memory"),
    }
    args.extend_from_slice(extra);
    let mut server = match kind {
        Kind::Rust | Kind::RustOnPostgres => {
            let mut a = vec!["serve"];
            a.extend_from_slice(&args);
            Proc::start(&a)
        }
        Kind::C => Proc::start_program(c_server().to_str().unwrap(), &args),
    };
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    let port = port.parse().unwrap();
    server.expect(&["s>"]);
    (Running { proc: server, cluster }, port)
}

/// Stops the server with SIGINT and checks it ended cleanly (and, for C, that the sanitizers
/// found nothing); then its database, if any.
fn stop(server: Running) {
    let Running { proc: server, cluster } = server;
    interrupt(&server.child);
    let (code, _, stderr) = server.finish();
    assert_eq!(code, 0, "clean exit; stderr: {stderr}");
    assert!(!stderr.contains("ERROR: AddressSanitizer") && !stderr.contains("runtime error"), "{stderr}");
    drop(cluster);
}

fn exchange(port: u16, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A listener that hands over the exact bytes of each push connection.
fn raw_listener() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut bytes = Vec::new();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            let _ = s.read_to_end(&mut bytes);
            drop(s);
            if tx.send(bytes).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn client(port: u16) -> Client {
    Client::new("127.0.0.1", port).with_timeout(LIMIT)
}

// ------------------------------------------------------------------------------ scenarios

fn replies_have_their_exact_bytes(kind: Kind) {
    for raw in [false, true] {
        let extra: &[&str] = if raw { &["--codes", "raw"] } else { &[] };
        let (server, p) = start(kind, extra);
        let code = |c: u8| if raw { vec![c] } else { vec![b'0' + c, 0] };
        let with = |c: u8, rest: &[u8]| [code(c), rest.to_vec()].concat();
        assert_eq!(exchange(p, b"REGISTER\0Ana Lopez\0ana\001/02/2000\0", true), code(0));
        assert_eq!(exchange(p, b"REGISTER\0Ana Lopez\0ana\001/02/2000\0", true), code(1));
        assert_eq!(exchange(p, b"REGISTER\0Bob\0bob\031/02/2000\0", true), code(2));
        assert_eq!(exchange(p, b"REGISTER\0Bob\0bob\029-02-2004\0", true), code(0));
        assert_eq!(exchange(p, b"CONNECT\0ghost\01234\0", true), code(1));
        assert_eq!(exchange(p, b"CONNECT\0ana\0notaport\0", true), code(3));
        let (ana_port, ana) = raw_listener();
        let connect = format!("CONNECT\0ana\0{ana_port}\0");
        assert_eq!(exchange(p, connect.as_bytes(), true), code(0));
        assert_eq!(exchange(p, connect.as_bytes(), true), code(2));
        assert_eq!(exchange(p, b"SEND\0bob\0ghost\0x\0", true), code(1));
        assert_eq!(exchange(p, b"SEND\0bob\0ana\0hola\nmundo\0", true), with(0, b"1\0"));
        assert_eq!(ana.recv_timeout(LIMIT).unwrap(), b"SEND MESSAGE\0bob\01\0hola\nmundo\0");
        assert_eq!(exchange(p, b"CONNECTEDUSERS\0ana\0", true), with(0, b"1\0ana\0"));
        assert_eq!(exchange(p, b"CONNECTEDUSERS\0bob\0", true), code(1));
        assert_eq!(exchange(p, b"CONNECTEDUSERS\0ghost\0", true), code(2));
        assert_eq!(exchange(p, b"DISCONNECT\0ghost\0", true), code(1));
        assert_eq!(exchange(p, b"DISCONNECT\0bob\0", true), code(2));
        assert_eq!(exchange(p, b"DISCONNECT\0ana\0", true), code(0));
        assert_eq!(exchange(p, b"UNREGISTER\0ana\0", true), code(0));
        assert_eq!(exchange(p, b"UNREGISTER\0ana\0", true), code(1));
        stop(server);
    }
}

fn pushes_have_their_exact_bytes(kind: Kind) {
    for underscored in [false, true] {
        let extra: &[&str] = if underscored { &["--push-names", "underscored"] } else { &[] };
        let (server, p) = start(kind, extra);
        let c = client(p);
        let (ana_port, ana) = raw_listener();
        let (bob_port, bob) = raw_listener();
        for (alias, port) in [("ana", ana_port), ("bob", bob_port)] {
            assert_eq!(c.register(alias, alias, "01/01/2001").unwrap(), RegisterReply::Ok);
            assert_eq!(c.connect(alias, port).unwrap(), ConnectReply::Ok);
        }
        assert_eq!(c.send("ana", "bob", "hi bob").unwrap(), SendReply::Ok { id: 1 });
        let (msg, ack): (&[u8], &[u8]) = if underscored {
            (b"SEND_MESSAGE\0ana\01\0hi bob\0", b"SEND_MESS_ACK\01\0")
        } else {
            (b"SEND MESSAGE\0ana\01\0hi bob\0", b"SEND MESS ACK\01\0")
        };
        assert_eq!(bob.recv_timeout(LIMIT).unwrap(), msg);
        assert_eq!(ana.recv_timeout(LIMIT).unwrap(), ack);
        stop(server);
    }
}

fn pending_messages_follow_connect_in_order(kind: Kind) {
    let (server, p) = start(kind, &[]);
    let c = client(p);
    c.register("Ana", "ana", "01/01/2001").unwrap();
    c.register("Bob", "bob", "01/01/2001").unwrap();
    for i in 1..=5 {
        assert_eq!(c.send("ana", "bob", format!("m{i}")).unwrap(), SendReply::Ok { id: i });
    }
    let bob = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    for i in 1..=5u32 {
        let push = bob.recv_timeout(LIMIT).unwrap();
        assert_eq!(push, Push::Message { sender: "ana".into(), id: i, body: format!("m{i}").into() });
    }
    stop(server);
}

fn a_listener_that_is_down_keeps_the_message(kind: Kind) {
    let (server, p) = start(kind, &[]);
    let c = client(p);
    c.register("Ana", "ana", "01/01/2001").unwrap();
    c.register("Bob", "bob", "01/01/2001").unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(c.connect("bob", dead).unwrap(), ConnectReply::Ok);
    assert_eq!(c.send("ana", "bob", "are you there").unwrap(), SendReply::Ok { id: 1 });
    let start_at = Instant::now();
    while c.disconnect("bob").unwrap() != DisconnectReply::NotConnected {
        assert!(start_at.elapsed() < LIMIT, "bob was never marked disconnected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bob = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(
        bob.recv_timeout(LIMIT).unwrap(),
        Push::Message { sender: "ana".into(), id: 1, body: "are you there".into() }
    );
    stop(server);
}

fn bad_input_is_answered_as_specified(kind: Kind) {
    let (server, p) = start(kind, &["--request-timeout", "1s"]);
    let c = client(p);
    c.register("Ana", "ana", "01/01/2001").unwrap();
    assert_eq!(exchange(p, b"HELLO\0world\0", true), b"");
    assert_eq!(exchange(p, b"SEND\0ana\0ana\0no nul", true), b"2\0");
    assert_eq!(exchange(p, b"CONNECT\0ana\0", true), b"3\0");
    assert_eq!(exchange(p, b"", true), b"");
    let mut huge = b"SEND\0ana\0ana\0".to_vec();
    huge.extend(vec![b'x'; 100 * 1024]);
    assert_eq!(exchange(p, &huge, false), b"2\0");
    // A stalled request gets its error at the request timeout; others are served meanwhile.
    let mut stall = TcpStream::connect(("127.0.0.1", p)).unwrap();
    stall.write_all(b"DISCONNECT\0an").unwrap();
    assert_eq!(c.register("Bob", "bob", "01/01/2001").unwrap(), RegisterReply::Ok);
    stall.set_read_timeout(Some(LIMIT)).unwrap();
    let mut out = Vec::new();
    let _ = stall.read_to_end(&mut out);
    assert_eq!(out, b"3\0");
    assert_eq!(c.disconnect("ana").unwrap(), DisconnectReply::NotConnected, "no state changed");
    stop(server);
}

fn short_forms_wait_the_grace_period(kind: Kind) {
    let (server, p) = start(kind, &["--grace", "200ms"]);
    let c = client(p);
    c.register("Ana", "ana", "01/01/2001").unwrap();
    let ana = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    c.connect("ana", ana.port()).unwrap();
    assert_eq!(exchange(p, b"CONNECTEDUSERS\0", false), b"0\01\0ana\0");
    assert_eq!(exchange(p, b"REGISTER\0solo\0", false), b"0\0");
    stop(server);
}

fn console_lines_are_exact(kind: Kind) {
    let (mut server, p) = start(kind, &[]);
    let c = client(p);
    c.register("Ana", "ana", "01/01/2000").unwrap();
    server.expect(&["s> REGISTER ana OK"]);
    c.register("Ana", "ana", "01/01/2000").unwrap();
    server.expect(&["s> REGISTER ana FAIL"]);
    c.register_alias("bob").unwrap();
    server.expect(&["s> REGISTER bob OK"]);
    c.send("ana", "bob", "stored").unwrap();
    server.expect(&["s> MESSAGE 1 FROM ana TO bob STORED"]);
    let bob = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    c.connect("bob", bob.port()).unwrap();
    server.expect(&["s> CONNECT bob OK", "s> SEND MESSAGE 1 FROM ana TO bob"]);
    c.connected_users(Some(b"bob")).unwrap();
    server.expect(&["s> CONNECTEDUSERS OK"]);
    c.disconnect("bob").unwrap();
    server.expect(&["s> DISCONNECT bob OK"]);
    c.unregister("bob").unwrap();
    server.expect(&["s> UNREGISTER bob OK"]);
    stop(server);
}

/// Runs each scenario against both servers (and cartero's on PostgreSQL), as tests of their own.
macro_rules! against_both {
    ($($scenario:ident),* $(,)?) => {
        mod rust_server {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::Rust) })*
        }
        mod c_server {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::C) })*
        }
        mod rust_server_on_postgres {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::RustOnPostgres) })*
        }
    };
}

against_both!(
    replies_have_their_exact_bytes,
    pushes_have_their_exact_bytes,
    pending_messages_follow_connect_in_order,
    a_listener_that_is_down_keeps_the_message,
    bad_input_is_answered_as_specified,
    short_forms_wait_the_grace_period,
    console_lines_are_exact,
);

// ----------------------------------------------------------------------------- C programs

#[test]
fn the_c_api_test_passes_under_the_sanitizers() {
    let api = compile_c("tests/c/api_test.c", "api_test");
    let out = Command::new(&api).arg(env!("CARGO_PKG_VERSION")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.trim_end().ends_with("passed, 0 failed"), "{stdout}");
}

fn c_client() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| compile_c("examples/c/client.c", "client"))
}

#[test]
fn the_c_console_client_prints_the_spec_lines() {
    let (server, port) = start(Kind::Rust, &[]);
    let port = port.to_string();
    let args = ["-s", "127.0.0.1", "-p", port.as_str()];
    let program = c_client().to_str().unwrap();
    let (mut bob, mut ana) = (Proc::start_program(program, &args), Proc::start_program(program, &args));
    spec6_session(&mut bob, &mut ana);
    ana.type_line("QUIT");
    ana.type_line("DISCONNECT ana");
    ana.expect(&["s> DISCONNECT OK"]);
    ana.type_line("QUIT");
    let (code, rest, stderr) = ana.finish();
    assert_eq!((code, rest), (0, vec![]), "{stderr}");
    assert!(stderr.contains("QUIT refused: ana is connected"), "{stderr}");
    assert!(!stderr.contains("AddressSanitizer") && !stderr.contains("runtime error"), "{stderr}");
    let (code, rest, stderr) = bob.finish();
    assert_eq!((code, rest), (0, vec!["s> DISCONNECT OK".to_string()]), "{stderr}");
    stop(server);
}

/// SPEC 8 in the C console client: the same session as `cartero client --course 2025`, with
/// a C client and a Rust console client talking to each other's listeners.
#[test]
fn the_c_console_client_prints_the_course_2025_lines() {
    let (server, port) = start(Kind::Rust, &["--course", "2025"]);
    let port = port.to_string();
    let args = ["-s", "127.0.0.1", "-p", port.as_str(), "--course", "2025"];
    let program = c_client().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut bob, mut ana) = (Proc::start_program(program, &args), Proc::start_program(program, &args));
    common::spec8_session(&mut bob, &mut ana, dir.path());
    let (code, _, stderr) = ana.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("AddressSanitizer") && !stderr.contains("runtime error"), "{stderr}");
    let (code, _, stderr) = bob.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("does not offer that file"), "{stderr}");
    assert!(!stderr.contains("AddressSanitizer") && !stderr.contains("runtime error"), "{stderr}");

    // Across implementations: a Rust console fetches from the C client's listener.
    let (server2, port) = start(Kind::Rust, &["--course", "2025"]);
    let port = port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut c_side = Proc::start_program(program, &["-s", "127.0.0.1", "-p", port.as_str(), "--course", "2025"]);
    let mut rust_side = Proc::start(&["client", "-s", "127.0.0.1", "-p", port.as_str(), "--course", "2025"]);
    common::spec8_session(&mut rust_side, &mut c_side, dir.path());
    drop((c_side, rust_side));
    stop(server2);
    stop(server);
}

#[test]
fn the_c_console_client_against_a_server_that_is_down() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut client = Proc::start_program(c_client().to_str().unwrap(), &["-s", "127.0.0.1", "-p", &port]);
    for (command, expected) in
        [("REGISTER ana", "s> REGISTER FAIL"), ("CONNECT ana", "s> CONNECT FAIL"), ("SEND bob hi", "s> SEND FAIL")]
    {
        client.type_line(command);
        client.expect(&[expected]);
    }
    let (code, _, stderr) = client.finish();
    assert_eq!(code, 0);
    assert!(stderr.contains("cannot connect to the server"), "{stderr}");
}

/// The C examples answer `--help` with their usage on standard output and exit 0.
#[test]
fn the_c_examples_print_their_usage_on_help_and_exit_0() {
    for program in [c_client(), c_server()] {
        let out = Command::new(program).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: cartero-"), "{out:?}");
    }
}

/// Piped commands show the `c> ` prompt as at a terminal, in the Rust and C console clients (the Python example's test is in
/// bindings/python/tests/test_examples.py), so that
/// output compared with the course's clients (which use `input("c> ")`) matches.
#[test]
fn console_clients_print_the_prompt_when_stdin_is_a_pipe() {
    let (server, port) = start(Kind::Rust, &[]);
    let port = port.to_string();
    let run = |program: &str, pre: &[&str], alias: &str| {
        let mut child = Command::new(program)
            .args(pre)
            .args(["-s", "127.0.0.1", "-p", port.as_str()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        write!(child.stdin.take().unwrap(), "REGISTER {alias}\nFOO\nQUIT\n").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let want = "c> s> REGISTER OK\nc> c> ";
    assert_eq!(run(common::BIN, &["client"], "rust"), want);
    assert_eq!(run(c_client().to_str().unwrap(), &[], "cee"), want);
    stop(server);
}

#[test]
fn the_c_console_listener_binds_the_address_towards_the_server_or_listen_host() {
    let (server, port) = start(Kind::Rust, &["--course", "2025"]);
    common::listener_binds_the_address_towards_the_server(c_client().to_str().unwrap(), &[], port);
    stop(server);
}
