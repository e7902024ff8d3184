//! `cartero chat serve` with a TLS port beside the plain one, over real TCP on 127.0.0.1:
//! the Rust client and `openssl s_client` make real handshakes; users on either port see
//! each other; plain text, a half handshake, and expired, untrusted or misnamed
//! certificates each get an ERROR or a closed connection, and the server keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cartero::chat::client::blocking::Client;
use cartero::chat::client::ClientError;
use cartero::chat::tls::{fingerprint, CertificateProblem, ClientTls, SelfSigned};
use cartero::chat::Reply;
use common::chat::serve_open;
use common::{Proc, BIN, LIMIT};
use rustls::pki_types::pem::PemObject;

/// A server with a plain and a TLS port.
struct Served {
    _proc: Proc,
    plain: u16,
    tls: u16,
    fingerprint: String,
}

/// Starts `cartero chat serve` with `extra` (TLS options) on free loopback ports.
fn serve_tls(extra: &[&str]) -> Served {
    let (mut proc, plain) = serve_open(&[&["--tls-port", "0"], extra].concat());
    let tls_line = proc.line();
    let rest = tls_line.strip_prefix("s> init tls 127.0.0.1:").unwrap_or_else(|| panic!("TLS line: {tls_line:?}"));
    let (tls, fingerprint) = rest.split_once(" sha256 ").unwrap_or_else(|| panic!("TLS line: {tls_line:?}"));
    Served { plain, tls: tls.parse().unwrap(), fingerprint: fingerprint.to_string(), _proc: proc }
}

/// A self-signed server whose certificate is written to `dir/cert.pem`.
fn self_signed(dir: &Path, extra: &[&str]) -> (Served, PathBuf) {
    let cert = dir.join("cert.pem");
    let mut args = vec!["--tls-self-signed", "--tls-cert-out", cert.to_str().unwrap()];
    args.extend_from_slice(extra);
    (serve_tls(&args), cert)
}

fn trusting(cert: &Path) -> ClientTls {
    ClientTls::new(Some(cert)).unwrap()
}

fn join_tls(port: u16, cert: &Path, name: &str) -> Client {
    let mut c = Client::connect_tls("127.0.0.1", port, LIMIT, &trusting(cert)).unwrap();
    c.join(name).unwrap();
    c
}

fn join_plain(port: u16, name: &str) -> Client {
    let mut c = Client::connect("127.0.0.1", port, LIMIT).unwrap();
    c.join(name).unwrap();
    c
}

/// The next message that is not a user list.
fn next_message(c: &mut Client) -> Reply {
    loop {
        match c.recv_timeout(LIMIT).unwrap().expect("a message in time") {
            Reply::UserList(_) => {}
            other => return other,
        }
    }
}

fn until_list(c: &mut Client, names: &[&str]) {
    loop {
        match c.recv_timeout(LIMIT).unwrap().expect("a message in time") {
            Reply::UserList(users) if users == names => return,
            Reply::UserList(_) => {}
            other => panic!("expected a user list, got {other:?}"),
        }
    }
}

/// Reads `stream` to its end (bounded): what the server sent before closing. A reset counts
/// as a close; a read that times out does not.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                assert!(got.len() < 1 << 20, "the server keeps sending");
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

#[test]
fn tls_and_plain_users_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (served, cert) = self_signed(dir.path(), &[]);
    // The start line shows the certificate's fingerprint.
    let pem = std::fs::read(&cert).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(served.fingerprint, fingerprint(&der));

    let mut ana = join_tls(served.tls, &cert, "ana");
    until_list(&mut ana, &["ana"]);
    let mut bob = join_plain(served.plain, "bob");
    until_list(&mut ana, &["ana", "bob"]);
    until_list(&mut bob, &["ana", "bob"]);

    ana.broadcast("hola desde TLS").unwrap();
    assert_eq!(next_message(&mut bob), Reply::Broadcast { from: "ana".into(), content: "hola desde TLS".into() });
    assert_eq!(next_message(&mut ana), Reply::Broadcast { from: "ana".into(), content: "hola desde TLS".into() });
    bob.send("ana", "hola sin cifrar").unwrap();
    assert_eq!(next_message(&mut ana), Reply::Message { from: "bob".into(), content: "hola sin cifrar".into() });

    // A long burst arrives whole and in order over TLS (records split and joined).
    let line = "x".repeat(1000);
    for _ in 0..200 {
        bob.send("ana", &line).unwrap();
    }
    for _ in 0..200 {
        assert_eq!(next_message(&mut ana), Reply::Message { from: "bob".into(), content: line.clone() });
    }

    ana.disconnect().unwrap();
    until_list(&mut bob, &["bob"]);
    assert!(matches!(ana.recv_timeout(LIMIT), Err(ClientError::Closed)), "DISCONNECT closes the TLS connection");
}

#[test]
fn the_console_connects_with_ca_and_a_certificate_and_key_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let made = SelfSigned::localhost().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &made.cert_pem).unwrap();
    std::fs::write(&key, made.key_pem()).unwrap();
    let served = serve_tls(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert_eq!(served.fingerprint, fingerprint(&made.cert));

    let mut bob = join_plain(served.plain, "bob");
    let port = served.tls.to_string();
    let mut ana =
        Proc::start(&["chat", "connect", "-s", "localhost", "-p", &port, "-n", "ana", "--ca", cert.to_str().unwrap()]);
    ana.expect(&["Conectado exitosamente"]);
    until_list(&mut bob, &["bob", "ana"]);
    bob.send("ana", "hola").unwrap();
    loop {
        if ana.line() == "Mensaje de bob: hola" {
            break;
        }
    }
    let (code, _, stderr) = ana.finish();
    assert_eq!(code, 0, "{stderr}");
    until_list(&mut bob, &["bob"]);
}

#[test]
fn openssl_s_client_exchanges_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (served, cert) = self_signed(dir.path(), &[]);
    let mut openssl = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", served.tls), "-quiet"])
        .args(["-CAfile", cert.to_str().unwrap(), "-verify_return_error", "-verify_ip", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed (scripts/test.sh installs it)");
    let mut stdin = openssl.stdin.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = openssl.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = || lines.recv_timeout(LIMIT).expect("a line from openssl in time");

    stdin.write_all(b"CONNECT|carla\n").unwrap();
    assert_eq!(line(), "CONNECT_ACK|OK");
    assert_eq!(line(), "USER_LIST|carla");
    let mut bob = join_plain(served.plain, "bob");
    assert_eq!(line(), "USER_LIST|carla,bob");
    bob.send("carla", "hola").unwrap();
    assert_eq!(line(), "MESSAGE|bob|hola");
    stdin.write_all(b"BROADCAST|hola a todos\n").unwrap();
    assert_eq!(next_message(&mut bob), Reply::Broadcast { from: "carla".into(), content: "hola a todos".into() });
    stdin.write_all(b"DISCONNECT\n").unwrap();
    until_list(&mut bob, &["bob"]);
    drop(stdin);
    assert_eq!(common::wait(&mut openssl), 0, "openssl verified the certificate and ended cleanly");
}

#[test]
fn plain_text_on_the_tls_port_gets_an_error_and_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (served, cert) = self_signed(dir.path(), &[]);

    let mut raw = TcpStream::connect(("127.0.0.1", served.tls)).unwrap();
    raw.write_all(b"CONNECT|ana\n").unwrap();
    assert_eq!(read_until_closed(&mut raw), b"ERROR|400|Se esperaba TLS\n");

    // The plain client says why in one line.
    match Client::connect("127.0.0.1", served.tls, LIMIT).and_then(|mut c| c.join("ana")) {
        Err(e @ ClientError::Error { code: 400, .. }) => {
            assert_eq!(e.to_string(), "the server answered 400 Se esperaba TLS")
        }
        other => panic!("expected ERROR 400, got {:?}", other.err()),
    }

    // A TLS record header followed by garbage: closed, without an answer in plain text.
    let mut raw = TcpStream::connect(("127.0.0.1", served.tls)).unwrap();
    let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    garbage.extend_from_slice(&[0xAB; 64]);
    raw.write_all(&garbage).unwrap();
    let answer = read_until_closed(&mut raw);
    assert!(!answer.starts_with(b"ERROR"), "{answer:?}");

    // A TLS client on the plain port fails with one readable line.
    match Client::connect_tls("127.0.0.1", served.plain, LIMIT, &trusting(&cert)) {
        Err(e @ ClientError::Handshake { plain: true, .. }) => {
            assert!(e.to_string().contains("is it a plain, not a TLS, port?"), "{e}")
        }
        other => panic!("expected a failed handshake, got {:?}", other.err()),
    }

    // And the server still serves both ports.
    let mut ana = join_tls(served.tls, &cert, "ana");
    let bob = join_plain(served.plain, "bob");
    until_list(&mut ana, &["ana", "bob"]);
    bob.broadcast("sigue").unwrap();
    assert_eq!(next_message(&mut ana), Reply::Broadcast { from: "bob".into(), content: "sigue".into() });
}

#[test]
fn a_handshake_that_stops_halfway_is_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (served, cert) = self_signed(dir.path(), &["--tls-handshake-timeout", "1s"]);

    // Half a record: a header that promises 512 bytes, then silence.
    let mut header_only = TcpStream::connect(("127.0.0.1", served.tls)).unwrap();
    header_only.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();

    // A real ClientHello, the server's answer read, then silence.
    let tls = trusting(&cert);
    let name = cartero::chat::tls::server_name("127.0.0.1").unwrap();
    let mut session = rustls::ClientConnection::new(Arc::clone(&tls.config), name).unwrap();
    let mut halfway = TcpStream::connect(("127.0.0.1", served.tls)).unwrap();
    while session.wants_write() {
        session.write_tls(&mut halfway).unwrap();
    }
    halfway.set_read_timeout(Some(LIMIT)).unwrap();
    let mut first = [0u8; 1];
    assert_eq!(halfway.read(&mut first).unwrap(), 1, "the server answers the ClientHello");
    assert_eq!(first[0], 0x16, "with a handshake record");

    // Meanwhile the server serves others.
    let mut ana = join_tls(served.tls, &cert, "ana");
    let bob = join_plain(served.plain, "bob");
    until_list(&mut ana, &["ana", "bob"]);

    // Both stalled connections are closed (at the timeout; the reads wait for LIMIT at most).
    read_until_closed(&mut header_only);
    read_until_closed(&mut halfway);

    bob.send("ana", "sigo aquí").unwrap();
    assert_eq!(next_message(&mut ana), Reply::Message { from: "bob".into(), content: "sigo aquí".into() });
}

/// Starts a server with `made` as its certificate (from files).
fn serve_with(dir: &Path, made: &SelfSigned) -> Served {
    let (cert, key) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert, &made.cert_pem).unwrap();
    std::fs::write(&key, made.key_pem()).unwrap();
    serve_tls(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
}

fn refused(port: u16, host: &str, tls: &ClientTls) -> CertificateProblem {
    match Client::connect_tls(host, port, LIMIT, tls) {
        Err(ClientError::Certificate { problem, .. }) => problem,
        Err(e) => panic!("expected a refused certificate, got {e}"),
        Ok(_) => panic!("the certificate was accepted"),
    }
}

#[test]
fn an_expired_certificate_is_refused_with_a_readable_error() {
    let dir = tempfile::tempdir().unwrap();
    let expired = SelfSigned::for_names(
        &["localhost", "127.0.0.1"],
        rcgen::date_time_ymd(2020, 1, 1),
        rcgen::date_time_ymd(2020, 6, 1),
    )
    .unwrap();
    let served = serve_with(dir.path(), &expired);
    let tls = ClientTls::trusting(std::slice::from_ref(&expired.cert)).unwrap();
    assert_eq!(refused(served.tls, "127.0.0.1", &tls), CertificateProblem::Expired);

    // The console says so in one line and fails.
    let ca = dir.path().join("server-cert.pem");
    let out = Command::new(BIN)
        .args(["chat", "connect", "-s", "127.0.0.1", "-p", &served.tls.to_string(), "-n", "ana"])
        .args(["--ca", ca.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("cartero: the certificate of 127.0.0.1:{} is refused: it has expired", served.tls)
    );

    // The server is unharmed.
    let mut bob = join_plain(served.plain, "bob");
    until_list(&mut bob, &["bob"]);
}

#[test]
fn an_untrusted_or_misnamed_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (served, cert) = self_signed(dir.path(), &[]);

    // Another self-signed certificate as the CA (as after the server restarted and made a new
    // one): same issuer name, another key.
    let other = SelfSigned::localhost().unwrap();
    let wrong_ca = dir.path().join("other.pem");
    std::fs::write(&wrong_ca, &other.cert_pem).unwrap();
    assert_eq!(refused(served.tls, "127.0.0.1", &trusting(&wrong_ca)), CertificateProblem::BadSignature);
    // The public authorities (no --ca) do not know a self-signed certificate.
    assert_eq!(refused(served.tls, "localhost", &ClientTls::new(None).unwrap()), CertificateProblem::UnknownIssuer);

    let out = Command::new(BIN)
        .args(["chat", "connect", "-s", "127.0.0.1", "-p", &served.tls.to_string(), "-n", "ana", "--tls"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not signed by any authority trusted here"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // The right CA, but a name the certificate is not made out to.
    let misnamed = SelfSigned::for_names(
        &["chat.example.org"],
        rcgen::date_time_ymd(2020, 1, 1),
        rcgen::date_time_ymd(4000, 1, 1),
    )
    .unwrap();
    let served_misnamed = serve_with(dir.path(), &misnamed);
    let tls = ClientTls::trusting(std::slice::from_ref(&misnamed.cert)).unwrap();
    assert_eq!(refused(served_misnamed.tls, "127.0.0.1", &tls), CertificateProblem::WrongName);

    // The right certificate still works.
    let mut ana = join_tls(served.tls, &cert, "ana");
    until_list(&mut ana, &["ana"]);
}

#[test]
fn bad_tls_options_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (cert, key) in [(&missing, &missing), (&empty, &empty)] {
        let out = Command::new(BIN)
            .args(["chat", "serve", "-p", "0", "--tls-port", "0", "--bind", "127.0.0.1", "--memory"])
            .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("cartero: ") && stderr.lines().count() == 1, "{stderr}");
    }
    // --ca with no certificate in it.
    let out = Command::new(BIN)
        .args(["chat", "connect", "-s", "127.0.0.1", "-p", "1", "-n", "ana", "--ca", empty.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
}

#[tokio::test]
async fn the_async_client_speaks_tls_too() {
    use cartero::chat::client::Client as AsyncClient;
    let dir = tempfile::tempdir().unwrap();
    let (served, cert) = self_signed(dir.path(), &[]);
    let tls = trusting(&cert);
    let addr = format!("127.0.0.1:{}", served.tls);
    // The TLS port refuses a plain client.
    match AsyncClient::connect_as(&addr, "ana", LIMIT).await {
        Err(ClientError::Error { code: 400, .. }) => {}
        other => panic!("expected ERROR 400, got {:?}", other.err()),
    }

    let mut ana = AsyncClient::connect_tls(&addr, LIMIT, &tls).await.unwrap();
    ana.join("ana").await.unwrap();
    ana.broadcast("hola").await.unwrap();
    loop {
        match ana.recv().await.unwrap() {
            Reply::UserList(_) => {}
            other => {
                assert_eq!(other, Reply::Broadcast { from: "ana".into(), content: "hola".into() });
                break;
            }
        }
    }
    ana.disconnect().await.unwrap();

    let other = SelfSigned::localhost().unwrap();
    let wrong = ClientTls::trusting(std::slice::from_ref(&other.cert)).unwrap();
    match AsyncClient::connect_tls(&addr, LIMIT, &wrong).await {
        Err(ClientError::Certificate { problem: CertificateProblem::BadSignature, .. }) => {}
        other => panic!("expected a refused certificate, got {:?}", other.err()),
    }
}
