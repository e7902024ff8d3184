//! The chat's state machine, sans-IO: connections and lines in, bytes to send, closes and
//! log events out (SPEC-chat 1-4).
//!
//! No sockets, no clock, no threads. The caller tells the engine when a connection opens
//! ([`Engine::open`], once its framing is known), hands it each message that arrives
//! ([`Engine::handle`]), and tells it when a connection ends ([`Engine::close`]); then it
//! drains [`Engine::poll_output`] until `None` and carries each [`Output`] out in order.
//! Timeouts (408) and slow readers (503) are the caller's to notice; it reports them with
//! [`Engine::close`] and the matching [`Leave`].
//!
//! The engine handles inputs one at a time, so every user sees the events that reach it in
//! one order (SPEC-chat 3). Bytes are shared: a broadcast to a thousand users is encoded
//! once per framing.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use crate::chat::codec::Frame;
use crate::chat::wire::{self, check_name, parse_request, Code, Request, MAX_MESSAGE};

/// A connection, named by the caller; unique among open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a connection frames its messages (SPEC-chat 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every message ends with `\n`.
    Framed,
    /// The original client's: no terminator, one message per read and per write.
    Legacy,
}

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// It closed or failed (the same as `DISCONNECT`).
    Closed,
    /// No successful CONNECT in time (408; the caller sends the ERROR).
    Timeout,
    /// It read too slowly (503; the caller sends the ERROR).
    SlowReader,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write `bytes` to the connection (already framed for its mode).
    Send { to: ConnId, bytes: Bytes },
    /// Close the connection once what was sent to it before is written. The engine has
    /// forgotten it.
    Close { conn: ConnId },
    /// A line for the server's log (SPEC-chat 5).
    Log(LogEvent),
}

/// The events of the server's log (SPEC-chat 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Connect {
        name: String,
        ok: bool,
    },
    Disconnect {
        name: String,
    },
    Message {
        from: String,
        to: String,
    },
    Broadcast {
        from: String,
    },
    /// An ERROR sent (or a drop for 408 and 503); `name` when the connection had joined.
    Error {
        code: u16,
        conn: ConnId,
        name: Option<String>,
    },
}

impl LogEvent {
    /// The log line, with `peer` naming a connection that has no user name.
    pub fn line(&self, peer: impl FnOnce(ConnId) -> String) -> String {
        match self {
            LogEvent::Connect { name, ok } => format!("s> CONNECT {name} {}", if *ok { "OK" } else { "FAIL" }),
            LogEvent::Disconnect { name } => format!("s> DISCONNECT {name}"),
            LogEvent::Message { from, to } => format!("s> MESSAGE {from} -> {to}"),
            LogEvent::Broadcast { from } => format!("s> BROADCAST {from}"),
            LogEvent::Error { code, conn, name } => match name {
                Some(name) => format!("s> ERROR {code} {name}"),
                None => format!("s> ERROR {code} {}", peer(*conn)),
            },
        }
    }
}

struct Conn {
    mode: Mode,
    /// The user's name and its place in the order of joining, once joined.
    user: Option<(String, u64)>,
}

/// The chat's state: connections, users in order of joining, and the outputs waiting.
#[derive(Default)]
pub struct Engine {
    conns: HashMap<ConnId, Conn>,
    names: HashMap<String, ConnId>,
    /// Joined users by order of joining.
    joined: BTreeMap<u64, ConnId>,
    next_seq: u64,
    legacy_users: usize,
    out: VecDeque<Output>,
}

/// One message encoded once for each framing.
struct Encoded {
    framed: Bytes,
}

impl Encoded {
    fn new(write: impl FnOnce(&mut BytesMut)) -> Encoded {
        let mut buf = BytesMut::new();
        write(&mut buf);
        buf.put_u8(b'\n');
        Encoded { framed: buf.freeze() }
    }

    fn for_mode(&self, mode: Mode) -> Bytes {
        match mode {
            Mode::Framed => self.framed.clone(),
            Mode::Legacy => self.framed.slice(..self.framed.len() - 1),
        }
    }
}

impl Engine {
    /// An engine with no connections.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// A connection whose framing is known; it has not joined yet.
    pub fn open(&mut self, conn: ConnId, mode: Mode) {
        self.conns.insert(conn, Conn { mode, user: None });
    }

    /// True when the connection has joined under a name.
    pub fn is_joined(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.user.is_some())
    }

    /// The connection's user name, once joined.
    pub fn name(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).and_then(|c| c.user.as_ref()).map(|(n, _)| n.as_str())
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Joined users, in order of joining.
    pub fn users(&self) -> impl Iterator<Item = &str> + '_ {
        self.joined.values().filter_map(|c| self.name(*c))
    }

    /// The next output, or `None` when there is nothing left to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// One message from a connection (a frame of a framed connection, or a read of a legacy
    /// one turned into a frame by the caller: [`Frame::TooLong`] when over 1024 bytes).
    /// Messages from unknown connections are ignored.
    pub fn handle(&mut self, conn: ConnId, frame: &Frame) {
        let Some(c) = self.conns.get(&conn) else { return };
        let mode = c.mode;
        let line = match frame {
            Frame::TooLong => return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE),
            Frame::Line(line) => line,
        };
        if line.len() > MAX_MESSAGE {
            return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE);
        }
        let request = match parse_request(line) {
            Ok(request) => request,
            Err(e) => return self.error(conn, Code::BadRequest, e.text()),
        };
        let sender = self.name(conn).map(str::to_string);
        match (request, sender) {
            (Request::Connect(_), Some(_)) => self.error(conn, Code::Conflict, wire::TEXT_ALREADY_JOINED),
            (Request::Connect(name), None) => self.connect(conn, mode, name),
            (Request::Message { .. } | Request::Broadcast(_), None) => {
                self.error(conn, Code::NotConnected, wire::TEXT_NOT_CONNECTED)
            }
            (Request::Message { to, content }, Some(from)) => {
                if "MESSAGE||".len() + from.len() + content.len() > MAX_MESSAGE {
                    return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE);
                }
                let Some(&target) = self.names.get(&to) else {
                    return self.error(conn, Code::NotFound, wire::TEXT_NOT_FOUND);
                };
                let bytes = Encoded::new(|b| wire::Reply::Message { from: from.clone(), content }.write(b));
                let mode = self.conns[&target].mode;
                self.out.push_back(Output::Send { to: target, bytes: bytes.for_mode(mode) });
                self.out.push_back(Output::Log(LogEvent::Message { from, to }));
            }
            (Request::Broadcast(content), Some(from)) => {
                if "BROADCAST||".len() + from.len() + content.len() > MAX_MESSAGE {
                    return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE);
                }
                let bytes = Encoded::new(|b| wire::Reply::Broadcast { from: from.clone(), content }.write(b));
                self.send_to_all(&bytes);
                self.out.push_back(Output::Log(LogEvent::Broadcast { from }));
            }
            (Request::Disconnect, _) => {
                self.out.push_back(Output::Close { conn });
                self.close(conn, Leave::Closed);
            }
        }
    }

    /// The connection is gone (or being dropped for `leave`): a joined user leaves, and the
    /// others get the new user list. Unknown connections are ignored.
    pub fn close(&mut self, conn: ConnId, leave: Leave) {
        let Some(c) = self.conns.remove(&conn) else { return };
        let name = c.user.as_ref().map(|(n, _)| n.clone());
        match leave {
            Leave::Closed => {}
            Leave::Timeout => self.log_error(conn, Code::Timeout, name.clone()),
            Leave::SlowReader => self.log_error(conn, Code::SlowReader, name.clone()),
        }
        if let Some((name, seq)) = c.user {
            self.names.remove(&name);
            self.joined.remove(&seq);
            if c.mode == Mode::Legacy {
                self.legacy_users -= 1;
            }
            self.out.push_back(Output::Log(LogEvent::Disconnect { name }));
            self.send_user_list();
        }
    }

    fn connect(&mut self, conn: ConnId, mode: Mode, name: String) {
        let refusal = match check_name(&name) {
            Err(_) => Some((Code::BadRequest, wire::TEXT_BAD_NAME)),
            Ok(()) if self.names.contains_key(&name) => Some((Code::Conflict, wire::TEXT_NAME_TAKEN)),
            Ok(()) => None,
        };
        if let Some((code, text)) = refusal {
            let fail = Encoded::new(|b| wire::Reply::ConnectAck(false).write(b));
            self.out.push_back(Output::Send { to: conn, bytes: fail.for_mode(mode) });
            if mode == Mode::Framed {
                self.out.push_back(Output::Send { to: conn, bytes: wire::error_line(code, text) });
            }
            self.out.push_back(Output::Log(LogEvent::Connect { name: printable(&name), ok: false }));
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.user = Some((name.clone(), seq));
        }
        self.names.insert(name.clone(), conn);
        self.joined.insert(seq, conn);
        if mode == Mode::Legacy {
            self.legacy_users += 1;
        }
        let ok = Encoded::new(|b| wire::Reply::ConnectAck(true).write(b));
        self.out.push_back(Output::Send { to: conn, bytes: ok.for_mode(mode) });
        self.out.push_back(Output::Log(LogEvent::Connect { name, ok: true }));
        self.send_user_list();
    }

    /// `USER_LIST` to every joined user; truncated to 1024 bytes for legacy connections.
    fn send_user_list(&mut self) {
        let framed =
            Encoded::new(|b| wire::write_user_list(b, self.joined.values().filter_map(|c| self.name(*c)), usize::MAX));
        let legacy = (self.legacy_users > 0).then(|| {
            let mut b = BytesMut::new();
            wire::write_user_list(&mut b, self.joined.values().filter_map(|c| self.name(*c)), MAX_MESSAGE);
            b.freeze()
        });
        for &to in self.joined.values() {
            let bytes = match (self.conns[&to].mode, &legacy) {
                (Mode::Legacy, Some(legacy)) => legacy.clone(),
                _ => framed.framed.clone(),
            };
            self.out.push_back(Output::Send { to, bytes });
        }
    }

    fn send_to_all(&mut self, message: &Encoded) {
        for &to in self.joined.values() {
            self.out.push_back(Output::Send { to, bytes: message.for_mode(self.conns[&to].mode) });
        }
    }

    fn error(&mut self, conn: ConnId, code: Code, text: &str) {
        let bytes = wire::error_line(code, text);
        let bytes = match self.conns.get(&conn).map(|c| c.mode) {
            Some(Mode::Legacy) => bytes.slice(..bytes.len() - 1),
            _ => bytes,
        };
        self.out.push_back(Output::Send { to: conn, bytes });
        let name = self.name(conn).map(str::to_string);
        self.log_error(conn, code, name);
    }

    fn log_error(&mut self, conn: ConnId, code: Code, name: Option<String>) {
        self.out.push_back(Output::Log(LogEvent::Error { code: code.number(), conn, name }));
    }
}

/// A refused name as the log shows it: control characters escaped so the log stays one line.
fn printable(name: &str) -> String {
    if name.chars().any(char::is_control) {
        name.escape_debug().to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(engine: &mut Engine) -> Vec<(u64, String)> {
        let mut sent = Vec::new();
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Send { to, bytes } => sent.push((to.0, String::from_utf8(bytes.to_vec()).unwrap())),
                Output::Close { conn } => sent.push((conn.0, "<close>".into())),
                Output::Log(_) => {}
            }
        }
        sent
    }

    fn line(text: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn s(to: u64, text: &str) -> (u64, String) {
        (to, text.to_string())
    }

    #[test]
    fn connect_message_broadcast_disconnect() {
        let mut e = Engine::new();
        e.open(ConnId(1), Mode::Framed);
        e.open(ConnId(2), Mode::Framed);
        e.handle(ConnId(1), &line("BROADCAST|x"));
        e.handle(ConnId(1), &line("CONNECT|ana"));
        assert_eq!(
            run(&mut e),
            vec![s(1, "ERROR|401|No conectado\n"), s(1, "CONNECT_ACK|OK\n"), s(1, "USER_LIST|ana\n")]
        );
        e.handle(ConnId(2), &line("CONNECT|ana"));
        e.handle(ConnId(2), &line("CONNECT|bob"));
        e.handle(ConnId(2), &line("CONNECT|bob"));
        assert_eq!(
            run(&mut e),
            vec![
                s(2, "CONNECT_ACK|FAIL\n"),
                s(2, "ERROR|409|Nombre en uso\n"),
                s(2, "CONNECT_ACK|OK\n"),
                s(1, "USER_LIST|ana,bob\n"),
                s(2, "USER_LIST|ana,bob\n"),
                s(2, "ERROR|409|Ya conectado\n"),
            ]
        );
        e.handle(ConnId(2), &line("MESSAGE|ana|a|b"));
        e.handle(ConnId(2), &line("MESSAGE|ghost|a"));
        e.handle(ConnId(2), &line("BROADCAST|hola"));
        assert_eq!(
            run(&mut e),
            vec![
                s(1, "MESSAGE|bob|a|b\n"),
                s(2, "ERROR|404|Usuario no encontrado\n"),
                s(1, "BROADCAST|bob|hola\n"),
                s(2, "BROADCAST|bob|hola\n"),
            ]
        );
        e.handle(ConnId(1), &line("DISCONNECT|"));
        assert_eq!(run(&mut e), vec![s(1, "<close>"), s(2, "USER_LIST|bob\n")]);
        e.close(ConnId(2), Leave::Closed);
        assert_eq!(run(&mut e), vec![]);
        assert_eq!(e.connections(), 0);
    }

    #[test]
    fn legacy_has_no_terminator_no_error_after_fail_and_a_short_list() {
        let mut e = Engine::new();
        e.open(ConnId(1), Mode::Legacy);
        e.open(ConnId(2), Mode::Legacy);
        e.handle(ConnId(1), &line("CONNECT|a b"));
        e.handle(ConnId(1), &line("CONNECT|ana"));
        e.handle(ConnId(2), &line("CONNECT|ana"));
        assert_eq!(
            run(&mut e),
            vec![s(1, "CONNECT_ACK|FAIL"), s(1, "CONNECT_ACK|OK"), s(1, "USER_LIST|ana"), s(2, "CONNECT_ACK|FAIL")]
        );
        e.handle(ConnId(1), &line("BROADCAST|a\nb"));
        assert_eq!(run(&mut e), vec![s(1, "ERROR|400|Salto de línea en el contenido")]);
        for i in 0..300 {
            e.open(ConnId(100 + i), Mode::Framed);
            e.handle(ConnId(100 + i), &line(&format!("CONNECT|user{i:05}")));
        }
        run(&mut e);
        e.handle(ConnId(1), &line("BROADCAST|x"));
        let sent = run(&mut e);
        assert_eq!(sent.len(), 301);
        e.close(ConnId(399), Leave::Closed);
        let lists = run(&mut e);
        let legacy = &lists.iter().find(|(to, _)| *to == 1).unwrap().1;
        let framed = &lists.iter().find(|(to, _)| *to == 100).unwrap().1;
        assert!(legacy.len() <= 1024 && legacy.starts_with("USER_LIST|ana,user00000,"), "{legacy}");
        assert!(framed.len() > 1024 && framed.ends_with(",user00298\n"));
    }

    #[test]
    fn sizes() {
        let mut e = Engine::new();
        e.open(ConnId(1), Mode::Framed);
        e.handle(ConnId(1), &Frame::TooLong);
        e.handle(ConnId(1), &line("CONNECT|ana"));
        run(&mut e);
        // MESSAGE|ana|content is 1024 bytes exactly: forwarded; one more: 413.
        let fits = "x".repeat(1024 - "MESSAGE|ana|".len());
        e.handle(ConnId(1), &line(&format!("MESSAGE|ana|{fits}")));
        e.handle(ConnId(1), &line(&format!("MESSAGE|ana|{fits}y")));
        let sent = run(&mut e);
        assert_eq!(sent[0].1.len(), 1025);
        assert_eq!(sent[1], s(1, "ERROR|413|Mensaje demasiado largo\n"));
        let fits = "x".repeat(1024 - "BROADCAST|ana|".len());
        e.handle(ConnId(1), &line(&format!("BROADCAST|{fits}")));
        e.handle(ConnId(1), &line(&format!("BROADCAST|{fits}y")));
        let sent = run(&mut e);
        assert_eq!(sent[0].1.len(), 1025);
        assert_eq!(sent[1], s(1, "ERROR|413|Mensaje demasiado largo\n"));
    }

    // ------------------------------------------------------------------ the naive model

    /// The rules of SPEC-chat 3 and 4 written the obvious way: a list of connections with
    /// their names, scanned linearly.
    #[derive(Default)]
    struct Model {
        /// (conn, legacy, name once joined), with joined users kept in order of joining.
        conns: Vec<(u64, bool, Option<String>)>,
        joined: Vec<u64>,
    }

    impl Model {
        fn term(&self, conn: u64) -> &'static str {
            if self.conns.iter().any(|c| c.0 == conn && c.1) {
                ""
            } else {
                "\n"
            }
        }
        fn name(&self, conn: u64) -> Option<String> {
            self.conns.iter().find(|c| c.0 == conn).and_then(|c| c.2.clone())
        }
        fn list(&self, out: &mut Vec<(u64, String)>) {
            let names: Vec<String> = self.joined.iter().map(|c| self.name(*c).unwrap()).collect();
            for &c in &self.joined {
                let mut text = format!("USER_LIST|{}", names.join(","));
                if self.term(c).is_empty() {
                    while text.len() > 1024 {
                        text.truncate(text.rfind(',').unwrap());
                    }
                }
                out.push((c, format!("{text}{}", self.term(c))));
            }
        }
        fn send(&self, out: &mut Vec<(u64, String)>, to: u64, text: &str) {
            out.push((to, format!("{text}{}", self.term(to))));
        }
        fn leave(&mut self, conn: u64, out: &mut Vec<(u64, String)>) {
            let joined = self.name(conn).is_some();
            self.conns.retain(|c| c.0 != conn);
            self.joined.retain(|c| *c != conn);
            if joined {
                self.list(out);
            }
        }
        fn handle(&mut self, conn: u64, text: &str, out: &mut Vec<(u64, String)>) {
            if !self.conns.iter().any(|c| c.0 == conn) {
                return;
            }
            let me = self.name(conn);
            if text.len() > 1024 {
                return self.send(out, conn, "ERROR|413|Mensaje demasiado largo");
            }
            let (cmd, rest) = match text.find('|') {
                Some(i) => (&text[..i], Some(&text[i + 1..])),
                None => (text, None),
            };
            let bad = |m: &Self, out: &mut Vec<(u64, String)>, t: &str| m.send(out, conn, &format!("ERROR|400|{t}"));
            match (cmd, rest) {
                ("CONNECT", Some(name)) => {
                    if me.is_some() {
                        return self.send(out, conn, "ERROR|409|Ya conectado");
                    }
                    let valid = !name.is_empty()
                        && name.chars().count() <= 32
                        && !name.starts_with('#')
                        && !name.chars().any(|c| c.is_whitespace() || c.is_control() || "|,@".contains(c));
                    let taken = self.conns.iter().any(|c| c.2.as_deref() == Some(name));
                    if !valid || taken {
                        self.send(out, conn, "CONNECT_ACK|FAIL");
                        if !self.term(conn).is_empty() {
                            let e = if !valid { "ERROR|400|Nombre no válido" } else { "ERROR|409|Nombre en uso" };
                            self.send(out, conn, e);
                        }
                        return;
                    }
                    self.conns.iter_mut().find(|c| c.0 == conn).unwrap().2 = Some(name.to_string());
                    self.joined.push(conn);
                    self.send(out, conn, "CONNECT_ACK|OK");
                    self.list(out);
                }
                ("MESSAGE", Some(rest)) if rest.contains('|') => {
                    let (to, content) = rest.split_once('|').unwrap();
                    if content.contains('\n') {
                        return bad(self, out, "Salto de línea en el contenido");
                    }
                    let Some(me) = me else { return self.send(out, conn, "ERROR|401|No conectado") };
                    let forwarded = format!("MESSAGE|{me}|{content}");
                    if forwarded.len() > 1024 {
                        return self.send(out, conn, "ERROR|413|Mensaje demasiado largo");
                    }
                    match self.conns.iter().find(|c| c.2.as_deref() == Some(to)) {
                        Some(c) => self.send(out, c.0, &forwarded),
                        None => self.send(out, conn, "ERROR|404|Usuario no encontrado"),
                    }
                }
                ("BROADCAST", Some(content)) => {
                    if content.contains('\n') {
                        return bad(self, out, "Salto de línea en el contenido");
                    }
                    let Some(me) = me else { return self.send(out, conn, "ERROR|401|No conectado") };
                    let forwarded = format!("BROADCAST|{me}|{content}");
                    if forwarded.len() > 1024 {
                        return self.send(out, conn, "ERROR|413|Mensaje demasiado largo");
                    }
                    for &c in &self.joined {
                        self.send(out, c, &forwarded);
                    }
                }
                ("DISCONNECT", None | Some("")) => {
                    out.push((conn, "<close>".into()));
                    self.leave(conn, out);
                }
                ("CONNECT" | "MESSAGE" | "BROADCAST" | "DISCONNECT", _) => {
                    bad(self, out, "Número de campos incorrecto")
                }
                _ => bad(self, out, "Comando desconocido"),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(u64, bool),
        Line(u64, String),
        Close(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let conn = 0u64..5;
        let name = prop_oneof![
            Just("ana".to_string()),
            Just("bob".to_string()),
            Just("ghost".to_string()),
            Just("a b".to_string()),
            Just("#r".to_string()),
            Just(String::new()),
            Just("x".repeat(33)),
        ];
        let content = prop_oneof![
            Just(String::new()),
            Just("hola|a".to_string()),
            Just("a\nb".to_string()),
            Just("y".repeat(1010))
        ];
        prop_oneof![
            (conn.clone(), any::<bool>()).prop_map(|(c, l)| Op::Open(c, l)),
            (conn.clone(), name.clone()).prop_map(|(c, n)| Op::Line(c, format!("CONNECT|{n}"))),
            (conn.clone(), name, content.clone()).prop_map(|(c, n, t)| Op::Line(c, format!("MESSAGE|{n}|{t}"))),
            (conn.clone(), content).prop_map(|(c, t)| Op::Line(c, format!("BROADCAST|{t}"))),
            conn.clone().prop_map(|c| Op::Line(c, "DISCONNECT".into())),
            (conn.clone(), prop_oneof![Just("MESSAGE|bob"), Just("NOPE"), Just("DISCONNECT|x"), Just("CONNECT")])
                .prop_map(|(c, t)| Op::Line(c, t.to_string())),
            conn.prop_map(Op::Close),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn engine_matches_the_naive_model(ops in proptest::collection::vec(op(), 0..60)) {
            let mut engine = Engine::new();
            let mut model = Model::default();
            for op in ops {
                let mut expected = Vec::new();
                match &op {
                    Op::Open(c, legacy) => {
                        if model.conns.iter().any(|x| x.0 == *c) {
                            continue; // ids are unique among open connections
                        }
                        engine.open(ConnId(*c), if *legacy { Mode::Legacy } else { Mode::Framed });
                        model.conns.push((*c, *legacy, None));
                    }
                    Op::Line(c, text) => {
                        engine.handle(ConnId(*c), &line(text));
                        model.handle(*c, text, &mut expected);
                    }
                    Op::Close(c) => {
                        engine.close(ConnId(*c), Leave::Closed);
                        model.leave(*c, &mut expected);
                    }
                }
                prop_assert_eq!(run(&mut engine), expected, "after {:?}", op);
                let users: Vec<String> = engine.users().map(str::to_string).collect();
                let model_users: Vec<String> = model.joined.iter().map(|c| model.name(*c).unwrap()).collect();
                prop_assert_eq!(users, model_users);
            }
        }
    }
}
