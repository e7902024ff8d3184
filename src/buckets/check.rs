//! The checker: every clause of SPEC-buckets against anyone's bucket server.
//!
//! It can never harm the machine it tests. It only sends requests; every bucket it creates is
//! named `ck<hex>…`, random per run, and deleted at the end; every upload, refused or not,
//! names a file inside one of those buckets with a name that a careless server that joins
//! strings still keeps inside that bucket (no `/`, no `..`); traversal probes are reads only
//! (`DOWNLOAD`, `LIST_F`) or creations of names that always exist (`CREATE_B ..`). Each step
//! waits at most the step timeout, so a server that hangs or resets is a FAIL with its cause,
//! never a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::wire::{parse_reply_head, printable, Op, ReplyHead, Vocabulary};

/// The longest reply line read.
const MAX_LINE: usize = 4096;
/// The most listing lines read.
const MAX_LINES: u64 = 10_000;
/// The size of the main upload (larger than one read, so a server must honour the size).
const BIG: usize = 200_000;

/// One clause's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub title: &'static str,
    pub sent: String,
    pub expected: String,
    pub got: String,
    pub pass: bool,
}

/// A connection of the checker's, every read and write bounded by the step timeout.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Conn { reader: BufReader::with_capacity(64 * 1024, stream) })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.reader.get_mut().write_all(bytes).map_err(|e| format!("sending failed: {}", io_text(&e)))
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        let read = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line);
        match read {
            Err(e) => Err(format!("no reply: {}", io_text(&e))),
            Ok(0) => Err("the connection closed without a reply".into()),
            Ok(_) if line.last() != Some(&b'\n') && line.len() > MAX_LINE => {
                Err(format!("a reply line longer than {MAX_LINE} bytes"))
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                Err(format!("an unterminated reply {:?} then the connection closed", printable(&line, 80)))
            }
            Ok(_) => {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(String::from_utf8_lossy(&line).into_owned())
            }
        }
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut out = vec![0; n];
        self.reader.read_exact(&mut out).map_err(|e| format!("{n} bytes announced, not received: {}", io_text(&e)))?;
        Ok(out)
    }

    /// Whether the server closes the connection (nothing more, then end of stream).
    fn closes(&mut self) -> Result<(), String> {
        let mut one = [0u8; 1];
        match self.reader.read(&mut one) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Ok(_) => Err("more bytes instead of a close".into()),
            Err(e) => Err(format!("the connection stayed open ({})", io_text(&e))),
        }
    }
}

fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// A reply head with the lines it announces.
fn listing(c: &mut Conn, v: Vocabulary, op: Op) -> Result<Vec<String>, String> {
    let head = c.line()?;
    match parse_reply_head(v, op, &head).map_err(|e| e.to_string())? {
        ReplyHead::Count(n) if n <= MAX_LINES => {
            let mut lines = Vec::new();
            for _ in 0..n {
                lines.push(c.line()?);
            }
            Ok(lines)
        }
        _ => Err(format!("{head:?}")),
    }
}

/// Bytes no line-based reader passes through intact: NUL, `\n`, `\r\n`, an `EOF` marker, high
/// bytes.
fn payload(n: usize, seed: u8) -> Vec<u8> {
    let mut out: Vec<u8> = (0..n).map(|i| ((i * 131 + i / 977) as u8) ^ seed).collect();
    let marker = b"\n\r\nEOF\n\0\xff";
    let m = marker.len().min(n);
    out[..m].copy_from_slice(&marker[..m]);
    out
}

/// Runs the clauses against one server.
pub struct Checker {
    addr: SocketAddr,
    timeout: Duration,
    prefix: String,
    pub outcomes: Vec<Outcome>,
    made: Vec<(Vocabulary, String)>,
}

impl Checker {
    /// `prefix` names every bucket the checker makes; it must be a valid name start.
    pub fn new(addr: SocketAddr, timeout: Duration, prefix: String) -> Checker {
        Checker { addr, timeout, prefix, outcomes: Vec::new(), made: Vec::new() }
    }

    /// Whether the server accepts a connection at all (for a clear first line).
    pub fn reachable(&self) -> Result<(), String> {
        Conn::open(self.addr, self.timeout).map(|_| ())
    }

    fn conn(&self) -> Result<Conn, String> {
        Conn::open(self.addr, self.timeout)
    }

    /// Records one clause. `step` returns what it got: `Ok` passes, `Err` fails.
    fn clause(
        &mut self,
        id: String,
        title: &'static str,
        sent: impl Into<String>,
        expected: impl Into<String>,
        step: impl FnOnce(&mut Self) -> Result<String, String>,
    ) -> bool {
        let result = step(self);
        let pass = result.is_ok();
        let got = result.unwrap_or_else(|e| e);
        self.outcomes.push(Outcome { id, title, sent: sent.into(), expected: expected.into(), got, pass });
        pass
    }

    /// Runs every clause of the vocabularies asked for, then deletes what it made.
    pub fn run(&mut self, vocabularies: &[Vocabulary]) {
        for &v in vocabularies {
            match v {
                Vocabulary::Codes => self.codes(),
                Vocabulary::Eafit => self.eafit(),
            }
        }
        self.clean_up();
    }

    fn exchange(c: &mut Conn, request: &[u8], expect: impl FnOnce(&str) -> bool) -> Result<String, String> {
        c.send(request)?;
        let line = c.line()?;
        if expect(&line) {
            Ok(line)
        } else {
            Err(format!("{line:?}"))
        }
    }

    fn codes(&mut self) {
        let v = Vocabulary::Codes;
        let b = format!("{}c", self.prefix);
        let b2 = format!("{}c2", self.prefix);
        let mut c = match self.conn() {
            Ok(c) => c,
            Err(e) => {
                self.clause("C0".into(), "connect", "", "a connection", |_| Err(e));
                return;
            }
        };
        let id = |n: u32| format!("C{n}");
        // Create.
        if self.clause(id(1), "CREATE_B makes a bucket", format!("CREATE_B {b}"), "300 BCS", |_| {
            Self::exchange(&mut c, format!("CREATE_B {b}\n").as_bytes(), |l| l == "300 BCS")
        }) {
            self.made.push((v, b.clone()));
        }
        if self.clause(id(1), "CREATE_B makes a second bucket", format!("CREATE_B {b2}"), "300 BCS", |_| {
            Self::exchange(&mut c, format!("CREATE_B {b2}\n").as_bytes(), |l| l == "300 BCS")
        }) {
            self.made.push((v, b2.clone()));
        }
        self.clause(id(2), "CREATE_B of an existing bucket fails", format!("CREATE_B {b}"), "301 BCF <reason>", |_| {
            Self::exchange(&mut c, format!("CREATE_B {b}\n").as_bytes(), |l| l.starts_with("301 BCF"))
        });
        self.clause(id(3), "LIST_B lists one bucket per line, sorted", "LIST_B", "400 LS <n> then n names", |_| {
            c.send(b"LIST_B\n")?;
            let names = listing(&mut c, v, Op::ListBuckets)?;
            let mut sorted = names.clone();
            sorted.sort();
            if names != sorted {
                return Err(format!("unsorted: {names:?}"));
            }
            if !names.contains(&b) || !names.contains(&b2) {
                return Err(format!("{b} or {b2} missing from {names:?}"));
            }
            Ok(format!("400 LS {}", names.len()))
        });
        // Upload and download with exact sizes.
        let big = payload(BIG, 0);
        self.clause(
            id(4),
            "UPLOAD takes exactly <size> bytes, binary",
            format!("UPLOAD {b} f {BIG} + {BIG} bytes"),
            "700 FUBS",
            |_| {
                c.send(format!("UPLOAD {b} f {BIG}\n").as_bytes())?;
                c.send(&big)?;
                let line = c.line()?;
                if line == "700 FUBS" {
                    Ok(line)
                } else {
                    Err(format!("{line:?}"))
                }
            },
        );
        self.clause(
            id(5),
            "LIST_F <bucket> gives <bucket> <file> <size>",
            format!("LIST_F {b}"),
            "800 LFS 1, then the file",
            |_| {
                c.send(format!("LIST_F {b}\n").as_bytes())?;
                let lines = listing(&mut c, v, Op::ListFiles)?;
                if lines == [format!("{b} f {BIG}")] {
                    Ok(format!("800 LFS 1 / {}", lines[0]))
                } else {
                    Err(format!("800 LFS {} / {lines:?}", lines.len()))
                }
            },
        );
        self.clause(
            id(6),
            "DOWNLOAD sends the size, then exactly the bytes",
            format!("DOWNLOAD {b} f"),
            format!("900 FDBS {BIG} + the bytes"),
            |_| {
                let line =
                    Self::exchange(&mut c, format!("DOWNLOAD {b} f\n").as_bytes(), |l| l == format!("900 FDBS {BIG}"))?;
                let got = c.bytes(BIG)?;
                if got == big {
                    Ok(format!("{line} + the same {BIG} bytes"))
                } else {
                    Err(format!("{line} + {BIG} different bytes"))
                }
            },
        );
        self.clause(
            id(7),
            "UPLOAD replaces an existing file",
            format!("UPLOAD {b} f 5 + hello, DOWNLOAD"),
            "700 FUBS, 900 FDBS 5 + hello",
            |_| {
                Self::exchange(&mut c, format!("UPLOAD {b} f 5\nhello").as_bytes(), |l| l == "700 FUBS")?;
                Self::exchange(&mut c, format!("DOWNLOAD {b} f\n").as_bytes(), |l| l == "900 FDBS 5")?;
                let got = c.bytes(5)?;
                if got == b"hello" {
                    Ok("700 FUBS, 900 FDBS 5 + hello".into())
                } else {
                    Err(printable(&got, 40))
                }
            },
        );
        self.clause(
            id(8),
            "an empty file uploads and downloads",
            format!("UPLOAD {b} empty 0"),
            "700 FUBS, 900 FDBS 0",
            |_| {
                Self::exchange(&mut c, format!("UPLOAD {b} empty 0\n").as_bytes(), |l| l == "700 FUBS")?;
                Self::exchange(&mut c, format!("DOWNLOAD {b} empty\n").as_bytes(), |l| l == "900 FDBS 0")
            },
        );
        self.clause(
            id(9),
            "UPLOAD to a missing bucket fails after its bytes, in step",
            format!("UPLOAD {b}-none f 3 + abc, LIST_B"),
            "701 FUBF <reason>, then 400 LS",
            |_| {
                Self::exchange(&mut c, format!("UPLOAD {b}-none f 3\nabc").as_bytes(), |l| l.starts_with("701 FUBF"))?;
                c.send(b"LIST_B\n")?;
                listing(&mut c, v, Op::ListBuckets)?;
                Ok("701 FUBF, 400 LS".into())
            },
        );
        self.clause(
            id(10),
            "DOWNLOAD of a missing file fails",
            format!("DOWNLOAD {b} none"),
            "901 FDBF <reason>",
            |_| Self::exchange(&mut c, format!("DOWNLOAD {b} none\n").as_bytes(), |l| l.starts_with("901 FDBF")),
        );
        self.clause(
            id(11),
            "LIST_F with no bucket lists every bucket's files",
            "LIST_F",
            format!("800 LFS <n> with {b} empty 0 and {b} f 5"),
            |_| {
                c.send(b"LIST_F\n")?;
                let lines = listing(&mut c, v, Op::ListFiles)?;
                if lines.contains(&format!("{b} empty 0")) && lines.contains(&format!("{b} f 5")) {
                    Ok(format!("800 LFS {}", lines.len()))
                } else {
                    Err(format!("{lines:?}"))
                }
            },
        );
        self.clause(id(12), "an empty line is ignored", "\\n then HELP", "100 HELP <n> then n lines", |_| {
            c.send(b"\nHELP\n")?;
            let lines = listing(&mut c, v, Op::Help)?;
            Ok(format!("100 HELP {}", lines.len()))
        });
        self.clause(id(13), "an unknown command gets 401 BCMD", "FROBNICATE", "401 BCMD <reason>", |_| {
            Self::exchange(&mut c, b"FROBNICATE\n", |l| l.starts_with("401 BCMD"))
        });
        self.clause(id(14), "commands are case-insensitive", format!("list_f {b}"), "800 LFS 2", |_| {
            c.send(format!("list_f {b}\n").as_bytes())?;
            let lines = listing(&mut c, v, Op::ListFiles)?;
            if lines.len() == 2 {
                Ok("800 LFS 2".into())
            } else {
                Err(format!("{lines:?}"))
            }
        });
        // Traversal, reads only: on a server that joins strings, these reach our own file.
        let probes = [
            (format!("DOWNLOAD {b2} ../{b}/f"), "901 FDBF"),
            (format!("DOWNLOAD {b2}/../{b} f"), "901 FDBF"),
            ("DOWNLOAD .. ..".to_owned(), "901 FDBF"),
            (format!("DOWNLOAD {b} /etc/hostname"), "901 FDBF"),
            (format!("DOWNLOAD {b} ..\\{b2}"), "901 FDBF"),
            ("LIST_F ..".to_owned(), "801 LFF"),
            ("LIST_F /".to_owned(), "801 LFF"),
            (format!("LIST_F {b}/.."), "801 LFF"),
            ("CREATE_B ..".to_owned(), "301 BCF"),
            ("CREATE_B .".to_owned(), "301 BCF"),
        ];
        for (request, want) in probes {
            c = match self.conn() {
                Ok(c) => c,
                Err(_) => return,
            };
            self.clause(
                id(15),
                "a name with .., / or \\ is refused",
                request.clone(),
                format!("{want} <reason>"),
                |_| Self::exchange(&mut c, format!("{request}\n").as_bytes(), |l| l.starts_with(want)),
            );
        }
        // Bad names on uploads: the server must refuse them and still read the bytes. The
        // names stay inside our bucket even on a server that joins strings.
        for bad in [".hidden", "a\\b", "a\x01b", "a,b", &"n".repeat(256)] {
            c = match self.conn() {
                Ok(c) => c,
                Err(_) => return,
            };
            let shown = printable(bad.as_bytes(), 30);
            self.clause(
                id(16),
                "UPLOAD with a bad file name is refused, bytes skipped",
                format!("UPLOAD {b} {shown} 3 + abc, then LIST_F {b}"),
                "701 FUBF <reason>, then 800 LFS 2",
                |_| {
                    Self::exchange(&mut c, format!("UPLOAD {b} {bad} 3\nabc").as_bytes(), |l| {
                        l.starts_with("701 FUBF")
                    })?;
                    c.send(format!("LIST_F {b}\n").as_bytes())?;
                    let lines = listing(&mut c, v, Op::ListFiles)?;
                    if lines.len() == 2 {
                        Ok("701 FUBF, 800 LFS 2".into())
                    } else {
                        Err(format!("listed afterwards: {lines:?}"))
                    }
                },
            );
        }
        // Sizes that are not sizes: a reply, then a close.
        for size in ["abc", "-1", "1e3"] {
            c = match self.conn() {
                Ok(c) => c,
                Err(_) => return,
            };
            self.clause(
                id(17),
                "UPLOAD with a size that is not a number fails and closes",
                format!("UPLOAD {b} g {size}"),
                "701 FUBF <reason>, then close",
                |_| {
                    let line = Self::exchange(&mut c, format!("UPLOAD {b} g {size}\n").as_bytes(), |l| {
                        l.starts_with("701 FUBF")
                    })?;
                    c.closes()?;
                    Ok(format!("{line}, closed"))
                },
            );
        }
        c = match self.conn() {
            Ok(c) => c,
            Err(_) => return,
        };
        self.clause(id(18), "a line over 1024 bytes is refused", "HELP + 2000 x", "401 BCMD <reason>", |_| {
            let mut line = b"HELP ".to_vec();
            line.extend(std::iter::repeat_n(b'x', 2000));
            line.push(b'\n');
            Self::exchange(&mut c, &line, |l| l.starts_with("401 BCMD"))
        });
        c = match self.conn() {
            Ok(c) => c,
            Err(_) => return,
        };
        self.clause(
            id(19),
            "DELETE_F deletes a file, once",
            format!("DELETE_F {b} empty (twice)"),
            "1000 DFS, then 1001 DFF <reason>",
            |_| {
                Self::exchange(&mut c, format!("DELETE_F {b} empty\n").as_bytes(), |l| l == "1000 DFS")?;
                Self::exchange(&mut c, format!("DELETE_F {b} empty\n").as_bytes(), |l| l.starts_with("1001 DFF"))?;
                Ok("1000 DFS, 1001 DFF".into())
            },
        );
        if self.clause(
            id(20),
            "DELETE_B deletes a bucket with its files, once",
            format!("DELETE_B {b} (twice)"),
            "600 DBS, then 601 DBF <reason>",
            |_| {
                Self::exchange(&mut c, format!("DELETE_B {b}\n").as_bytes(), |l| l == "600 DBS")?;
                Self::exchange(&mut c, format!("DELETE_B {b}\n").as_bytes(), |l| l.starts_with("601 DBF"))?;
                Ok("600 DBS, 601 DBF".into())
            },
        ) {
            self.made.retain(|(_, name)| name != &b);
        }
        self.clause(id(21), "QUIT says goodbye and closes", "QUIT", "200 BYE, then close", |_| {
            let line = Self::exchange(&mut c, b"QUIT\n", |l| l == "200 BYE")?;
            c.closes()?;
            Ok(format!("{line}, closed"))
        });
    }

    fn eafit(&mut self) {
        let v = Vocabulary::Eafit;
        let b = format!("{}e", self.prefix);
        let b2 = format!("{}e2", self.prefix);
        let mut c = match self.conn() {
            Ok(c) => c,
            Err(e) => {
                self.clause("E0".into(), "connect", "", "a connection", |_| Err(e));
                return;
            }
        };
        let id = |n: u32| format!("E{n}");
        for bucket in [&b, &b2] {
            if self.clause(id(1), "NEW_BUCKET makes a bucket", format!("NEW_BUCKET,{bucket}"), "OK <text>", |_| {
                Self::exchange(&mut c, format!("NEW_BUCKET,{bucket}\n").as_bytes(), |l| {
                    l == "OK" || l.starts_with("OK ")
                })
            }) {
                self.made.push((v, bucket.clone()));
            }
        }
        self.clause(
            id(2),
            "NEW_BUCKET of an existing bucket answers ERROR",
            format!("NEW_BUCKET,{b}"),
            "ERROR <reason>",
            |_| Self::exchange(&mut c, format!("NEW_BUCKET,{b}\n").as_bytes(), |l| l.starts_with("ERROR")),
        );
        self.clause(id(3), "an empty bucket lists as OK 0", format!("LIST_FILE,{b}"), "OK 0", |_| {
            Self::exchange(&mut c, format!("LIST_FILE,{b}\n").as_bytes(), |l| l == "OK 0")
        });
        for word in ["HELLO", "LIST_BUCKET"] {
            self.clause(
                id(4),
                "HELLO and LIST_BUCKET list one bucket per line, sorted",
                word,
                "OK <n> then n names",
                |_| {
                    c.send(format!("{word}\n").as_bytes())?;
                    let names = listing(&mut c, v, Op::ListBuckets)?;
                    let mut sorted = names.clone();
                    sorted.sort();
                    if names != sorted || !names.contains(&b) {
                        return Err(format!("{names:?}"));
                    }
                    Ok(format!("OK {}", names.len()))
                },
            );
        }
        let big = payload(BIG, 7);
        self.clause(
            id(5),
            "UPLOAD_FILE: ACK, exactly <size> bytes, OK",
            format!("UPLOAD_FILE,f,{b},{BIG}"),
            "ACK, then OK <text>",
            |_| {
                Self::exchange(&mut c, format!("UPLOAD_FILE,f,{b},{BIG}\n").as_bytes(), |l| l == "ACK")?;
                c.send(&big)?;
                let line = c.line()?;
                if line == "OK" || line.starts_with("OK ") {
                    Ok(format!("ACK, {line}"))
                } else {
                    Err(format!("ACK, {line:?}"))
                }
            },
        );
        self.clause(
            id(6),
            "UPLOAD_FILE of an existing file answers EXIST",
            format!("UPLOAD_FILE,f,{b},3"),
            "EXIST",
            |_| Self::exchange(&mut c, format!("UPLOAD_FILE,f,{b},3\n").as_bytes(), |l| l == "EXIST"),
        );
        self.clause(
            id(7),
            "LIST_FILE gives <file> <size>",
            format!("LIST_FILE,{b}"),
            format!("OK 1, then f {BIG}"),
            |_| {
                c.send(format!("LIST_FILE,{b}\n").as_bytes())?;
                let lines = listing(&mut c, v, Op::ListFiles)?;
                if lines == [format!("f {BIG}")] {
                    Ok(format!("OK 1 / {}", lines[0]))
                } else {
                    Err(format!("{lines:?}"))
                }
            },
        );
        self.clause(
            id(8),
            "DOWNLOAD_FILE sends OK <size>, then exactly the bytes",
            format!("DOWNLOAD_FILE,f,{b}"),
            format!("OK {BIG} + the bytes"),
            |_| {
                let line =
                    Self::exchange(&mut c, format!("DOWNLOAD_FILE,f,{b}\n").as_bytes(), |l| l == format!("OK {BIG}"))?;
                let got = c.bytes(BIG)?;
                if got == big {
                    Ok(format!("{line} + the same bytes"))
                } else {
                    Err(format!("{line} + different bytes"))
                }
            },
        );
        let missing = [
            (format!("LIST_FILE,{b}-none"), "a listing of a missing bucket"),
            (format!("DOWNLOAD_FILE,none,{b}"), "a download of a missing file"),
            (format!("DELETE_FILE,none,{b}"), "a delete of a missing file"),
            (format!("DELETE_BUCKET,{b}-none"), "a delete of a missing bucket"),
            (format!("UPLOAD_FILE,g,{b}-none,3"), "an upload to a missing bucket"),
        ];
        for (request, _) in missing {
            self.clause(
                id(9),
                "every failure is answered ERROR (never silence)",
                request.clone(),
                "ERROR <reason>",
                |_| Self::exchange(&mut c, format!("{request}\n").as_bytes(), |l| l.starts_with("ERROR")),
            );
        }
        let probes = [
            format!("DOWNLOAD_FILE,../{b}/f,{b2}"),
            format!("DOWNLOAD_FILE,f,{b2}/../{b}"),
            format!("DOWNLOAD_FILE,/etc/hostname,{b}"),
            "LIST_FILE,..".to_owned(),
            "LIST_FILE,/".to_owned(),
            "NEW_BUCKET,..".to_owned(),
            format!("UPLOAD_FILE,.hidden,{b},3"),
            format!("UPLOAD_FILE,a\\b,{b},3"),
        ];
        for request in probes {
            c = match self.conn() {
                Ok(c) => c,
                Err(_) => return,
            };
            self.clause(
                id(10),
                "a name with .., /, \\ or a leading dot is refused",
                request.clone(),
                "ERROR <reason>",
                |_| {
                    c.send(format!("{request}\n").as_bytes())?;
                    let line = c.line()?;
                    if line == "ACK" {
                        // Only names that stay inside our bucket get here: send the bytes.
                        c.send(b"abc")?;
                    }
                    if line.starts_with("ERROR") {
                        Ok(line)
                    } else {
                        Err(format!("{line:?}"))
                    }
                },
            );
        }
        c = match self.conn() {
            Ok(c) => c,
            Err(_) => return,
        };
        self.clause(
            id(11),
            "UPLOAD_FILE with a size that is not a number answers ERROR",
            format!("UPLOAD_FILE,g,{b},-1"),
            "ERROR <reason>",
            |_| Self::exchange(&mut c, format!("UPLOAD_FILE,g,{b},-1\n").as_bytes(), |l| l.starts_with("ERROR")),
        );
        self.clause(
            id(12),
            "DELETE_FILE deletes a file, once",
            format!("DELETE_FILE,f,{b} (twice)"),
            "OK <text>, then ERROR <reason>",
            |_| {
                Self::exchange(&mut c, format!("DELETE_FILE,f,{b}\n").as_bytes(), |l| l.starts_with("OK"))?;
                Self::exchange(&mut c, format!("DELETE_FILE,f,{b}\n").as_bytes(), |l| l.starts_with("ERROR"))?;
                Ok("OK, ERROR".into())
            },
        );
        if self.clause(
            id(13),
            "DELETE_BUCKET deletes a bucket, once",
            format!("DELETE_BUCKET,{b} (twice)"),
            "OK <text>, then ERROR <reason>",
            |_| {
                Self::exchange(&mut c, format!("DELETE_BUCKET,{b}\n").as_bytes(), |l| l.starts_with("OK"))?;
                Self::exchange(&mut c, format!("DELETE_BUCKET,{b}\n").as_bytes(), |l| l.starts_with("ERROR"))?;
                Ok("OK, ERROR".into())
            },
        ) {
            self.made.retain(|(_, name)| name != &b);
        }
        self.clause(id(14), "EXIT says goodbye and closes", "EXIT", "OK <text>, then close", |_| {
            let line = Self::exchange(&mut c, b"EXIT\n", |l| l.starts_with("OK"))?;
            c.closes()?;
            Ok(format!("{line}, closed"))
        });
    }

    /// Deletes the buckets this run made (best effort, bounded).
    fn clean_up(&mut self) {
        for (v, bucket) in std::mem::take(&mut self.made) {
            let Ok(mut c) = self.conn() else { return };
            let request = match v {
                Vocabulary::Codes => format!("DELETE_B {bucket}\n"),
                Vocabulary::Eafit => format!("DELETE_BUCKET,{bucket}\n"),
            };
            let _ = c.send(request.as_bytes()).and_then(|_| c.line());
        }
    }
}
