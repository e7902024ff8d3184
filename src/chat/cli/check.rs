//! `cartero chat check HOST PORT`: runs the clauses of SPEC-chat 1-4 against any chat server
//! and prints one line per clause with its section number; those of section 7 (rooms and
//! history) too when the server accepts `JOIN`.
//!
//! Every clause opens its own connections under fresh names, every step waits at most
//! `--timeout`, and the checker says first whether it can connect at all. Exit status: 0 when
//! every clause holds, 1 when one fails, 2 when the server cannot be reached.

use std::process::ExitCode;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Args)]
pub struct Args {
    /// The server's host name or address.
    host: String,
    /// The server's port.
    port: u16,
    /// Time one step (a connection, an answer) may take.
    #[arg(long, default_value = "2s", value_parser = crate::cli::common::duration)]
    timeout: Duration,
    /// One JSON document instead of lines.
    #[arg(long)]
    json: bool,
}

/// What one clause found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The section of SPEC-chat the clause is in.
    pub section: u8,
    pub clause: &'static str,
    pub ok: bool,
    /// Why it failed (empty when it held).
    pub detail: String,
}

struct Ctx {
    addr: String,
    timeout: Duration,
    prefix: String,
    next: std::sync::atomic::AtomicU32,
}

impl Ctx {
    /// A name no other run or clause uses.
    fn name(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}{n}", self.prefix)
    }
}

/// A raw connection that reads `\n`-terminated lines.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

type Step<T> = Result<T, String>;

impl Conn {
    async fn open(ctx: &Ctx) -> Step<Conn> {
        let stream = tokio::time::timeout(ctx.timeout, TcpStream::connect(&ctx.addr))
            .await
            .map_err(|_| format!("cannot connect within {:?}", ctx.timeout))?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn { stream, buf: BytesMut::new(), timeout: ctx.timeout })
    }

    async fn send(&mut self, bytes: &[u8]) -> Step<()> {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| "the server does not take what is sent".to_string())?
            .map_err(|e| format!("cannot send: {e}"))
    }

    /// The next line (without `\n` or `\r\n`); an error naming `waiting_for` on timeout or close.
    async fn line(&mut self, waiting_for: &str) -> Step<String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf.split_to(i + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if self.buf.len() > 1 << 20 {
                return Err("over 1 MiB without a line break".into());
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) if self.buf.is_empty() => {
                    return Err(format!("no {waiting_for} within {:?}", self.timeout));
                }
                Err(_) => {
                    return Err(format!(
                        "no {waiting_for} within {:?}; got {:?} without a line break",
                        self.timeout,
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Ok(Ok(0)) => return Err(format!("the server closed the connection before {waiting_for}")),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("cannot read {waiting_for}: {e}")),
            }
        }
    }

    /// Lines until one satisfies `want`, skipping user lists (which other clauses' users
    /// may cause) unless `want` is itself about them.
    async fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) -> Step<String> {
        loop {
            let line = self.line(what).await?;
            if want(&line) {
                return Ok(line);
            }
            if line.starts_with("USER_LIST|") {
                continue;
            }
            return Err(format!("expected {what}, got {line:?}"));
        }
    }

    /// The next line that is not a user list.
    async fn message(&mut self, what: &str) -> Step<String> {
        loop {
            let line = self.line(what).await?;
            if !line.starts_with("USER_LIST|") {
                return Ok(line);
            }
        }
    }

    /// Waits for a user list that `want` accepts, skipping others.
    async fn expect_list(&mut self, what: &str, want: impl Fn(&[&str]) -> bool) -> Step<()> {
        loop {
            let line = self.line(what).await?;
            let Some(list) = line.strip_prefix("USER_LIST|") else {
                return Err(format!("expected {what}, got {line:?}"));
            };
            let users: Vec<&str> = if list.is_empty() { Vec::new() } else { list.split(',').collect() };
            if want(&users) {
                return Ok(());
            }
        }
    }

    /// The connection ends (the server closes it) within the timeout.
    async fn expect_close(&mut self, what: &str) -> Step<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(format!("the server did not close the connection {what}")),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Opens a connection and joins as `name`, checking CONNECT_ACK|OK is a line of its own.
async fn join(ctx: &Ctx, name: &str) -> Step<Conn> {
    let mut c = Conn::open(ctx).await?;
    c.send(format!("CONNECT|{name}\n").as_bytes()).await?;
    let line = c.line("CONNECT_ACK").await?;
    if line != "CONNECT_ACK|OK" {
        if line.starts_with("CONNECT_ACK|OK") {
            return Err(format!("merged replies: CONNECT_ACK|OK and what follows arrive as one line: {line:?}"));
        }
        return Err(format!("CONNECT|{name} got {line:?}, not CONNECT_ACK|OK"));
    }
    c.expect_list("USER_LIST after CONNECT_ACK", |u| u.contains(&name)).await?;
    Ok(c)
}

async fn expect_error(c: &mut Conn, code: u16, after: &str) -> Step<()> {
    let prefix = format!("ERROR|{code}|");
    c.expect(&format!("ERROR|{code} after {after} (no ERROR sent?)"), |l| l.starts_with(&prefix)).await.map(drop)
}

// ------------------------------------------------------------------------------ clauses

async fn framing(ctx: &Ctx) -> Step<()> {
    let name = ctx.name();
    let mut c = join(ctx, &name).await?;
    c.send(b"BROADCAST|uno\nBROADCAST|dos\r\n").await?;
    for n in ["uno", "dos"] {
        let want = format!("BROADCAST|{name}|{n}");
        c.expect(&want, |l| l == want).await?;
    }
    Ok(())
}

async fn last_field_keeps_pipes(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let mut ca = join(ctx, &a).await?;
    let mut cb = join(ctx, &b).await?;
    cb.send(format!("MESSAGE|{a}|x|y|z\n").as_bytes()).await?;
    let want = format!("MESSAGE|{b}|x|y|z");
    let got = ca.message("the private message").await?;
    if got != want {
        return Err(format!("lost | content: MESSAGE|{a}|x|y|z was delivered as {got:?}, not {want:?}"));
    }
    cb.send(b"BROADCAST|p|q\n").await?;
    let want = format!("BROADCAST|{b}|p|q");
    let got = ca.message("the broadcast").await?;
    if got != want {
        return Err(format!("lost | content: BROADCAST|p|q was delivered as {got:?}, not {want:?}"));
    }
    Ok(())
}

async fn trailing_pipe(ctx: &Ctx) -> Step<()> {
    let name = ctx.name();
    let mut c = join(ctx, &name).await?;
    c.send(b"DISCONNECT|\n").await?;
    c.expect_close("after DISCONNECT|").await
}

async fn names(ctx: &Ctx) -> Step<()> {
    let mut c = Conn::open(ctx).await?;
    for bad in ["a b", "a,b", "a@b", "a|b", "#sala", "", "a\u{a0}b", &"n".repeat(33)] {
        c.send(format!("CONNECT|{bad}\n").as_bytes()).await?;
        let got = c.line("CONNECT_ACK|FAIL").await?;
        if got != "CONNECT_ACK|FAIL" {
            return Err(format!("the invalid name {bad:?} got {got:?}, not CONNECT_ACK|FAIL"));
        }
        expect_error(&mut c, 400, &format!("the invalid name {bad:?}")).await?;
    }
    // 32 code points, not bytes.
    let long: String = format!("{}ñ", ctx.name()).chars().chain(std::iter::repeat('é')).take(32).collect();
    c.send(format!("CONNECT|{long}\n").as_bytes()).await?;
    let got = c.line("CONNECT_ACK|OK").await?;
    if got != "CONNECT_ACK|OK" {
        return Err(format!("a name of 32 code points got {got:?}"));
    }
    Ok(())
}

async fn connect_lists(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let mut ca = join(ctx, &a).await?;
    let _cb = join(ctx, &b).await?;
    ca.expect_list(&format!("USER_LIST naming {a} then {b}"), |u| {
        let pa = u.iter().position(|x| *x == a);
        let pb = u.iter().position(|x| *x == b);
        matches!((pa, pb), (Some(x), Some(y)) if x < y)
    })
    .await
}

async fn taken_name(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let _ca = join(ctx, &a).await?;
    let mut c = Conn::open(ctx).await?;
    c.send(format!("CONNECT|{a}\n").as_bytes()).await?;
    let got = c.line("CONNECT_ACK|FAIL").await?;
    if got != "CONNECT_ACK|FAIL" {
        return Err(format!("a taken name got {got:?}, not CONNECT_ACK|FAIL"));
    }
    expect_error(&mut c, 409, "a taken name").await?;
    let b = ctx.name();
    c.send(format!("CONNECT|{b}\n").as_bytes()).await?;
    let got = c.line("CONNECT_ACK|OK").await?;
    if got != "CONNECT_ACK|OK" {
        return Err(format!("after a refused name, the same connection could not join: {got:?}"));
    }
    Ok(())
}

async fn private_message(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let mut ca = join(ctx, &a).await?;
    ca.send(format!("MESSAGE|{a}|a mí mismo\n").as_bytes()).await?;
    let want = format!("MESSAGE|{a}|a mí mismo");
    ca.expect("a message to oneself", |l| l == want).await.map(drop)
}

async fn broadcast(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let mut ca = join(ctx, &a).await?;
    let mut cb = join(ctx, &b).await?;
    cb.send(b"BROADCAST|hola a todos\n").await?;
    let want = format!("BROADCAST|{b}|hola a todos");
    ca.expect("the broadcast at another user", |l| l == want).await?;
    cb.expect("the broadcast at its sender", |l| l == want).await.map(drop)
}

async fn order(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let mut ca = join(ctx, &a).await?;
    let mut cb = join(ctx, &b).await?;
    let mut burst = String::new();
    for i in 0..50 {
        burst.push_str(&format!("MESSAGE|{b}|{i}\n"));
    }
    ca.send(burst.as_bytes()).await?;
    for i in 0..50 {
        let want = format!("MESSAGE|{a}|{i}");
        let got = cb.message(&format!("message {i} of 50 in order")).await?;
        if got != want {
            return Err(format!("out of order or lost: expected {want:?}, got {got:?}"));
        }
    }
    Ok(())
}

async fn leave_by_disconnect(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let mut ca = join(ctx, &a).await?;
    let mut cb = join(ctx, &b).await?;
    ca.expect_list("the list with both", |u| u.contains(&b.as_str())).await?;
    cb.send(b"DISCONNECT\n").await?;
    cb.expect_close("after DISCONNECT").await?;
    ca.expect_list(&format!("USER_LIST without {b} after its DISCONNECT (no USER_LIST on leave?)"), |u| {
        !u.contains(&b.as_str())
    })
    .await
}

async fn leave_by_closing(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let mut ca = join(ctx, &a).await?;
    let cb = join(ctx, &b).await?;
    ca.expect_list("the list with both", |u| u.contains(&b.as_str())).await?;
    drop(cb);
    ca.expect_list(&format!("USER_LIST without {b} after its connection closed (no USER_LIST on leave?)"), |u| {
        !u.contains(&b.as_str())
    })
    .await
}

async fn bad_requests(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let mut c = join(ctx, &a).await?;
    for (line, what) in [
        (&b"HOLA|x\n"[..], "an unknown command"),
        (b"MESSAGE|solo\n", "a MESSAGE with one field"),
        (b"DISCONNECT|x\n", "a DISCONNECT with a field"),
        (b"BROADCAST|\xff\xfe\n", "invalid UTF-8"),
    ] {
        c.send(line).await?;
        expect_error(&mut c, 400, what).await?;
    }
    c.send(b"BROADCAST|sigo\n").await?;
    let want = format!("BROADCAST|{a}|sigo");
    c.expect("a broadcast after the errors (the connection must stay open)", |l| l == want).await.map(drop)
}

async fn not_connected(ctx: &Ctx) -> Step<()> {
    let mut c = Conn::open(ctx).await?;
    c.send(b"BROADCAST|antes\n").await?;
    expect_error(&mut c, 401, "a BROADCAST before CONNECT").await?;
    c.send(b"MESSAGE|nadie|antes\n").await?;
    expect_error(&mut c, 401, "a MESSAGE before CONNECT").await
}

async fn not_found(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let mut c = join(ctx, &a).await?;
    c.send(format!("MESSAGE|{}|hola\n", ctx.name()).as_bytes()).await?;
    expect_error(&mut c, 404, "a MESSAGE to nobody").await
}

async fn second_connect(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let mut c = join(ctx, &a).await?;
    c.send(format!("CONNECT|{}\n", ctx.name()).as_bytes()).await?;
    expect_error(&mut c, 409, "a second CONNECT").await
}

async fn too_large(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let mut c = join(ctx, &a).await?;
    let mut long = vec![b'x'; 3000];
    long.push(b'\n');
    c.send(b"BROADCAST|").await?;
    c.send(&long).await?;
    expect_error(&mut c, 413, "a 3,000-byte message").await?;
    let content = "y".repeat(1024 - "BROADCAST|".len());
    c.send(format!("BROADCAST|{content}\n").as_bytes()).await?;
    expect_error(&mut c, 413, "a BROADCAST whose forwarded form passes 1024 bytes").await?;
    c.send(b"BROADCAST|sigo\n").await?;
    let want = format!("BROADCAST|{a}|sigo");
    c.expect("a broadcast after the 413s (the connection must stay open)", |l| l == want).await.map(drop)
}

async fn legacy(ctx: &Ctx) -> Step<()> {
    let name = ctx.name();
    let mut c = Conn::open(ctx).await?;
    c.send(format!("CONNECT|{name}").as_bytes()).await?;
    let mut first = [0u8; 1024];
    let n = tokio::time::timeout(ctx.timeout, c.stream.read(&mut first))
        .await
        .map_err(|_| format!("no answer to a CONNECT without \\n within {:?}", ctx.timeout))?
        .map_err(|e| e.to_string())?;
    let got = String::from_utf8_lossy(&first[..n]);
    if got != "CONNECT_ACK|OK" {
        return Err(format!("the original client's first read got {got:?}, not CONNECT_ACK|OK alone"));
    }
    let n = tokio::time::timeout(ctx.timeout, c.stream.read(&mut first))
        .await
        .map_err(|_| "no USER_LIST after CONNECT_ACK|OK".to_string())?
        .map_err(|e| e.to_string())?;
    let got = String::from_utf8_lossy(&first[..n]);
    if !got.starts_with("USER_LIST|") || got.contains('\n') {
        return Err(format!("the original client's second read got {got:?}, not one USER_LIST"));
    }
    Ok(())
}

/// Whether the server serves rooms (SPEC-chat 7): a JOIN not answered with `ERROR|400`.
async fn accepts_join(ctx: &Ctx) -> Step<bool> {
    let a = ctx.name();
    let mut c = join(ctx, &a).await?;
    c.send(format!("JOIN|#{a}\n").as_bytes()).await?;
    let line = c.message("an answer to JOIN").await?;
    Ok(!line.starts_with("ERROR|400|"))
}

async fn rooms(ctx: &Ctx) -> Step<()> {
    let (a, b, c) = (ctx.name(), ctx.name(), ctx.name());
    let room = format!("#{a}");
    let mut ca = join(ctx, &a).await?;
    let mut cb = join(ctx, &b).await?;
    let mut cc = join(ctx, &c).await?;
    ca.send(format!("JOIN|{room}\n").as_bytes()).await?;
    let want = format!("JOINED|{room}|{a}");
    ca.expect("JOINED to the joiner", |l| l == want).await?;
    cb.send(format!("JOIN|{room}\n").as_bytes()).await?;
    let want = format!("JOINED|{room}|{a},{b}");
    ca.expect("JOINED to the members, in order of joining", |l| l == want).await?;
    cb.expect("JOINED to the joiner, in order of joining", |l| l == want).await?;
    cb.send(format!("ROOM|{room}|hola|sala\n").as_bytes()).await?;
    let want = format!("ROOM|{room}|{b}|hola|sala");
    ca.expect("ROOM at another member", |l| l == want).await?;
    cb.expect("ROOM at its sender", |l| l == want).await?;
    cc.send(format!("ROOM|{room}|intruso\n").as_bytes()).await?;
    expect_error(&mut cc, 403, "ROOM from a non-member").await?;
    cc.send(b"JOIN|sin-almohadilla\n").await?;
    expect_error(&mut cc, 400, "JOIN of a name without #").await?;
    cb.send(format!("PART|{room}\n").as_bytes()).await?;
    let want = format!("PARTED|{room}|{b}");
    ca.expect("PARTED at a member", |l| l == want).await?;
    cb.expect("PARTED at the leaver", |l| l == want).await?;
    cc.send(format!("JOIN|{room}\n").as_bytes()).await?;
    let want = format!("JOINED|{room}|{a},{c}");
    ca.expect("JOINED after a PART", |l| l == want).await?;
    drop(cc);
    let want = format!("PARTED|{room}|{c}");
    ca.expect("PARTED when a member's connection closes", |l| l == want).await.map(drop)
}

async fn room_list(ctx: &Ctx) -> Step<()> {
    let a = ctx.name();
    let room = format!("#{a}");
    let mut ca = join(ctx, &a).await?;
    ca.send(format!("JOIN|{room}\nROOMS\n").as_bytes()).await?;
    ca.expect("JOINED", |l| l.starts_with("JOINED|")).await?;
    let list = ca.expect("ROOM_LIST", |l| l.starts_with("ROOM_LIST|")).await?;
    if !list["ROOM_LIST|".len()..].split(',').any(|r| r == room) {
        return Err(format!("ROOM_LIST without {room}: {list:?}"));
    }
    Ok(())
}

async fn history(ctx: &Ctx) -> Step<()> {
    let (a, b) = (ctx.name(), ctx.name());
    let room = format!("#{a}");
    let mut ca = join(ctx, &a).await?;
    let mut cb = join(ctx, &b).await?;
    ca.send(format!("JOIN|{room}\nROOM|{room}|uno\nROOM|{room}|dos\n").as_bytes()).await?;
    ca.expect("JOINED", |l| l.starts_with("JOINED|")).await?;
    ca.expect("ROOM uno", |l| l.ends_with("|uno")).await?;
    ca.expect("ROOM dos", |l| l.ends_with("|dos")).await?;
    ca.send(format!("HISTORY|{room}|1\n").as_bytes()).await?;
    let line = ca.message("HISTORY").await?;
    let fields: Vec<&str> = line.splitn(5, '|').collect();
    let millis_ok = fields.get(3).is_some_and(|m| m.parse::<u64>().is_ok());
    if fields.len() != 5 || fields[..3] != ["HISTORY", room.as_str(), a.as_str()] || !millis_ok || fields[4] != "dos" {
        return Err(format!("HISTORY|{room}|1 got {line:?}, not HISTORY|{room}|{a}|<millis>|dos"));
    }
    let end = format!("HISTORY_END|{room}");
    ca.expect("HISTORY_END", |l| l == end).await?;
    ca.send(format!("HISTORY|{room}|0\n").as_bytes()).await?;
    ca.expect("HISTORY_END alone for n = 0", |l| l == end).await?;
    ca.send(format!("HISTORY|{room}|x\n").as_bytes()).await?;
    expect_error(&mut ca, 400, "HISTORY with n not a number").await?;
    cb.send(format!("HISTORY|{room}|5\n").as_bytes()).await?;
    expect_error(&mut cb, 403, "HISTORY of a room by a non-member").await
}

/// Runs every clause against `host:port`. `Err` when the server cannot be reached.
pub async fn run_checks(host: &str, port: u16, timeout: Duration) -> Result<Vec<Outcome>, String> {
    let ctx = Ctx {
        addr: format!("{host}:{port}"),
        timeout,
        prefix: format!("chk{}x", std::process::id() % 10_000),
        next: Default::default(),
    };
    Conn::open(&ctx).await.map_err(|e| format!("{}: {e}", ctx.addr))?;
    let mut out = Vec::new();
    macro_rules! clause {
        ($section:expr, $title:expr, $f:ident) => {
            let result = $f(&ctx).await;
            out.push(Outcome {
                section: $section,
                clause: $title,
                ok: result.is_ok(),
                detail: result.err().unwrap_or_default(),
            });
        };
    }
    clause!(1, "framing: CONNECT_ACK|OK, USER_LIST and every message on a line of its own; \\r\\n accepted", framing);
    clause!(1, "the last field keeps its |", last_field_keeps_pipes);
    clause!(1, "DISCONNECT| (trailing empty field) is DISCONNECT", trailing_pipe);
    clause!(1, "legacy: a CONNECT without \\n gets CONNECT_ACK|OK alone in the first read", legacy);
    clause!(2, "names: invalid ones refused with CONNECT_ACK|FAIL and ERROR|400; 32 code points accepted", names);
    clause!(3, "CONNECT: USER_LIST to everyone, in order of joining", connect_lists);
    clause!(3, "a taken name: CONNECT_ACK|FAIL, ERROR|409, the connection stays open", taken_name);
    clause!(3, "MESSAGE reaches its recipient (oneself too)", private_message);
    clause!(3, "BROADCAST reaches everyone, the sender included", broadcast);
    clause!(3, "order: a sender's messages arrive in the order sent", order);
    clause!(3, "DISCONNECT: the server closes and sends USER_LIST to the others", leave_by_disconnect);
    clause!(3, "a connection that closes leaves like DISCONNECT", leave_by_closing);
    clause!(4, "400: unknown command, field count, invalid UTF-8; the connection stays open", bad_requests);
    clause!(4, "401: MESSAGE or BROADCAST before CONNECT", not_connected);
    clause!(4, "404: MESSAGE to a user who is not connected", not_found);
    clause!(4, "409: a second CONNECT on a joined connection", second_connect);
    clause!(4, "413: over 1024 bytes, or a forwarded form over it; the connection stays open", too_large);
    // Section 7 is optional: its clauses run when the server accepts JOIN.
    if accepts_join(&ctx).await.unwrap_or(false) {
        clause!(7, "rooms: JOINED, ROOM and PARTED to the members in order, 403 and 400", rooms);
        clause!(7, "ROOMS lists a room that has members", room_list);
        clause!(7, "HISTORY: the last n oldest first, HISTORY_END, n = 0, 400 and 403", history);
    }
    Ok(out)
}

pub fn run(args: Args) -> ExitCode {
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcomes = match runtime.block_on(run_checks(&args.host, args.port, args.timeout)) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({ "connected": false, "error": e }));
            } else {
                println!("cannot connect to {e}");
            }
            return ExitCode::from(2);
        }
    };
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if args.json {
        let doc = serde_json::json!({
            "connected": true,
            "passed": outcomes.len() - failed,
            "failed": failed,
            "clauses": outcomes,
        });
        println!("{doc}");
    } else {
        for o in &outcomes {
            if o.ok {
                println!("ok   {}  {}", o.section, o.clause);
            } else {
                println!("FAIL {}  {}: {}", o.section, o.clause, o.detail);
            }
        }
        println!("{} passed, {failed} failed", outcomes.len() - failed);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
