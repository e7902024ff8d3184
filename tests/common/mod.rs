//! Helpers shared by the tests that run the `cartero` binary.
#![allow(dead_code)]

pub mod chat;
pub mod pg;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(10);
pub const BIN: &str = env!("CARGO_BIN_EXE_cartero");

/// A running `cartero` process whose standard output is read line by line.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_program(BIN, args)
    }

    /// Starts another program than `cartero` (a C example, say) the same way.
    pub fn start_program(program: &str, args: &[&str]) -> Proc {
        Proc::start_with_env(program, args, &[])
    }

    /// [`start_program`](Self::start_program) with environment variables set.
    pub fn start_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cartero starts");
        let stdout = child.stdout.take().unwrap();
        // Standard error is read as it comes, so a chatty process never blocks on it.
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut text);
            text
        });
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Console clients print their `c> ` prompt before each line they read, so an
                // answer follows it on the same line; the prompt alone ends the output.
                let line = without_prompts(&line);
                if line.is_empty() {
                    continue;
                }
                if tx.send(line.to_string()).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc { child, stdin, lines, seen: Vec::new(), stderr: Some(stderr) }
    }

    /// The next line of standard output.
    pub fn line(&mut self) -> String {
        let line =
            self.lines.recv_timeout(LIMIT).unwrap_or_else(|_| panic!("no line in time; so far: {:#?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    pub fn expect(&mut self, expected: &[&str]) {
        for want in expected {
            assert_eq!(self.line(), *want, "after {:#?}", self.seen);
        }
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes standard input and waits for the exit; returns the exit code and the rest of
    /// standard output and standard error.
    pub fn finish(self) -> (i32, Vec<String>, String) {
        self.finish_within(LIMIT)
    }

    /// [`finish`](Self::finish) for a process that may take up to `limit` (a benchmark run).
    pub fn finish_within(mut self, limit: Duration) -> (i32, Vec<String>, String) {
        drop(self.stdin.take());
        let code = wait_within(&mut self.child, limit);
        let rest: Vec<String> = self.lines.iter().collect();
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        (code, rest, stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `line` without the console prompts printed before it: messaging's `c> ` is dropped when
/// another prompt, an answer (`s> `) or nothing follows it, so that a client's own
/// `c> FILE TRANSFER OK` line stays; the chat's `> ` always is.
pub fn without_prompts(mut line: &str) -> &str {
    loop {
        if let Some(rest) = line.strip_prefix("c> ") {
            if rest.is_empty() || rest.starts_with("c> ") || rest.starts_with("s> ") || rest == "c>" {
                line = rest;
                continue;
            }
        }
        // The chat console's prompt (SPEC-chat 6), with what was printed after it.
        if let Some(rest) = line.strip_prefix("> ") {
            line = rest;
            continue;
        }
        break;
    }
    if line == "c>" || line == ">" {
        ""
    } else {
        line
    }
}

pub fn wait(child: &mut Child) -> i32 {
    wait_within(child, LIMIT)
}

pub fn wait_within(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(start.elapsed() < limit, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn interrupt(child: &Child) {
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -INT works");
}

/// Starts `cartero serve` on a free loopback port (in memory unless `extra` names
/// `--data`); returns it and the port.
pub fn serve(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["serve", "-p", "0", "--bind", "127.0.0.1"];
    if !extra.contains(&"--data") {
        args.push("--memory");
    }
    args.extend_from_slice(extra);
    let mut server = Proc::start(&args);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    let port = port.parse().unwrap();
    server.expect(&["s>"]);
    (server, port)
}

/// The console session of SPEC 6 that every console client (Rust, C) must print exactly:
/// bob connects in one client, ana in another goes through every outcome and sends bob a
/// message. Leaves both connected, right after ana's CONNECTEDUSERS.
pub fn spec6_session(bob: &mut Proc, ana: &mut Proc) {
    bob.type_line("REGISTER bob");
    bob.type_line("CONNECT bob");
    bob.expect(&["s> REGISTER OK", "s> CONNECT OK"]);
    for (command, expected) in [
        ("REGISTER ana 01/02/2000 Ana Lopez", "s> REGISTER OK"),
        ("register ana", "s> USERNAME IN USE"),
        ("REGISTER bad 31/02/2000", "s> REGISTER FAIL"),
        ("UNREGISTER ghost", "s> USER DOES NOT EXIST"),
        ("CONNECT ghost", "s> CONNECT FAIL, USER DOES NOT EXIST"),
        ("CONNECT bob", "s> USER ALREADY CONNECTED"),
        ("DISCONNECT ghost", "s> DISCONNECT FAIL / USER DOES NOT EXIST"),
        ("DISCONNECT ana", "s> DISCONNECT FAIL / USER NOT CONNECTED"),
        ("CONNECTEDUSERS", "s> CONNECTED USERS FAIL / USER IS NOT CONNECTED"),
        ("CONNECT ana", "s> CONNECT OK"),
        // Refused by the client itself: the statement's line for the same situation.
        ("CONNECT ana", "s> USER ALREADY CONNECTED"),
        ("SEND ghost hola", "s> SEND FAIL / USER DOES NOT EXIST"),
        ("SEND bob hola   bob, que tal", "s> SEND OK - MESSAGE 1"),
    ] {
        ana.type_line(command);
        ana.expect(&[expected]);
    }
    bob.expect(&["s> MESSAGE 1 FROM ana", "   hola   bob, que tal", "   END"]);
    ana.expect(&["s> SEND MESSAGE 1 OK"]);
    ana.type_line("CONNECTEDUSERS");
    ana.expect(&["s> CONNECTED USERS (2 users connected) OK - bob, ana"]);
}

/// The console session of SPEC 8 (course 2025/26 lines) that every console client must
/// print exactly: bob and ana connect, ana attaches a file of `dir` to a message for bob,
/// bob lists the users and fetches the file into `dir`, and every bad GETFILE fails with
/// its line and leaves no file. Leaves both connected.
pub fn spec8_session(bob: &mut Proc, ana: &mut Proc, dir: &std::path::Path) {
    let offered = dir.join("apuntes.txt");
    std::fs::write(&offered, "tema 1\ntema 2\n").unwrap();
    let offered = offered.to_str().unwrap().to_string();
    let copy = dir.join("copia.txt");
    let copy = copy.to_str().unwrap().to_string();
    bob.type_line("REGISTER bob");
    bob.type_line("CONNECT bob");
    bob.expect(&["s> REGISTER OK", "s> CONNECT OK"]);
    ana.type_line("REGISTER ana");
    ana.type_line("CONNECT ana");
    ana.expect(&["s> REGISTER OK", "s> CONNECT OK"]);
    ana.type_line("SEND ghost hola");
    ana.expect(&["s> SEND FAIL, USER DOES NOT EXIST"]);
    ana.type_line("SENDATTACH ghost hola /tmp/x");
    ana.expect(&["s> SENDATTACH FAIL, USER DOES NOT EXIST"]);
    ana.type_line(&format!("SENDATTACH bob \"mira los apuntes\" {offered}"));
    ana.expect(&["s> SENDATTACH OK - MESSAGE 1"]);
    bob.expect(&["s> MESSAGE 1 FROM ana", "   mira los apuntes", "   END", &format!("   FILE {offered}")]);
    ana.expect(&[&format!("s> SENDATTACH MESSAGE 1 {offered} OK")]);
    bob.type_line("USERS");
    bob.expect(&["s> CONNECTED USERS (2 users connected) OK", "bob", "ana"]);
    bob.type_line(&format!("GETFILE ana {offered} {copy}"));
    bob.expect(&["c> FILE TRANSFER OK"]);
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "tema 1\ntema 2\n");
    let refused = dir.join("refused.txt");
    let refused = refused.to_str().unwrap();
    for command in [
        format!("GETFILE ana /etc/passwd {refused}"),
        format!("GETFILE ana ../.. {refused}"),
        format!("GETFILE bob {offered} {refused}"),
    ] {
        bob.type_line(&command);
        bob.expect(&["c> FILE TRANSFER FAILED"]);
    }
    bob.type_line(&format!("GETFILE ghost {offered} {refused}"));
    bob.expect(&["c> FILE TRANSFER FAILED, user not connected."]);
    assert!(!std::path::Path::new(refused).exists());
    ana.type_line("DISCONNECT ghost");
    ana.expect(&["s> DISCONNECT FAIL, USER DOES NOT EXIST"]);
}

/// Where `alias` listens, from a USERS answer of the 2025/26 server at `port` (asked as
/// `alias`, which must be connected).
pub fn listener_port(port: u16, alias: &str) -> u16 {
    let c = cartero::client::blocking::Client::new("127.0.0.1", port).with_timeout(LIMIT);
    match c.users(Some(alias.as_bytes())).unwrap() {
        cartero::wire::UsersReply::Ok { users } => {
            users.iter().find(|u| u.name == alias.as_bytes()).map(|u| u.port).expect("the alias is listed")
        }
        other => panic!("USERS: {other:?}"),
    }
}

/// Whether something accepts connections at `ip:port` (a connection made is closed at once).
pub fn accepts(ip: &str, port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&format!("{ip}:{port}").parse().unwrap(), Duration::from_secs(2)).is_ok()
}

/// A console client (`program` with `pre` before the usual arguments) connects `alias` to
/// the 2025/26 server at `port`: its listener takes connections on 127.0.0.1 and, unless
/// `extra` widens it, not on 127.0.0.2 (another loopback address of this machine).
pub fn listener_binds_the_address_towards_the_server(program: &str, pre: &[&str], port: u16) {
    let p = port.to_string();
    for (alias, extra, on_other) in [("lh1", &[][..], false), ("lh2", &["--listen-host", "0.0.0.0"][..], true)] {
        let mut args: Vec<&str> = pre.to_vec();
        args.extend(["-s", "127.0.0.1", "-p", &p, "--course", "2025"]);
        args.extend(extra);
        let mut client = Proc::start_program(program, &args);
        client.type_line(&format!("REGISTER {alias}"));
        client.type_line(&format!("CONNECT {alias}"));
        client.expect(&["s> REGISTER OK", "s> CONNECT OK"]);
        let listening = listener_port(port, alias);
        assert!(accepts("127.0.0.1", listening), "{alias}");
        assert_eq!(accepts("127.0.0.2", listening), on_other, "{alias} with {extra:?}");
        client.type_line(&format!("DISCONNECT {alias}"));
        client.expect(&["s> DISCONNECT OK"]);
    }
}
