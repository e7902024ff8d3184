//! The bucket clients against `cartero buckets serve` on 127.0.0.1: the Rust API (async and
//! blocking, both vocabularies) and the `cartero buckets` client verbs run as a program.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cartero::buckets::client::{blocking, Client, ClientError};
use cartero::buckets::Vocabulary;
use common::{Proc, BIN, LIMIT};

fn serve(root: &Path) -> (Proc, u16) {
    let mut server =
        Proc::start(&["buckets", "serve", "-p", "0", "--bind", "127.0.0.1", "--root", root.to_str().unwrap()]);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap().parse().unwrap();
    server.line();
    (server, port)
}

fn setup() -> (tempfile::TempDir, PathBuf, Proc, u16) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (server, port) = serve(&root);
    (dir, root, server, port)
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn blocking_client_in_both_vocabularies() {
    let (_d, _root, _server, port) = setup();
    for vocabulary in [Vocabulary::Codes, Vocabulary::Eafit] {
        let mut c = blocking::Client::connect("127.0.0.1", port, vocabulary).unwrap().with_timeout(LIMIT);
        let bucket = format!("b-{vocabulary}");
        c.create_bucket(&bucket).unwrap();
        assert!(matches!(c.create_bucket(&bucket), Err(ClientError::Refused(_))));
        assert!(c.list_buckets().unwrap().contains(&bucket));
        let data = body(200_000);
        let mut sent = 0;
        c.upload(&bucket, "f", data.len() as u64, &data[..], |n| sent = n).unwrap();
        assert_eq!(sent, data.len() as u64);
        let files = c.list_files(Some(&bucket)).unwrap();
        assert_eq!((files[0].bucket.as_str(), files[0].name.as_str(), files[0].size), (bucket.as_str(), "f", 200_000));
        let mut out = Vec::new();
        let size = c.download(&bucket, "f", &mut out, |_| {}, |_| {}).unwrap();
        assert_eq!((size, out == data), (200_000, true));
        match vocabulary {
            Vocabulary::Codes => c.upload(&bucket, "f", 3, &b"new"[..], |_| {}).unwrap(),
            Vocabulary::Eafit => {
                assert!(matches!(c.upload(&bucket, "f", 3, &b"new"[..], |_| {}), Err(ClientError::Exists)))
            }
        }
        assert!(matches!(c.download(&bucket, "nope", Vec::new(), |_| {}, |_| {}), Err(ClientError::Refused(_))));
        assert!(matches!(c.create_bucket(".."), Err(ClientError::BadName { .. })));
        // A source shorter than announced ends the connection with a clear error.
        assert!(matches!(c.upload(&bucket, "short", 10, &b"abc"[..], |_| {}), Err(ClientError::SourceChanged)));
        let mut c = blocking::Client::connect("127.0.0.1", port, vocabulary).unwrap();
        c.delete_file(&bucket, "f").unwrap();
        c.delete_bucket(&bucket).unwrap();
        c.quit().unwrap();
    }
}

#[test]
fn async_client_lists_every_bucket_with_codes() {
    let (_d, _root, _server, port) = setup();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = Client::connect("127.0.0.1", port, Vocabulary::Codes).await.unwrap();
        for b in ["x", "y"] {
            c.create_bucket(b).await.unwrap();
            c.upload(b, "f", 2, &b"hi"[..], |_| {}).await.unwrap();
        }
        let all = c.list_files(None).await.unwrap();
        let all: Vec<String> = all.iter().map(|f| format!("{}/{} {}", f.bucket, f.name, f.size)).collect();
        assert_eq!(all, ["x/f 2", "y/f 2"]);
        assert_eq!(c.help().await.unwrap().len(), 6);
        let mut e = Client::connect("127.0.0.1", port, Vocabulary::Eafit).await.unwrap();
        assert!(matches!(e.list_files(None).await, Err(ClientError::Unsupported { .. })));
        assert!(matches!(e.help().await, Err(ClientError::Unsupported { .. })));
        c.quit().await.unwrap();
    });
}

fn cartero(args: &[&str], port: u16, cwd: &Path) -> (i32, String, String) {
    let port = port.to_string();
    let out = Command::new(BIN).args(["buckets"]).args(args).args(["-p", &port]).current_dir(cwd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_client_verbs() {
    let (dir, root, _server, port) = setup();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("notes.txt"), body(100_000)).unwrap();
    assert_eq!(cartero(&["mb", "b"], port, &work), (0, "created bucket b\n".into(), String::new()));
    let (code, out, err) = cartero(&["upload", "b", "notes.txt"], port, &work);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "uploaded notes.txt -> b/notes.txt (100000 bytes)\n", ""));
    let (code, _, _) = cartero(&["upload", "b", "notes.txt", "copy", "--vocabulary", "eafit"], port, &work);
    assert_eq!(code, 0);
    let (code, _, err) = cartero(&["upload", "b", "notes.txt", "copy", "--vocabulary", "eafit"], port, &work);
    assert_eq!((code, err.as_str()), (1, "cartero: the file exists (the eafit vocabulary never overwrites)\n"));
    assert_eq!(cartero(&["ls"], port, &work).1, "b\n");
    assert_eq!(cartero(&["ls", "b", "--vocabulary", "eafit"], port, &work).1, "copy 100000\nnotes.txt 100000\n");
    // Downloads: into the current directory, into a named directory, to a named file.
    std::fs::create_dir(work.join("into")).unwrap();
    assert_eq!(cartero(&["download", "b", "copy"], port, &work).0, 0);
    assert_eq!(cartero(&["download", "b", "copy", "into"], port, &work).0, 0);
    assert_eq!(cartero(&["download", "b", "copy", "into/renamed.txt"], port, &work).0, 0);
    for p in ["copy", "into/copy", "into/renamed.txt"] {
        assert_eq!(std::fs::read(work.join(p)).unwrap(), body(100_000), "{p}");
    }
    // A failed download leaves the destination as it was and no temporary file.
    std::fs::write(work.join("keep"), b"mine").unwrap();
    let (code, _, err) = cartero(&["download", "b", "nope", "keep"], port, &work);
    assert_eq!((code, err.as_str()), (1, "cartero: the server refused: no such file\n"));
    assert_eq!(std::fs::read(work.join("keep")).unwrap(), b"mine");
    let mut names: Vec<String> =
        std::fs::read_dir(&work).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, ["copy", "into", "keep", "notes.txt"]);
    // Names that are not names never reach the server.
    let (code, _, err) = cartero(&["download", "b", "../../etc/passwd"], port, &work);
    assert_eq!(code, 1);
    assert!(err.starts_with("cartero: bad name") && err.lines().count() == 1, "{err}");
    let (code, _, err) = cartero(&["upload", "b", "nothere"], port, &work);
    assert_eq!(code, 1);
    assert!(err.starts_with("cartero: nothere: ") && err.lines().count() == 1, "{err}");
    assert_eq!(cartero(&["rm", "b", "copy"], port, &work), (0, "deleted b/copy\n".into(), String::new()));
    assert_eq!(cartero(&["help"], port, &work).1.lines().count(), 6);
    assert_eq!(cartero(&["rb", "b"], port, &work), (0, "deleted bucket b\n".into(), String::new()));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn an_unreachable_server_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, out, err) = cartero(&["ls"], port, dir.path());
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with(&format!("cartero: cannot connect to 127.0.0.1:{port}: ")), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn the_bench_runs_both_servers_side_by_side_in_test_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["buckets", "bench", "--size", "2M", "--small-ops", "16", "--concurrency", "1,4", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("buckets bench on 127.0.0.1: one file of 2 MiB"), "{text}");
    for (line, what) in lines[2..6].iter().zip([
        "upload, one file, MB/s",
        "download, one file, MB/s",
        "4 KiB uploads/s, concurrency 1",
        "4 KiB uploads/s, concurrency 4",
    ]) {
        assert!(line.starts_with(what) && line.ends_with('%'), "{line}");
    }
    assert!(lines[6].starts_with("cartero server RSS: "), "{text}");
    // Its working directory is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
