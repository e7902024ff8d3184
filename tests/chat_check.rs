//! `cartero chat check` against `cartero chat serve` (everything holds), against nothing
//! (it says so first), and against the same server behind a proxy that plants one fault at
//! a time, each of which the checker must name.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::chat::serve_open;
use common::Proc;

fn check(port: u16, extra: &[&str]) -> (i32, Vec<String>) {
    let port = port.to_string();
    let mut args = vec!["chat", "check", "127.0.0.1", &port, "--timeout", "1s"];
    args.extend_from_slice(extra);
    let (code, lines, _) = Proc::start(&args).finish();
    (code, lines)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// CONNECT_ACK|OK loses its `\n`, so the USER_LIST behind it merges into its line.
    MergedReplies,
    /// No ERROR ever reaches the client.
    NoError,
    /// The content after a `|` in MESSAGE and BROADCAST is lost.
    LostPipeContent,
    /// A USER_LIST with fewer users than the last one (someone left) is not sent.
    NoUserListOnLeave,
}

/// What the faulty server sends instead of `line` (a server line without `\n`).
fn plant(fault: Fault, line: &str, last_list_len: &mut usize) -> Option<String> {
    match fault {
        Fault::MergedReplies if line == "CONNECT_ACK|OK" => return Some(line.to_string()),
        Fault::NoError if line.starts_with("ERROR|") => return None,
        Fault::LostPipeContent if line.starts_with("MESSAGE|") || line.starts_with("BROADCAST|") => {
            let fields: Vec<&str> = line.splitn(4, '|').collect();
            return Some(format!("{}\n", fields[..fields.len().min(3)].join("|")));
        }
        Fault::NoUserListOnLeave => {
            if let Some(list) = line.strip_prefix("USER_LIST|") {
                let n = list.split(',').filter(|s| !s.is_empty()).count();
                let shrinks = n < *last_list_len;
                *last_list_len = n;
                if shrinks {
                    return None;
                }
            }
        }
        _ => {}
    }
    Some(format!("{line}\n"))
}

/// A faulty chat server: the real one behind a proxy that plants `fault` in what it sends.
fn faulty_proxy(server_port: u16, fault: Fault) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else { return };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (mut s_in, c_out) = (server, Arc::new(Mutex::new(client)));
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut last_list_len = 0;
                let mut chunk = [0u8; 65536];
                loop {
                    let n = match s_in.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut out = c_out.lock().unwrap();
                    if pending.is_empty() && !chunk[..n].contains(&b'\n') {
                        // A legacy write: passed on as it is.
                        let _ = out.write_all(&chunk[..n]);
                        continue;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let line = String::from_utf8_lossy(&line[..i]).into_owned();
                        if let Some(text) = plant(fault, &line, &mut last_list_len) {
                            let _ = out.write_all(text.as_bytes());
                        }
                    }
                }
                let _ = c_out.lock().unwrap().shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn cartero_chat_serve_passes_every_clause() {
    let (_server, port) = serve_open(&[]);
    let (code, lines) = check(port, &[]);
    assert_eq!(code, 0, "{lines:#?}");
    assert!(lines.iter().filter(|l| l.starts_with("ok ")).count() >= 17, "{lines:#?}");
    assert_eq!(lines.last().unwrap(), "20 passed, 0 failed");
    let (code, lines) = check(port, &["--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(doc["failed"], 0);
    // SPEC-chat 1-4, and 7 since cartero accepts JOIN.
    assert_eq!(doc["clauses"].as_array().unwrap().len(), 20);
}

#[test]
fn it_says_first_when_it_cannot_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (code, lines) = check(port, &[]);
    assert_eq!(code, 2);
    assert!(lines[0].starts_with("cannot connect to 127.0.0.1:"), "{lines:#?}");
}

fn failing(lines: &[String], section: &str, clause_start: &str) -> String {
    let prefix = format!("FAIL {section}  {clause_start}");
    lines.iter().find(|l| l.starts_with(&prefix)).cloned().unwrap_or_else(|| panic!("no {prefix:?} in {lines:#?}"))
}

#[test]
fn each_planted_fault_is_named() {
    let (_server, port) = serve_open(&[]);
    for (fault, section, clause, words) in [
        (Fault::MergedReplies, "1", "framing", "merged replies"),
        (Fault::NoError, "4", "404", "no ERROR sent"),
        (Fault::NoError, "4", "400", "no ERROR sent"),
        (Fault::LostPipeContent, "1", "the last field keeps its |", "lost | content"),
        (Fault::NoUserListOnLeave, "3", "DISCONNECT", "no USER_LIST on leave"),
        (Fault::NoUserListOnLeave, "3", "a connection that closes", "no USER_LIST on leave"),
    ] {
        let proxy = faulty_proxy(port, fault);
        let (code, lines) = check(proxy, &[]);
        assert_eq!(code, 1, "{fault:?}: {lines:#?}");
        let line = failing(&lines, section, clause);
        assert!(line.contains(words), "{fault:?}: {line}");
    }
}
