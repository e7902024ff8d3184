//! The bucket protocol on the wire, sans-IO (SPEC-buckets 2, 3 and 4): request lines of both
//! vocabularies, the replies of each, and a [`Session`] that tells command lines from the
//! bytes of an upload with explicit phases.
//!
//! A request line holds at most 1024 bytes before its `\n`; the decoder never keeps more, and
//! a longer line is an error ([`Event::LineTooLong`]: the server answers `401 BCMD` and
//! closes, since it cannot tell where the next request starts). An empty line is ignored.

use std::fmt;

use super::store::Name;

/// The most bytes a request line holds before its `\n` (a `\r` before it counts).
pub(crate) const MAX_LINE: usize = 1024;

/// Which of the two vocabularies a command word belongs to; the reply style follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vocabulary {
    /// Seed 003: `CREATE_B`, `UPLOAD`..., replies `<code> <tag>[ <detail>]`.
    Codes,
    /// Seed 004 (EAFIT): `NEW_BUCKET,<b>`, `UPLOAD_FILE`..., replies `OK ...` / `ERROR ...`.
    Eafit,
}

impl std::str::FromStr for Vocabulary {
    type Err = String;
    fn from_str(s: &str) -> Result<Vocabulary, String> {
        match s.to_ascii_lowercase().as_str() {
            "codes" => Ok(Vocabulary::Codes),
            "eafit" => Ok(Vocabulary::Eafit),
            _ => Err(format!("unknown vocabulary {s:?} (codes or eafit)")),
        }
    }
}

impl fmt::Display for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vocabulary::Codes => "codes",
            Vocabulary::Eafit => "eafit",
        })
    }
}

/// What a request asks for, whatever its vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Help,
    Quit,
    CreateBucket,
    ListBuckets,
    DeleteBucket,
    Upload,
    ListFiles,
    Download,
    DeleteFile,
}

/// A request, its names already checked ([`Name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Quit,
    CreateBucket(Name),
    ListBuckets,
    DeleteBucket(Name),
    Upload {
        bucket: Name,
        file: Name,
        size: u64,
    },
    /// `None`: every bucket (codes `LIST_F` with no argument).
    ListFiles(Option<Name>),
    Download {
        bucket: Name,
        file: Name,
    },
    DeleteFile {
        bucket: Name,
        file: Name,
    },
}

impl Command {
    pub fn op(&self) -> Op {
        match self {
            Command::Help => Op::Help,
            Command::Quit => Op::Quit,
            Command::CreateBucket(_) => Op::CreateBucket,
            Command::ListBuckets => Op::ListBuckets,
            Command::DeleteBucket(_) => Op::DeleteBucket,
            Command::Upload { .. } => Op::Upload,
            Command::ListFiles(_) => Op::ListFiles,
            Command::Download { .. } => Op::Download,
            Command::DeleteFile { .. } => Op::DeleteFile,
        }
    }
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub vocabulary: Vocabulary,
    pub command: Command,
}

impl Request {
    /// The request line for `command` in `vocabulary`, `\n` included; `None` when the
    /// vocabulary has no such command (EAFIT has no `HELP`, and lists files of one bucket only).
    pub fn encode(vocabulary: Vocabulary, command: &Command) -> Option<String> {
        let line = match (vocabulary, command) {
            (Vocabulary::Codes, Command::Help) => "HELP".to_owned(),
            (Vocabulary::Codes, Command::Quit) => "QUIT".to_owned(),
            (Vocabulary::Codes, Command::CreateBucket(b)) => format!("CREATE_B {b}"),
            (Vocabulary::Codes, Command::ListBuckets) => "LIST_B".to_owned(),
            (Vocabulary::Codes, Command::DeleteBucket(b)) => format!("DELETE_B {b}"),
            (Vocabulary::Codes, Command::Upload { bucket, file, size }) => format!("UPLOAD {bucket} {file} {size}"),
            (Vocabulary::Codes, Command::ListFiles(None)) => "LIST_F".to_owned(),
            (Vocabulary::Codes, Command::ListFiles(Some(b))) => format!("LIST_F {b}"),
            (Vocabulary::Codes, Command::Download { bucket, file }) => format!("DOWNLOAD {bucket} {file}"),
            (Vocabulary::Codes, Command::DeleteFile { bucket, file }) => format!("DELETE_F {bucket} {file}"),
            (Vocabulary::Eafit, Command::Help | Command::ListFiles(None)) => return None,
            (Vocabulary::Eafit, Command::Quit) => "EXIT".to_owned(),
            (Vocabulary::Eafit, Command::CreateBucket(b)) => format!("NEW_BUCKET,{b}"),
            (Vocabulary::Eafit, Command::ListBuckets) => "LIST_BUCKET".to_owned(),
            (Vocabulary::Eafit, Command::DeleteBucket(b)) => format!("DELETE_BUCKET,{b}"),
            (Vocabulary::Eafit, Command::Upload { bucket, file, size }) => {
                format!("UPLOAD_FILE,{file},{bucket},{size}")
            }
            (Vocabulary::Eafit, Command::ListFiles(Some(b))) => format!("LIST_FILE,{b}"),
            (Vocabulary::Eafit, Command::Download { bucket, file }) => format!("DOWNLOAD_FILE,{file},{bucket}"),
            (Vocabulary::Eafit, Command::DeleteFile { bucket, file }) => format!("DELETE_FILE,{file},{bucket}"),
        };
        Some(line + "\n")
    }
}

/// What the connection does after a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request.
    Continue,
    /// Read and drop this many bytes (a refused codes `UPLOAD` whose size was readable),
    /// then answer.
    Discard(u64),
    /// Answer, then close: the size was unreadable, so the bytes cannot be told from commands.
    Close,
}

/// A request line that cannot be served as it stands, and the reply it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub vocabulary: Vocabulary,
    /// `None` when the command word is unknown (`401 BCMD`).
    pub op: Option<Op>,
    pub reason: String,
    pub after: After,
    /// The line as received, printable and cut short (for the server's log).
    pub line: String,
}

impl Rejection {
    pub fn reply(&self) -> Reply {
        match self.op {
            Some(op) => Reply::Failed(self.vocabulary, op, self.reason.clone()),
            None => Reply::BadCommand(self.reason.clone()),
        }
    }
}

/// Parses one request line (without its `\n`; a final `\r` is dropped). `max_file_size`
/// bounds upload sizes.
pub fn parse_request(line: &[u8], max_file_size: u64) -> Result<Request, Rejection> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let word_end = line.iter().position(|&b| b == b' ' || b == b',').unwrap_or(line.len());
    let word = line[..word_end].to_ascii_uppercase();
    let rest = &line[word_end..];
    let (vocabulary, op) = match word.as_slice() {
        b"HELP" => (Vocabulary::Codes, Op::Help),
        b"QUIT" => (Vocabulary::Codes, Op::Quit),
        b"CREATE_B" => (Vocabulary::Codes, Op::CreateBucket),
        b"LIST_B" => (Vocabulary::Codes, Op::ListBuckets),
        b"DELETE_B" => (Vocabulary::Codes, Op::DeleteBucket),
        b"UPLOAD" => (Vocabulary::Codes, Op::Upload),
        b"LIST_F" => (Vocabulary::Codes, Op::ListFiles),
        b"DOWNLOAD" => (Vocabulary::Codes, Op::Download),
        b"DELETE_F" => (Vocabulary::Codes, Op::DeleteFile),
        b"HELLO" | b"LIST_BUCKET" => (Vocabulary::Eafit, Op::ListBuckets),
        b"EXIT" => (Vocabulary::Eafit, Op::Quit),
        b"NEW_BUCKET" => (Vocabulary::Eafit, Op::CreateBucket),
        b"DELETE_BUCKET" => (Vocabulary::Eafit, Op::DeleteBucket),
        b"LIST_FILE" => (Vocabulary::Eafit, Op::ListFiles),
        b"UPLOAD_FILE" => (Vocabulary::Eafit, Op::Upload),
        b"DOWNLOAD_FILE" => (Vocabulary::Eafit, Op::Download),
        b"DELETE_FILE" => (Vocabulary::Eafit, Op::DeleteFile),
        _ => {
            return Err(Rejection {
                vocabulary: Vocabulary::Codes,
                op: None,
                reason: format!("unknown command {}", printable(&line[..word_end], 40)),
                after: After::Continue,
                line: printable(line, 100),
            })
        }
    };
    let refuse = |reason: String, after: After| Rejection {
        vocabulary,
        op: Some(op),
        reason,
        after,
        line: printable(line, 100),
    };
    let args: Vec<&[u8]> = match vocabulary {
        Vocabulary::Codes => rest.split(|&b| b == b' ').filter(|a| !a.is_empty()).collect(),
        Vocabulary::Eafit if rest.is_empty() => Vec::new(),
        Vocabulary::Eafit => match rest.strip_prefix(b",") {
            Some(fields) => fields.split(|&b| b == b',').collect(),
            None => return Err(refuse(format!("usage: {}", usage(vocabulary, op)), After::Continue)),
        },
    };
    let name = |i: usize| -> Result<Name, Rejection> {
        Name::parse(args[i]).map_err(|e| refuse(format!("bad name {}: {e}", printable(args[i], 40)), After::Continue))
    };
    let arity = |n: std::ops::RangeInclusive<usize>| -> Result<(), Rejection> {
        if n.contains(&args.len()) {
            Ok(())
        } else {
            Err(refuse(format!("usage: {}", usage(vocabulary, op)), After::Continue))
        }
    };
    let command = match op {
        Op::Help => arity(0..=0).map(|()| Command::Help)?,
        Op::Quit => arity(0..=0).map(|()| Command::Quit)?,
        Op::ListBuckets => arity(0..=0).map(|()| Command::ListBuckets)?,
        Op::CreateBucket => {
            arity(1..=1)?;
            Command::CreateBucket(name(0)?)
        }
        Op::DeleteBucket => {
            arity(1..=1)?;
            Command::DeleteBucket(name(0)?)
        }
        Op::ListFiles => {
            match vocabulary {
                Vocabulary::Codes => arity(0..=1)?,
                Vocabulary::Eafit => arity(1..=1)?,
            }
            Command::ListFiles(if args.is_empty() { None } else { Some(name(0)?) })
        }
        Op::Download | Op::DeleteFile => {
            arity(2..=2)?;
            let (bucket, file) = match vocabulary {
                Vocabulary::Codes => (name(0)?, name(1)?),
                Vocabulary::Eafit => (name(1)?, name(0)?),
            };
            if op == Op::Download {
                Command::Download { bucket, file }
            } else {
                Command::DeleteFile { bucket, file }
            }
        }
        Op::Upload => {
            // Codes: the bytes follow whatever we answer, so a size we cannot read closes
            // the connection. EAFIT: no byte comes before our ACK, so any refusal is plain.
            let unreadable = match vocabulary {
                Vocabulary::Codes => After::Close,
                Vocabulary::Eafit => After::Continue,
            };
            if args.len() != 3 {
                return Err(refuse(format!("usage: {}", usage(vocabulary, op)), unreadable));
            }
            let size = parse_size(args[2]).ok_or_else(|| {
                refuse(format!("size {} is not a number of bytes", printable(args[2], 40)), unreadable)
            })?;
            if size > max_file_size {
                return Err(refuse(format!("size {size} is over the limit of {max_file_size} bytes"), unreadable));
            }
            let on_bad_name = match vocabulary {
                Vocabulary::Codes => After::Discard(size),
                Vocabulary::Eafit => After::Continue,
            };
            let (bucket, file) = match vocabulary {
                Vocabulary::Codes => (name(0), name(1)),
                Vocabulary::Eafit => (name(1), name(0)),
            };
            match (bucket, file) {
                (Ok(bucket), Ok(file)) => Command::Upload { bucket, file, size },
                (Err(e), _) | (_, Err(e)) => return Err(Rejection { after: on_bad_name, ..e }),
            }
        }
    };
    Ok(Request { vocabulary, command })
}

/// A size: ASCII digits only (no sign, no space), at most what a `u64` holds.
fn parse_size(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn usage(vocabulary: Vocabulary, op: Op) -> &'static str {
    match (vocabulary, op) {
        (Vocabulary::Codes, Op::Help) => "HELP",
        (Vocabulary::Codes, Op::Quit) => "QUIT",
        (Vocabulary::Codes, Op::CreateBucket) => "CREATE_B <bucket>",
        (Vocabulary::Codes, Op::ListBuckets) => "LIST_B",
        (Vocabulary::Codes, Op::DeleteBucket) => "DELETE_B <bucket>",
        (Vocabulary::Codes, Op::Upload) => "UPLOAD <bucket> <file> <size>",
        (Vocabulary::Codes, Op::ListFiles) => "LIST_F [<bucket>]",
        (Vocabulary::Codes, Op::Download) => "DOWNLOAD <bucket> <file>",
        (Vocabulary::Codes, Op::DeleteFile) => "DELETE_F <bucket> <file>",
        (Vocabulary::Eafit, Op::Help | Op::ListBuckets) => "HELLO or LIST_BUCKET",
        (Vocabulary::Eafit, Op::Quit) => "EXIT",
        (Vocabulary::Eafit, Op::CreateBucket) => "NEW_BUCKET,<bucket>",
        (Vocabulary::Eafit, Op::DeleteBucket) => "DELETE_BUCKET,<bucket>",
        (Vocabulary::Eafit, Op::Upload) => "UPLOAD_FILE,<file>,<bucket>,<size>",
        (Vocabulary::Eafit, Op::ListFiles) => "LIST_FILE,<bucket>",
        (Vocabulary::Eafit, Op::Download) => "DOWNLOAD_FILE,<file>,<bucket>",
        (Vocabulary::Eafit, Op::DeleteFile) => "DELETE_FILE,<file>,<bucket>",
    }
}

/// Up to `max` characters of `bytes` fit for one line of text: anything not printable ASCII
/// becomes `\xNN`, and a cut is marked with `...`.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        if out.len() >= max {
            out.push_str("...");
            break;
        }
        if b.is_ascii_graphic() || (b == b' ' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The help text of the codes vocabulary's `HELP`.
pub fn help_lines() -> Vec<String> {
    [
        "HELP | QUIT",
        "CREATE_B <bucket> | LIST_B | DELETE_B <bucket>",
        "UPLOAD <bucket> <file> <size> then exactly size bytes",
        "LIST_F [<bucket>] | DOWNLOAD <bucket> <file> | DELETE_F <bucket> <file>",
        "EAFIT: HELLO | LIST_BUCKET | EXIT | NEW_BUCKET,<b> | DELETE_BUCKET,<b> | LIST_FILE,<b>",
        "EAFIT: UPLOAD_FILE,<f>,<b>,<size> | DOWNLOAD_FILE,<f>,<b> | DELETE_FILE,<f>,<b>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A reply's first line (and the lines of a listing), as SPEC-buckets 3 and 4 write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A success with nothing after it (`300 BCS`, `OK new bucket created`, `200 BYE`...).
    Done(Vocabulary, Op),
    /// A failure with its reason (`301 BCF <reason>`, `ERROR <reason>`). For the codes
    /// commands that have no failure code (`HELP`, `QUIT`, `LIST_B`) it is `401 BCMD`.
    Failed(Vocabulary, Op, String),
    /// An unknown command or an unreadable line: `401 BCMD <reason>`.
    BadCommand(String),
    /// A count and that many lines (`100 HELP n`, `400 LS n`, `800 LFS n`, `OK n`).
    Listing(Vocabulary, Op, Vec<String>),
    /// The header of a download: `900 FDBS <size>` or `OK <size>`, then the bytes.
    Download(Vocabulary, u64),
    /// EAFIT: send the bytes now.
    Ack,
    /// EAFIT: the file exists, send no bytes.
    Exist,
}

impl Reply {
    /// Appends the reply's lines, each ending with `\n`. Free text (reasons, listing lines)
    /// never breaks a line: control characters become `?`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut line = |text: &str| {
            out.extend(text.bytes().map(|b| if b.is_ascii_control() { b'?' } else { b }));
            out.push(b'\n');
        };
        match self {
            Reply::Done(Vocabulary::Codes, op) => line(match op {
                Op::Quit => "200 BYE",
                Op::CreateBucket => "300 BCS",
                Op::DeleteBucket => "600 DBS",
                Op::Upload => "700 FUBS",
                Op::DeleteFile => "1000 DFS",
                Op::Help | Op::ListBuckets | Op::ListFiles | Op::Download => "401 BCMD no such reply",
            }),
            Reply::Done(Vocabulary::Eafit, op) => line(match op {
                Op::Quit => "OK bye",
                Op::CreateBucket => "OK new bucket created",
                Op::DeleteBucket => "OK bucket deleted successfully",
                Op::Upload => "OK file uploaded",
                Op::DeleteFile => "OK file deleted successfully",
                Op::Help | Op::ListBuckets | Op::ListFiles | Op::Download => "OK",
            }),
            Reply::Failed(Vocabulary::Codes, op, reason) => {
                let head = match op {
                    Op::CreateBucket => "301 BCF",
                    Op::DeleteBucket => "601 DBF",
                    Op::Upload => "701 FUBF",
                    Op::ListFiles => "801 LFF",
                    Op::Download => "901 FDBF",
                    Op::DeleteFile => "1001 DFF",
                    Op::Help | Op::Quit | Op::ListBuckets => "401 BCMD",
                };
                line(&format!("{head} {reason}"))
            }
            Reply::Failed(Vocabulary::Eafit, _, reason) => line(&format!("ERROR {reason}")),
            Reply::BadCommand(reason) => line(&format!("401 BCMD {reason}")),
            Reply::Listing(vocabulary, op, lines) => {
                let head = match (vocabulary, op) {
                    (Vocabulary::Eafit, _) => "OK",
                    (Vocabulary::Codes, Op::Help) => "100 HELP",
                    (Vocabulary::Codes, Op::ListFiles) => "800 LFS",
                    (Vocabulary::Codes, _) => "400 LS",
                };
                line(&format!("{head} {}", lines.len()));
                for l in lines {
                    line(l);
                }
            }
            Reply::Download(Vocabulary::Codes, size) => line(&format!("900 FDBS {size}")),
            Reply::Download(Vocabulary::Eafit, size) => line(&format!("OK {size}")),
            Reply::Ack => line("ACK"),
            Reply::Exist => line("EXIST"),
        }
    }

    /// The reply's code (codes) or first word (EAFIT), for the server's log line.
    pub fn status(&self) -> &'static str {
        match self {
            Reply::Done(Vocabulary::Codes, op) => match op {
                Op::Quit => "200",
                Op::CreateBucket => "300",
                Op::DeleteBucket => "600",
                Op::Upload => "700",
                Op::DeleteFile => "1000",
                _ => "401",
            },
            Reply::Failed(Vocabulary::Codes, op, _) => match op {
                Op::CreateBucket => "301",
                Op::DeleteBucket => "601",
                Op::Upload => "701",
                Op::ListFiles => "801",
                Op::Download => "901",
                Op::DeleteFile => "1001",
                _ => "401",
            },
            Reply::BadCommand(_) => "401",
            Reply::Listing(Vocabulary::Codes, Op::Help, _) => "100",
            Reply::Listing(Vocabulary::Codes, Op::ListFiles, _) => "800",
            Reply::Listing(Vocabulary::Codes, _, _) => "400",
            Reply::Download(Vocabulary::Codes, _) => "900",
            Reply::Done(Vocabulary::Eafit, _) | Reply::Listing(Vocabulary::Eafit, ..) => "OK",
            Reply::Download(Vocabulary::Eafit, _) => "OK",
            Reply::Failed(Vocabulary::Eafit, ..) => "ERROR",
            Reply::Ack => "ACK",
            Reply::Exist => "EXIST",
        }
    }
}

/// The first line of a reply as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyHead {
    /// A success with nothing after it.
    Done,
    /// A success followed by this many lines (a listing, help) or bytes (a download).
    Count(u64),
    /// A failure and its reason.
    Failed(String),
    /// EAFIT before an upload's bytes.
    Ack,
    Exist,
}

/// A reply line that is not what the protocol allows for the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply {line:?} (expected {expected})")]
pub struct BadReply {
    pub line: String,
    pub expected: String,
}

/// Reads the first reply line (without `\n`, a final `\r` dropped) to a request of `op` in
/// `vocabulary`, strictly: a code or word the spec does not give for that request is an error.
pub fn parse_reply_head(vocabulary: Vocabulary, op: Op, line: &str) -> Result<ReplyHead, BadReply> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let bad = |expected: &str| BadReply { line: printable(line.as_bytes(), 200), expected: expected.to_owned() };
    let count = |text: &str| parse_size(text.as_bytes());
    match vocabulary {
        Vocabulary::Codes => {
            let (ok, ok_count, fail) = match op {
                Op::Help => ("100 HELP", true, "401 BCMD"),
                Op::Quit => ("200 BYE", false, "401 BCMD"),
                Op::CreateBucket => ("300 BCS", false, "301 BCF"),
                Op::ListBuckets => ("400 LS", true, "401 BCMD"),
                Op::DeleteBucket => ("600 DBS", false, "601 DBF"),
                Op::Upload => ("700 FUBS", false, "701 FUBF"),
                Op::ListFiles => ("800 LFS", true, "801 LFF"),
                Op::Download => ("900 FDBS", true, "901 FDBF"),
                Op::DeleteFile => ("1000 DFS", false, "1001 DFF"),
            };
            let expected = format!("{ok}{} or {fail} <reason>", if ok_count { " <n>" } else { "" });
            if ok_count {
                if let Some(n) = line.strip_prefix(ok).and_then(|r| r.strip_prefix(' ')).and_then(count) {
                    return Ok(ReplyHead::Count(n));
                }
            } else if line == ok {
                return Ok(ReplyHead::Done);
            }
            for head in [fail, "401 BCMD"] {
                if let Some(rest) = line.strip_prefix(head) {
                    if rest.is_empty() || rest.starts_with(' ') {
                        return Ok(ReplyHead::Failed(rest.trim_start().to_owned()));
                    }
                }
            }
            Err(bad(&expected))
        }
        Vocabulary::Eafit => {
            if op == Op::Upload {
                match line {
                    "ACK" => return Ok(ReplyHead::Ack),
                    "EXIST" => return Ok(ReplyHead::Exist),
                    _ => {}
                }
            }
            if let Some(rest) = line.strip_prefix("ERROR") {
                if rest.is_empty() || rest.starts_with(' ') {
                    return Ok(ReplyHead::Failed(rest.trim_start().to_owned()));
                }
            }
            let counted = matches!(op, Op::ListBuckets | Op::ListFiles | Op::Download);
            match line.strip_prefix("OK") {
                Some(rest) if counted => match rest.strip_prefix(' ').and_then(count) {
                    Some(n) => Ok(ReplyHead::Count(n)),
                    None => Err(bad("OK <n> or ERROR <reason>")),
                },
                Some(rest) if rest.is_empty() || rest.starts_with(' ') => Ok(ReplyHead::Done),
                _ if op == Op::Upload => Err(bad("ACK, EXIST, OK ... or ERROR <reason>")),
                _ => Err(bad("OK ... or ERROR <reason>")),
            }
        }
    }
}

/// A bounded line reader: keeps at most 1024 bytes, never rescans what it has seen.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
}

/// One step of a [`LineDecoder`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineStep {
    /// All the input was taken; no full line yet.
    NeedMore,
    /// A line (without `\n`); take it with [`LineDecoder::take`].
    Line,
    /// More than 1024 bytes came before a `\n`.
    TooLong,
}

impl LineDecoder {
    /// Consumes bytes of `input` up to and including the first `\n`; returns how many.
    pub fn decode(&mut self, input: &[u8]) -> (usize, LineStep) {
        let room = MAX_LINE - self.buf.len().min(MAX_LINE);
        let window = &input[..input.len().min(room + 1)];
        match memchr::memchr(b'\n', window) {
            Some(i) => {
                self.buf.extend_from_slice(&window[..i]);
                (i + 1, LineStep::Line)
            }
            None if window.len() > room => (window.len(), LineStep::TooLong),
            None => {
                self.buf.extend_from_slice(window);
                (window.len(), LineStep::NeedMore)
            }
        }
    }

    /// The line just decoded; the decoder is ready for the next one.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// The phase of a connection on the server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading request lines.
    Line,
    /// Receiving this many more bytes of an upload.
    Upload { remaining: u64 },
    /// Dropping this many more bytes of a refused upload.
    Discard { remaining: u64 },
    /// Nothing more is read (after `QUIT`, a line too long, an unreadable size).
    Closed,
}

/// What the bytes given to [`Session::handle`] were.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// They were all taken and more are needed.
    NeedMore,
    /// A request to serve (upload: call [`Session::receive`] once its bytes may come).
    Request(Request),
    /// A request refused as it stands; answer [`Rejection::reply`], then follow
    /// [`Rejection::after`] ([`Session::discard`] or [`Session::close`]).
    Rejected(Rejection),
    /// The consumed bytes are upload data; `last` when the upload has all its bytes.
    Data { last: bool },
    /// A refused upload's bytes have all been dropped: answer now.
    Discarded,
    /// A line longer than the limit: answer `401 BCMD` and close.
    LineTooLong,
    /// The session is closed; the bytes were not taken.
    Closed,
}

/// The server's view of one connection, without IO: feed it what arrives with
/// [`Session::handle`] and act on each [`Event`].
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    line: LineDecoder,
    max_file_size: u64,
}

impl Session {
    pub fn new(max_file_size: u64) -> Session {
        Session { phase: Phase::Line, line: LineDecoder::default(), max_file_size }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes bytes from the front of `input` and says what they were; returns how many were
    /// taken. Call it again with the rest until it answers [`Event::NeedMore`] (a zero-byte
    /// upload or discard completes even with empty input).
    pub fn handle(&mut self, input: &[u8]) -> (usize, Event) {
        match self.phase {
            Phase::Closed => (0, Event::Closed),
            Phase::Upload { remaining } => {
                let n = (input.len() as u64).min(remaining);
                if n == 0 && remaining > 0 {
                    return (0, Event::NeedMore);
                }
                let left = remaining - n;
                self.phase = if left == 0 { Phase::Line } else { Phase::Upload { remaining: left } };
                (n as usize, Event::Data { last: left == 0 })
            }
            Phase::Discard { remaining } => {
                let n = (input.len() as u64).min(remaining);
                let left = remaining - n;
                if left == 0 {
                    self.phase = Phase::Line;
                    (n as usize, Event::Discarded)
                } else {
                    self.phase = Phase::Discard { remaining: left };
                    (n as usize, Event::NeedMore)
                }
            }
            Phase::Line => {
                let mut taken = 0;
                loop {
                    let (n, step) = self.line.decode(&input[taken..]);
                    taken += n;
                    match step {
                        LineStep::NeedMore => return (taken, Event::NeedMore),
                        LineStep::TooLong => {
                            self.line.take();
                            self.phase = Phase::Closed;
                            return (taken, Event::LineTooLong);
                        }
                        LineStep::Line => {
                            let line = self.line.take();
                            if line.is_empty() || line == b"\r" {
                                continue;
                            }
                            return match parse_request(&line, self.max_file_size) {
                                Ok(request) => {
                                    if request.command == Command::Quit {
                                        self.phase = Phase::Closed;
                                    }
                                    (taken, Event::Request(request))
                                }
                                Err(rejection) => {
                                    match rejection.after {
                                        After::Close => self.phase = Phase::Closed,
                                        After::Discard(size) => self.phase = Phase::Discard { remaining: size },
                                        After::Continue => {}
                                    }
                                    (taken, Event::Rejected(rejection))
                                }
                            };
                        }
                    }
                }
            }
        }
    }

    /// The next `size` bytes are the accepted upload's data.
    pub fn receive(&mut self, size: u64) {
        self.phase = Phase::Upload { remaining: size };
    }

    /// The next `size` bytes are dropped (an upload refused after its line was read).
    pub fn discard(&mut self, size: u64) {
        self.phase = if size == 0 { Phase::Line } else { Phase::Discard { remaining: size } };
    }

    /// Reads nothing more.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX: u64 = 1 << 30;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn req(line: &str) -> Result<Request, Rejection> {
        parse_request(line.as_bytes(), MAX)
    }

    fn cmd(line: &str) -> (Vocabulary, Command) {
        let r = req(line).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        (r.vocabulary, r.command)
    }

    fn encoded(reply: Reply) -> String {
        let mut out = Vec::new();
        reply.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn codes_requests() {
        use Vocabulary::Codes as C;
        assert_eq!(cmd("HELP"), (C, Command::Help));
        assert_eq!(cmd("quit\r"), (C, Command::Quit));
        assert_eq!(cmd("create_b  photos "), (C, Command::CreateBucket(n("photos"))));
        assert_eq!(cmd("LIST_B"), (C, Command::ListBuckets));
        assert_eq!(cmd("DELETE_B b"), (C, Command::DeleteBucket(n("b"))));
        assert_eq!(cmd("UPLOAD b f.txt 12"), (C, Command::Upload { bucket: n("b"), file: n("f.txt"), size: 12 }));
        assert_eq!(cmd("LIST_F"), (C, Command::ListFiles(None)));
        assert_eq!(cmd("LIST_F b"), (C, Command::ListFiles(Some(n("b")))));
        assert_eq!(cmd("DOWNLOAD b f"), (C, Command::Download { bucket: n("b"), file: n("f") }));
        assert_eq!(cmd("DELETE_F b f"), (C, Command::DeleteFile { bucket: n("b"), file: n("f") }));
    }

    #[test]
    fn eafit_requests_put_the_file_first() {
        use Vocabulary::Eafit as E;
        assert_eq!(cmd("HELLO"), (E, Command::ListBuckets));
        assert_eq!(cmd("list_bucket"), (E, Command::ListBuckets));
        assert_eq!(cmd("EXIT"), (E, Command::Quit));
        assert_eq!(cmd("NEW_BUCKET,b"), (E, Command::CreateBucket(n("b"))));
        assert_eq!(cmd("DELETE_BUCKET,b"), (E, Command::DeleteBucket(n("b"))));
        assert_eq!(cmd("LIST_FILE,b"), (E, Command::ListFiles(Some(n("b")))));
        assert_eq!(cmd("UPLOAD_FILE,f,b,0"), (E, Command::Upload { bucket: n("b"), file: n("f"), size: 0 }));
        assert_eq!(cmd("DOWNLOAD_FILE,f,b"), (E, Command::Download { bucket: n("b"), file: n("f") }));
        assert_eq!(cmd("DELETE_FILE,f,b\r"), (E, Command::DeleteFile { bucket: n("b"), file: n("f") }));
    }

    #[test]
    fn encoding_round_trips() {
        let commands = [
            Command::Help,
            Command::Quit,
            Command::CreateBucket(n("b")),
            Command::ListBuckets,
            Command::DeleteBucket(n("b")),
            Command::Upload { bucket: n("b"), file: n("f"), size: 7 },
            Command::ListFiles(None),
            Command::ListFiles(Some(n("b"))),
            Command::Download { bucket: n("b"), file: n("f") },
            Command::DeleteFile { bucket: n("b"), file: n("f") },
        ];
        for v in [Vocabulary::Codes, Vocabulary::Eafit] {
            for c in &commands {
                if let Some(line) = Request::encode(v, c) {
                    let parsed = req(line.trim_end()).unwrap();
                    assert_eq!((parsed.vocabulary, &parsed.command), (v, c), "{line:?}");
                }
            }
        }
    }

    #[test]
    fn refusals_and_what_follows_them() {
        let r = req("FOO bar").unwrap_err();
        assert_eq!((r.op, r.after), (None, After::Continue));
        assert_eq!(encoded(r.reply()), "401 BCMD unknown command FOO\n");
        assert_eq!(encoded(req("\x01\x02").unwrap_err().reply()), "401 BCMD unknown command \\x01\\x02\n");
        let r = req("CREATE_B ..").unwrap_err();
        assert_eq!(encoded(r.reply()), "301 BCF bad name ..: name is . or ..\n");
        assert_eq!(encoded(req("CREATE_B").unwrap_err().reply()), "301 BCF usage: CREATE_B <bucket>\n");
        assert_eq!(encoded(req("CREATE_B a b").unwrap_err().reply()), "301 BCF usage: CREATE_B <bucket>\n");
        assert_eq!(encoded(req("LIST_B x").unwrap_err().reply()), "401 BCMD usage: LIST_B\n");
        assert_eq!(encoded(req("NEW_BUCKET b").unwrap_err().reply()), "ERROR usage: NEW_BUCKET,<bucket>\n");
        assert_eq!(
            encoded(req("NEW_BUCKET,/etc").unwrap_err().reply()),
            "ERROR bad name /etc: name holds a slash or backslash\n"
        );
        assert_eq!(encoded(req("LIST_FILE").unwrap_err().reply()), "ERROR usage: LIST_FILE,<bucket>\n");
        // A codes upload: unreadable size closes; a bad name with a good size discards.
        for line in
            ["UPLOAD b f", "UPLOAD b f -1", "UPLOAD b f 1e3", "UPLOAD b f 99999999999999999999999", "UPLOAD b f 2 x"]
        {
            let r = req(line).unwrap_err();
            assert_eq!((r.op, r.after), (Some(Op::Upload), After::Close), "{line}");
            assert!(encoded(r.reply()).starts_with("701 FUBF "));
        }
        let r = parse_request(b"UPLOAD b f 11", 10).unwrap_err();
        assert_eq!(r.after, After::Close);
        assert_eq!(encoded(r.reply()), "701 FUBF size 11 is over the limit of 10 bytes\n");
        assert_eq!(req("UPLOAD .. f 5").unwrap_err().after, After::Discard(5));
        assert_eq!(req("UPLOAD b a\\b 5").unwrap_err().after, After::Discard(5));
        // EAFIT: nothing comes before ACK, so every refusal continues.
        for line in ["UPLOAD_FILE,f,b", "UPLOAD_FILE,f,b,-1", "UPLOAD_FILE,..,b,3", "UPLOAD_FILE,f,b,3,4"] {
            let r = req(line).unwrap_err();
            assert_eq!((r.vocabulary, r.after), (Vocabulary::Eafit, After::Continue), "{line}");
            assert!(encoded(r.reply()).starts_with("ERROR "));
        }
    }

    #[test]
    fn replies_are_exact() {
        use Vocabulary::{Codes as C, Eafit as E};
        let cases = [
            (Reply::Done(C, Op::Quit), "200 BYE\n", "200"),
            (Reply::Done(C, Op::CreateBucket), "300 BCS\n", "300"),
            (Reply::Failed(C, Op::CreateBucket, "bucket exists".into()), "301 BCF bucket exists\n", "301"),
            (Reply::Listing(C, Op::ListBuckets, vec!["a".into(), "b".into()]), "400 LS 2\na\nb\n", "400"),
            (Reply::Listing(C, Op::Help, vec![]), "100 HELP 0\n", "100"),
            (Reply::Done(C, Op::DeleteBucket), "600 DBS\n", "600"),
            (Reply::Failed(C, Op::DeleteBucket, "no such bucket".into()), "601 DBF no such bucket\n", "601"),
            (Reply::Done(C, Op::Upload), "700 FUBS\n", "700"),
            (Reply::Failed(C, Op::Upload, "x".into()), "701 FUBF x\n", "701"),
            (Reply::Listing(C, Op::ListFiles, vec!["b f 3".into()]), "800 LFS 1\nb f 3\n", "800"),
            (Reply::Failed(C, Op::ListFiles, "no such bucket".into()), "801 LFF no such bucket\n", "801"),
            (Reply::Download(C, 5), "900 FDBS 5\n", "900"),
            (Reply::Failed(C, Op::Download, "no such file".into()), "901 FDBF no such file\n", "901"),
            (Reply::Done(C, Op::DeleteFile), "1000 DFS\n", "1000"),
            (Reply::Failed(C, Op::DeleteFile, "no such file".into()), "1001 DFF no such file\n", "1001"),
            (Reply::BadCommand("line\nbreak".into()), "401 BCMD line?break\n", "401"),
            (Reply::Listing(E, Op::ListBuckets, vec![]), "OK 0\n", "OK"),
            (Reply::Done(E, Op::Quit), "OK bye\n", "OK"),
            (Reply::Done(E, Op::CreateBucket), "OK new bucket created\n", "OK"),
            (Reply::Done(E, Op::DeleteBucket), "OK bucket deleted successfully\n", "OK"),
            (Reply::Listing(E, Op::ListFiles, vec!["f 3".into()]), "OK 1\nf 3\n", "OK"),
            (Reply::Ack, "ACK\n", "ACK"),
            (Reply::Exist, "EXIST\n", "EXIST"),
            (Reply::Done(E, Op::Upload), "OK file uploaded\n", "OK"),
            (Reply::Download(E, 9), "OK 9\n", "OK"),
            (Reply::Done(E, Op::DeleteFile), "OK file deleted successfully\n", "OK"),
            (Reply::Failed(E, Op::Download, "no such file".into()), "ERROR no such file\n", "ERROR"),
        ];
        for (reply, text, status) in cases {
            assert_eq!(reply.status(), status, "{reply:?}");
            assert_eq!(encoded(reply), text);
        }
    }

    #[test]
    fn reply_heads_are_read_strictly() {
        use Vocabulary::{Codes as C, Eafit as E};
        assert_eq!(parse_reply_head(C, Op::CreateBucket, "300 BCS"), Ok(ReplyHead::Done));
        assert_eq!(parse_reply_head(C, Op::CreateBucket, "301 BCF exists"), Ok(ReplyHead::Failed("exists".into())));
        assert_eq!(parse_reply_head(C, Op::ListBuckets, "400 LS 3\r"), Ok(ReplyHead::Count(3)));
        assert_eq!(parse_reply_head(C, Op::Download, "900 FDBS 10"), Ok(ReplyHead::Count(10)));
        assert_eq!(parse_reply_head(C, Op::Download, "401 BCMD what"), Ok(ReplyHead::Failed("what".into())));
        assert!(parse_reply_head(C, Op::ListBuckets, "400 LS ['a', 'b']").is_err());
        assert!(parse_reply_head(C, Op::CreateBucket, "300 BCSX").is_err());
        assert!(parse_reply_head(C, Op::Upload, "300 BCS").is_err());
        assert_eq!(parse_reply_head(E, Op::Upload, "ACK"), Ok(ReplyHead::Ack));
        assert_eq!(parse_reply_head(E, Op::Upload, "EXIST"), Ok(ReplyHead::Exist));
        assert_eq!(parse_reply_head(E, Op::Upload, "OK file uploaded"), Ok(ReplyHead::Done));
        assert_eq!(parse_reply_head(E, Op::ListFiles, "OK 2"), Ok(ReplyHead::Count(2)));
        assert!(parse_reply_head(E, Op::ListFiles, "OK two").is_err());
        assert_eq!(parse_reply_head(E, Op::DeleteFile, "ERROR no"), Ok(ReplyHead::Failed("no".into())));
        assert!(parse_reply_head(E, Op::DeleteFile, "OKAY").is_err());
    }

    #[test]
    fn lines_are_bounded_at_1024_bytes() {
        let mut s = Session::new(MAX);
        let exact = format!("CREATE_B {}\n", "a".repeat(MAX_LINE - 9));
        let (taken, event) = s.handle(exact.as_bytes());
        assert_eq!(taken, exact.len());
        assert!(matches!(event, Event::Rejected(_)), "{event:?}"); // a 1015-byte name
        let mut s = Session::new(MAX);
        let over = format!("{}\n", "a".repeat(MAX_LINE + 1));
        let (_, event) = s.handle(over.as_bytes());
        assert_eq!(event, Event::LineTooLong);
        assert_eq!(s.phase(), Phase::Closed);
        // A megabyte with no newline, fed in pieces: the decoder keeps at most MAX_LINE.
        let mut s = Session::new(MAX);
        let chunk = vec![b'x'; 4096];
        let mut outcome = Event::NeedMore;
        for _ in 0..256 {
            let (_, e) = s.handle(&chunk);
            assert!(s.line.buf.len() <= MAX_LINE);
            if e != Event::NeedMore {
                outcome = e;
                break;
            }
        }
        assert_eq!(outcome, Event::LineTooLong);
    }

    #[test]
    fn upload_and_discard_phases() {
        let mut s = Session::new(MAX);
        let input = b"\r\n\nUPLOAD b f 5\nhelloLIST_B\nUPLOAD .. f 3\nabcQUIT\nLIST_B\n";
        let mut at = 0;
        let (n, e) = s.handle(&input[at..]);
        at += n;
        assert!(matches!(e, Event::Request(Request { command: Command::Upload { size: 5, .. }, .. })));
        s.receive(5);
        assert_eq!(s.phase(), Phase::Upload { remaining: 5 });
        let (n, e) = s.handle(&input[at..]);
        assert_eq!((&input[at..at + n], e), (&b"hello"[..], Event::Data { last: true }));
        at += n;
        let (n, e) = s.handle(&input[at..]);
        at += n;
        assert!(matches!(e, Event::Request(Request { command: Command::ListBuckets, .. })));
        let (n, e) = s.handle(&input[at..]);
        at += n;
        assert!(matches!(e, Event::Rejected(Rejection { after: After::Discard(3), .. })));
        assert_eq!(s.phase(), Phase::Discard { remaining: 3 });
        let (n, e) = s.handle(&input[at..]);
        at += n;
        assert_eq!(e, Event::Discarded);
        let (n, e) = s.handle(&input[at..]);
        at += n;
        assert!(matches!(e, Event::Request(Request { command: Command::Quit, .. })));
        assert_eq!(s.handle(&input[at..]), (0, Event::Closed));
        // A zero-byte upload completes with no input.
        let mut s = Session::new(MAX);
        s.receive(0);
        assert_eq!(s.handle(b""), (0, Event::Data { last: true }));
        assert_eq!(s.phase(), Phase::Line);
    }

    /// Runs a session over `input` split at `cuts`, answering uploads as a server would;
    /// returns the events with the data bytes gathered.
    fn run(input: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u8>) {
        let mut s = Session::new(MAX);
        let mut events = Vec::new();
        let mut data = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort();
        let mut start = 0;
        for end in bounds {
            let mut at = start;
            loop {
                let (n, e) = s.handle(&input[at..end]);
                assert!(n <= end - at);
                match e {
                    Event::NeedMore | Event::Closed => break,
                    Event::Data { .. } => data.extend_from_slice(&input[at..at + n]),
                    Event::Request(Request { command: Command::Upload { size, .. }, .. }) => {
                        s.receive(size);
                        events.push("upload".to_owned());
                    }
                    other => events.push(format!("{other:?}")),
                }
                at += n;
            }
            start = end.max(start);
        }
        (events, data)
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let input = b"HELLO\nUPLOAD b f 10\n0123456789UPLOAD_FILE,f,b,x\nUPLOAD .. f 2\nzzLIST_F\r\nQUIT\nignored";
            let whole = run(input, &[]);
            prop_assert_eq!(&whole.1, b"0123456789");
            prop_assert_eq!(whole.0.len(), 7);
            prop_assert_eq!(run(input, &cuts), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..3000), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            run(&input, &cuts);
            let _ = parse_request(&input, MAX);
            let _ = parse_reply_head(Vocabulary::Codes, Op::ListFiles, &String::from_utf8_lossy(&input));
            let _ = parse_reply_head(Vocabulary::Eafit, Op::Upload, &String::from_utf8_lossy(&input));
        }

        #[test]
        fn arbitrary_lines_of_known_words_never_panic(
            word in prop_oneof![Just("UPLOAD "), Just("UPLOAD_FILE,"), Just("DOWNLOAD "), Just("LIST_F "), Just("NEW_BUCKET,"), Just("DELETE_FILE,")],
            rest in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b' '), Just(b','), Just(b'1')], 0..40),
        ) {
            let mut line = word.as_bytes().to_vec();
            line.extend(rest);
            if let Ok(r) = parse_request(&line, MAX) {
                let again = Request::encode(r.vocabulary, &r.command).unwrap();
                prop_assert_eq!(parse_request(again.trim_end().as_bytes(), MAX), Ok(r));
            }
        }
    }
}
