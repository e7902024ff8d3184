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
use crate::chat::wire::{self, check_name, check_room, parse_request, Code, ParseError, Reply, Request, MAX_MESSAGE};

/// A connection, named by the caller; unique among open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Hashes a [`ConnId`] with one multiplication. The maps of connections are looked up once
/// per recipient of every broadcast and user list; the ids are the server's own sequence
/// numbers (no one can choose them to collide), so SipHash's protection buys nothing there.
#[derive(Default, Clone, Copy)]
pub(crate) struct ConnIdHasher(u64);

impl std::hash::Hasher for ConnIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the low bits spread sequential ids, the high bits are mixed.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by connection, with [`ConnIdHasher`].
pub(crate) type ConnMap<V> = HashMap<ConnId, V, std::hash::BuildHasherDefault<ConnIdHasher>>;

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
    /// A message to store before it is forwarded (an engine with durable history only, see
    /// [`Engine::set_durable_history`]).
    Append(Box<Append>),
}

/// A message for the history, and what forwarding it takes. The caller stores `record`;
/// once it is stored it calls [`Engine::remember`] and carries out `then` in order; if it
/// cannot be stored it calls [`Engine::store_failed`] and drops `then`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub record: Record,
    /// Who sent the message (it gets the error if the message cannot be stored).
    pub sender: ConnId,
    /// The forwards and the log line of the message.
    pub then: Vec<Output>,
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub target: Target,
    pub from: String,
    /// When the server took it, in unix milliseconds.
    pub millis: u64,
    pub content: String,
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
    Join {
        name: String,
        room: String,
    },
    Part {
        name: String,
        room: String,
    },
    Room {
        from: String,
        room: String,
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
            LogEvent::Join { name, room } => format!("s> JOIN {name} {room}"),
            LogEvent::Part { name, room } => format!("s> PART {name} {room}"),
            LogEvent::Room { from, room } => format!("s> ROOM {from} -> {room}"),
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
    /// The rooms it is a member of, with its place in each room's order of joining.
    rooms: BTreeMap<String, u64>,
}

/// The engine's limits (SPEC-chat 7 and docs/protocols/chat.md, section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rooms one connection may be a member of at once (a JOIN past it: `ERROR|405`).
    pub max_rooms: usize,
    /// Messages kept per history target (a room, the broadcasts, a pair of users).
    pub history_per_target: usize,
    /// Bytes of content and names kept in history in all, whatever the targets; the oldest
    /// messages go first.
    pub history_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_rooms: 100, history_per_target: 10_000, history_bytes: 256 << 20 }
    }
}

/// What HISTORY replays: a room, the broadcasts, or the private messages of two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Broadcasts,
    Room(String),
    /// The two names, in byte order.
    Pair(String, String),
}

impl Target {
    /// The private messages of `a` and `b` (in either order).
    pub fn pair(a: &str, b: &str) -> Target {
        if a <= b {
            Target::Pair(a.to_string(), b.to_string())
        } else {
            Target::Pair(b.to_string(), a.to_string())
        }
    }
}

struct Entry {
    seq: u64,
    from: String,
    millis: u64,
    content: String,
}

impl Entry {
    fn size(&self) -> usize {
        self.from.len() + self.content.len() + 64
    }
}

/// History in memory, bounded per target and in all.
#[derive(Default)]
struct History {
    targets: HashMap<Target, VecDeque<Entry>>,
    /// Every entry kept (and some already gone from their target), oldest first.
    order: VecDeque<(u64, Target, usize)>,
    bytes: usize,
    next_seq: u64,
}

impl History {
    fn record(&mut self, limits: &Limits, record: &Record) {
        if limits.history_per_target == 0 {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry { seq, from: record.from.clone(), millis: record.millis, content: record.content.clone() };
        let target = record.target.clone();
        let size = entry.size();
        let list = self.targets.entry(target.clone()).or_default();
        list.push_back(entry);
        if list.len() > limits.history_per_target {
            list.pop_front();
        }
        self.order.push_back((seq, target, size));
        self.bytes += size;
        while self.bytes > limits.history_bytes {
            let Some((seq, target, size)) = self.order.pop_front() else { break };
            self.bytes -= size;
            if let Some(list) = self.targets.get_mut(&target) {
                if list.front().is_some_and(|e| e.seq == seq) {
                    list.pop_front();
                }
                if list.is_empty() {
                    self.targets.remove(&target);
                }
            }
        }
    }

    /// The last `n` messages of `target`, oldest first.
    fn last(&self, target: &Target, n: usize) -> impl Iterator<Item = &Entry> {
        let list = self.targets.get(target);
        let len = list.map_or(0, VecDeque::len);
        list.into_iter().flat_map(move |l| l.iter().skip(len.saturating_sub(n)))
    }
}

/// The chat's state: connections, users in order of joining, rooms, history, and the
/// outputs waiting.
#[derive(Default)]
pub struct Engine {
    conns: ConnMap<Conn>,
    names: HashMap<String, ConnId>,
    /// Joined users by order of joining.
    joined: BTreeMap<u64, ConnId>,
    next_seq: u64,
    legacy_users: usize,
    /// Rooms with at least one member: members by order of joining the room.
    rooms: BTreeMap<String, BTreeMap<u64, ConnId>>,
    history: History,
    limits: Limits,
    /// Messages for the history go out as [`Output::Append`] and are kept once stored.
    durable: bool,
    out: VecDeque<Output>,
}

/// The most messages one HISTORY replays (SPEC-chat 7).
const MAX_REPLAY: u64 = 100;
/// The longest `ROOM_LIST` (docs/protocols/chat.md, section 9): 64 KiB of room names.
const MAX_ROOM_LIST: usize = 64 << 10;
/// The longest `USER_LIST` on a framed connection (docs/protocols/chat.md, section 9): 256 KiB
/// of names, at least 2,000 of the longest and far more of usual ones. Unbounded, enough
/// connections with long names would make one list larger than a reader's whole queue (every
/// user dropped with 503) and than the line a client accepts.
const MAX_USER_LIST: usize = 256 << 10;

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

    /// An engine with other limits than the defaults.
    pub fn with_limits(limits: Limits) -> Engine {
        Engine { limits, ..Engine::default() }
    }

    /// With `durable`, each message for the history goes out as an [`Output::Append`] holding
    /// its forwards, and enters the history only when the caller says it is stored
    /// ([`Engine::remember`]); without, it enters the history and is forwarded at once.
    pub fn set_durable_history(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Keeps `record` in the history (bounded by the limits, oldest out first): a stored
    /// [`Append`]'s record, or one loaded from the store at start.
    pub fn remember(&mut self, record: &Record) {
        self.history.record(&self.limits, record);
    }

    /// The message of an [`Append`] from `sender` could not be stored, so it was not
    /// forwarded: the sender gets `ERROR|500` (if still connected).
    pub fn store_failed(&mut self, sender: ConnId) {
        if self.conns.contains_key(&sender) {
            self.error(sender, Code::StoreFailed, wire::TEXT_STORE_FAILED);
        }
    }

    /// A message for the history: kept and forwarded at once, or (durable history) handed
    /// out with its forwards, the outputs queued since `start`.
    fn keep(&mut self, sender: ConnId, record: Record, start: usize) {
        if self.durable && self.limits.history_per_target > 0 {
            let then = self.out.drain(start..).collect();
            self.out.push_back(Output::Append(Box::new(Append { record, sender, then })));
        } else {
            self.history.record(&self.limits, &record);
        }
    }

    /// A connection whose framing is known; it has not joined yet.
    pub fn open(&mut self, conn: ConnId, mode: Mode) {
        self.conns.insert(conn, Conn { mode, user: None, rooms: BTreeMap::new() });
    }

    /// Rooms that exist (those with members), in byte order of their names.
    pub fn rooms(&self) -> impl Iterator<Item = &str> + '_ {
        self.rooms.keys().map(String::as_str)
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
    /// Messages from unknown connections are ignored. `now_millis` (unix time in
    /// milliseconds) stamps what goes into history.
    pub fn handle(&mut self, conn: ConnId, frame: &Frame, now_millis: u64) {
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
        let extension = matches!(
            request,
            Request::Join(_) | Request::Part(_) | Request::Room { .. } | Request::Rooms | Request::History { .. }
        );
        if extension && mode == Mode::Legacy {
            return self.error(conn, Code::BadRequest, ParseError::Extension.text());
        }
        let sender = self.name(conn).map(str::to_string);
        match (request, sender) {
            (Request::Connect(_), Some(_)) => self.error(conn, Code::Conflict, wire::TEXT_ALREADY_JOINED),
            (Request::Connect(name), None) => self.connect(conn, mode, name),
            (Request::Disconnect, _) => {
                self.out.push_back(Output::Close { conn });
                self.close(conn, Leave::Closed);
            }
            (_, None) => self.error(conn, Code::NotConnected, wire::TEXT_NOT_CONNECTED),
            (Request::Message { to, content }, Some(from)) => {
                if "MESSAGE||".len() + from.len() + content.len() > MAX_MESSAGE {
                    return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE);
                }
                let Some(&target) = self.names.get(&to) else {
                    return self.error(conn, Code::NotFound, wire::TEXT_NOT_FOUND);
                };
                let record = Record { target: Target::pair(&from, &to), from, millis: now_millis, content };
                let start = self.out.len();
                let bytes = Encoded::new(|b| {
                    wire::Reply::Message { from: record.from.clone(), content: record.content.clone() }.write(b)
                });
                let mode = self.conns[&target].mode;
                self.out.push_back(Output::Send { to: target, bytes: bytes.for_mode(mode) });
                self.out.push_back(Output::Log(LogEvent::Message { from: record.from.clone(), to }));
                self.keep(conn, record, start);
            }
            (Request::Broadcast(content), Some(from)) => {
                if "BROADCAST||".len() + from.len() + content.len() > MAX_MESSAGE {
                    return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE);
                }
                let record = Record { target: Target::Broadcasts, from, millis: now_millis, content };
                let start = self.out.len();
                let bytes = Encoded::new(|b| {
                    wire::Reply::Broadcast { from: record.from.clone(), content: record.content.clone() }.write(b)
                });
                self.send_to_all(&bytes);
                self.out.push_back(Output::Log(LogEvent::Broadcast { from: record.from.clone() }));
                self.keep(conn, record, start);
            }
            (Request::Join(room), Some(name)) => self.join(conn, name, room),
            (Request::Part(room), Some(name)) => {
                if check_room(&room).is_err() {
                    return self.error(conn, Code::BadRequest, wire::TEXT_BAD_ROOM);
                }
                if !self.conns[&conn].rooms.contains_key(&room) {
                    return self.error(conn, Code::Forbidden, wire::TEXT_NOT_MEMBER);
                }
                // The leaver is still a member here, so it gets its PARTED in its place.
                let parted = Encoded::new(|b| Reply::Parted { room: room.clone(), name: name.clone() }.write(b));
                self.send_to_room(&room, &parted);
                self.leave_room(conn, &room);
                self.out.push_back(Output::Log(LogEvent::Part { name, room }));
            }
            (Request::Room { room, content }, Some(from)) => {
                if check_room(&room).is_err() {
                    return self.error(conn, Code::BadRequest, wire::TEXT_BAD_ROOM);
                }
                if !self.conns[&conn].rooms.contains_key(&room) {
                    return self.error(conn, Code::Forbidden, wire::TEXT_NOT_MEMBER);
                }
                if "ROOM|||".len() + room.len() + from.len() + content.len() > MAX_MESSAGE {
                    return self.error(conn, Code::TooLarge, wire::TEXT_TOO_LARGE);
                }
                let record = Record { target: Target::Room(room.clone()), from, millis: now_millis, content };
                let start = self.out.len();
                let bytes = Encoded::new(|b| {
                    let (from, content) = (record.from.clone(), record.content.clone());
                    Reply::Room { room: room.clone(), from, content }.write(b)
                });
                self.send_to_room(&room, &bytes);
                self.out.push_back(Output::Log(LogEvent::Room { from: record.from.clone(), room }));
                self.keep(conn, record, start);
            }
            (Request::Rooms, Some(_)) => {
                // Bounded, so that one ROOMS never passes a reader's queue (1 MiB by default).
                let mut b = BytesMut::new();
                b.put_slice(b"ROOM_LIST|");
                for (i, room) in self.rooms.keys().enumerate() {
                    if b.len() + room.len() + 1 > MAX_ROOM_LIST {
                        break;
                    }
                    if i > 0 {
                        b.put_u8(b',');
                    }
                    b.put_slice(room.as_bytes());
                }
                b.put_u8(b'\n');
                self.out.push_back(Output::Send { to: conn, bytes: b.freeze() });
            }
            (Request::History { target, n }, Some(me)) => {
                let key = if target == "*" {
                    Target::Broadcasts
                } else if target.starts_with('#') {
                    if check_room(&target).is_err() {
                        return self.error(conn, Code::BadRequest, wire::TEXT_BAD_ROOM);
                    }
                    if !self.conns[&conn].rooms.contains_key(&target) {
                        return self.error(conn, Code::Forbidden, wire::TEXT_NOT_MEMBER);
                    }
                    Target::Room(target.clone())
                } else {
                    if check_name(&target).is_err() {
                        return self.error(conn, Code::BadRequest, wire::TEXT_BAD_NAME);
                    }
                    Target::pair(&me, &target)
                };
                let n = n.min(MAX_REPLAY) as usize;
                let mut b = BytesMut::new();
                for e in self.history.last(&key, n) {
                    let reply = Reply::History {
                        target: target.clone(),
                        from: e.from.clone(),
                        millis: e.millis,
                        content: e.content.clone(),
                    };
                    reply.write(&mut b);
                    b.put_u8(b'\n');
                }
                Reply::HistoryEnd(target).write(&mut b);
                b.put_u8(b'\n');
                self.out.push_back(Output::Send { to: conn, bytes: b.freeze() });
            }
        }
    }

    fn join(&mut self, conn: ConnId, name: String, room: String) {
        if check_room(&room).is_err() {
            return self.error(conn, Code::BadRequest, wire::TEXT_BAD_ROOM);
        }
        let members = self.conns[&conn].rooms.len();
        if self.conns[&conn].rooms.contains_key(&room) {
            // Already a member: the member list again, to the joiner alone.
            let joined = self.joined_line(&room);
            self.out.push_back(Output::Send { to: conn, bytes: joined.framed });
            return;
        }
        if members >= self.limits.max_rooms {
            return self.error(conn, Code::TooManyRooms, wire::TEXT_TOO_MANY_ROOMS);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.rooms.entry(room.clone()).or_default().insert(seq, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rooms.insert(room.clone(), seq);
        }
        let joined = self.joined_line(&room);
        self.send_to_room(&room, &joined);
        self.out.push_back(Output::Log(LogEvent::Join { name, room }));
    }

    fn joined_line(&self, room: &str) -> Encoded {
        Encoded::new(|b| {
            b.put_slice(b"JOINED|");
            b.put_slice(room.as_bytes());
            b.put_u8(b'|');
            let members = self.rooms.get(room).into_iter().flat_map(|m| m.values());
            wire::put_list(b, members.filter_map(|c| self.name(*c)));
        })
    }

    /// Takes `conn` out of `room`; the room ends with its last member.
    fn leave_room(&mut self, conn: ConnId, room: &str) {
        let Some(seq) = self.conns.get_mut(&conn).and_then(|c| c.rooms.remove(room)) else { return };
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&seq);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn send_to_room(&mut self, room: &str, message: &Encoded) {
        if let Some(members) = self.rooms.get(room) {
            for &to in members.values() {
                // Only framed connections join rooms.
                self.out.push_back(Output::Send { to, bytes: message.framed.clone() });
            }
        }
    }

    /// The connection is gone (or being dropped for `leave`): a joined user leaves, and the
    /// others get the new user list. Unknown connections are ignored.
    pub fn close(&mut self, conn: ConnId, leave: Leave) {
        let Some(c) = self.conns.get(&conn) else { return };
        let rooms: Vec<String> = c.rooms.keys().cloned().collect();
        if let Some((name, _)) = c.user.clone() {
            for room in rooms {
                self.leave_room(conn, &room);
                let parted = Encoded::new(|b| Reply::Parted { room: room.clone(), name: name.clone() }.write(b));
                self.send_to_room(&room, &parted);
            }
        }
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
        let framed = Encoded::new(|b| {
            wire::write_user_list(b, self.joined.values().filter_map(|c| self.name(*c)), MAX_USER_LIST)
        });
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

    /// Sends `ERROR|code|text` to the connection and logs it, as for a bad message (the
    /// browser client's binary frames).
    pub(crate) fn error(&mut self, conn: ConnId, code: Code, text: &str) {
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
        for out in outputs(engine) {
            match out {
                Output::Send { to, bytes } => sent.push((to.0, String::from_utf8(bytes.to_vec()).unwrap())),
                Output::Close { conn } => sent.push((conn.0, "<close>".into())),
                Output::Log(_) | Output::Append(_) => {}
            }
        }
        sent
    }

    /// Every output in order; each [`Append`] is stored at once, as the caller would.
    fn outputs(engine: &mut Engine) -> Vec<Output> {
        let mut all = Vec::new();
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Append(append) => {
                    engine.remember(&append.record);
                    all.extend(append.then);
                }
                other => all.push(other),
            }
        }
        all
    }

    #[test]
    fn durable_history_waits_for_the_store_and_a_failed_store_forwards_nothing() {
        let mut e = Engine::new();
        e.set_durable_history(true);
        e.open(ConnId(1), Mode::Framed);
        e.open(ConnId(2), Mode::Framed);
        e.handle(ConnId(1), &line("CONNECT|ana"), 0);
        e.handle(ConnId(2), &line("CONNECT|bob"), 0);
        run(&mut e);
        e.handle(ConnId(1), &line("BROADCAST|uno"), 7);
        let Some(Output::Append(append)) = e.poll_output() else { panic!("an append first") };
        assert_eq!(e.poll_output(), None, "nothing is forwarded before it is stored");
        let record = Record { target: Target::Broadcasts, from: "ana".into(), millis: 7, content: "uno".into() };
        assert_eq!((&append.record, append.sender), (&record, ConnId(1)));
        assert_eq!(append.then.len(), 3); // to ana, to bob, the log line
        e.handle(ConnId(2), &line("MESSAGE|ana|dos"), 8);
        let Some(Output::Append(failed)) = e.poll_output() else { panic!("an append") };
        e.store_failed(failed.sender);
        assert_eq!(run(&mut e), vec![s(2, "ERROR|500|No se pudo guardar el mensaje\n")]);
        e.remember(&append.record);
        e.handle(ConnId(2), &line("HISTORY|*|5"), 9);
        e.handle(ConnId(2), &line("HISTORY|ana|5"), 9);
        assert_eq!(run(&mut e), vec![s(2, "HISTORY|*|ana|7|uno\nHISTORY_END|*\n"), s(2, "HISTORY_END|ana\n")]);
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
        e.handle(ConnId(1), &line("BROADCAST|x"), 0);
        e.handle(ConnId(1), &line("CONNECT|ana"), 0);
        assert_eq!(
            run(&mut e),
            vec![s(1, "ERROR|401|No conectado\n"), s(1, "CONNECT_ACK|OK\n"), s(1, "USER_LIST|ana\n")]
        );
        e.handle(ConnId(2), &line("CONNECT|ana"), 0);
        e.handle(ConnId(2), &line("CONNECT|bob"), 0);
        e.handle(ConnId(2), &line("CONNECT|bob"), 0);
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
        e.handle(ConnId(2), &line("MESSAGE|ana|a|b"), 0);
        e.handle(ConnId(2), &line("MESSAGE|ghost|a"), 0);
        e.handle(ConnId(2), &line("BROADCAST|hola"), 0);
        assert_eq!(
            run(&mut e),
            vec![
                s(1, "MESSAGE|bob|a|b\n"),
                s(2, "ERROR|404|Usuario no encontrado\n"),
                s(1, "BROADCAST|bob|hola\n"),
                s(2, "BROADCAST|bob|hola\n"),
            ]
        );
        e.handle(ConnId(1), &line("DISCONNECT|"), 0);
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
        e.handle(ConnId(1), &line("CONNECT|a b"), 0);
        e.handle(ConnId(1), &line("CONNECT|ana"), 0);
        e.handle(ConnId(2), &line("CONNECT|ana"), 0);
        assert_eq!(
            run(&mut e),
            vec![s(1, "CONNECT_ACK|FAIL"), s(1, "CONNECT_ACK|OK"), s(1, "USER_LIST|ana"), s(2, "CONNECT_ACK|FAIL")]
        );
        e.handle(ConnId(1), &line("BROADCAST|a\nb"), 0);
        assert_eq!(run(&mut e), vec![s(1, "ERROR|400|Salto de línea en el contenido")]);
        for i in 0..300 {
            e.open(ConnId(100 + i), Mode::Framed);
            e.handle(ConnId(100 + i), &line(&format!("CONNECT|user{i:05}")), 0);
        }
        run(&mut e);
        e.handle(ConnId(1), &line("BROADCAST|x"), 0);
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
        e.handle(ConnId(1), &Frame::TooLong, 0);
        e.handle(ConnId(1), &line("CONNECT|ana"), 0);
        run(&mut e);
        // MESSAGE|ana|content is 1024 bytes exactly: forwarded; one more: 413.
        let fits = "x".repeat(1024 - "MESSAGE|ana|".len());
        e.handle(ConnId(1), &line(&format!("MESSAGE|ana|{fits}")), 0);
        e.handle(ConnId(1), &line(&format!("MESSAGE|ana|{fits}y")), 0);
        let sent = run(&mut e);
        assert_eq!(sent[0].1.len(), 1025);
        assert_eq!(sent[1], s(1, "ERROR|413|Mensaje demasiado largo\n"));
        let fits = "x".repeat(1024 - "BROADCAST|ana|".len());
        e.handle(ConnId(1), &line(&format!("BROADCAST|{fits}")), 0);
        e.handle(ConnId(1), &line(&format!("BROADCAST|{fits}y")), 0);
        let sent = run(&mut e);
        assert_eq!(sent[0].1.len(), 1025);
        assert_eq!(sent[1], s(1, "ERROR|413|Mensaje demasiado largo\n"));
    }

    fn joined(e: &mut Engine, conn: u64, name: &str) {
        e.open(ConnId(conn), Mode::Framed);
        e.handle(ConnId(conn), &line(&format!("CONNECT|{name}")), 0);
    }

    #[test]
    fn rooms_join_part_room_rooms() {
        let mut e = Engine::with_limits(Limits { max_rooms: 2, ..Limits::default() });
        joined(&mut e, 1, "ana");
        joined(&mut e, 2, "bob");
        e.open(ConnId(3), Mode::Legacy);
        e.handle(ConnId(3), &line("CONNECT|old"), 0);
        e.handle(ConnId(9), &line("JOIN|#a"), 0);
        run(&mut e);
        e.open(ConnId(4), Mode::Framed);
        e.handle(ConnId(4), &line("JOIN|#a"), 0);
        e.handle(ConnId(3), &line("JOIN|#a"), 0);
        e.handle(ConnId(1), &line("JOIN|sala"), 0);
        e.handle(ConnId(1), &line("JOIN|##a"), 0);
        e.handle(ConnId(1), &line("JOIN|#a"), 0);
        e.handle(ConnId(2), &line("JOIN|#a"), 0);
        e.handle(ConnId(2), &line("JOIN|#a"), 0);
        assert_eq!(
            run(&mut e),
            vec![
                s(4, "ERROR|401|No conectado\n"),
                s(3, "ERROR|400|Extensión no soportada"),
                s(1, "ERROR|400|Nombre de sala no válido\n"),
                s(1, "ERROR|400|Nombre de sala no válido\n"),
                s(1, "JOINED|#a|ana\n"),
                s(1, "JOINED|#a|ana,bob\n"),
                s(2, "JOINED|#a|ana,bob\n"),
                s(2, "JOINED|#a|ana,bob\n"),
            ]
        );
        e.handle(ConnId(2), &line("JOIN|#b"), 0);
        e.handle(ConnId(2), &line("JOIN|#c"), 0);
        e.handle(ConnId(1), &line("ROOMS"), 0);
        e.handle(ConnId(1), &line("ROOM|#b|hola"), 0);
        e.handle(ConnId(2), &line("ROOM|#a|a|b"), 0);
        assert_eq!(
            run(&mut e),
            vec![
                s(2, "JOINED|#b|bob\n"),
                s(2, "ERROR|405|Demasiadas salas\n"),
                s(1, "ROOM_LIST|#a,#b\n"),
                s(1, "ERROR|403|No eres miembro de la sala\n"),
                s(1, "ROOM|#a|bob|a|b\n"),
                s(2, "ROOM|#a|bob|a|b\n"),
            ]
        );
        // ROOM|#a|ana|content is 1024 bytes exactly: forwarded; one more: 413.
        let fits = "x".repeat(1024 - "ROOM|#a|ana|".len());
        e.handle(ConnId(1), &line(&format!("ROOM|#a|{fits}")), 0);
        e.handle(ConnId(1), &line(&format!("ROOM|#a|{fits}y")), 0);
        let sent = run(&mut e);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[2], s(1, "ERROR|413|Mensaje demasiado largo\n"));
        e.handle(ConnId(1), &line("PART|#b"), 0);
        e.handle(ConnId(1), &line("PART|#a"), 0);
        assert_eq!(
            run(&mut e),
            vec![s(1, "ERROR|403|No eres miembro de la sala\n"), s(1, "PARTED|#a|ana\n"), s(2, "PARTED|#a|ana\n")]
        );
        e.handle(ConnId(1), &line("JOIN|#b"), 0);
        run(&mut e);
        e.close(ConnId(2), Leave::Closed);
        assert_eq!(run(&mut e), vec![s(1, "PARTED|#b|bob\n"), s(1, "USER_LIST|ana,old\n"), s(3, "USER_LIST|ana,old")]);
        assert_eq!(e.rooms().collect::<Vec<_>>(), vec!["#b"]);
        e.close(ConnId(1), Leave::Closed);
        assert_eq!(e.rooms().count(), 0);
    }

    #[test]
    fn user_list_is_bounded() {
        let mut e = Engine::new();
        // Names of 32 code points, 27 of them four bytes: 113 bytes each, 2,401 of them.
        let long =
            |i: u64| -> String { format!("{i:05}").chars().chain(std::iter::repeat('\u{1F600}')).take(32).collect() };
        for i in 1..=2400 {
            joined(&mut e, i, &long(i));
            while e.poll_output().is_some() {}
        }
        joined(&mut e, 2401, &long(2401));
        let to_first: Vec<String> = run(&mut e).into_iter().filter(|(to, _)| *to == 1).map(|(_, l)| l).collect();
        let list = &to_first[0];
        assert!(list.starts_with("USER_LIST|00001") && list.ends_with('\n'));
        assert!(list.len() <= MAX_USER_LIST + 1 && list.len() > MAX_USER_LIST - 200, "{}", list.len());
    }

    #[test]
    fn room_list_is_bounded() {
        let mut e = Engine::with_limits(Limits { max_rooms: 10_000, ..Limits::default() });
        joined(&mut e, 1, "ana");
        for i in 0..5000 {
            e.handle(ConnId(1), &line(&format!("JOIN|#sala-larga-{i:05}")), 0);
        }
        run(&mut e);
        e.handle(ConnId(1), &line("ROOMS"), 0);
        let list = run(&mut e).remove(0).1;
        assert!(list.len() <= MAX_ROOM_LIST + 1 && list.len() > MAX_ROOM_LIST - 20, "{}", list.len());
        assert!(list.starts_with("ROOM_LIST|#sala-larga-00000,") && list.ends_with("\n") && !list.contains(",\n"));
    }

    #[test]
    fn history_per_target_with_the_caller_s_clock() {
        let mut e = Engine::with_limits(Limits { history_per_target: 3, ..Limits::default() });
        joined(&mut e, 1, "ana");
        joined(&mut e, 2, "bob");
        joined(&mut e, 3, "eve");
        e.handle(ConnId(1), &line("JOIN|#a"), 0);
        for i in 0..5u64 {
            e.handle(ConnId(1), &line(&format!("BROADCAST|b{i}")), 1000 + i);
        }
        e.handle(ConnId(1), &line("ROOM|#a|r|x"), 2000);
        e.handle(ConnId(1), &line("MESSAGE|bob|p1"), 3000);
        e.handle(ConnId(2), &line("MESSAGE|ana|p2"), 3001);
        e.handle(ConnId(3), &line("MESSAGE|ana|other"), 3002);
        e.handle(ConnId(1), &line("MESSAGE|ghost|lost"), 3003);
        run(&mut e);
        e.handle(ConnId(2), &line("HISTORY|*|2"), 0);
        e.handle(ConnId(2), &line("HISTORY|*|1000000000"), 0);
        e.handle(ConnId(2), &line("HISTORY|*|0"), 0);
        e.handle(ConnId(2), &line("HISTORY|#a|5"), 0);
        e.handle(ConnId(2), &line("HISTORY|#bad,|5"), 0);
        e.handle(ConnId(2), &line("HISTORY|*|1e9"), 0);
        e.handle(ConnId(1), &line("HISTORY|#a|5"), 0);
        e.handle(ConnId(2), &line("HISTORY|ana|10"), 0);
        e.handle(ConnId(1), &line("HISTORY|ghost|10"), 0);
        assert_eq!(
            run(&mut e),
            vec![
                s(2, "HISTORY|*|ana|1003|b3\nHISTORY|*|ana|1004|b4\nHISTORY_END|*\n"),
                s(2, "HISTORY|*|ana|1002|b2\nHISTORY|*|ana|1003|b3\nHISTORY|*|ana|1004|b4\nHISTORY_END|*\n"),
                s(2, "HISTORY_END|*\n"),
                s(2, "ERROR|403|No eres miembro de la sala\n"),
                s(2, "ERROR|400|Nombre de sala no válido\n"),
                s(2, "ERROR|400|Número no válido\n"),
                s(1, "HISTORY|#a|ana|2000|r|x\nHISTORY_END|#a\n"),
                s(2, "HISTORY|ana|ana|3000|p1\nHISTORY|ana|bob|3001|p2\nHISTORY_END|ana\n"),
                s(1, "HISTORY_END|ghost\n"),
            ]
        );
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let mut e = Engine::with_limits(Limits { history_bytes: 10 * (64 + 5), ..Limits::default() });
        joined(&mut e, 1, "ana");
        for i in 0..100 {
            e.handle(ConnId(1), &line(&format!("BROADCAST|{i:>2}")), i);
        }
        run(&mut e);
        assert!(e.history.bytes <= 10 * 69 && e.history.order.len() <= 10);
        e.handle(ConnId(1), &line("HISTORY|*|100"), 0);
        let sent = run(&mut e);
        assert!(sent[0].1.starts_with("HISTORY|*|ana|90|90\n"), "{}", sent[0].1);
    }

    // ------------------------------------------------------------------ the naive model

    /// The rules of SPEC-chat 3 and 4 written the obvious way: a list of connections with
    /// their names, scanned linearly.
    #[derive(Default)]
    struct Model {
        /// (conn, legacy, name once joined), with joined users kept in order of joining.
        conns: Vec<(u64, bool, Option<String>)>,
        joined: Vec<u64>,
        /// (room, members in order of joining), rooms with members only.
        rooms: Vec<(String, Vec<u64>)>,
        /// (target key, sender, content), oldest first; all of it (no limit reached here).
        history: Vec<(String, String, String)>,
    }

    /// Rooms per connection in the model test.
    const MODEL_ROOMS: usize = 2;

    fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.chars().count() <= 32
            && !name.starts_with('#')
            && !name.chars().any(|c| c.is_whitespace() || c.is_control() || "|,@".contains(c))
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
        fn members(&self, room: &str) -> Vec<u64> {
            self.rooms.iter().find(|r| r.0 == room).map(|r| r.1.clone()).unwrap_or_default()
        }
        fn room_names(&self, conn: u64) -> Vec<String> {
            let mut names: Vec<String> =
                self.rooms.iter().filter(|r| r.1.contains(&conn)).map(|r| r.0.clone()).collect();
            names.sort();
            names
        }
        fn part(&mut self, conn: u64, room: &str) {
            for r in &mut self.rooms {
                if r.0 == room {
                    r.1.retain(|c| *c != conn);
                }
            }
            self.rooms.retain(|r| !r.1.is_empty());
        }
        fn leave(&mut self, conn: u64, out: &mut Vec<(u64, String)>) {
            if let Some(me) = self.name(conn) {
                for room in self.room_names(conn) {
                    self.part(conn, &room);
                    for c in self.members(&room) {
                        self.send(out, c, &format!("PARTED|{room}|{me}"));
                    }
                }
            }
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
                    let valid = valid_name(name);
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
                        Some(c) => {
                            let key = if me.as_str() <= to { format!("{me} {to}") } else { format!("{to} {me}") };
                            self.history.push((key, me.clone(), content.to_string()));
                            self.send(out, c.0, &forwarded)
                        }
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
                    self.history.push(("*".into(), me.clone(), content.to_string()));
                    for &c in &self.joined {
                        self.send(out, c, &forwarded);
                    }
                }
                ("JOIN" | "PART" | "ROOM" | "ROOMS" | "HISTORY", _) if self.term(conn).is_empty() => {
                    let fields_ok = match cmd {
                        "ROOMS" => matches!(rest, None | Some("")),
                        "JOIN" | "PART" => rest.is_some(),
                        _ => rest.is_some_and(|r| r.contains('|')),
                    };
                    if !fields_ok {
                        return bad(self, out, "Número de campos incorrecto");
                    }
                    if cmd == "HISTORY" {
                        let n = rest.unwrap().split_once('|').unwrap().1;
                        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                            return bad(self, out, "Número no válido");
                        }
                    }
                    if cmd == "ROOM" && rest.unwrap().split_once('|').unwrap().1.contains('\n') {
                        return bad(self, out, "Salto de línea en el contenido");
                    }
                    bad(self, out, "Extensión no soportada")
                }
                ("JOIN" | "PART" | "ROOM", Some(rest)) if cmd != "ROOM" || rest.contains('|') => {
                    let (room, content) = rest.split_once('|').filter(|_| cmd == "ROOM").unwrap_or((rest, ""));
                    if cmd == "ROOM" && content.contains('\n') {
                        return bad(self, out, "Salto de línea en el contenido");
                    }
                    let Some(me) = me else { return self.send(out, conn, "ERROR|401|No conectado") };
                    let valid = room.starts_with('#') && room.chars().count() <= 32 && valid_name(&room[1..]);
                    if !valid {
                        return bad(self, out, "Nombre de sala no válido");
                    }
                    let member = self.members(room).contains(&conn);
                    match cmd {
                        "JOIN" if member => {
                            let names: Vec<String> =
                                self.members(room).iter().map(|c| self.name(*c).unwrap()).collect();
                            self.send(out, conn, &format!("JOINED|{room}|{}", names.join(",")));
                        }
                        "JOIN" if self.room_names(conn).len() >= MODEL_ROOMS => {
                            self.send(out, conn, "ERROR|405|Demasiadas salas")
                        }
                        "JOIN" => {
                            match self.rooms.iter_mut().find(|r| r.0 == room) {
                                Some(r) => r.1.push(conn),
                                None => self.rooms.push((room.to_string(), vec![conn])),
                            }
                            let members = self.members(room);
                            let names: Vec<String> = members.iter().map(|c| self.name(*c).unwrap()).collect();
                            for c in members {
                                self.send(out, c, &format!("JOINED|{room}|{}", names.join(",")));
                            }
                        }
                        _ if !member => self.send(out, conn, "ERROR|403|No eres miembro de la sala"),
                        "PART" => {
                            for c in self.members(room) {
                                self.send(out, c, &format!("PARTED|{room}|{me}"));
                            }
                            self.part(conn, room);
                        }
                        _ => {
                            let forwarded = format!("ROOM|{room}|{me}|{content}");
                            if forwarded.len() > 1024 {
                                return self.send(out, conn, "ERROR|413|Mensaje demasiado largo");
                            }
                            self.history.push((room.to_string(), me.clone(), content.to_string()));
                            for c in self.members(room) {
                                self.send(out, c, &forwarded);
                            }
                        }
                    }
                }
                ("ROOMS", None | Some("")) => {
                    if me.is_none() {
                        return self.send(out, conn, "ERROR|401|No conectado");
                    }
                    let mut names: Vec<String> = self.rooms.iter().map(|r| r.0.clone()).collect();
                    names.sort();
                    self.send(out, conn, &format!("ROOM_LIST|{}", names.join(",")));
                }
                ("HISTORY", Some(rest)) if rest.contains('|') => {
                    let (target, n) = rest.split_once('|').unwrap();
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                        return bad(self, out, "Número no válido");
                    }
                    let Some(me) = me else { return self.send(out, conn, "ERROR|401|No conectado") };
                    let n = n.parse::<u64>().unwrap_or(u64::MAX).min(100) as usize;
                    let key = if target == "*" {
                        "*".to_string()
                    } else if let Some(rest) = target.strip_prefix('#') {
                        let valid = target.chars().count() <= 32 && valid_name(rest);
                        if !valid {
                            return bad(self, out, "Nombre de sala no válido");
                        }
                        if !self.members(target).contains(&conn) {
                            return self.send(out, conn, "ERROR|403|No eres miembro de la sala");
                        }
                        target.to_string()
                    } else {
                        if !valid_name(target) {
                            return bad(self, out, "Nombre no válido");
                        }
                        if me.as_str() <= target {
                            format!("{me} {target}")
                        } else {
                            format!("{target} {me}")
                        }
                    };
                    let all: Vec<&(String, String, String)> = self.history.iter().filter(|h| h.0 == key).collect();
                    let mut text = String::new();
                    for h in &all[all.len().saturating_sub(n)..] {
                        text.push_str(&format!("HISTORY|{target}|{}|0|{}\n", h.1, h.2));
                    }
                    text.push_str(&format!("HISTORY_END|{target}\n"));
                    out.push((conn, text));
                }
                ("DISCONNECT", None | Some("")) => {
                    out.push((conn, "<close>".into()));
                    self.leave(conn, out);
                }
                (
                    "CONNECT" | "MESSAGE" | "BROADCAST" | "DISCONNECT" | "JOIN" | "PART" | "ROOM" | "ROOMS" | "HISTORY",
                    _,
                ) => bad(self, out, "Número de campos incorrecto"),
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
        let room = prop_oneof![
            Just("#r".to_string()),
            Just("#s".to_string()),
            Just("#t".to_string()),
            Just("sala".to_string()),
            Just("##x".to_string()),
            Just(format!("#{}", "y".repeat(32))),
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
            (conn.clone(), content.clone()).prop_map(|(c, t)| Op::Line(c, format!("BROADCAST|{t}"))),
            conn.clone().prop_map(|c| Op::Line(c, "DISCONNECT".into())),
            (conn.clone(), prop_oneof![Just("MESSAGE|bob"), Just("NOPE"), Just("DISCONNECT|x"), Just("CONNECT")])
                .prop_map(|(c, t)| Op::Line(c, t.to_string())),
            (conn.clone(), prop_oneof![Just("JOIN"), Just("PART")], room.clone())
                .prop_map(|(c, v, r)| Op::Line(c, format!("{v}|{r}"))),
            (conn.clone(), room.clone(), content.clone()).prop_map(|(c, r, t)| Op::Line(c, format!("ROOM|{r}|{t}"))),
            (
                conn.clone(),
                prop_oneof![
                    room,
                    Just("*".to_string()),
                    Just("ana".to_string()),
                    Just("bob".to_string()),
                    Just("a b".to_string())
                ],
                prop_oneof![Just("0"), Just("2"), Just("1000000000"), Just("1e9"), Just("")]
            )
                .prop_map(|(c, t, n)| Op::Line(c, format!("HISTORY|{t}|{n}"))),
            (
                conn.clone(),
                prop_oneof![Just("ROOMS"), Just("ROOMS|x"), Just("JOIN"), Just("ROOM|#r"), Just("HISTORY|*")]
            )
                .prop_map(|(c, t)| Op::Line(c, t.to_string())),
            conn.prop_map(Op::Close),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// An engine with durable history whose messages are stored at once behaves as one
        /// that keeps history in memory only: the same outputs, in the same order.
        #[test]
        fn durable_history_stored_at_once_is_memory_history(ops in proptest::collection::vec(op(), 0..60)) {
            let limits = Limits { max_rooms: MODEL_ROOMS, history_per_target: 3, ..Limits::default() };
            let mut memory = Engine::with_limits(limits);
            let mut durable = Engine::with_limits(limits);
            durable.set_durable_history(true);
            let mut open = std::collections::HashSet::new();
            for op in ops {
                for e in [&mut memory, &mut durable] {
                    match &op {
                        Op::Open(c, legacy) if !open.contains(c) => {
                            e.open(ConnId(*c), if *legacy { Mode::Legacy } else { Mode::Framed })
                        }
                        Op::Open(..) => {}
                        Op::Line(c, text) => e.handle(ConnId(*c), &line(text), 5),
                        Op::Close(c) => e.close(ConnId(*c), Leave::Closed),
                    }
                }
                match &op {
                    Op::Open(c, _) => { open.insert(*c); }
                    Op::Close(c) => { open.remove(c); }
                    Op::Line(..) => {}
                }
                prop_assert_eq!(outputs(&mut durable), outputs(&mut memory), "after {:?}", op);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn engine_matches_the_naive_model(ops in proptest::collection::vec(op(), 0..60)) {
            let mut engine = Engine::with_limits(Limits { max_rooms: MODEL_ROOMS, ..Limits::default() });
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
                        engine.handle(ConnId(*c), &line(text), 0);
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
                let rooms: Vec<String> = engine.rooms().map(str::to_string).collect();
                let mut model_rooms: Vec<String> = model.rooms.iter().map(|r| r.0.clone()).collect();
                model_rooms.sort();
                prop_assert_eq!(rooms, model_rooms);
            }
        }
    }
}
