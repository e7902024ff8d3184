//! `cartero check server <host>:<port>`: runs the clauses of SPEC 2 to 4 against any server, and
//! those of SPEC 8 (course 2025/26) when it answers USERS.
//!
//! Every step has its own timeout, so a server that crashes, hangs or resets becomes a FAIL
//! with its cause, never a hang. Users get a random prefix (`ck<hex>_`) that cannot clash
//! with real ones, and are disconnected and unregistered at the end.

use std::io::{IsTerminal, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crate::messaging::wire::{CodeEncoding, Escaped, Operation, PushDecoder, PushNames, Reply, ReplyDecoder};
use crate::messaging::Push;
use crate::net::{read_stamped, stamp_arrivals};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum Target {
    /// Check a server: `cartero check server <host>:<port>`.
    Server(ServerArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// The server, as host:port (or host, then the port as the next argument).
    server: String,
    /// The server's port, when not given after a colon.
    port: Option<u16>,
    /// The result-code encoding the server should use: ascii or raw.
    #[arg(long, default_value = "ascii")]
    codes: CodeEncoding,
    /// The push spelling the server should use: spaced or underscored.
    #[arg(long, default_value = "spaced")]
    push_names: PushNames,
    /// Detect the server's code encoding and push spelling first, and check against those.
    #[arg(long)]
    auto: bool,
    /// Print the results as JSON instead of lines.
    #[arg(long)]
    json: bool,
    /// The address the checker's listeners bind (default: this machine's address towards
    /// the server, 127.0.0.1 for a local server).
    #[arg(long)]
    listen_host: Option<IpAddr>,
    /// How long each step may take.
    #[arg(long, default_value = "3s", value_parser = crate::cli::common::duration)]
    timeout: Duration,
    /// How long the whole run may take; the clauses not reached by then are not run.
    #[arg(long, default_value = "60s", value_parser = crate::cli::common::duration)]
    deadline: Duration,
}

/// Requests in a row that get no answer at all before the checker stops: the server has
/// stopped answering.
const SILENT_IN_A_ROW: u32 = 3;

/// One clause's result.
struct Outcome {
    id: &'static str,
    title: &'static str,
    sent: String,
    expected: String,
    got: String,
    pass: bool,
}

/// What a request got back.
struct Answer {
    reply: Reply,
    encoding: Option<CodeEncoding>,
    raw: Vec<u8>,
    /// SEND's id came as 4 binary bytes rather than decimal text.
    binary_id: bool,
    /// When the reply's first bytes arrived, by the kernel's clock (see [`crate::net::read_stamped`]).
    arrived: Option<Duration>,
}

impl Answer {
    fn show(&self) -> String {
        let enc = self.encoding.map_or(String::new(), |e| format!(" ({e})"));
        format!("{}{enc}", super::show::reply(&self.reply))
    }
}

/// A listener of the checker's: hands over each push connection's exact bytes, with when
/// its first bytes arrived.
struct Inbox {
    port: u16,
    pushes: Receiver<(Vec<u8>, Option<Duration>)>,
}

impl Inbox {
    fn open(host: IpAddr) -> Result<Inbox, String> {
        Inbox::open_on(host, 0)
    }

    fn open_on(host: IpAddr, port: u16) -> Result<Inbox, String> {
        let listener = TcpListener::bind((host, port)).map_err(|e| format!("cannot open a listener on {host}: {e}"))?;
        stamp_arrivals(&listener);
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (tx, pushes) = channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let (mut bytes, mut first) = (Vec::new(), None);
                let mut chunk = [0u8; 4096];
                while bytes.len() < 4096 {
                    match read_stamped(&s, &mut chunk[..4096 - bytes.len()]) {
                        Ok((0, _)) | Err(_) => break,
                        Ok((n, at)) => {
                            first = first.or(at);
                            bytes.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
                drop(s); // closed first: the push has ended when its bytes are handed over
                if tx.send((bytes, first)).is_err() {
                    return;
                }
            }
        });
        Ok(Inbox { port, pushes })
    }

    /// The next push within `timeout`, decoded, with its spelling.
    fn next(&self, timeout: Duration) -> Result<(Push, Option<PushNames>, Vec<u8>), String> {
        self.next_at(timeout).map(|(push, names, bytes, _)| (push, names, bytes))
    }

    /// [`next`](Self::next), with when the push's first bytes arrived.
    #[allow(clippy::type_complexity)]
    fn next_at(&self, timeout: Duration) -> Result<(Push, Option<PushNames>, Vec<u8>, Option<Duration>), String> {
        let (bytes, at) = self.pushes.recv_timeout(timeout).map_err(|_| format!("no push within {timeout:?}"))?;
        let mut decoder = PushDecoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        match decoder.decode_eof(&mut buf) {
            Ok(Some(push)) => Ok((push, decoder.seen_names(), bytes, at)),
            Ok(None) => Err("an empty push connection".into()),
            Err(e) => Err(format!("not a push ({e}): {}", Escaped(&bytes))),
        }
    }
}

struct Checker {
    server: SocketAddr,
    /// Where the checker's listeners bind.
    listen_host: IpAddr,
    timeout: Duration,
    codes: CodeEncoding,
    push_names: PushNames,
    prefix: String,
    outcomes: Vec<Outcome>,
    /// Users this run registered, to clean up.
    made: Vec<String>,
    /// Groups of clauses not run, and why (one line each in the report).
    skipped: Vec<String>,
    /// When the whole run must end.
    deadline: Instant,
    /// Requests in a row that got no answer (no connection, or nothing within the timeout).
    silent: std::cell::Cell<u32>,
    /// Why the run stopped early, once it has.
    stopped: std::cell::RefCell<Option<String>>,
    /// The clause after which it stopped.
    stopped_after: Option<&'static str>,
}

/// How a request is shown in the report.
fn show_fields(fields: &[&[u8]]) -> String {
    let show = |f: &[u8]| match f.len() {
        0..=40 => Escaped(f).to_string(),
        n => format!("{}...({n} bytes)", Escaped(&f[..24])),
    };
    fields.iter().map(|f| show(f)).collect::<Vec<_>>().join(" ")
}

impl Checker {
    fn user(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Sends the fields (operation first) on a new connection and reads the reply; counts the
    /// requests left unanswered in a row and stops the run when the server stopped answering
    /// or the overall deadline passed.
    fn exchange(&self, fields: &[&[u8]], half_close: bool) -> Result<Answer, String> {
        if let Some(why) = self.stopped.borrow().as_ref() {
            return Err(format!("not run: {why}"));
        }
        if Instant::now() >= self.deadline {
            *self.stopped.borrow_mut() = Some("the overall deadline passed (see --deadline)".into());
            return Err("not run: the overall deadline passed".into());
        }
        let result = self.exchange_once(None, fields, half_close);
        let silent = match &result {
            Err(e) if e.starts_with("cannot connect") || e.starts_with("no reply") || e.starts_with("no complete") => {
                self.silent.get() + 1
            }
            _ => 0,
        };
        self.silent.set(silent);
        if silent >= SILENT_IN_A_ROW {
            *self.stopped.borrow_mut() =
                Some(format!("the server stopped answering ({silent} requests in a row got no answer)"));
        }
        result
    }

    /// [`exchange`](Self::exchange) from another local address (the IP rules of SPEC 2).
    fn exchange_from(&self, source: IpAddr, fields: &[&[u8]]) -> Result<Answer, String> {
        if let Some(why) = self.stopped.borrow().as_ref() {
            return Err(format!("not run: {why}"));
        }
        self.exchange_once(Some(source), fields, true)
    }

    fn connect_from(&self, source: Option<IpAddr>) -> Result<TcpStream, String> {
        let Some(source) = source else {
            return TcpStream::connect_timeout(&self.server, self.timeout).map_err(|e| format!("cannot connect: {e}"));
        };
        let socket = socket2::Socket::new(socket2::Domain::for_address(self.server), socket2::Type::STREAM, None)
            .map_err(|e| format!("cannot open a socket: {e}"))?;
        socket.bind(&SocketAddr::new(source, 0).into()).map_err(|e| format!("cannot use {source} here: {e}"))?;
        socket
            .connect_timeout(&self.server.into(), self.timeout)
            .map_err(|e| format!("cannot connect from {source}: {e}"))?;
        Ok(socket.into())
    }

    fn exchange_once(&self, source: Option<IpAddr>, fields: &[&[u8]], half_close: bool) -> Result<Answer, String> {
        let op = Operation::from_name(fields[0]);
        let mut stream = self.connect_from(source)?;
        stamp_arrivals(&stream);
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let mut bytes = Vec::new();
        for f in fields {
            bytes.extend_from_slice(f);
            bytes.push(0);
        }
        stream.write_all(&bytes).map_err(|e| format!("cannot send: {e}"))?;
        if half_close {
            let _ = stream.shutdown(Shutdown::Write);
        }
        let Some(op) = op else {
            // An unknown operation: the answer is whatever comes back before the close.
            let mut raw = Vec::new();
            return match stream.take(4096).read_to_end(&mut raw) {
                Ok(_) if raw.is_empty() => Err("closed without a reply".into()),
                Ok(_) => Err(format!("replied {}", Escaped(&raw))),
                Err(e) => Err(format!("{e}")),
            };
        };
        let started = Instant::now();
        let mut decoder = ReplyDecoder::new(op);
        let mut buf = BytesMut::new();
        let mut raw = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut arrived = None;
        loop {
            if started.elapsed() > self.timeout {
                return Err(format!("no complete reply within {:?}", self.timeout));
            }
            let n = match read_stamped(&stream, &mut chunk) {
                Ok((n, at)) => {
                    arrived = arrived.or(at);
                    n
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(format!("no reply within {:?}", self.timeout))
                }
                // A server that reads only the fields it wants (CONNECTEDUSERS without its
                // alias, say) and closes makes its kernel reset the connection over the
                // unread rest; a reply that came whole before the reset still counts.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => 0,
                Err(e) => return Err(format!("connection failed: {e}")),
            };
            raw.extend_from_slice(&chunk[..n]);
            buf.extend_from_slice(&chunk[..n]);
            let decoded = if n == 0 { decoder.decode_eof(&mut buf) } else { decoder.decode(&mut buf) };
            match decoded {
                Ok(Some(reply)) => {
                    let (encoding, binary_id) = (decoder.seen_encoding(), decoder.saw_binary_id());
                    return Ok(Answer { reply, encoding, raw, binary_id, arrived });
                }
                Ok(None) if n == 0 => return Err("closed without a reply".into()),
                Ok(None) => {}
                Err(e) => return Err(format!("not a valid reply ({e}): {}", Escaped(&raw))),
            }
        }
    }

    fn record(
        &mut self,
        id: &'static str,
        title: &'static str,
        sent: String,
        expected: String,
        got: Result<String, String>,
        pass: bool,
    ) {
        if self.stopped_after.is_some() {
            return; // the run stopped before this clause
        }
        if self.stopped.borrow().is_some() {
            self.stopped_after = Some(id);
        }
        let got = got.unwrap_or_else(|e| format!("ERROR: {e}"));
        self.outcomes.push(Outcome { id, title, sent, expected, got, pass });
    }

    /// A request whose reply must have `want` as its code (and, if given, pass `extra`).
    fn expect_code(&mut self, id: &'static str, title: &'static str, fields: &[&[u8]], want: u8) -> Option<Answer> {
        let sent = show_fields(fields);
        match self.exchange(fields, true) {
            Ok(answer) => {
                let mut pass = answer.reply.code() == want;
                let mut got = answer.show();
                if pass && answer.encoding != Some(self.codes) {
                    pass = false;
                    got = format!(
                        "{got}: result code in {} encoding, not {}: {}",
                        answer.encoding.map_or("no".into(), |e| e.to_string()),
                        self.codes,
                        Escaped(&answer.raw)
                    );
                }
                if pass && answer.binary_id {
                    pass = false;
                    got = format!(
                        "{got}: the id came as 4 binary bytes (big-endian), not as decimal text ending in NUL: {}",
                        Escaped(&answer.raw)
                    );
                }
                self.record(id, title, sent, format!("{want} ({})", self.codes), Ok(got), pass);
                Some(answer)
            }
            Err(e) => {
                self.record(id, title, sent, format!("{want} ({})", self.codes), Err(e), false);
                None
            }
        }
    }

    fn register(&mut self, id: &'static str, name: &str, title: &'static str) -> bool {
        let alias = self.user(name);
        let ok = self
            .expect_code(id, title, &[b"REGISTER", b"Check User", alias.as_bytes(), b"01/02/2000"], 0)
            .is_some_and(|a| a.reply.code() == 0);
        if ok {
            self.made.push(alias);
        }
        ok
    }

    /// Registers a user of this run for one group of clauses (set-up, not a clause).
    fn fresh(&mut self, name: &str) -> Result<Vec<u8>, String> {
        let alias = self.user(name);
        let answer = self.exchange(&[b"REGISTER", b"Check User", alias.as_bytes(), b"01/02/2000"], true)?;
        if answer.reply.code() != 0 {
            return Err(format!("REGISTER of {alias} was answered {}", answer.show()));
        }
        self.made.push(alias.clone());
        Ok(alias.into_bytes())
    }

    /// Connects a user of this run at a new listener of the checker's (set-up, not a clause).
    fn listening(&mut self, alias: &[u8]) -> Result<Inbox, String> {
        let inbox = Inbox::open(self.listen_host)?;
        let answer = self.exchange(&[b"CONNECT", alias, inbox.port.to_string().as_bytes()], true)?;
        if answer.reply.code() != 0 {
            return Err(format!("CONNECT of {} was answered {}", Escaped(alias), answer.show()));
        }
        Ok(inbox)
    }

    /// The users one group of clauses needs, registered for it alone, and listeners for the
    /// first `connected` of them: each group sets up its own state, so a failure in one clause
    /// never makes another fail. When the set-up fails, one SKIP line names the group and why.
    fn set_up(&mut self, group: &str, names: &[&str], connected: usize) -> Option<(Vec<Vec<u8>>, Vec<Inbox>)> {
        let result = (|| {
            let users = names.iter().map(|n| self.fresh(n)).collect::<Result<Vec<_>, _>>()?;
            let inboxes = users[..connected].iter().map(|u| self.listening(u)).collect::<Result<Vec<_>, _>>()?;
            Ok::<_, String>((users, inboxes))
        })();
        match result {
            Ok(state) => Some(state),
            Err(_) if self.stopped.borrow().is_some() => None, // the summary says why
            Err(e) => {
                self.skipped.push(format!("{group}: not run, its set-up failed: {e}"));
                None
            }
        }
    }

    /// Ends a group: its connected users disconnect (best effort; they are unregistered at
    /// the end of the run).
    fn tear_down(&mut self, users: &[Vec<u8>]) {
        for alias in users {
            let _ = self.exchange(&[b"DISCONNECT", alias], true);
        }
    }

    /// SPEC 2.1.
    fn registration(&mut self) {
        self.register("R1", "reg", "REGISTER of a new user answers 0");
        if let Some((users, _)) = self.set_up("R2", &["dup"], 0) {
            let fields: [&[u8]; 4] = [b"REGISTER", b"Check User", &users[0], b"01/02/2000"];
            self.expect_code("R2", "REGISTER of an alias in use answers 1", &fields, 1);
        }
        let bad = self.user("baddate");
        if self
            .expect_code(
                "R3",
                "REGISTER with an impossible date (31/02) answers 2",
                &[b"REGISTER", b"Check User", bad.as_bytes(), b"31/02/2000"],
                2,
            )
            .is_some_and(|x| x.reply.code() == 0)
        {
            self.made.push(bad);
        }
    }

    /// SPEC 2.3 and 2.4, each clause on users of its own.
    fn connection(&mut self) {
        let ghost = self.user("ghost").into_bytes();
        self.expect_code("C1", "CONNECT of an unknown user answers 1", &[b"CONNECT", &ghost, b"4000"], 1);
        if let Some((users, _)) = self.set_up("C2", &["port0"], 0) {
            self.expect_code(
                "C2",
                "CONNECT with a port that is not 1..65535 answers 3",
                &[b"CONNECT", &users[0], b"0"],
                3,
            );
        }
        if let Some((users, _)) = self.set_up("C3, C4", &["cat"], 0) {
            let inbox = match Inbox::open(self.listen_host) {
                Ok(inbox) => inbox,
                Err(e) => return self.skipped.push(format!("C3, C4: not run: {e}")),
            };
            let port = inbox.port.to_string();
            let fields: [&[u8]; 3] = [b"CONNECT", &users[0], port.as_bytes()];
            let first = self.expect_code("C3", "CONNECT of a registered user answers 0", &fields, 0);
            if first.is_some_and(|a| a.reply.code() == 0) {
                self.expect_code("C4", "CONNECT of a connected user answers 2", &fields, 2);
            } else {
                self.skipped.push("C4: not run, C3's CONNECT did not answer 0".into());
            }
            self.tear_down(&users);
        }
        self.expect_code("D1", "DISCONNECT of an unknown user answers 1", &[b"DISCONNECT", &ghost], 1);
        if let Some((users, _)) = self.set_up("D2", &["dora"], 0) {
            self.expect_code("D2", "DISCONNECT of a user not connected answers 2", &[b"DISCONNECT", &users[0]], 2);
        }
    }

    /// SPEC 2.5 and 3: ids per sender, pushes, acknowledgements, pending delivery. One story
    /// on three users of its own: ana (connected), bob (connects later), eve.
    fn delivery(&mut self) {
        let Some((users, inboxes)) = self.set_up("S1-S5, P1-P12", &["ana", "bob", "eve"], 1) else { return };
        let [a, b, e] = [users[0].clone(), users[1].clone(), users[2].clone()];
        let ana_in = &inboxes[0];
        let (bob_in, eve_in) = match (Inbox::open(self.listen_host), Inbox::open(self.listen_host)) {
            (Ok(bob_in), Ok(eve_in)) => (bob_in, eve_in),
            (Err(e), _) | (_, Err(e)) => return self.skipped.push(format!("S1-S5, P1-P12: not run: {e}")),
        };
        let ghost = self.user("ghost").into_bytes();
        self.expect_code("S1", "SEND to an unknown recipient answers 1", &[b"SEND", &a, &ghost, b"x"], 1);
        self.expect_code("S2", "SEND from an unknown sender answers 1", &[b"SEND", &ghost, &a, b"x"], 1);
        let first = self.expect_code(
            "S3",
            "SEND to an offline user answers 0 and the sender's first id, 1",
            &[b"SEND", &a, &b, b"first"],
            0,
        );
        self.check_id("S3", &first, 1);
        let second = self.expect_code(
            "S4",
            "the sender's next SEND gets id 2",
            &[b"SEND", &a, &b, b"second, with a\nnewline"],
            0,
        );
        self.check_id("S4", &second, 2);
        let other = self.expect_code(
            "S5",
            "ids are per sender: another sender's first SEND gets id 1",
            &[b"SEND", &e, &b, b"from eve"],
            0,
        );
        self.check_id("S5", &other, 1);
        let (pb, pe) = (bob_in.port.to_string(), eve_in.port.to_string());
        self.expect_code(
            "P1",
            "CONNECT of a user with pending messages answers 0",
            &[b"CONNECT", &b, pb.as_bytes()],
            0,
        );
        let ana = Bytes::from(a.clone());
        let from_ana = |id, body: &str| Push::Message { sender: ana.clone(), id, body: body.to_string().into() };
        self.expect_push(
            "P2",
            "pending messages are pushed on CONNECT, oldest first (1)",
            &bob_in,
            &from_ana(1, "first"),
        );
        self.expect_push(
            "P3",
            "... (2), with the newline in the body intact",
            &bob_in,
            &from_ana(2, "second, with a\nnewline"),
        );
        self.expect_push(
            "P4",
            "... (3), from the other sender",
            &bob_in,
            &Push::Message { sender: Bytes::from(e.clone()), id: 1, body: "from eve".into() },
        );
        self.expect_push(
            "P5",
            "each delivered message is acknowledged to its connected sender (1)",
            ana_in,
            &Push::Ack { id: 1 },
        );
        self.expect_push("P6", "... (2)", ana_in, &Push::Ack { id: 2 });
        let third = self.expect_code("P7", "SEND to a connected user answers 0", &[b"SEND", &a, &b, b"live"], 0);
        self.check_id("P7", &third, 3);
        self.expect_push("P8", "a message to a connected user is pushed at once", &bob_in, &from_ana(3, "live"));
        self.expect_push("P9", "and acknowledged to the sender", ana_in, &Push::Ack { id: 3 });
        // eve connects (so the server knows her listener), disconnects, then sends.
        self.expect_code("P10", "CONNECT of the other sender answers 0", &[b"CONNECT", &e, pe.as_bytes()], 0);
        self.expect_code("P11", "and its DISCONNECT answers 0", &[b"DISCONNECT", &e], 0);
        // No clock. Once bob has the message and the next one after it (pushes to one user
        // go one at a time, so the first delivery has ended and its acknowledgement was
        // decided), eve connects again at the same listener and gets a marker; pushes to one
        // user keep their order (SPEC 3), so an acknowledgement owed to her would come first.
        let sent = format!(
            "{}, another message to the recipient, then CONNECT of the sender and a marker to it",
            show_fields(&[b"SEND", &e, &b, b"no ack for eve"])
        );
        let result = self.exchange(&[b"SEND", &e, &b, b"no ack for eve"], true).and_then(|answer| {
            if answer.reply.code() != 0 {
                return Err(format!("the SEND was answered {}", answer.show()));
            }
            bob_in.next(self.timeout)?;
            let answer = self.exchange(&[b"SEND", &a, &b, b"after"], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the SEND after it was answered {}", answer.show()));
            }
            bob_in.next(self.timeout)?;
            let answer = self.exchange(&[b"CONNECT", &e, pe.as_bytes()], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("eve's second CONNECT was answered {}", answer.show()));
            }
            let answer = self.exchange(&[b"SEND", &a, &e, b"marker"], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the marker's SEND was answered {}", answer.show()));
            }
            match eve_in.next(self.timeout)? {
                (Push::Message { body, .. }, _, _) if &body[..] == b"marker" => Ok("no ack, then the marker".into()),
                (push, _, raw) => Err(format!("got {} first: {}", super::show::push_fields(&push), Escaped(&raw))),
            }
        });
        let pass = result.is_ok();
        self.record(
            "P12",
            "no acknowledgement goes to a sender that is not connected",
            sent,
            "the message pushed, no ack (the marker first)".into(),
            result,
            pass,
        );
        self.tear_down(&users);
    }

    /// SPEC 2.6 (other users of a shared server may be listed too; ours must be, in order).
    fn listing(&mut self) {
        let Some((users, _inboxes)) = self.set_up("L1-L3", &["lia", "leo", "lou"], 2) else { return };
        let (lia, leo, lou) = (&users[0], &users[1], &users[2]);
        let title = "CONNECTEDUSERS lists the connected users, oldest connection first";
        let expected = format!("0, listing {}, {} in this order", Escaped(lia), Escaped(leo));
        let sent = show_fields(&[b"CONNECTEDUSERS", lia]);
        match self.exchange(&[b"CONNECTEDUSERS", lia], true) {
            Ok(answer) => {
                // Only this group's users: others of this run, or of other clients, may be listed.
                let ours: Vec<&[u8]> = match &answer.reply {
                    Reply::ConnectedUsers(crate::messaging::wire::ConnectedUsersReply::Ok { users: listed }) => {
                        listed.iter().map(|u| &u[..]).filter(|u| users.iter().any(|g| g == u)).collect()
                    }
                    _ => vec![],
                };
                let pass = ours == [&lia[..], &leo[..]] && answer.encoding == Some(self.codes);
                self.record("L1", title, sent, expected, Ok(answer.show()), pass);
            }
            Err(err) => self.record("L1", title, sent, expected, Err(err), false),
        }
        if let Some(answer) = self.expect_code(
            "L2",
            "CONNECTEDUSERS by a user that is not connected answers 1",
            &[b"CONNECTEDUSERS", lou],
            1,
        ) {
            if answer.reply.code() == 0 {
                // The statement's request is the operation alone: such a server knows the
                // requester by its IP and never reads the alias (SPEC 2.6 reads it).
                if let Some(last) = self.outcomes.iter_mut().rev().find(|o| o.id == "L2") {
                    last.got = format!(
                        "{}: the alias after the operation was not read (the requester was known by its IP)",
                        last.got
                    );
                }
            }
        }
        // The operation alone (the statement's form): the requester is known by its IP, and
        // this machine has connected users.
        self.expect_code(
            "L3",
            "CONNECTEDUSERS without an alias, from a connected user's IP, answers 0",
            &[b"CONNECTEDUSERS"],
            0,
        );
        self.tear_down(&users);
    }

    /// SPEC 2.2: UNREGISTER takes the user's pending messages with it.
    fn unregister_drops_mail(&mut self) {
        let Some((users, _inboxes)) = self.set_up("U3-U6", &["uma"], 1) else { return };
        let uma = users[0].clone();
        let zed = self.user("zed");
        let z = zed.as_bytes().to_vec();
        if self.register("U3", "zed", "REGISTER of a user to unregister with mail pending answers 0") {
            self.expect_code("U4", "a message to it is accepted", &[b"SEND", &uma, &z, b"never to be seen"], 0);
            self.expect_code("U5", "its UNREGISTER answers 0", &[b"UNREGISTER", &z], 0);
            self.made.retain(|u| u != &zed);
            let sent = "REGISTER and CONNECT the same alias again".to_string();
            let result = Inbox::open(self.listen_host).and_then(|inbox| {
                let port = inbox.port.to_string();
                self.exchange(&[b"REGISTER", b"Check User", &z, b"01/02/2000"], true)?;
                self.made.push(zed.clone());
                self.exchange(&[b"CONNECT", &z, port.as_bytes()], true)?;
                // Pushes to one user keep their order: the first one must be this marker,
                // with nothing of the old user's before it (no waiting on a clock).
                self.exchange(&[b"SEND", &uma, &z, b"marker"], true)?;
                match inbox.next(self.timeout)? {
                    (Push::Message { body, .. }, _, _) if &body[..] == b"marker" => Ok("only the new message".into()),
                    (push, _, raw) => Err(format!("got {} first: {}", super::show::push_fields(&push), Escaped(&raw))),
                }
            });
            let pass = result.is_ok();
            self.record(
                "U6",
                "UNREGISTER dropped the pending message: the new user gets nothing",
                sent,
                "only the new message (sent after the CONNECT)".into(),
                result,
                pass,
            );
            let _ = self.exchange(&[b"DISCONNECT", &z], true);
        }
        self.tear_down(&users);
    }

    /// D3, U1, U2: the ends of a user's life.
    fn endings(&mut self) {
        if let Some((users, _inboxes)) = self.set_up("D3", &["dee"], 1) {
            self.expect_code("D3", "DISCONNECT of a connected user answers 0", &[b"DISCONNECT", &users[0]], 0);
        }
        let ghost = self.user("ghost").into_bytes();
        self.expect_code("U1", "UNREGISTER of an unknown user answers 1", &[b"UNREGISTER", &ghost], 1);
        if let Some((users, _)) = self.set_up("U2", &["ula"], 0) {
            if self
                .expect_code("U2", "UNREGISTER of a registered user answers 0", &[b"UNREGISTER", &users[0]], 0)
                .is_some_and(|a| a.reply.code() == 0)
            {
                self.made.retain(|u| u.as_bytes() != users[0].as_slice());
            }
        }
    }

    /// SPEC 2.2, 2.4, 2.5: a connected user's DISCONNECT, SEND and UNREGISTER come from the IP
    /// it connected from. Checked from 127.0.0.2 (which the loopback accepts on Linux) when
    /// the server is on 127.0.0.1; skipped with one line otherwise.
    fn ip_rules(&mut self) {
        let other: IpAddr = [127, 0, 0, 2].into();
        if self.server.ip() != IpAddr::from([127, 0, 0, 1]) {
            self.skipped.push("the IP rules: they are checked only against a server on 127.0.0.1".into());
            return;
        }
        let Some((users, _inboxes)) = self.set_up("I1-I3", &["ivy", "jon"], 1) else { return };
        let (ivy, jon) = (&users[0], &users[1]);
        let cases: [(&'static str, &'static str, Vec<&[u8]>, u8); 3] = [
            ("I1", "DISCONNECT from another IP than the user's answers 3", vec![b"DISCONNECT", ivy], 3),
            ("I2", "SEND from another IP than the connected sender's answers 2", vec![b"SEND", ivy, jon, b"x"], 2),
            ("I3", "UNREGISTER from another IP than the connected user's answers 2", vec![b"UNREGISTER", ivy], 2),
        ];
        for (id, title, fields, want) in cases {
            let sent = format!("{} (from {other})", show_fields(&fields));
            let expected = format!("{want} ({})", self.codes);
            match self.exchange_from(other, &fields) {
                Ok(answer) => {
                    let pass = answer.reply.code() == want;
                    self.record(id, title, sent, expected, Ok(answer.show()), pass);
                }
                Err(e) if e.starts_with("cannot use") => {
                    self.skipped.push(format!("the IP rules: {e}"));
                    break;
                }
                Err(e) => self.record(id, title, sent, expected, Err(e), false),
            }
        }
        self.tear_down(&users);
    }

    /// SPEC 2.3: a listener that starts only after the CONNECT reply (as some clients do)
    /// still gets the pending message: the server retries a refused push for 2 s.
    fn late_listener(&mut self) {
        // The sender connected too: some servers refuse SEND from one that is not.
        let Some((users, _inboxes)) = self.set_up("P13", &["kim", "lee"], 1) else { return };
        let (kim, lee) = (&users[0], &users[1]);
        let sent = "SEND to an offline user, CONNECT at a port listened on only 200 ms after the reply".to_string();
        let expected = "the message pushed".to_string();
        let result = (|| {
            let port = TcpListener::bind((self.listen_host, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("cannot reserve a port: {e}"))?
                .port();
            let answer = self.exchange(&[b"SEND", kim, lee, b"late"], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the SEND was answered {}", answer.show()));
            }
            let answer = self.exchange(&[b"CONNECT", lee, port.to_string().as_bytes()], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the CONNECT was answered {}", answer.show()));
            }
            // Late on purpose: the first pushes must be refused (the retry window is 2 s).
            std::thread::sleep(Duration::from_millis(200));
            let inbox = Inbox::open_on(self.listen_host, port)?;
            inbox.next(self.timeout).map(|(push, _, _)| super::show::push_fields(&push))
        })();
        let pass = result.is_ok();
        self.record(
            "P13",
            "a listener started after the CONNECT reply still gets the message",
            sent,
            expected,
            result,
            pass,
        );
        self.tear_down(&users);
    }

    /// SPEC 2.3: pending messages are pushed after the CONNECT reply has been sent. The order
    /// is judged by the kernel's arrival times of the reply's and the push's bytes, not by
    /// when this process got to them.
    fn push_after_reply(&mut self) {
        let Some((users, _inboxes)) = self.set_up("P14", &["pat", "pia"], 1) else { return };
        let (pat, pia) = (&users[0], &users[1]);
        let result = (|| {
            let answer = self.exchange(&[b"SEND", pat, pia, b"waiting"], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the SEND was answered {}", answer.show()));
            }
            let inbox = Inbox::open(self.listen_host)?;
            let answer = self.exchange(&[b"CONNECT", pia, inbox.port.to_string().as_bytes()], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the CONNECT was answered {}", answer.show()));
            }
            let (_, _, _, pushed_at) = inbox.next_at(self.timeout)?;
            match (answer.arrived, pushed_at) {
                (Some(replied), Some(pushed)) if replied <= pushed => Ok("the reply, then the push".to_string()),
                (Some(replied), Some(pushed)) => {
                    Err(format!("the push arrived {:?} before the CONNECT reply", replied - pushed))
                }
                _ => Ok("the push (this system gives no arrival times to compare)".to_string()),
            }
        })();
        let pass = result.is_ok();
        self.record(
            "P14",
            "a pending message is pushed after the CONNECT reply, not before",
            "SEND to an offline user, then its CONNECT".into(),
            "the CONNECT reply first, then the push".into(),
            result,
            pass,
        );
        self.tear_down(&users);
    }

    /// SPEC 3: a push the listener does not take (it closes without reading) leaves the
    /// message pending, for the next CONNECT. No clock: the DISCONNECT waits for the failed
    /// delivery (SPEC 2.4) and may find the user already marked disconnected.
    fn dead_listener(&mut self) {
        let Some((users, _inboxes)) = self.set_up("P15", &["dal", "dex"], 1) else { return };
        let (dal, dex) = (&users[0], &users[1]);
        let result = (|| {
            let dead = TcpListener::bind((self.listen_host, 0)).map_err(|e| format!("cannot open a listener: {e}"))?;
            let port = dead.local_addr().map_err(|e| e.to_string())?.port();
            let answer = self.exchange(&[b"CONNECT", dex, port.to_string().as_bytes()], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the CONNECT was answered {}", answer.show()));
            }
            // Take the push's connection, wait for its bytes, close unread: the kernel resets.
            // In a thread of its own, so a server that pushes before replying is served too.
            let timeout = self.timeout;
            let closer = std::thread::spawn(move || {
                dead.set_nonblocking(true).map_err(|e| e.to_string())?;
                let until = Instant::now() + timeout;
                let stream = loop {
                    match dead.accept() {
                        Ok((stream, _)) => break stream,
                        Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                        Err(_) => return Err(format!("no push within {timeout:?}")),
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.peek(&mut [0u8; 1]);
                Ok(())
            });
            let answer = self.exchange(&[b"SEND", dal, dex, b"kept"], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("the SEND was answered {}", answer.show()));
            }
            closer.join().map_err(|_| "the listener thread failed".to_string())??;
            let answer = self.exchange(&[b"DISCONNECT", dex], true)?;
            if !matches!(answer.reply.code(), 0 | 2) {
                return Err(format!("the DISCONNECT was answered {}", answer.show()));
            }
            let inbox = self.listening(dex)?;
            match inbox.next(self.timeout)? {
                (Push::Message { body, .. }, _, _) if &body[..] == b"kept" => Ok("the message pushed again".into()),
                (push, _, raw) => Err(format!("got {}: {}", super::show::push_fields(&push), Escaped(&raw))),
            }
        })();
        let pass = result.is_ok();
        self.record(
            "P15",
            "a message whose push the listener closed unread stays pending for the next CONNECT",
            "SEND to a user whose listener closes unread; DISCONNECT; CONNECT again".into(),
            "the message pushed at the new CONNECT".into(),
            result,
            pass,
        );
        self.tear_down(&users);
    }

    /// SPEC 4: a listener that is slow to read must not hold up deliveries to others. The
    /// slow listener holds its push unread until the other user's push arrives; then it
    /// reads and closes, and both messages must be acknowledged.
    fn slow_listener(&mut self) {
        // sly is registered, not connected: the clause connects it at its slow listener.
        let Some((users, inboxes)) = self.set_up("P16", &["sam", "fay", "sly"], 2) else { return };
        let (sam, fay, sly) = (users[0].clone(), users[1].clone(), users[2].clone());
        let (sam_in, fay_in) = (&inboxes[0], &inboxes[1]);
        let result = (|| {
            let slow = TcpListener::bind((self.listen_host, 0)).map_err(|e| format!("cannot open a listener: {e}"))?;
            let port = slow.local_addr().map_err(|e| e.to_string())?.port();
            let answer = self.exchange(&[b"CONNECT", &sly, port.to_string().as_bytes()], true)?;
            if answer.reply.code() != 0 {
                return Err(format!("sly's CONNECT was answered {}", answer.show()));
            }
            let (held_tx, held_rx) = channel();
            let (release_tx, release_rx) = channel::<()>();
            let hold = self.timeout;
            std::thread::spawn(move || {
                let _ = slow.set_nonblocking(false);
                let Ok((mut stream, _)) = slow.accept() else { return };
                let _ = held_tx.send(());
                let _ = release_rx.recv_timeout(hold);
                let _ = stream.set_read_timeout(Some(hold));
                let _ = stream.read_to_end(&mut Vec::new());
            });
            let slow_id = match self.exchange(&[b"SEND", &sam, &sly, b"slow"], true)? {
                Answer { reply: Reply::Send(crate::messaging::wire::SendReply::Ok { id }), .. } => id,
                answer => return Err(format!("the SEND to sly was answered {}", answer.show())),
            };
            held_rx.recv_timeout(self.timeout).map_err(|_| "no push to sly's listener".to_string())?;
            let fast_id = match self.exchange(&[b"SEND", &sam, &fay, b"fast"], true)? {
                Answer { reply: Reply::Send(crate::messaging::wire::SendReply::Ok { id }), .. } => id,
                answer => return Err(format!("the SEND to fay was answered {}", answer.show())),
            };
            let got = fay_in.next(self.timeout);
            let _ = release_tx.send(());
            got.map_err(|e| format!("fay got no push while sly's was held unread: {e}"))?;
            let mut acked = Vec::new();
            while acked.len() < 2 {
                match sam_in.next(self.timeout) {
                    Ok((Push::Ack { id }, _, _)) => acked.push(id),
                    Ok((push, _, raw)) => {
                        return Err(format!("got {}: {}", super::show::push_fields(&push), Escaped(&raw)))
                    }
                    Err(e) => return Err(format!("acknowledged {acked:?} of {slow_id} and {fast_id}: {e}")),
                }
            }
            acked.sort_unstable();
            let mut want = vec![slow_id, fast_id];
            want.sort_unstable();
            if acked == want {
                Ok("fay's push during sly's, both acknowledged".into())
            } else {
                Err(format!("acknowledged {acked:?}, not {want:?}"))
            }
        })();
        let pass = result.is_ok();
        self.record(
            "P16",
            "a listener slow to read does not hold up pushes to others",
            "SEND to a user whose listener holds the push unread, then SEND to another".into(),
            "the second push while the first is held; both acknowledged".into(),
            result,
            pass,
        );
        self.tear_down(&[sam, fay, sly]);
    }

    /// Checks one push: the kind, the fields and the spelling.
    fn expect_push(&mut self, id: &'static str, title: &'static str, inbox: &Inbox, want: &Push) {
        if self.stopped.borrow().is_some() {
            return; // no push is worth waiting for now
        }
        let expected = format!("{} {}", want.name(self.push_names), super::show::push_fields(want));
        match inbox.next(self.timeout) {
            Ok((push, names, raw)) => {
                let spelled = names == Some(self.push_names);
                let pass = &push == want && spelled;
                let mut got = format!("{} {}", names.map_or("?", |n| push.name(n)), super::show::push_fields(&push));
                if !spelled {
                    got = format!(
                        "{got}: spelled {}, not {}",
                        names.map_or("?".into(), |n| n.to_string()),
                        self.push_names
                    );
                }
                if &push != want {
                    got = format!("{got} (bytes {})", Escaped(&raw));
                }
                self.record(id, title, "(push to our listener)".into(), expected, Ok(got), pass);
            }
            Err(e) => self.record(id, title, "(push to our listener)".into(), expected, Err(e), false),
        }
    }

    /// Every group of clauses, each on users of its own.
    fn run(&mut self) {
        self.registration();
        self.connection();
        self.delivery();
        self.listing();
        self.course_2025();
        self.unregister_drops_mail();
        self.ip_rules();
        self.late_listener();
        self.push_after_reply();
        self.dead_listener();
        self.slow_listener();
        self.bad_input();
        self.endings();
    }

    /// The clauses of SPEC 8, on users of their own: amy and abe connected, ned not;
    /// skipped with one line if the server does not answer USERS.
    fn course_2025(&mut self) {
        use crate::messaging::wire::{SendReply, UsersReply};
        let probe_user = self.user("amy");
        let Some((users, inboxes)) = self.set_up("section 8 (course 2025/26)", &["amy", "abe", "ned"], 2) else {
            return;
        };
        let (a, b, ned) = (&users[0][..], &users[1][..], &users[2][..]);
        let (amy_in, abe_in) = (&inboxes[0], &inboxes[1]);
        let probe = match self.exchange(&[b"USERS", a], true) {
            Ok(answer) => answer,
            Err(e) => {
                self.skipped.push(format!("section 8 (course 2025/26): the server does not answer USERS ({e})"));
                return self.tear_down(&users);
            }
        };
        let sent = show_fields(&[b"USERS", a]);
        let expected = format!(
            "0, listing {probe_user} :: <IP> :: {}, {} :: <IP> :: {} in this order",
            amy_in.port,
            Escaped(b),
            abe_in.port
        );
        let ours: Vec<(Vec<u8>, u16)> = match &probe.reply {
            Reply::Users(UsersReply::Ok { users: listed }) => listed
                .iter()
                .filter(|u| users.iter().any(|g| g[..] == u.name[..]))
                .map(|u| (u.name.to_vec(), u.port))
                .collect(),
            _ => vec![],
        };
        let pass = ours == [(a.to_vec(), amy_in.port), (b.to_vec(), abe_in.port)] && probe.encoding == Some(self.codes);
        self.record(
            "A1",
            "USERS lists the connected users with their listening ports, oldest first",
            sent,
            expected,
            Ok(probe.show()),
            pass,
        );
        self.expect_code("A2", "USERS by a user that is not connected answers 1", &[b"USERS", ned], 1);
        let ghost = self.user("ghost").into_bytes();
        let file = b"/tmp/cartero-check/apuntes.txt";
        self.expect_code(
            "A3",
            "SENDATTACH to an unknown recipient answers 1",
            &[b"SENDATTACH", a, &ghost, b"x", file],
            1,
        );
        let attached = self.expect_code(
            "A4",
            "SENDATTACH answers 0 and the sender's first id, 1",
            &[b"SENDATTACH", a, b, b"mira", file],
            0,
        );
        if let Some(Answer { reply: Reply::SendAttach(SendReply::Ok { id }), .. }) = attached {
            if id != 1 {
                if let Some(last) = self.outcomes.iter_mut().rev().find(|o| o.id == "A4") {
                    last.pass = false;
                    last.got = format!("{}: id {id}, not 1", last.got);
                }
            }
        }
        let (file, body) = (Bytes::from_static(file), Bytes::from_static(b"mira"));
        let want = Push::AttachMessage { sender: Bytes::copy_from_slice(a), id: 1, body, file: file.clone() };
        self.expect_push("A5", "an attached message is pushed with its file name", abe_in, &want);
        self.expect_push(
            "A6",
            "and acknowledged to the sender with the file name",
            amy_in,
            &Push::AttachAck { id: 1, file },
        );
        let next = self.expect_code(
            "A7",
            "a SEND after it gets the next id of the same counter (2)",
            &[b"SEND", a, b, b"after"],
            0,
        );
        self.check_id("A7", &next, 2);
        let want = Push::Message { sender: Bytes::copy_from_slice(a), id: 2, body: "after".into() };
        self.expect_push("A8", "and is pushed after the attached message", abe_in, &want);
        self.expect_push("A9", "and acknowledged", amy_in, &Push::Ack { id: 2 });
        self.tear_down(&users);
    }

    fn check_id(&mut self, id: &'static str, answer: &Option<Answer>, want: u32) {
        use crate::messaging::wire::SendReply;
        if let Some(Answer { reply: Reply::Send(SendReply::Ok { id: got }), .. }) = answer {
            if *got != want {
                if let Some(last) = self.outcomes.iter_mut().rev().find(|o| o.id == id) {
                    last.pass = false;
                    last.expected = format!("0, id {want}");
                    last.got = format!("0, id {got}");
                }
            }
        }
    }

    /// Bad input must get the operation's error code (or nothing) and leave the server serving.
    fn bad_input(&mut self) {
        // Any answer shows the server alive: one that reads only the operation and closes
        // resets the connection over the alias it did not read, and still serves.
        let serving = |c: &mut Checker| match c.exchange(&[b"CONNECTEDUSERS", c.user("ghost").as_bytes()], true) {
            Ok(a) => Ok(a.reply.code()),
            Err(e) if e.contains("reset") || e == "closed without a reply" => Ok(0),
            Err(e) => Err(e),
        };
        let sent = "HELLO \"x\"".to_string();
        let result = match self.exchange(&[b"HELLO", b"x"], true) {
            Err(e) if e == "closed without a reply" => serving(self).map(|_| "closed, no reply; still serving".into()),
            Err(e) => Err(e),
            Ok(_) => Err("replied".into()),
        };
        let pass = result.is_ok();
        self.record(
            "B1",
            "an unknown operation is closed without a reply, and the server keeps serving",
            sent,
            "no reply".into(),
            result,
            pass,
        );

        // A trailing empty field after a complete request changes nothing (the server may
        // ignore what follows the request).
        let trailing = self.user("trail");
        if self
            .expect_code(
                "B5",
                "a REGISTER followed by an extra empty field answers 0",
                &[b"REGISTER", b"Check User", trailing.as_bytes(), b"01/02/2000", b""],
                0,
            )
            .is_some_and(|a| a.reply.code() == 0)
        {
            self.made.push(trailing);
        }

        // Two registered users of their own: an unknown one would make 1 the right answer.
        let Some((users, _)) = self.set_up("B2, B3", &["bea", "ben"], 0) else { return self.empty_connection(serving) };
        let (bea, ben) = (&users[0][..], &users[1][..]);
        let long = vec![b'x'; 300];
        self.expect_code(
            "B2",
            "a field over 255 bytes gets the operation's error code",
            &[b"SEND", bea, ben, &long],
            2,
        );

        // A request cut short by the client's close (a SEND without its body; a one-field
        // REGISTER would be seed 000's short form, which SPEC 9 allows).
        let sent = format!("{} (then the client closes)", show_fields(&[b"SEND", bea, ben]));
        let expected = format!("2 ({})", self.codes);
        match self.exchange(&[b"SEND", bea, ben], true) {
            Ok(a) => {
                let pass = a.reply.code() == 2;
                self.record(
                    "B3",
                    "a request cut short gets the operation's error code",
                    sent,
                    expected,
                    Ok(a.show()),
                    pass,
                );
            }
            Err(e) => {
                self.record("B3", "a request cut short gets the operation's error code", sent, expected, Err(e), false)
            }
        }
        self.empty_connection(serving);
    }

    /// B4: an empty connection must not hurt the server.
    fn empty_connection(&mut self, serving: impl Fn(&mut Checker) -> Result<u8, String>) {
        let result = TcpStream::connect_timeout(&self.server, self.timeout)
            .map_err(|e| format!("cannot connect: {e}"))
            .and_then(|s| {
                drop(s);
                std::thread::sleep(Duration::from_millis(200));
                serving(self).map(|_| "still serving".to_string())
            });
        let pass = result.is_ok();
        self.record(
            "B4",
            "an empty connection (connect, then close) leaves the server serving",
            "(nothing)".into(),
            "still serving".into(),
            result,
            pass,
        );
    }

    /// Disconnects and unregisters what this run made (best effort).
    fn clean_up(&mut self) {
        for alias in std::mem::take(&mut self.made) {
            let _ = self.exchange(&[b"DISCONNECT", alias.as_bytes()], true);
            let _ = self.exchange(&[b"UNREGISTER", alias.as_bytes()], true);
        }
    }
}

/// Finds the server's code encoding and push spelling with two users of its own, both
/// connected (some servers refuse SEND from a sender that is not). The code encoding found
/// is kept even when the push spelling cannot be found.
fn detect(
    server: SocketAddr,
    listen_host: IpAddr,
    timeout: Duration,
    prefix: &str,
) -> (Option<CodeEncoding>, Result<PushNames, String>) {
    let probe = Checker {
        server,
        listen_host,
        timeout,
        codes: CodeEncoding::Ascii,
        push_names: PushNames::Spaced,
        prefix: format!("{prefix}auto_"),
        outcomes: vec![],
        made: vec![],
        skipped: vec![],
        deadline: Instant::now() + timeout * 10,
        silent: Default::default(),
        stopped: Default::default(),
        stopped_after: None,
    };
    let (x, y) = (probe.user("x"), probe.user("y"));
    let codes = match probe.exchange(&[b"REGISTER", b"Check User", x.as_bytes(), b"01/02/2000"], true) {
        Ok(reg) => reg.encoding,
        Err(e) => return (None, Err(e)),
    };
    let names = (|| {
        probe.exchange(&[b"REGISTER", b"Check User", y.as_bytes(), b"01/02/2000"], true)?;
        let (x_in, y_in) = (Inbox::open(probe.listen_host)?, Inbox::open(probe.listen_host)?);
        let (px, py) = (x_in.port.to_string(), y_in.port.to_string());
        probe.exchange(&[b"CONNECT", x.as_bytes(), px.as_bytes()], true)?;
        probe.exchange(&[b"CONNECT", y.as_bytes(), py.as_bytes()], true)?;
        let sent = probe.exchange(&[b"SEND", x.as_bytes(), y.as_bytes(), b"probe"], true)?;
        if sent.reply.code() != 0 {
            return Err(format!("the probe's SEND was answered {}", sent.show()));
        }
        let names = y_in.next(timeout).map(|(_, names, _)| names)?;
        // The acknowledgement, if any, is let through before the clean-up.
        let _ = x_in.next(Duration::from_millis(200).min(timeout));
        names.ok_or_else(|| "the probe's push has no known name".to_string())
    })();
    for alias in [&x, &y] {
        let _ = probe.exchange(&[b"DISCONNECT", alias.as_bytes()], true);
        let _ = probe.exchange(&[b"UNREGISTER", alias.as_bytes()], true);
    }
    (codes, names)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The address of `host:port`, or of `host` and a separate `port`, or why there is none.
fn server_address(server: &str, port: Option<u16>) -> Result<SocketAddr, String> {
    let has_port = server
        .rsplit_once(':')
        .is_some_and(|(host, p)| p.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')));
    let target = match (has_port, port) {
        (true, None) => server.to_string(),
        (false, Some(port)) if server.contains(':') && !server.starts_with('[') => format!("[{server}]:{port}"),
        (false, Some(port)) => format!("{server}:{port}"),
        (true, Some(_)) => return Err(format!("{server} already names a port; give the port once")),
        (false, None) => {
            return Err(format!("no port for {server}: write it as host:port, e.g. cartero check server {server}:8888"))
        }
    };
    match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(format!("{target} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {target}: {e}")),
    }
}

pub fn run(args: Args) -> ExitCode {
    let Target::Server(args) = args.target;
    let server = match server_address(&args.server, args.port) {
        Ok(addr) => addr,
        Err(why) => {
            eprintln!("cartero: {why}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    // Said once, first: a server that cannot be reached makes every clause meaningless. The
    // probe is a request that changes nothing (a CONNECTEDUSERS for a user that does not exist).
    match TcpStream::connect_timeout(&server, args.timeout) {
        Ok(mut probe) => {
            let _ = probe.write_all(b"CONNECTEDUSERS\0ck_probe_nobody\0");
            let _ = probe.shutdown(Shutdown::Write);
        }
        Err(e) => {
            eprintln!("cartero: cannot connect to the server at {server}: {e}; no clause was run");
            return ExitCode::from(2);
        }
    }
    let listen_host = args.listen_host.unwrap_or_else(|| crate::messaging::client::local_address_towards(server));
    // The checker's own listeners: a failure here is this machine's, not the server's.
    if let Err(e) = TcpListener::bind((listen_host, 0)) {
        eprintln!("cartero: cannot open a listener on {listen_host}: {e} (see --listen-host); no clause was run");
        return ExitCode::from(2);
    }
    // Random per run (the standard library seeds RandomState randomly).
    let random = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    };
    let prefix = format!("ck{:06x}_", random & 0xff_ffff);
    let (mut codes, mut push_names) = (args.codes, args.push_names);
    if args.auto {
        let (found_codes, found_names) = detect(server, listen_host, args.timeout, &prefix);
        codes = found_codes.unwrap_or(codes);
        let line = match (found_codes, found_names) {
            (Some(c), Ok(p)) => {
                push_names = p;
                format!("detected: result codes {c}, push names {p}")
            }
            (Some(c), Err(e)) => {
                format!("detected: result codes {c}; push names not detected ({e}), checked as {push_names}")
            }
            (None, Err(e)) => {
                format!("not detected ({e}): checked as result codes {codes}, push names {push_names}")
            }
            (None, Ok(p)) => {
                push_names = p;
                format!("detected: push names {p}; result codes not detected, checked as {codes}")
            }
        };
        if !args.json {
            println!("{line}");
        }
    }
    let mut checker = Checker {
        server,
        listen_host,
        timeout: args.timeout,
        codes,
        push_names,
        prefix,
        outcomes: vec![],
        made: vec![],
        skipped: vec![],
        deadline: started + args.deadline,
        silent: Default::default(),
        stopped: Default::default(),
        stopped_after: None,
    };
    checker.run();
    checker.clean_up();
    let failed = checker.outcomes.iter().filter(|o| !o.pass).count();
    let total = checker.outcomes.len();
    if args.json {
        let items: Vec<String> = checker
            .outcomes
            .iter()
            .map(|o| {
                format!(
                    "{{\"clause\":{},\"title\":{},\"sent\":{},\"expected\":{},\"got\":{},\"pass\":{}}}",
                    json_string(o.id),
                    json_string(o.title),
                    json_string(&o.sent),
                    json_string(&o.expected),
                    json_string(&o.got),
                    o.pass
                )
            })
            .collect();
        let skipped: Vec<String> = checker.skipped.iter().map(|s| json_string(s)).collect();
        println!(
            "{{\"server\":{},\"codes\":\"{codes}\",\"push_names\":\"{push_names}\",\"passed\":{},\"failed\":{failed},\"stopped\":{},\"skipped\":[{}],\"clauses\":[{}]}}",
            json_string(&server.to_string()),
            total - failed,
            match (checker.stopped_after, checker.stopped.borrow().as_ref()) {
                (Some(after), Some(why)) => format!("{{\"after\":{},\"why\":{}}}", json_string(after), json_string(why)),
                _ => "null".into(),
            },
            skipped.join(","),
            items.join(",")
        );
    } else {
        let color = std::io::stdout().is_terminal();
        for o in &checker.outcomes {
            let verdict = match (o.pass, color) {
                (true, true) => "\x1b[32mPASS\x1b[0m",
                (false, true) => "\x1b[31mFAIL\x1b[0m",
                (true, false) => "PASS",
                (false, false) => "FAIL",
            };
            println!(
                "{verdict} {:<4} {} | sent: {} | expected: {} | got: {}",
                o.id, o.title, o.sent, o.expected, o.got
            );
        }
        for why in &checker.skipped {
            println!("SKIP {why}");
        }
        match (checker.stopped_after, checker.stopped.borrow().as_ref()) {
            (Some(after), Some(why)) => {
                println!("check: stopped after {after}: {why}; {} passed, {failed} failed", total - failed)
            }
            _ => println!("check: {} passed, {failed} failed", total - failed),
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::server_address;

    #[test]
    fn the_server_is_host_colon_port_or_host_then_port() {
        assert_eq!(server_address("127.0.0.1:8888", None).unwrap(), "127.0.0.1:8888".parse().unwrap());
        assert_eq!(server_address("127.0.0.1", Some(8888)).unwrap(), "127.0.0.1:8888".parse().unwrap());
        assert_eq!(server_address("::1", Some(8888)).unwrap(), "[::1]:8888".parse().unwrap());
        assert_eq!(server_address("[::1]:8888", None).unwrap(), "[::1]:8888".parse().unwrap());
        let no_port = server_address("localhost", None).unwrap_err();
        assert!(no_port.starts_with("no port for localhost: write it as host:port"), "{no_port}");
        let twice = server_address("localhost:1", Some(2)).unwrap_err();
        assert!(twice.contains("give the port once"), "{twice}");
    }
}
