//! The `cartero` binary as people run it: `cartero serve` and its console lines (SPEC 5),
//! `cartero client` and its output lines (SPEC 6), on 127.0.0.1.

use std::io::Write;
use std::time::Duration;

use cartero::client::blocking::{Client, Listener};
use cartero::wire::ConnectReply;

mod common;

use common::{interrupt, serve, spec6_session, Proc, LIMIT};

#[test]
fn server_console_lines_and_a_clean_sigint() {
    let (mut server, port) = serve(&[]);
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    c.register("Ana", "ana", "01/01/2000").unwrap();
    server.expect(&["s> REGISTER ana OK"]);
    c.register("Ana", "ana", "01/01/2000").unwrap();
    server.expect(&["s> REGISTER ana FAIL"]);
    c.register_alias("bob").unwrap();
    server.expect(&["s> REGISTER bob OK"]);
    c.connect("ghost", 4000).unwrap();
    server.expect(&["s> CONNECT ghost FAIL"]);
    c.send("ana", "bob", "stored").unwrap();
    server.expect(&["s> MESSAGE 1 FROM ana TO bob STORED"]);
    let bob = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(c.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
    server.expect(&["s> CONNECT bob OK", "s> SEND MESSAGE 1 FROM ana TO bob"]);
    c.connected_users(Some(b"bob")).unwrap();
    server.expect(&["s> CONNECTEDUSERS OK"]);
    c.connected_users(Some(b"ana")).unwrap();
    server.expect(&["s> CONNECTEDUSERS FAIL"]);
    c.disconnect("ana").unwrap();
    server.expect(&["s> DISCONNECT ana FAIL"]);
    c.disconnect("bob").unwrap();
    server.expect(&["s> DISCONNECT bob OK"]);
    c.unregister("bob").unwrap();
    server.expect(&["s> UNREGISTER bob OK"]);
    c.unregister("bob").unwrap();
    server.expect(&["s> UNREGISTER bob FAIL"]);

    // A request in progress when SIGINT arrives still gets its answer.
    let mut in_progress = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    in_progress.write_all(b"REGISTER\0Late Comer\0late\0").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    interrupt(&server.child);
    std::thread::sleep(Duration::from_millis(100));
    in_progress.write_all(b"01/01/2000\0").unwrap();
    in_progress.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    use std::io::Read;
    in_progress.set_read_timeout(Some(LIMIT)).unwrap();
    in_progress.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"0\0");
    server.expect(&["s> REGISTER late OK"]);
    let (code, rest, stderr) = server.finish();
    assert_eq!(code, 0, "SIGINT ends the server cleanly; stderr: {stderr}");
    assert!(rest.is_empty(), "nothing more on stdout: {rest:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn server_with_a_taken_port_says_why_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let server = Proc::start(&["serve", "-p", &port, "--bind", "127.0.0.1", "--memory"]);
    let (code, _, stderr) = server.finish();
    assert_eq!(code, 1);
    let line = stderr.lines().find(|l| l.starts_with("cartero:")).expect("an error line");
    assert!(line.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{line}");
    assert_eq!(stderr.lines().count(), 1, "the error alone, no storage line before it: {stderr}");
}

#[test]
fn client_console_lines_for_every_outcome() {
    let (_server, port) = serve(&["--push-names", "underscored", "--codes", "raw"]);
    let port = port.to_string();
    let args = ["client", "-s", "127.0.0.1", "-p", port.as_str()];

    let (mut bob, mut ana) = (Proc::start(&args), Proc::start(&args));
    spec6_session(&mut bob, &mut ana);
    let long = "x".repeat(256);
    ana.type_line(&format!("SEND bob {long}"));
    ana.expect(&["s> SEND FAIL"]);
    ana.type_line("QUIT"); // refused while connected
    ana.type_line("DISCONNECT ana");
    ana.expect(&["s> DISCONNECT OK"]);
    ana.type_line("UNREGISTER ana");
    ana.expect(&["s> UNREGISTER OK"]);
    ana.type_line("QUIT");
    let (code, rest, stderr) = ana.finish();
    assert_eq!((code, rest), (0, vec![]));
    assert!(stderr.contains("QUIT refused: ana is connected"), "{stderr}");
    assert!(stderr.contains("at most 255 fit"), "{stderr}");

    // End of input while connected: bob is disconnected first, then the client exits 0.
    let (code, rest, _) = bob.finish();
    assert_eq!((code, rest), (0, vec!["s> DISCONNECT OK".to_string()]));
}

#[test]
fn client_against_a_server_that_is_down_prints_fail_lines_never_a_backtrace() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut client = Proc::start(&["client", "-s", "127.0.0.1", "-p", &port]);
    for (command, expected) in [
        ("REGISTER ana", "s> REGISTER FAIL"),
        ("UNREGISTER ana", "s> UNREGISTER FAIL"),
        ("CONNECT ana", "s> CONNECT FAIL"),
        ("DISCONNECT ana", "s> DISCONNECT FAIL"),
        ("SEND bob hi", "s> SEND FAIL"),
        ("CONNECTEDUSERS", "s> CONNECTED USERS FAIL"),
    ] {
        client.type_line(command);
        client.expect(&[expected]);
    }
    let (code, _, stderr) = client.finish();
    assert_eq!(code, 0);
    assert!(stderr.contains("cannot reach the server at 127.0.0.1:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn client_reports_unknown_commands_and_usage_on_stderr() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut client = Proc::start(&["client", "-s", "127.0.0.1", "-p", &port]);
    client.type_line("HELLO");
    client.type_line("SEND onlyalias");
    client.type_line("");
    let (code, rest, stderr) = client.finish();
    assert_eq!((code, rest), (0, vec![]));
    assert!(stderr.contains("unknown command \"HELLO\""), "{stderr}");
    assert!(stderr.contains("usage: SEND <alias> <message>"), "{stderr}");
}

#[test]
fn bench_runs_a_small_load_against_both_servers_and_loses_nothing() {
    let bench = Proc::start(&["bench", "--users", "4", "--messages", "60", "--concurrency", "2,8"]);
    let (code, out, stderr) = bench.finish();
    assert_eq!(code, 0, "stdout: {out:#?}\nstderr: {stderr}");
    // One Markdown table at the end, its header naming each column's unit.
    let table: Vec<Vec<&str>> = out
        .iter()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(table[0][2..6], ["messages/s", "pushes/s", "SEND p50 (ms)", "SEND p99 (ms)"], "{out:#?}");
    let rows = &table[1..];
    let cartero: Vec<_> = rows.iter().filter(|r| r[0] == "cartero (memory)").collect();
    let baseline: Vec<_> = rows.iter().filter(|r| r[0] == "baseline").collect();
    assert_eq!((cartero.len(), baseline.len()), (2, 2), "{out:#?}");
    for row in cartero.iter().chain(&baseline) {
        assert_eq!(row[6..9], ["0", "0", "0"], "errors, lost and duplicated: {row:?}");
        assert!(row[2].parse::<f64>().unwrap() > 0.0, "{row:?}");
    }
    assert!(cartero.iter().all(|r| r[9].ends_with("% of baseline")), "{cartero:?}");
    // Off a terminal, no redrawn progress: one line per finished run.
    assert!(!stderr.contains('\r'), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("bench: ") && l.contains(": done in ")).count(), 4, "{stderr}");
}

#[test]
fn help_lists_the_protocols_and_names_the_first_release_aliases() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cartero")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(listed.contains(&"messaging"), "{help}");
    for alias in ["serve", "client", "check", "trace", "bench", "webservice"] {
        assert!(!listed.contains(&alias), "{alias} is an alias, not a protocol: {help}");
    }
    assert!(help.contains("cartero messaging serve, client, check, trace, bench and webservice"), "{help}");
}

#[test]
fn messaging_verbs_work_under_cartero_messaging_as_under_their_aliases() {
    let mut server = Proc::start(&["messaging", "serve", "-p", "0", "--bind", "127.0.0.1", "--memory"]);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    server.expect(&["s>"]);
    for verb in [&["messaging", "client"][..], &["client"][..]] {
        let mut args = verb.to_vec();
        args.extend(["-s", "127.0.0.1", "-p", port]);
        let mut client = Proc::start(&args);
        client.type_line(&format!("REGISTER {}", verb[0]));
        client.expect(&["s> REGISTER OK"]);
        assert_eq!(client.finish().0, 0);
    }
    server.expect(&["s> REGISTER messaging OK", "s> REGISTER client OK"]);
}

/// `--course 2025` answers with raw codes and prints SENDATTACH's and USERS' console lines;
/// `--codes` still overrides the course's default.
#[test]
fn serve_course_2025_uses_raw_codes_and_prints_sendattach_lines() {
    use std::io::Read;
    let exchange = |port: u16, bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        reply
    };
    let (mut server, port) = serve(&["--course", "2025"]);
    assert_eq!(exchange(port, b"REGISTER\0ana\0"), b"\x00");
    server.expect(&["s> REGISTER ana OK"]);
    assert_eq!(exchange(port, b"SENDATTACH\0ana\0ana\0hola\0/tmp/a b.txt\0"), b"\x001\0");
    server.expect(&["s> SENDATTACH MESSAGE 1 FROM ana TO ana FILE /tmp/a b.txt STORED"]);
    let ana = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(exchange(port, format!("CONNECT\0ana\0{}\0", ana.port()).as_bytes()), b"\x00");
    server.expect(&["s> CONNECT ana OK", "s> SENDATTACH MESSAGE 1 FROM ana TO ana FILE /tmp/a b.txt"]);
    assert_eq!(exchange(port, b"USERS\0nobody\0"), b"\x02");
    server.expect(&["s> USERS FAIL"]);
    drop(server);

    let (_server, port) = serve(&["--course", "2025", "--codes", "ascii"]);
    assert_eq!(exchange(port, b"REGISTER\0ana\0"), b"0\0");
    let bad = Proc::start(&["serve", "-p", "0", "--memory", "--course", "2024"]);
    let (code, _, stderr) = bad.finish();
    assert_ne!(code, 0);
    assert!(stderr.contains("expected one of: 2022, 2025"), "{stderr}");
}

#[test]
fn client_course_2025_session_of_spec_8() {
    let (_server, port) = serve(&["--course", "2025"]);
    let port = port.to_string();
    let args = ["client", "-s", "127.0.0.1", "-p", &port, "--course", "2025"];
    let (mut bob, mut ana) = (Proc::start(&args), Proc::start(&args));
    let dir = tempfile::tempdir().unwrap();
    common::spec8_session(&mut bob, &mut ana, dir.path());
    // A relative file name is sent, and the console says it is not absolute.
    ana.type_line("SENDATTACH bob hola notes.txt");
    ana.expect(&["s> SENDATTACH OK - MESSAGE 2"]);
    bob.expect(&["s> MESSAGE 2 FROM ana", "   hola", "   END", "   FILE notes.txt"]);
    ana.expect(&["s> SENDATTACH MESSAGE 2 notes.txt OK"]);
    let long = format!("/{}", "x".repeat(255));
    ana.type_line(&format!("SENDATTACH bob hola {long}"));
    ana.expect(&["s> SENDATTACH FAIL"]);
    let (_, _, ana_err) = ana.finish();
    assert!(ana_err.contains("\"notes.txt\" is not an absolute path"), "{ana_err}");
    assert!(ana_err.contains("the file name has 256 bytes"), "{ana_err}");
    let (_, _, bob_err) = bob.finish();
    assert!(bob_err.contains("does not offer that file"), "{bob_err}");
}

/// SPEC 2.4: a piped session that sends and disconnects at once still prints the
/// acknowledgement, every time (the DISCONNECT reply waits for it).
#[test]
fn a_piped_send_then_disconnect_always_shows_the_acknowledgement() {
    let (_server, port) = serve(&[]);
    let c = Client::new("127.0.0.1", port).with_timeout(common::LIMIT);
    c.register("Bob", "bob", "01/01/2001").unwrap();
    let bob = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    c.connect("bob", bob.port()).unwrap();
    let port = port.to_string();
    for i in 0..20 {
        let mut child = std::process::Command::new(common::BIN)
            .args(["client", "-s", "127.0.0.1", "-p", &port])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let script = format!("REGISTER a{i}\nCONNECT a{i}\nSEND bob hola {i}\nDISCONNECT a{i}\n");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().map(common::without_prompts).filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            ["s> REGISTER OK", "s> CONNECT OK", "s> SEND OK - MESSAGE 1", "s> SEND MESSAGE 1 OK", "s> DISCONNECT OK"],
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..20 {
        let push = bob.recv_timeout(common::LIMIT).unwrap();
        assert!(matches!(push, cartero::Push::Message { id: 1, .. }), "{i}: {push:?}");
    }
}

#[test]
fn the_console_listener_binds_the_address_towards_the_server_or_listen_host() {
    let (_server, port) = serve(&["--course", "2025"]);
    common::listener_binds_the_address_towards_the_server(common::BIN, &["client"], port);
}

/// A 2022/23 server waits for REGISTER's three fields: the one-field form times out there (or
/// is answered 2), and the console says what the server may need, in one line.
#[test]
fn register_with_one_field_hints_at_the_long_form_when_the_server_waits_or_refuses() {
    for answer in [None, Some(&b"2\0"[..])] {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port().to_string();
        std::thread::spawn(move || {
            for stream in server.incoming().take(2) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 512]);
                match answer {
                    Some(bytes) => {
                        let _ = stream.write_all(bytes);
                    }
                    // Waits for fields that never come, well past the client's timeout.
                    None => std::thread::sleep(Duration::from_secs(3)),
                }
            }
        });
        let mut client = Proc::start(&["client", "-s", "127.0.0.1", "-p", &port, "--timeout", "1s"]);
        client.type_line("REGISTER ana");
        client.expect(&["s> REGISTER FAIL"]);
        let (_, _, stderr) = client.finish();
        let hints = stderr.lines().filter(|l| l.contains("may need REGISTER <alias> <DD/MM/YYYY> [name]")).count();
        assert_eq!(hints, 1, "{answer:?}: {stderr}");
    }
}
