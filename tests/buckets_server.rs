//! `cartero buckets serve` over real TCP on 127.0.0.1: both vocabularies, every reply, bad
//! names and planted symbolic links, bad sizes, cut and stalled transfers, garbage, many
//! clients at once, atomic replace, the create-new race, a full disk and shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{interrupt, wait, Proc, LIMIT};

/// A bucket server on a free loopback port over `root`.
fn serve(root: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["buckets", "serve", "-p", "0", "--bind", "127.0.0.1", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut server = Proc::start(&args);
    let init = server.line();
    let port = init.strip_prefix("s> init server 127.0.0.1:").unwrap_or_else(|| panic!("start line: {init:?}"));
    let port = port.parse().unwrap();
    assert!(server.line().starts_with("s> root "));
    (server, port)
}

/// A raw client connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        Conn { reader: BufReader::new(stream) }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "unterminated or missing reply: {line:?}");
        line.pop();
        line
    }

    /// Sends `request` (a `\n` is added) and reads one line.
    fn ask(&mut self, request: &str) -> String {
        self.send(format!("{request}\n").as_bytes());
        self.line()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        self.reader.read_exact(&mut out).unwrap();
        out
    }

    /// True when the server has closed the connection (after whatever it still had to say).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    (dir, root)
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries {
            let e = e.unwrap();
            out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Waits until `tree(dir)` equals `want` (cleanup after a cut connection is asynchronous).
fn eventually_tree(dir: &Path, want: &[&str]) {
    let start = Instant::now();
    while tree(dir) != want && start.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tree(dir), want);
}

#[test]
fn codes_vocabulary_every_reply() {
    let (_d, root) = tempdir();
    let (mut server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    let help = c.ask("HELP");
    let n: usize = help.strip_prefix("100 HELP ").unwrap().parse().unwrap();
    for _ in 0..n {
        assert!(!c.line().is_empty());
    }
    assert_eq!(c.ask("LIST_B"), "400 LS 0");
    assert_eq!(c.ask("CREATE_B photos"), "300 BCS");
    assert_eq!(c.ask("create_b   docs"), "300 BCS");
    assert_eq!(c.ask("CREATE_B photos"), "301 BCF bucket exists");
    assert_eq!(c.ask("CREATE_B"), "301 BCF usage: CREATE_B <bucket>");
    assert_eq!(c.ask("LIST_B"), "400 LS 2");
    assert_eq!((c.line(), c.line()), ("docs".into(), "photos".into()));
    c.send(b"UPLOAD photos a.bin 4\n\x00\n\xff\r");
    assert_eq!(c.line(), "700 FUBS");
    c.send(b"UPLOAD photos empty 0\n");
    assert_eq!(c.line(), "700 FUBS");
    c.send(b"UPLOAD nope x 3\nabc");
    assert_eq!(c.line(), "701 FUBF no such bucket");
    assert_eq!(c.ask("LIST_F photos"), "800 LFS 2");
    assert_eq!((c.line(), c.line()), ("photos a.bin 4".into(), "photos empty 0".into()));
    assert_eq!(c.ask("UPLOAD docs r 2\r\nhi\r\nLIST_F"), "700 FUBS");
    assert_eq!(c.line(), "800 LFS 3");
    assert_eq!((c.line(), c.line(), c.line()), ("docs r 2".into(), "photos a.bin 4".into(), "photos empty 0".into()));
    assert_eq!(c.ask("LIST_F nope"), "801 LFF no such bucket");
    assert_eq!(c.ask("DOWNLOAD photos a.bin"), "900 FDBS 4");
    assert_eq!(c.bytes(4), b"\x00\n\xff\r");
    assert_eq!(c.ask("DOWNLOAD photos empty"), "900 FDBS 0");
    assert_eq!(c.ask("DOWNLOAD photos nope"), "901 FDBF no such file");
    assert_eq!(c.ask("DELETE_F photos a.bin"), "1000 DFS");
    assert_eq!(c.ask("DELETE_F photos a.bin"), "1001 DFF no such file");
    assert_eq!(c.ask("DELETE_B photos"), "600 DBS");
    assert_eq!(c.ask("DELETE_B photos"), "601 DBF no such bucket");
    assert_eq!(c.ask("FROB x"), "401 BCMD unknown command FROB");
    assert_eq!(c.ask("LIST_B extra"), "401 BCMD usage: LIST_B");
    assert_eq!(c.ask("QUIT"), "200 BYE");
    assert!(c.closed());
    assert_eq!(tree(&root), ["docs", "docs/r"]);
    // One log line per request, in SPEC-buckets 5's form.
    let line = server.line();
    assert!(line.starts_with("s> 127.0.0.1:") && line.ends_with(" HELP -> 100"), "{line}");
    let line = server.line();
    assert!(line.ends_with(" LIST_B -> 400"), "{line}");
    let line = server.line();
    assert!(line.ends_with(" CREATE_B photos -> 300"), "{line}");
}

#[test]
fn eafit_vocabulary_every_reply() {
    let (_d, root) = tempdir();
    let (mut server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("HELLO"), "OK 0");
    assert_eq!(c.ask("NEW_BUCKET,b"), "OK new bucket created");
    assert!(c.ask("NEW_BUCKET,b").starts_with("ERROR "));
    assert_eq!(c.ask("LIST_BUCKET"), "OK 1");
    assert_eq!(c.line(), "b");
    assert_eq!(c.ask("UPLOAD_FILE,notes.txt,b,5"), "ACK");
    c.send(b"hola\n");
    assert_eq!(c.line(), "OK file uploaded");
    assert_eq!(c.ask("UPLOAD_FILE,notes.txt,b,3"), "EXIST");
    assert_eq!(c.ask("UPLOAD_FILE,x,nope,3"), "ERROR no such bucket");
    assert_eq!(c.ask("LIST_FILE,b"), "OK 1");
    assert_eq!(c.line(), "notes.txt 5");
    assert_eq!(c.ask("LIST_FILE,nope"), "ERROR no such bucket");
    assert_eq!(c.ask("DOWNLOAD_FILE,notes.txt,b"), "OK 5");
    assert_eq!(c.bytes(5), b"hola\n");
    assert_eq!(c.ask("DOWNLOAD_FILE,nope,b"), "ERROR no such file");
    assert_eq!(c.ask("DELETE_FILE,notes.txt,b"), "OK file deleted successfully");
    assert_eq!(c.ask("DELETE_FILE,notes.txt,b"), "ERROR no such file");
    assert_eq!(c.ask("DELETE_BUCKET,b"), "OK bucket deleted successfully");
    assert_eq!(c.ask("DELETE_BUCKET,b"), "ERROR no such bucket");
    assert_eq!(c.ask("NEW_BUCKET b"), "ERROR usage: NEW_BUCKET,<bucket>");
    assert_eq!(c.ask("WHAT"), "401 BCMD unknown command WHAT");
    // Both vocabularies on one connection and one store.
    assert_eq!(c.ask("CREATE_B shared"), "300 BCS");
    assert_eq!(c.ask("LIST_BUCKET"), "OK 1");
    assert_eq!(c.line(), "shared");
    assert_eq!(c.ask("EXIT"), "OK bye");
    assert!(c.closed());
    let line = server.line();
    assert!(line.ends_with(" LIST_BUCKET -> OK"), "{line}");
    let line = server.line();
    assert!(line.ends_with(" NEW_BUCKET b -> OK"), "{line}");
    let line = server.line();
    assert!(line.ends_with(" NEW_BUCKET b -> ERROR"), "{line}");
}

#[test]
fn traversal_names_are_refused_and_nothing_outside_the_root_changes() {
    let (dir, root) = tempdir();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret"), b"secret").unwrap();
    let before_outside = tree(dir.path());
    let (_server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("CREATE_B b"), "300 BCS");
    let long = "n".repeat(256);
    let outside = dir.path().join("outside");
    let absolute = outside.to_str().unwrap();
    let bad: Vec<&[u8]> = vec![
        b"..",
        b".",
        b"../outside",
        b"..\\outside",
        b"a/b",
        b"a\\b",
        b"a\0b",
        b"a\x01b",
        b"a\x7fb",
        b".hidden",
        b".tmp-1",
        absolute.as_bytes(),
        b"/etc",
        long.as_bytes(),
        b"\xff\xfe",
    ];
    for name in &bad {
        let shown = String::from_utf8_lossy(name);
        let line = |parts: &[&[u8]]| -> Vec<u8> {
            let mut l = parts.concat();
            l.push(b'\n');
            l
        };
        let codes: Vec<(Vec<u8>, &str)> = vec![
            (line(&[b"CREATE_B ", name]), "301 BCF bad name"),
            (line(&[b"DELETE_B ", name]), "601 DBF bad name"),
            (line(&[b"LIST_F ", name]), "801 LFF bad name"),
            (line(&[b"DOWNLOAD ", name, b" secret"]), "901 FDBF bad name"),
            (line(&[b"DOWNLOAD b ", name]), "901 FDBF bad name"),
            (line(&[b"DELETE_F ", name, b" secret"]), "1001 DFF bad name"),
            (line(&[b"DELETE_F b ", name]), "1001 DFF bad name"),
            (line(&[b"UPLOAD b ", name, b" 3"]), "701 FUBF bad name"),
            (line(&[b"UPLOAD ", name, b" f 3"]), "701 FUBF bad name"),
            (line(&[b"NEW_BUCKET,", name]), "ERROR bad name"),
            (line(&[b"DELETE_BUCKET,", name]), "ERROR bad name"),
            (line(&[b"LIST_FILE,", name]), "ERROR bad name"),
            (line(&[b"UPLOAD_FILE,", name, b",b,3"]), "ERROR bad name"),
            (line(&[b"UPLOAD_FILE,f,", name, b",3"]), "ERROR bad name"),
            (line(&[b"DOWNLOAD_FILE,secret,", name]), "ERROR bad name"),
            (line(&[b"DELETE_FILE,", name, b",b"]), "ERROR bad name"),
        ];
        for (request, want) in codes {
            // A name with a space or a comma splits differently; what matters is the refusal.
            c.send(&request);
            if request.starts_with(b"UPLOAD ") {
                c.send(b"xyz");
            }
            let reply = c.line();
            let family = want.split(" bad").next().unwrap();
            assert!(reply.starts_with(family), "{shown:?}: {:?} -> {reply:?}", String::from_utf8_lossy(&request));
            assert!(!reply.contains("BCS") && !reply.starts_with("OK") && reply != "ACK", "{shown:?} -> {reply:?}");
        }
    }
    // Still in step, and nothing moved outside the root or inside it.
    assert_eq!(c.ask("LIST_F"), "800 LFS 0");
    assert_eq!(tree(&root), ["b"]);
    let mut after = tree(dir.path());
    after.retain(|p| !p.starts_with("root"));
    assert_eq!(after, before_outside);
}

#[test]
fn symlinks_planted_in_the_root_are_never_followed() {
    let (dir, root) = tempdir();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let (_server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("CREATE_B b"), "300 BCS");
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("b/secret")).unwrap();
    std::os::unix::fs::symlink("self", root.join("b/self")).unwrap();
    assert_eq!(c.ask("LIST_B"), "400 LS 1");
    assert_eq!(c.line(), "b");
    assert_eq!(c.ask("LIST_F"), "800 LFS 0");
    assert_eq!(c.ask("LIST_F out"), "801 LFF no such bucket");
    assert_eq!(c.ask("LIST_F loop"), "801 LFF no such bucket");
    assert_eq!(c.ask("DOWNLOAD out secret"), "901 FDBF no such bucket");
    assert_eq!(c.ask("DOWNLOAD b secret"), "901 FDBF no such file");
    assert_eq!(c.ask("DOWNLOAD b self"), "901 FDBF no such file");
    assert_eq!(c.ask("DOWNLOAD_FILE,secret,out"), "ERROR no such bucket");
    assert_eq!(c.ask("DELETE_F out secret"), "1001 DFF no such bucket");
    assert_eq!(c.ask("DELETE_F b secret"), "1001 DFF no such file");
    assert_eq!(c.ask("DELETE_B out"), "601 DBF no such bucket");
    assert_eq!(c.ask("DELETE_B loop"), "601 DBF no such bucket");
    c.send(b"UPLOAD out secret 3\nabc");
    assert_eq!(c.line(), "701 FUBF no such bucket");
    assert_eq!(c.ask("UPLOAD_FILE,secret,out,3"), "ERROR no such bucket");
    assert_eq!(c.ask("UPLOAD_FILE,self,b,1"), "EXIST");
    assert_eq!(c.ask("DELETE_B b"), "600 DBS");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert_eq!(tree(&outside), ["secret"]);
    assert_eq!(tree(&root), ["loop", "out"]);
}

#[test]
fn sizes_that_are_not_sizes() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &["--max-file-size", "10"]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("CREATE_B b"), "300 BCS");
    // Codes: an unreadable size cannot be skipped, so the reply is followed by a close.
    for size in ["abc", "-1", "+3", "1.5", "0x10", "11", "99999999999999999999999", ""] {
        let mut c = Conn::open(port);
        let reply = c.ask(&format!("UPLOAD b f {size}"));
        assert!(reply.starts_with("701 FUBF "), "{size:?}: {reply}");
        assert!(c.closed(), "{size:?}");
    }
    // EAFIT: no byte comes before ACK, so the connection stays usable.
    for size in ["abc", "-1", "11", ""] {
        let reply = c.ask(&format!("UPLOAD_FILE,f,b,{size}"));
        assert!(reply.starts_with("ERROR "), "{size:?}: {reply}");
    }
    assert_eq!(c.ask("UPLOAD_FILE,f,b,10"), "ACK");
    c.send(b"0123456789");
    assert_eq!(c.line(), "OK file uploaded");
    assert_eq!(tree(&root), ["b", "b/f"]);
}

#[test]
fn an_upload_cut_or_stalled_halfway_leaves_nothing() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &["--stall-timeout", "1s"]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("CREATE_B b"), "300 BCS");
    c.send(b"UPLOAD b keep 2\nv1");
    assert_eq!(c.line(), "700 FUBS");
    // Cut: the client closes after half the bytes.
    let mut cut = Conn::open(port);
    cut.send(b"UPLOAD b keep 1000\n");
    cut.send(&[b'x'; 500]);
    cut.reader.get_ref().shutdown(Shutdown::Both).unwrap();
    drop(cut);
    // Stalled: the client stays but sends nothing more; the server drops it.
    let mut stalled = Conn::open(port);
    stalled.send(b"UPLOAD_FILE,new,b,1000\n");
    assert_eq!(stalled.line(), "ACK");
    stalled.send(&[b'y'; 10]);
    assert!(stalled.closed());
    eventually_tree(&root, &["b", "b/keep"]);
    assert_eq!(std::fs::read(root.join("b/keep")).unwrap(), b"v1");
    assert_eq!(c.ask("LIST_F b"), "800 LFS 1");
    assert_eq!(c.line(), "b keep 2");
}

#[test]
fn a_client_that_never_reads_its_download_blocks_no_one() {
    let (_d, root) = tempdir();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join("b/big"), vec![7u8; 32 << 20]).unwrap();
    let (_server, port) = serve(&root, &["--stall-timeout", "1s"]);
    let mut stuck = Conn::open(port);
    stuck.send(b"DOWNLOAD b big\n");
    std::thread::sleep(Duration::from_millis(200));
    // Others are served meanwhile.
    let mut other = Conn::open(port);
    assert_eq!(other.ask("LIST_F b"), "800 LFS 1");
    assert_eq!(other.line(), format!("b big {}", 32 << 20));
    // The server gives up on the stuck client: what it gets ends before the announced size.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(stuck.line(), format!("900 FDBS {}", 32 << 20));
    let mut got = 0usize;
    let mut buf = vec![0; 1 << 16];
    while let Ok(n) = stuck.reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got < 32 << 20, "the server sent everything to a client that did not read");
}

#[test]
fn a_megabyte_line_and_binary_garbage() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    let mut big = vec![b'A'; 1 << 20];
    big.push(b'\n');
    // The server answers once the line passes 1024 bytes and closes; it may close before
    // taking the rest, so the write may fail.
    let _ = c.reader.get_mut().write_all(&big);
    assert_eq!(c.line(), "401 BCMD line longer than 1024 bytes");
    assert!(c.closed());
    // Garbage lines: every one gets a reply, and the server stays up.
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut garbage = Vec::new();
    let mut lines = 0;
    for _ in 0..200 {
        let len = (seed % 60) as usize;
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = (seed >> 24) as u8;
            if b != b'\n' {
                garbage.push(b);
            }
        }
        // Never a command word: the first byte is not a letter.
        if garbage.last() != Some(&b'\n') && !garbage.is_empty() {
            garbage.push(b'\n');
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    let mut g = Conn::open(port);
    for line in garbage.split(|&b| b == b'\n').filter(|l| !l.is_empty() && l != b"\r") {
        let mut l = vec![b'#'];
        l.extend_from_slice(line);
        l.push(b'\n');
        g.send(&l);
        lines += 1;
    }
    for _ in 0..lines {
        assert!(g.line().starts_with("401 BCMD unknown command #"));
    }
    let mut fresh = Conn::open(port);
    assert_eq!(fresh.ask("LIST_B"), "400 LS 0");
    assert!(tree(&root).is_empty());
}

#[test]
fn two_hundred_clients_upload_at_once() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &[]);
    assert_eq!(Conn::open(port).ask("CREATE_B b"), "300 BCS");
    let threads: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let body: Vec<u8> = (0..65_536u32).map(|j| (j.wrapping_mul(31).wrapping_add(i)) as u8).collect();
                let mut c = Conn::open(port);
                c.send(format!("UPLOAD b f{i:03} {}\n", body.len()).as_bytes());
                c.send(&body);
                assert_eq!(c.line(), "700 FUBS");
                assert_eq!(c.ask(&format!("DOWNLOAD b f{i:03}")), format!("900 FDBS {}", body.len()));
                assert_eq!(c.bytes(body.len()), body);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = Conn::open(port);
    assert_eq!(c.ask("LIST_F b"), "800 LFS 200");
    for i in 0..200 {
        assert_eq!(c.line(), format!("b f{i:03} 65536"));
    }
}

#[test]
fn replace_is_atomic_under_parallel_downloads() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &[]);
    let mut up = Conn::open(port);
    assert_eq!(up.ask("CREATE_B b"), "300 BCS");
    let versions = [vec![b'a'; 1 << 20], vec![b'b'; 700_000]];
    up.send(b"UPLOAD b f 1048576\n");
    up.send(&versions[0]);
    assert_eq!(up.line(), "700 FUBS");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || seen == 0 {
                    let head = c.ask("DOWNLOAD b f");
                    let size: usize = head.strip_prefix("900 FDBS ").unwrap().parse().unwrap();
                    let bytes = c.bytes(size);
                    let want = if size == 1 << 20 { b'a' } else { b'b' };
                    assert!(size == 1 << 20 || size == 700_000, "size {size}");
                    assert!(bytes.iter().all(|&b| b == want), "a mixed download of {size} bytes");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..30 {
        let v = &versions[(i + 1) % 2];
        up.send(format!("UPLOAD b f {}\n", v.len()).as_bytes());
        up.send(v);
        assert_eq!(up.line(), "700 FUBS");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(tree(&root), ["b", "b/f"]);
}

#[test]
fn eafit_create_new_race_has_one_winner() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &[]);
    let mut a = Conn::open(port);
    let mut b = Conn::open(port);
    assert_eq!(a.ask("NEW_BUCKET,b"), "OK new bucket created");
    // Both are told to go ahead before either sends a byte.
    assert_eq!(a.ask("UPLOAD_FILE,same,b,5"), "ACK");
    assert_eq!(b.ask("UPLOAD_FILE,same,b,5"), "ACK");
    a.send(b"aaaaa");
    b.send(b"bbbbb");
    let mut replies = [a.line(), b.line()];
    replies.sort();
    assert_eq!(replies, ["ERROR file exists", "OK file uploaded"]);
    let content = std::fs::read(root.join("b/same")).unwrap();
    assert!(content == b"aaaaa" || content == b"bbbbb");
    assert_eq!(tree(&root), ["b", "b/same"]);
}

/// A small tmpfs of our own, to fill up. Needs the right to mount (root).
struct SmallDisk {
    path: PathBuf,
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
fn a_full_disk_gives_an_error_reply_and_no_partial_file() {
    let Some(disk) = SmallDisk::mount("2m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the store's unit tests cover failed uploads");
        return;
    };
    let root = disk.path.join("root");
    let (_server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("CREATE_B b"), "300 BCS");
    c.send(b"UPLOAD b small 3\nabc");
    assert_eq!(c.line(), "700 FUBS");
    let big = vec![b'z'; 3 << 20];
    c.send(format!("UPLOAD b big {}\n", big.len()).as_bytes());
    c.send(&big);
    assert_eq!(c.line(), "701 FUBF no space left on the server");
    assert_eq!(c.ask("UPLOAD_FILE,big2,b,3145728"), "ACK");
    c.send(&big);
    assert_eq!(c.line(), "ERROR no space left on the server");
    // Still serving, nothing partial left, and room again for small files.
    assert_eq!(c.ask("LIST_F b"), "800 LFS 1");
    assert_eq!(c.line(), "b small 3");
    assert_eq!(tree(&root), ["b", "b/small"]);
    c.send(b"UPLOAD b after 2\nok");
    assert_eq!(c.line(), "700 FUBS");
}

#[test]
fn shutdown_aborts_uploads_in_flight_and_exits_cleanly() {
    let (_d, root) = tempdir();
    let (mut server, port) = serve(&root, &[]);
    let mut c = Conn::open(port);
    assert_eq!(c.ask("CREATE_B b"), "300 BCS");
    c.send(b"UPLOAD b f 100000\n");
    c.send(&[b'x'; 40_000]);
    // The server has the bytes and a temporary file before it is told to stop.
    let start = Instant::now();
    while !tree(&root).iter().any(|p| p.starts_with("b/.tmp-")) && start.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tree(&root).iter().any(|p| p.starts_with("b/.tmp-")), "an upload is in flight: {:?}", tree(&root));
    interrupt(&server.child);
    assert_eq!(wait(&mut server.child), 0);
    assert!(c.closed());
    assert_eq!(tree(&root), ["b"]);
}

#[test]
fn a_download_of_a_file_deleted_or_replaced_midway_sends_the_bytes_it_opened() {
    let (_d, root) = tempdir();
    std::fs::create_dir_all(root.join("b")).unwrap();
    let old: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("b/f"), &old).unwrap();
    let (_server, port) = serve(&root, &[]);
    let mut reader = Conn::open(port);
    assert_eq!(reader.ask("DOWNLOAD b f"), format!("900 FDBS {}", old.len()));
    let first = reader.bytes(1 << 20);
    let mut other = Conn::open(port);
    assert_eq!(other.ask("DELETE_F b f"), "1000 DFS");
    other.send(b"UPLOAD b f 3\nnew");
    assert_eq!(other.line(), "700 FUBS");
    let rest = reader.bytes(old.len() - (1 << 20));
    assert!(first == old[..1 << 20] && rest == old[1 << 20..], "the download mixed versions");
    // The connection is still in step.
    assert_eq!(reader.ask("DOWNLOAD b f"), "900 FDBS 3");
    assert_eq!(reader.bytes(3), b"new");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (_d, root) = tempdir();
    let (_server, port) = serve(&root, &["--idle-timeout", "1s"]);
    let mut idle = Conn::open(port);
    assert_eq!(idle.ask("LIST_B"), "400 LS 0");
    // Half a line, then nothing: closed as well.
    let mut half = Conn::open(port);
    half.send(b"LIST_");
    assert!(idle.closed());
    assert!(half.closed());
}
