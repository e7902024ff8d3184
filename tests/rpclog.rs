//! The RPC log of the 2025/26 course (SPEC 8, Part 3) for real: rpcbind started by the test,
//! `cartero rpclog serve` registered with it, a C client that rpcgen builds from
//! `rpc/cartero_log.x` calling it, `cartero serve` with LOG_RPC_IP logging every operation,
//! and a log service that hangs delaying nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cartero::client::blocking::Client;
use cartero::messaging::rpclog;
use cartero::wire::{RegisterReply, SendReply};

mod common;

use common::{interrupt, Proc, BIN, LIMIT};

/// rpcbind on port 111: the machine's if one runs, else one started here (stopped on drop).
struct Rpcbind(Option<Child>);

impl Rpcbind {
    fn start() -> Rpcbind {
        let up =
            || TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], 111)), Duration::from_secs(1)).is_ok();
        if up() {
            return Rpcbind(None);
        }
        let program = ["/usr/sbin/rpcbind", "/sbin/rpcbind"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("rpcbind is installed (scripts/test.sh installs it: apt-get install rpcbind)");
        // -f: in the foreground, so that the test owns the process.
        let child = Command::new(program).arg("-f").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + LIMIT;
        while !up() {
            assert!(Instant::now() < deadline, "rpcbind did not start listening on port 111");
            std::thread::sleep(Duration::from_millis(20));
        }
        Rpcbind(Some(child))
    }
}

impl Drop for Rpcbind {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the log program is registered with rpcbind (or no longer is).
fn wait_registered(registered: bool) {
    let local = "127.0.0.1".parse().unwrap();
    let deadline = Instant::now() + LIMIT;
    while rpclog::find(local).is_ok() != registered {
        assert!(Instant::now() < deadline, "the RPC log's registration never became {registered}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds the course-style C client: rpcgen's stubs from the `.x`, and tests/c/rpclog_client.c.
fn rpcgen_client(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("rpc/cartero_log.x"), dir.join("cartero_log.x")).unwrap();
    for (flag, out) in [("-h", "cartero_log.h"), ("-l", "cartero_log_clnt.c"), ("-c", "cartero_log_xdr.c")] {
        let status = Command::new("rpcgen")
            .args(["-C", flag, "-o", out, "cartero_log.x"])
            .current_dir(dir)
            .status()
            .expect("rpcgen runs (scripts/test.sh installs it: apt-get install rpcsvc-proto)");
        assert!(status.success(), "rpcgen {flag}");
    }
    let exe = dir.join("rpclog_client");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-Wall", "-Wno-unused-variable", "-Wno-cast-function-type", "-I/usr/include/tirpc", "-I"])
        .arg(dir)
        .arg(root.join("tests/c/rpclog_client.c"))
        .arg(dir.join("cartero_log_clnt.c"))
        .arg(dir.join("cartero_log_xdr.c"))
        .arg("-ltirpc")
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("a C compiler (cc) runs");
    assert!(status.success(), "the rpcgen client compiles (apt-get install libtirpc-dev)");
    exe
}

fn serve_logging_to_localhost() -> (Proc, u16) {
    let mut server = Proc::start_with_env(
        BIN,
        &["serve", "-p", "0", "--bind", "127.0.0.1", "--memory", "--course", "2025"],
        &[("LOG_RPC_IP", "127.0.0.1")],
    );
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap().parse().unwrap();
    server.expect(&["s>"]);
    (server, port)
}

#[test]
fn the_rpc_log_takes_calls_from_rpcgen_clients_and_from_the_server_and_never_holds_it_up() {
    let _rpcbind = Rpcbind::start();
    let dir = tempfile::tempdir().unwrap();
    let client = rpcgen_client(dir.path());

    let mut log = Proc::start(&["rpclog", "serve"]);
    wait_registered(true);
    let run = |args: &[&str]| Command::new(&client).args(args).output().unwrap();
    let out = run(&["127.0.0.1", "ana", "SENDATTACH", "/home/ana/apuntes.txt"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    log.expect(&["ana", "SENDATTACH", "/home/ana/apuntes.txt"]);
    assert!(run(&["127.0.0.1", "bob", "USERS"]).status.success());
    log.expect(&["bob", "USERS"]);

    // cartero serve reports every operation it answers.
    let (mut server, port) = serve_logging_to_localhost();
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    assert_eq!(c.register_alias("ana").unwrap(), RegisterReply::Ok);
    assert_eq!(c.send_attach("ana", "ana", "hola", "/tmp/f.txt").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(c.send("ana", "ana", "adios").unwrap(), SendReply::Ok { id: 2 });
    log.expect(&["ana", "REGISTER", "ana", "SENDATTACH", "/tmp/f.txt", "ana", "SEND"]);
    server.expect(&["s> REGISTER ana OK"]);
    interrupt(&server.child);
    let (code, _, stderr) = server.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("RPC log: 3 operations reported, 0 failed"), "{stderr}");

    // The log service goes away cleanly: its mapping goes with it.
    interrupt(&log.child);
    let (code, _, stderr) = log.finish();
    assert_eq!(code, 0, "{stderr}");
    wait_registered(false);

    // A log service that hangs: it accepts and never answers. Every operation is answered
    // all the same, and what could not be logged is counted.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    rpclog::register(hang.local_addr().unwrap().port()).unwrap();
    let (server, port) = serve_logging_to_localhost();
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    for i in 0..20 {
        assert_eq!(c.register_alias(format!("user{i}")).unwrap(), RegisterReply::Ok);
    }
    interrupt(&server.child);
    let (code, _, stderr) = server.finish();
    rpclog::unregister().unwrap();
    drop(hang);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("RPC log: 0 operations reported"), "{stderr}");
}
