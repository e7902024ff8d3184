//! `cartero buckets check` against `cartero buckets serve`, and against an in-memory fake
//! bucket server with planted faults, each of which must fail the clauses that name it.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartero::buckets::Name;
use common::{Proc, BIN};

fn check(port: u16, extra: &[&str]) -> (i32, Vec<String>, Duration) {
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(["buckets", "check", "127.0.0.1", &port.to_string()])
        .args(extra)
        .output()
        .expect("cartero runs");
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (out.status.code().unwrap_or(-1), lines, start.elapsed())
}

/// The ids of the failed clauses, deduplicated.
fn failed(lines: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    ids.dedup();
    ids
}

#[test]
fn the_checker_passes_cartero_serve_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut server =
        Proc::start(&["buckets", "serve", "-p", "0", "--bind", "127.0.0.1", "--root", root.to_str().unwrap()]);
    let port: u16 = server.line().strip_prefix("s> init server 127.0.0.1:").unwrap().parse().unwrap();
    for which in ["both", "codes", "eafit"] {
        let (code, lines, _) = check(port, &["--vocabulary", which]);
        let summary = lines.last().unwrap();
        assert_eq!((code, failed(&lines)), (0, vec![]), "{lines:#?}");
        assert!(summary.starts_with("check: ") && summary.ends_with(" passed, 0 failed"), "{summary}");
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn an_unreachable_server_is_the_first_line() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, lines, _) = check(port, &[]);
    assert_eq!(code, 2);
    assert!(lines[0].starts_with(&format!("check: 127.0.0.1:{port} is unreachable: ")), "{lines:?}");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Seed 003's original: listings as a Python list repr on one line.
    ReprListing,
    /// Seed 003's original: an upload takes whatever one read brings, not its size.
    IgnoresSize,
    /// Both originals: names are joined into paths, `..` and `/` included.
    AcceptsDotDot,
    /// Accepts connections, reads, never answers.
    Silent,
}

type Buckets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// A bucket server in memory, faithful to the spec but for `fault`.
fn fake(fault: Fault) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state: Arc<Mutex<Buckets>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                serve_fake(stream, &state, fault);
            });
        }
    });
    port
}

/// Where a bucket and file name lead: checked names, or (with the fault) a joined path
/// normalized as a file system would.
fn resolve(fault: Fault, parts: &[&str]) -> Option<Vec<String>> {
    if fault != Fault::AcceptsDotDot {
        return parts.iter().map(|p| Name::parse(p.as_bytes()).ok().map(|n| n.to_string())).collect();
    }
    let mut out: Vec<String> = Vec::new();
    for piece in parts.join("/").split('/') {
        match piece {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_owned()),
        }
    }
    (out.len() == parts.len()).then_some(out)
}

fn serve_fake(stream: TcpStream, state: &Mutex<Buckets>, fault: Fault) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        match (&mut reader).take(1025).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if fault == Fault::Silent {
            continue;
        }
        if line.last() != Some(&b'\n') {
            let _ = out.write_all(b"401 BCMD line too long\n");
            return;
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
        if text.is_empty() {
            continue;
        }
        let cut = text.find([' ', ',']).unwrap_or(text.len());
        let word = text[..cut].to_ascii_uppercase();
        let rest = &text[cut..];
        let eafit = rest.starts_with(',') || ["HELLO", "LIST_BUCKET", "EXIT"].contains(&word.as_str());
        let args: Vec<&str> =
            if eafit { rest.split(',').skip(1).collect() } else { rest.split(' ').filter(|a| !a.is_empty()).collect() };
        let mut st = state.lock().unwrap();
        let listing = |head: &str, items: Vec<String>| -> String {
            if fault == Fault::ReprListing {
                let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
                format!("{head} [{}]\n", quoted.join(", "))
            } else {
                let mut s = format!("{head} {}\n", items.len());
                for i in items {
                    s += &i;
                    s.push('\n');
                }
                s
            }
        };
        let reply: String = match (word.as_str(), args.as_slice()) {
            ("HELP", []) => "100 HELP 1\nsee the spec\n".into(),
            ("QUIT", []) | ("EXIT", []) => {
                let _ = out.write_all(if word == "QUIT" { b"200 BYE\n" } else { b"OK bye\n" });
                return;
            }
            ("CREATE_B" | "NEW_BUCKET", [b]) => match resolve(fault, &[b]) {
                Some(p) if !st.contains_key(&p[0]) => {
                    st.insert(p[0].clone(), BTreeMap::new());
                    if eafit {
                        "OK created\n".into()
                    } else {
                        "300 BCS\n".into()
                    }
                }
                _ => {
                    if eafit {
                        "ERROR no\n".into()
                    } else {
                        "301 BCF no\n".into()
                    }
                }
            },
            ("LIST_B", []) => listing("400 LS", st.keys().cloned().collect()),
            ("HELLO" | "LIST_BUCKET", []) => listing("OK", st.keys().cloned().collect()),
            ("DELETE_B" | "DELETE_BUCKET", [b]) => match resolve(fault, &[b]).and_then(|p| st.remove(&p[0])) {
                Some(_) => {
                    if eafit {
                        "OK deleted\n".into()
                    } else {
                        "600 DBS\n".into()
                    }
                }
                None => {
                    if eafit {
                        "ERROR no\n".into()
                    } else {
                        "601 DBF no\n".into()
                    }
                }
            },
            ("LIST_F", []) => listing(
                "800 LFS",
                st.iter().flat_map(|(b, fs)| fs.iter().map(move |(f, d)| format!("{b} {f} {}", d.len()))).collect(),
            ),
            ("LIST_F" | "LIST_FILE", [b]) => match resolve(fault, &[b]).and_then(|p| st.get(&p[0])) {
                Some(fs) if eafit => listing("OK", fs.iter().map(|(f, d)| format!("{f} {}", d.len())).collect()),
                Some(fs) => listing("800 LFS", fs.iter().map(|(f, d)| format!("{b} {f} {}", d.len())).collect()),
                None => {
                    if eafit {
                        "ERROR no\n".into()
                    } else {
                        "801 LFF no\n".into()
                    }
                }
            },
            ("DOWNLOAD", [b, f]) | ("DOWNLOAD_FILE", [f, b]) => {
                match resolve(fault, &[b, f]).and_then(|p| st.get(&p[0]).and_then(|fs| fs.get(&p[1]))) {
                    Some(data) => {
                        let head =
                            if eafit { format!("OK {}\n", data.len()) } else { format!("900 FDBS {}\n", data.len()) };
                        let _ = out.write_all(head.as_bytes()).and_then(|_| out.write_all(data));
                        continue;
                    }
                    None => {
                        if eafit {
                            "ERROR no\n".into()
                        } else {
                            "901 FDBF no\n".into()
                        }
                    }
                }
            }
            ("DELETE_F", [b, f]) | ("DELETE_FILE", [f, b]) => {
                match resolve(fault, &[b, f]).and_then(|p| st.get_mut(&p[0]).and_then(|fs| fs.remove(&p[1]))) {
                    Some(_) => {
                        if eafit {
                            "OK deleted\n".into()
                        } else {
                            "1000 DFS\n".into()
                        }
                    }
                    None => {
                        if eafit {
                            "ERROR no\n".into()
                        } else {
                            "1001 DFF no\n".into()
                        }
                    }
                }
            }
            ("UPLOAD", [b, f, size]) | ("UPLOAD_FILE", [f, b, size]) => {
                let Some(size) = size.bytes().all(|c| c.is_ascii_digit()).then(|| size.parse::<usize>().ok()).flatten()
                else {
                    let _ = out.write_all(if eafit { b"ERROR size\n" } else { b"701 FUBF size\n" });
                    if eafit {
                        continue;
                    }
                    return;
                };
                let target = resolve(fault, &[b, f]).filter(|p| st.contains_key(&p[0]));
                if eafit {
                    match &target {
                        None => {
                            let _ = out.write_all(b"ERROR no\n");
                            continue;
                        }
                        Some(p) if st[&p[0]].contains_key(&p[1]) => {
                            let _ = out.write_all(b"EXIST\n");
                            continue;
                        }
                        Some(_) => {
                            let _ = out.write_all(b"ACK\n");
                        }
                    }
                }
                drop(st);
                let data = if fault == Fault::IgnoresSize {
                    let got = reader.fill_buf().map(|b| b[..b.len().min(4096)].to_vec()).unwrap_or_default();
                    reader.consume(got.len());
                    got
                } else {
                    let mut data = vec![0; size];
                    if reader.read_exact(&mut data).is_err() {
                        return;
                    }
                    data
                };
                let mut st = state.lock().unwrap();
                match target {
                    Some(p) if st.contains_key(&p[0]) => {
                        st.get_mut(&p[0]).unwrap().insert(p[1].clone(), data);
                        if eafit {
                            "OK uploaded\n".into()
                        } else {
                            "700 FUBS\n".into()
                        }
                    }
                    _ => {
                        if eafit {
                            "ERROR no\n".into()
                        } else {
                            "701 FUBF no\n".into()
                        }
                    }
                }
            }
            _ if eafit
                || ["NEW_BUCKET", "DELETE_BUCKET", "LIST_FILE", "UPLOAD_FILE", "DOWNLOAD_FILE", "DELETE_FILE"]
                    .contains(&word.as_str()) =>
            {
                "ERROR usage\n".into()
            }
            ("CREATE_B", _) => "301 BCF usage\n".into(),
            _ => "401 BCMD what\n".into(),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_faithful_fake_passes_so_the_faults_below_are_what_fails() {
    let (code, lines, _) = check(fake(Fault::None), &[]);
    assert_eq!((code, failed(&lines)), (0, vec![]), "{lines:#?}");
}

#[test]
fn a_listing_as_a_python_repr_fails_the_listing_clauses() {
    let (code, lines, _) = check(fake(Fault::ReprListing), &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&lines), ["C3", "C5", "C9", "C11", "C14", "C16", "E3", "E4", "E7"], "{lines:#?}");
}

#[test]
fn an_upload_that_ignores_the_size_fails_and_the_checker_still_finishes() {
    let (code, lines, _) = check(fake(Fault::IgnoresSize), &["--timeout", "1s"]);
    assert_eq!(code, 1);
    let failed = failed(&lines);
    assert!(failed.contains(&"C5".to_owned()) && failed.contains(&"C6".to_owned()), "{lines:#?}");
    assert!(failed.contains(&"E7".to_owned()) && failed.contains(&"E8".to_owned()), "{lines:#?}");
    assert!(lines.last().unwrap().starts_with("check: "));
}

#[test]
fn a_server_that_accepts_dotdot_fails_the_traversal_clauses() {
    let (code, lines, _) = check(fake(Fault::AcceptsDotDot), &[]);
    assert_eq!(code, 1);
    let failed = failed(&lines);
    assert!(failed.contains(&"C15".to_owned()) && failed.contains(&"E10".to_owned()), "{lines:#?}");
    let traversal = lines.iter().find(|l| l.starts_with("FAIL C15") && l.contains("../")).unwrap();
    assert!(traversal.contains("got: \"900 FDBS"), "{traversal}");
}

#[test]
fn a_server_that_never_answers_fails_every_clause_in_bounded_time() {
    let (code, lines, _) = check(fake(Fault::Silent), &["--timeout", "100ms"]);
    assert_eq!(code, 1);
    assert!(lines.iter().all(|l| !l.starts_with("PASS")), "{lines:#?}");
    assert!(lines.last().unwrap().starts_with("check: 0 passed"));
}
