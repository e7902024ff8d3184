//! `cartero buckets serve --backend s3://...` on a real SeaweedFS (started by the tests on
//! loopback ports): the protocol checker against a node, two nodes on one store, a node
//! killed with SIGKILL mid-upload, and the faults (store unreachable at start or lost
//! mid-transfer, wrong credentials, a missing S3 bucket, a fresh prefix, throttling).

mod common;
#[path = "common/weed.rs"]
mod weed;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cartero::buckets::client::blocking::Client;
use cartero::buckets::Vocabulary;
use common::{Proc, BIN, LIMIT};
use weed::{weed, Weed};

/// A fresh S3 bucket name for one test.
fn s3_bucket(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}

/// A cartero node on `url` (`s3://...`) through `endpoint`, with the test's credentials.
fn node_at(endpoint: &str, url: &str, env: &[(&str, &str)], extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["buckets", "serve", "-p", "0", "--bind", "127.0.0.1", "--backend", url, "--endpoint", endpoint];
    args.extend_from_slice(extra);
    let mut server = Proc::start_with_env(BIN, &args, env);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    let port = port.parse().unwrap();
    let store = server.line();
    assert!(store.starts_with(&format!("s> store {url} at {endpoint}")), "{store:?}");
    (server, port)
}

fn node(weed: &Weed, url: &str) -> (Proc, u16) {
    node_at(&weed.endpoint, url, &weed.env(), &["--s3-retries", "1"])
}

fn client(port: u16, vocabulary: Vocabulary) -> Client {
    Client::connect("127.0.0.1", port, vocabulary).unwrap().with_timeout(LIMIT)
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn upload(port: u16, bucket: &str, file: &str, bytes: &[u8]) -> Result<(), String> {
    client(port, Vocabulary::Codes).upload(bucket, file, bytes.len() as u64, bytes, |_| {}).map_err(|e| e.to_string())
}

fn download(port: u16, bucket: &str, file: &str) -> Vec<u8> {
    let mut out = Vec::new();
    client(port, Vocabulary::Codes).download(bucket, file, &mut out, |_| {}, |_| {}).unwrap();
    out
}

fn files(port: u16, bucket: Option<&str>) -> Vec<String> {
    let listed = client(port, Vocabulary::Codes).list_files(bucket).unwrap();
    listed.iter().map(|f| format!("{} {} {}", f.bucket, f.name, f.size)).collect()
}

/// A raw connection, to cut an upload halfway.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn(BufReader::new(stream))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }
}

/// Starts the shared SeaweedFS, or skips (see `common/weed.rs`).
macro_rules! weed_or_skip {
    () => {
        match weed() {
            Some(weed) => weed,
            None => return,
        }
    };
}

#[test]
fn the_checker_passes_a_node_on_seaweedfs_and_leaves_nothing() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("check");
    weed.make_bucket(&bucket);
    let (_node, port) = node(weed, &format!("s3://{bucket}/cartero"));
    let out = std::process::Command::new(BIN)
        .args(["buckets", "check", "127.0.0.1", &port.to_string(), "--timeout", "20s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("64 passed, 0 failed"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(weed.keys(&bucket, "cartero"), Vec::<String>::new());
}

#[test]
fn two_nodes_serve_the_same_buckets() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("two");
    weed.make_bucket(&bucket);
    let url = format!("s3://{bucket}/shared/p");
    let (_a, a) = node(weed, &url);
    let (_b, b) = node(weed, &url);
    client(a, Vocabulary::Codes).create_bucket("photos").unwrap();
    client(b, Vocabulary::Eafit).create_bucket("empty").unwrap();
    assert_eq!(client(a, Vocabulary::Codes).list_buckets().unwrap(), ["empty", "photos"]);
    assert!(client(a, Vocabulary::Codes).create_bucket("empty").is_err());

    // One PUT, a multipart upload (20 MiB: three parts), an empty file, names S3 encodes.
    let small = body(1000, 1);
    let large = body(20 << 20, 2);
    upload(a, "photos", "small.bin", &small).unwrap();
    upload(a, "photos", "large.bin", &large).unwrap();
    upload(a, "photos", "empty", b"").unwrap();
    upload(a, "photos", "Año%20#?[x]{y}~", b"odd").unwrap();
    assert_eq!(download(b, "photos", "small.bin"), small);
    assert!(download(b, "photos", "large.bin") == large, "the large file differs");
    assert_eq!(download(b, "photos", "Año%20#?[x]{y}~"), b"odd");
    assert_eq!(
        files(b, Some("photos")),
        [
            "photos Año%20#?[x]{y}~ 3",
            "photos empty 0",
            &format!("photos large.bin {}", 20 << 20),
            "photos small.bin 1000"
        ]
    );
    assert_eq!(files(b, None), files(a, Some("photos")));
    assert_eq!(client(b, Vocabulary::Codes).list_files(Some("empty")).unwrap(), []);

    // Replace through B, seen through A; errors name the missing thing.
    upload(b, "photos", "small.bin", b"v2").unwrap();
    assert_eq!(download(a, "photos", "small.bin"), b"v2");
    let err = |r: Result<(), cartero::buckets::client::ClientError>| r.unwrap_err().to_string();
    assert!(err(client(a, Vocabulary::Codes).delete_file("photos", "nope")).contains("no such file"));
    assert!(err(client(a, Vocabulary::Codes).delete_file("nobucket", "x")).contains("no such bucket"));
    assert!(upload(a, "nobucket", "x", b"x").unwrap_err().contains("no such bucket"));
    let mut sink = Vec::new();
    let missing = client(b, Vocabulary::Codes).download("photos", "nope", &mut sink, |_| {}, |_| {});
    assert!(missing.unwrap_err().to_string().contains("no such file"));

    // EAFIT create-new: eight racing uploads of one name through both nodes, one winner.
    let wins = Arc::new(AtomicUsize::new(0));
    let racers: Vec<_> = (0..8u8)
        .map(|i| {
            let wins = wins.clone();
            let port = if i % 2 == 0 { a } else { b };
            std::thread::spawn(move || {
                let bytes = body(4096, i);
                match client(port, Vocabulary::Eafit).upload("photos", "race", 4096, &bytes[..], |_| {}) {
                    Ok(()) => {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => assert!(e.to_string().contains("exists"), "{e}"),
                }
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    assert_eq!(wins.load(Ordering::SeqCst), 1);

    // A create-new of a taken large name is refused before its bytes.
    let taken = client(b, Vocabulary::Eafit).upload("photos", "large.bin", large.len() as u64, &large[..], |_| {});
    assert!(taken.unwrap_err().to_string().contains("exists"));
    client(b, Vocabulary::Codes).delete_file("photos", "large.bin").unwrap();
    assert!(!files(a, Some("photos")).iter().any(|f| f.contains("large.bin")));
    client(a, Vocabulary::Codes).delete_bucket("photos").unwrap();
    client(b, Vocabulary::Eafit).delete_bucket("empty").unwrap();
    assert_eq!(client(b, Vocabulary::Codes).list_buckets().unwrap(), Vec::<String>::new());
    assert_eq!(weed.keys(&bucket, "shared"), Vec::<String>::new());
}

#[test]
fn a_node_killed_mid_upload_leaves_no_partial_object() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("kill");
    weed.make_bucket(&bucket);
    let url = format!("s3://{bucket}");
    let (_other, other) = node(weed, &url);
    client(other, Vocabulary::Codes).create_bucket("b").unwrap();
    upload(other, "b", "keep", b"old").unwrap();
    // Cut during a multipart upload (3 of 30 MiB sent, one part out) and during a small one.
    for (name, size, sent) in [("big", 30usize << 20, 12usize << 20), ("keep", 4 << 20, 1 << 20)] {
        let (mut victim, port) = node(weed, &url);
        let mut conn = Conn::open(port);
        conn.send(format!("UPLOAD b {name} {size}\n").as_bytes());
        conn.send(&body(sent, 9));
        // Let the bytes land (and the first part go out) before the kill.
        std::thread::sleep(Duration::from_millis(500));
        victim.child.kill().unwrap(); // SIGKILL
        victim.child.wait().unwrap();
        let mut rest = Vec::new();
        let _ = conn.0.read_to_end(&mut rest);
    }
    assert_eq!(files(other, Some("b")), ["b keep 3"]);
    assert_eq!(download(other, "b", "keep"), b"old");
    assert_eq!(weed.keys(&bucket, ""), ["b/.bucket", "b/keep"]);
}

#[test]
fn start_faults_are_one_line() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("start");
    weed.make_bucket(&bucket);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let wrong =
        [("AWS_ACCESS_KEY_ID", weed::ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", "wrong"), ("AWS_REGION", "us-east-1")];
    let unknown = [("AWS_ACCESS_KEY_ID", "nobody"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_REGION", "us-east-1")];
    let url = format!("s3://{bucket}");
    type Case<'a> = (String, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (closed, url.clone(), weed.env(), "the object store is unreachable"),
        (weed.endpoint.clone(), url.clone(), wrong.to_vec(), "refused the credentials"),
        (weed.endpoint.clone(), url.clone(), unknown.to_vec(), "refused the credentials"),
        (weed.endpoint.clone(), "s3://no-such-s3-bucket".into(), weed.env(), "S3 bucket does not exist"),
    ];
    for (endpoint, url, env, want) in cases {
        let args = [
            "buckets",
            "serve",
            "-p",
            "0",
            "--bind",
            "127.0.0.1",
            "--backend",
            &url,
            "--endpoint",
            &endpoint,
            "--s3-retries",
            "0",
        ];
        let (code, out, stderr) = Proc::start_with_env(BIN, &args, &env).finish_within(Duration::from_secs(30));
        assert_eq!(code, 1, "{url} at {endpoint}: {out:?} {stderr}");
        assert!(out.is_empty(), "{out:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].starts_with(&format!("cartero: cannot open the store {url}: ")), "{stderr}");
        assert!(lines[0].contains(want), "{stderr}");
    }
    // A bad URL is one line too, before any connection.
    let args = ["buckets", "serve", "-p", "0", "--backend", "s3:/x"];
    let (code, _, stderr) = Proc::start(&args).finish();
    assert_eq!((code, stderr.trim()), (1, "cartero: \"s3:/x\" does not start with s3://"));
    // A prefix that does not exist yet is an empty store.
    let (_node, port) = node(weed, &format!("s3://{bucket}/never/used"));
    assert_eq!(client(port, Vocabulary::Codes).list_buckets().unwrap(), Vec::<String>::new());
    assert_eq!(files(port, None), Vec::<String>::new());
}

/// What the proxy in front of the store does with connections.
const PASS: u8 = 0;
/// Closes every connection and refuses new ones: the store is lost.
const CUT: u8 = 1;
/// Answers every request `503 SlowDown`.
const THROTTLE: u8 = 2;

/// A TCP proxy to the store on a loopback port, whose mode the test switches.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (m, o) = (mode.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                match m.load(Ordering::SeqCst) {
                    CUT => drop(client),
                    THROTTLE => {
                        std::thread::spawn(move || slow_down(client));
                    }
                    _ => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                        let mut open = o.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                        pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pump(server, client);
                    }
                }
            }
        });
        Proxy { port, mode, open }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode != PASS {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Reads one request head and answers it the way S3 throttles.
fn slow_down(mut client: TcpStream) {
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let reply = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes());
}

#[test]
fn a_store_lost_mid_upload_gives_the_failure_code_and_leaves_nothing() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("lost");
    weed.make_bucket(&bucket);
    let proxy = Proxy::start(weed.s3_port);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let (_node, port) = node_at(&endpoint, &format!("s3://{bucket}"), &weed.env(), &["--s3-retries", "1"]);
    client(port, Vocabulary::Codes).create_bucket("b").unwrap();
    for (name, size) in [("big", 30usize << 20), ("small", 1 << 20)] {
        let mut conn = Conn::open(port);
        conn.send(format!("UPLOAD b {name} {size}\n").as_bytes());
        let bytes = body(size, 3);
        conn.send(&bytes[..size / 2]);
        std::thread::sleep(Duration::from_millis(300));
        proxy.set(CUT);
        conn.send(&bytes[size / 2..]);
        let reply = conn.line();
        assert!(reply.starts_with("701 FUBF the object store is unreachable"), "{name}: {reply:?}");
        proxy.set(PASS);
    }
    assert_eq!(files(port, Some("b")), Vec::<String>::new());
    assert_eq!(weed.keys(&bucket, ""), ["b/.bucket"]);
    // A store that throttles: each request is retried, then fails with a clear reply.
    proxy.set(THROTTLE);
    let listed = client(port, Vocabulary::Codes).list_files(Some("b"));
    assert!(listed.unwrap_err().to_string().contains("the object store is throttling requests"));
    let made = client(port, Vocabulary::Eafit).create_bucket("c");
    assert!(made.unwrap_err().to_string().contains("throttling"));
    proxy.set(PASS);
    assert_eq!(client(port, Vocabulary::Codes).list_buckets().unwrap(), ["b"]);
}

#[test]
fn without_conditional_puts_create_new_is_checked_and_said_so() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("nocond");
    weed.make_bucket(&bucket);
    let url = format!("s3://{bucket}");
    let mut args = vec!["buckets", "serve", "-p", "0", "--bind", "127.0.0.1", "--backend", &url];
    args.extend(["--endpoint", &weed.endpoint, "--no-conditional-put"]);
    let mut server = Proc::start_with_env(BIN, &args, &weed.env());
    let port: u16 = server.line().strip_prefix("s> init server 127.0.0.1:").unwrap().parse().unwrap();
    assert_eq!(server.line(), format!("s> store {url} at {} (no conditional puts)", weed.endpoint));
    let mut c = client(port, Vocabulary::Eafit);
    c.create_bucket("b").unwrap();
    assert!(c.create_bucket("b").is_err());
    c.upload("b", "f", 2, &b"v1"[..], |_| {}).unwrap();
    let again = client(port, Vocabulary::Eafit).upload("b", "f", 2, &b"v2"[..], |_| {});
    assert!(again.unwrap_err().to_string().contains("exists"));
    assert_eq!(download(port, "b", "f"), b"v1");
}

#[test]
fn the_bench_compares_cartero_on_s3_with_the_store_and_a_directory() {
    let weed = weed_or_skip!();
    let bucket = s3_bucket("bench");
    weed.make_bucket(&bucket);
    let url = format!("s3://{bucket}/b");
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "buckets",
        "bench",
        "--s3",
        &url,
        "--endpoint",
        &weed.endpoint,
        "--size",
        "20M",
        "--small-ops",
        "20",
        "--concurrency",
        "1,4",
        "--dir",
        dir.path().to_str().unwrap(),
    ];
    let (code, out, stderr) = Proc::start_with_env(BIN, &args, &weed.env()).finish_within(Duration::from_secs(120));
    assert_eq!(code, 0, "{out:#?} {stderr}");
    assert!(out[0].starts_with(&format!("buckets bench, S3 backend on {url} at {}", weed.endpoint)), "{out:#?}");
    let labels = [
        "upload, one file, MB/s",
        "download, one file, MB/s",
        "4 KiB uploads/s, concurrency 1",
        "4 KiB uploads/s, concurrency 4",
    ];
    assert_eq!(out.len(), 7, "{out:#?}");
    for (line, label) in out[2..6].iter().zip(labels) {
        assert!(line.starts_with(label), "{line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        let numbers: Vec<f64> =
            words[words.len() - 4..].iter().map(|w| w.trim_end_matches('%').parse().unwrap()).collect();
        assert!(numbers.iter().all(|n| *n > 0.0), "{line}");
    }
    assert!(out[6].starts_with("cartero-s3 server RSS: "), "{out:#?}");
    // Nothing left: the bench deletes its bucket and what it wrote directly.
    assert_eq!(weed.keys(&bucket, "b"), Vec::<String>::new());
}
