//! Fields <-> messages: the requests, replies and pushes of SPEC 2 and 3.
//!
//! Each direction has an incremental decoder (a tokio-util [`Decoder`]) that works when the
//! bytes arrive one at a time, and an encoder. The server side writes in the encoding chosen
//! by [`WireSettings`]; the client side reads both result-code encodings and both push
//! spellings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::messaging::codec::{put_field, Codec, CodecError, MAX_FIELD_LEN};

/// Why bytes from a peer are not a valid protocol message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown operation {}", Escaped(.0))]
    UnknownOperation(Bytes),
    #[error("unknown push {}", Escaped(.0))]
    UnknownPush(Bytes),
    #[error(transparent)]
    Field(#[from] CodecError),
    #[error("connection ended before the message was complete")]
    Truncated,
    #[error("result code byte {0:#04x} is neither an ASCII digit nor a raw code 0..9")]
    BadResultCode(u8),
    #[error("result code {code} is not defined for {op}")]
    UnexpectedCode { op: Operation, code: u8 },
    #[error("{} is not a decimal number in range", Escaped(.0))]
    BadNumber(Bytes),
    #[error("{} is not a USERS entry `name :: IP :: port`", Escaped(.0))]
    BadUserEntry(Bytes),
    /// Reading from the peer failed (when the decoder runs inside a tokio `FramedRead`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shows a field as text with its non-printable bytes escaped, for errors and logs.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// How a server writes result codes (SPEC 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodeEncoding {
    /// The ASCII digit followed by NUL: `30 00` for 0.
    #[default]
    Ascii,
    /// One byte holding the value: `00` for 0, no NUL after it.
    Raw,
}

/// How a server spells the names of its pushes (SPEC 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushNames {
    /// `SEND MESSAGE`, `SEND MESS ACK`, as in the statement.
    #[default]
    Spaced,
    /// `SEND_MESSAGE`, `SEND_MESS_ACK`, as the 2022/23 implementations do.
    Underscored,
}

/// The server's choices where peers disagree. Client-side decoding accepts every choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireSettings {
    pub codes: CodeEncoding,
    pub push_names: PushNames,
}

/// A course year whose statement the protocol follows (SPEC 8). Servers and clients serve
/// both years' operations at once; the year picks the defaults where the years disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Course {
    /// 2022/23: ASCII result codes, the ` / ` client lines of SPEC 6.
    #[default]
    Y2022,
    /// 2025/26: raw result codes, the `, ` client lines of SPEC 8.
    Y2025,
}

impl Course {
    /// The server's wire defaults of the year.
    pub fn wire(self) -> WireSettings {
        match self {
            Course::Y2022 => WireSettings { codes: CodeEncoding::Ascii, push_names: PushNames::Spaced },
            Course::Y2025 => WireSettings { codes: CodeEncoding::Raw, push_names: PushNames::Spaced },
        }
    }
}

impl FromStr for Course {
    type Err = UnknownSetting;
    fn from_str(s: &str) -> Result<Self, UnknownSetting> {
        match s {
            "2022" | "2022/23" => Ok(Course::Y2022),
            "2025" | "2025/26" => Ok(Course::Y2025),
            _ => Err(UnknownSetting { what: "course", given: s.into(), expected: "2022, 2025" }),
        }
    }
}

impl fmt::Display for Course {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Course::Y2022 => "2022",
            Course::Y2025 => "2025",
        })
    }
}

/// A setting's name that is not one of its known values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of: {expected}")]
pub struct UnknownSetting {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static str,
}

impl FromStr for CodeEncoding {
    type Err = UnknownSetting;
    fn from_str(s: &str) -> Result<Self, UnknownSetting> {
        match s {
            "ascii" => Ok(CodeEncoding::Ascii),
            "raw" => Ok(CodeEncoding::Raw),
            _ => Err(UnknownSetting { what: "code encoding", given: s.into(), expected: "ascii, raw" }),
        }
    }
}

impl FromStr for PushNames {
    type Err = UnknownSetting;
    fn from_str(s: &str) -> Result<Self, UnknownSetting> {
        match s {
            "spaced" => Ok(PushNames::Spaced),
            "underscored" => Ok(PushNames::Underscored),
            _ => Err(UnknownSetting { what: "push spelling", given: s.into(), expected: "spaced, underscored" }),
        }
    }
}

impl fmt::Display for CodeEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodeEncoding::Ascii => "ascii",
            CodeEncoding::Raw => "raw",
        })
    }
}

impl fmt::Display for PushNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushNames::Spaced => "spaced",
            PushNames::Underscored => "underscored",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Parses decimal text (digits only, no sign, no blanks) into a `u32`.
pub fn parse_u32(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(b - b'0');
    }
    u32::try_from(value).ok()
}

fn number(text: Bytes) -> Result<u32, ProtocolError> {
    parse_u32(&text).ok_or(ProtocolError::BadNumber(text))
}

fn put_number(dst: &mut BytesMut, n: u64) {
    put_field(dst, itoa::Buffer::new().format(n).as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The six operations of SPEC 2 and the two that the 2025/26 course adds (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Register,
    Unregister,
    Connect,
    Disconnect,
    Send,
    ConnectedUsers,
    /// SPEC 8: CONNECTEDUSERS with each user's listening address.
    Users,
    /// SPEC 8: SEND with the name of a file.
    SendAttach,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::Register,
        Operation::Unregister,
        Operation::Connect,
        Operation::Disconnect,
        Operation::Send,
        Operation::ConnectedUsers,
        Operation::Users,
        Operation::SendAttach,
    ];

    /// The operation's name on the wire and on the console.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Register => "REGISTER",
            Operation::Unregister => "UNREGISTER",
            Operation::Connect => "CONNECT",
            Operation::Disconnect => "DISCONNECT",
            Operation::Send => "SEND",
            Operation::ConnectedUsers => "CONNECTEDUSERS",
            Operation::Users => "USERS",
            Operation::SendAttach => "SENDATTACH",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name().as_bytes() == name)
    }

    /// The code of "any other error" for this operation (SPEC 2).
    pub fn other_error_code(self) -> u8 {
        match self {
            Operation::Connect | Operation::Disconnect => 3,
            _ => 2,
        }
    }

    /// Fields after the operation in the request's full form.
    fn field_count(self) -> usize {
        match self {
            Operation::SendAttach => 4,
            Operation::Register | Operation::Send => 3,
            Operation::Connect => 2,
            Operation::Unregister | Operation::Disconnect | Operation::ConnectedUsers | Operation::Users => 1,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A client's request. Every field is kept as the bytes that came in; the engine judges them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `birth_date` is `None` for seed 000's short form, whose only field is the user name
    /// (then `full_name` and `alias` are both that field).
    Register {
        full_name: Bytes,
        alias: Bytes,
        birth_date: Option<Bytes>,
    },
    Unregister {
        alias: Bytes,
    },
    /// `port` is the listening port as decimal text, unchecked.
    Connect {
        alias: Bytes,
        port: Bytes,
    },
    Disconnect {
        alias: Bytes,
    },
    Send {
        sender: Bytes,
        recipient: Bytes,
        body: Bytes,
    },
    /// `alias` is the requester, when the client sends it (SPEC 2.6).
    ConnectedUsers {
        alias: Option<Bytes>,
    },
    /// SPEC 8: as `ConnectedUsers`, the reply listing addresses too.
    Users {
        alias: Option<Bytes>,
    },
    /// SPEC 8: `file` is the name of a file on the sender's machine; only the name travels.
    SendAttach {
        sender: Bytes,
        recipient: Bytes,
        body: Bytes,
        file: Bytes,
    },
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Request::Register { .. } => Operation::Register,
            Request::Unregister { .. } => Operation::Unregister,
            Request::Connect { .. } => Operation::Connect,
            Request::Disconnect { .. } => Operation::Disconnect,
            Request::Send { .. } => Operation::Send,
            Request::ConnectedUsers { .. } => Operation::ConnectedUsers,
            Request::Users { .. } => Operation::Users,
            Request::SendAttach { .. } => Operation::SendAttach,
        }
    }

    /// The fields after the operation, in wire order.
    pub fn fields(&self) -> Vec<&Bytes> {
        match self {
            Request::Register { alias, birth_date: None, .. } => vec![alias],
            Request::Register { full_name, alias, birth_date: Some(date) } => vec![full_name, alias, date],
            Request::Unregister { alias } | Request::Disconnect { alias } => vec![alias],
            Request::Connect { alias, port } => vec![alias, port],
            Request::Send { sender, recipient, body } => vec![sender, recipient, body],
            Request::ConnectedUsers { alias } | Request::Users { alias } => alias.iter().collect(),
            Request::SendAttach { sender, recipient, body, file } => vec![sender, recipient, body, file],
        }
    }

    /// Appends the request's bytes to `dst`. Fails, writing nothing, if a field holds a NUL
    /// or is over the protocol's limit.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        let fields = self.fields();
        let codec = Codec::new(MAX_FIELD_LEN);
        for field in &fields {
            codec.check(field)?;
        }
        put_field(dst, self.operation().name().as_bytes());
        for field in fields {
            put_field(dst, field);
        }
        Ok(())
    }

    /// Builds the full form of `op`'s request from exactly `op.field_count()` fields.
    fn from_fields(op: Operation, mut f: impl Iterator<Item = Bytes>) -> Request {
        let mut next = || f.next().unwrap_or_default();
        match op {
            Operation::Register => Request::Register { full_name: next(), alias: next(), birth_date: Some(next()) },
            Operation::Unregister => Request::Unregister { alias: next() },
            Operation::Connect => Request::Connect { alias: next(), port: next() },
            Operation::Disconnect => Request::Disconnect { alias: next() },
            Operation::Send => Request::Send { sender: next(), recipient: next(), body: next() },
            Operation::ConnectedUsers => Request::ConnectedUsers { alias: Some(next()) },
            Operation::Users => Request::Users { alias: Some(next()) },
            Operation::SendAttach => {
                Request::SendAttach { sender: next(), recipient: next(), body: next(), file: next() }
            }
        }
    }
}

/// Incremental decoder of one request.
///
/// [`decode`](Decoder::decode) yields the request once all of its fields are in. Two
/// requests have a short form that cannot be told apart from a request still arriving:
/// `CONNECTEDUSERS` without the requester's alias, and seed 000's one-field `REGISTER`. For
/// those the server waits a grace period and then calls [`short_form`](Self::short_form);
/// [`decode_eof`](Decoder::decode_eof) accepts them too, when the client half-closes.
///
/// After an error, [`operation`](Self::operation) tells which operation the request was, so
/// the server can answer with that operation's "any other error" code (SPEC 4).
#[derive(Debug)]
pub struct RequestDecoder {
    codec: Codec,
    op: Option<Operation>,
    fields: Vec<Bytes>,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        RequestDecoder { codec: Codec::new(MAX_FIELD_LEN), op: None, fields: Vec::with_capacity(3) }
    }
}

impl RequestDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The operation of the request being decoded, once its first field is in.
    pub fn operation(&self) -> Option<Operation> {
        self.op
    }

    /// Whether any byte of a request has been consumed.
    pub fn is_started(&self) -> bool {
        self.op.is_some() || self.codec.partial_len() > 0
    }

    /// Whether what has arrived so far is a complete short-form request (see the type's doc).
    pub fn has_short_form(&self) -> bool {
        self.codec.partial_len() == 0
            && matches!(
                (self.op, self.fields.len()),
                (Some(Operation::ConnectedUsers | Operation::Users), 0) | (Some(Operation::Register), 1)
            )
    }

    /// Takes the short-form request, if what has arrived is one; otherwise changes nothing.
    pub fn short_form(&mut self) -> Option<Request> {
        if !self.has_short_form() {
            return None;
        }
        let request = match self.op.take()? {
            Operation::ConnectedUsers => Request::ConnectedUsers { alias: None },
            Operation::Users => Request::Users { alias: None },
            _ => {
                let name = self.fields.pop()?;
                Request::Register { full_name: name.clone(), alias: name, birth_date: None }
            }
        };
        self.fields.clear();
        Some(request)
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        while let Some(field) = self.codec.decode(buf)? {
            match self.op {
                None => match Operation::from_name(&field) {
                    Some(op) => self.op = Some(op),
                    None => return Err(ProtocolError::UnknownOperation(field)),
                },
                Some(op) => {
                    self.fields.push(field);
                    if self.fields.len() == op.field_count() {
                        self.op = None;
                        return Ok(Some(Request::from_fields(op, self.fields.drain(..))));
                    }
                }
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if let Some(request) = self.decode(buf)? {
            return Ok(Some(request));
        }
        if let Some(request) = self.short_form() {
            return Ok(Some(request));
        }
        if self.is_started() || !buf.is_empty() {
            return Err(ProtocolError::Truncated);
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterReply {
    Ok,
    AliasInUse,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisterReply {
    Ok,
    NoSuchUser,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReply {
    Ok,
    NoSuchUser,
    AlreadyConnected,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReply {
    Ok,
    NoSuchUser,
    NotConnected,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendReply {
    Ok { id: u32 },
    NoSuchUser,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectedUsersReply {
    /// The connected users' aliases, oldest connection first.
    Ok {
        users: Vec<Bytes>,
    },
    NotConnected,
    Error,
}

/// One connected user in a USERS reply (SPEC 8): its name and where it listens, the IP as
/// the server saw it. On the wire: `name :: IP :: port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: Bytes,
    pub ip: IpAddr,
    pub port: u16,
}

impl UserEntry {
    /// The entry's field as cartero's server writes it: `name :: IP :: port`.
    pub fn to_field(&self) -> Bytes {
        let mut field = BytesMut::with_capacity(self.name.len() + 56);
        field.extend_from_slice(&self.name);
        field.extend_from_slice(format!(" :: {} :: {}", self.ip, self.port).as_bytes());
        field.freeze()
    }

    /// Reads an entry as servers in the wild write it: `name :: IP :: port` or
    /// `name::IP::port`. The name ends at the first `::`, the port starts after the last one
    /// (so an IPv6 address, which holds `::` itself, stays whole); blanks around each part
    /// are dropped.
    pub fn parse(field: &[u8]) -> Option<UserEntry> {
        let first = field.windows(2).position(|w| w == b"::")?;
        let last = field.windows(2).rposition(|w| w == b"::")?;
        if last <= first + 1 {
            return None;
        }
        let name = field[..first].trim_ascii();
        let ip = std::str::from_utf8(field[first + 2..last].trim_ascii()).ok()?.parse().ok()?;
        let port = parse_u32(field[last + 2..].trim_ascii()).and_then(|p| u16::try_from(p).ok())?;
        if name.is_empty() {
            return None;
        }
        Some(UserEntry { name: Bytes::copy_from_slice(name), ip, port })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersReply {
    /// The connected users with their addresses, oldest connection first.
    Ok {
        users: Vec<UserEntry>,
    },
    NotConnected,
    Error,
}

/// A server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Register(RegisterReply),
    Unregister(UnregisterReply),
    Connect(ConnectReply),
    Disconnect(DisconnectReply),
    Send(SendReply),
    ConnectedUsers(ConnectedUsersReply),
    Users(UsersReply),
    /// SENDATTACH answers as SEND does (SPEC 8).
    SendAttach(SendReply),
}

impl Reply {
    /// The "any other error" reply of `op`.
    pub fn failure(op: Operation) -> Reply {
        match op {
            Operation::Register => Reply::Register(RegisterReply::Error),
            Operation::Unregister => Reply::Unregister(UnregisterReply::Error),
            Operation::Connect => Reply::Connect(ConnectReply::Error),
            Operation::Disconnect => Reply::Disconnect(DisconnectReply::Error),
            Operation::Send => Reply::Send(SendReply::Error),
            Operation::ConnectedUsers => Reply::ConnectedUsers(ConnectedUsersReply::Error),
            Operation::Users => Reply::Users(UsersReply::Error),
            Operation::SendAttach => Reply::SendAttach(SendReply::Error),
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Reply::Register(_) => Operation::Register,
            Reply::Unregister(_) => Operation::Unregister,
            Reply::Connect(_) => Operation::Connect,
            Reply::Disconnect(_) => Operation::Disconnect,
            Reply::Send(_) => Operation::Send,
            Reply::ConnectedUsers(_) => Operation::ConnectedUsers,
            Reply::Users(_) => Operation::Users,
            Reply::SendAttach(_) => Operation::SendAttach,
        }
    }

    /// The result code on the wire (SPEC 2).
    pub fn code(&self) -> u8 {
        use ConnectedUsersReply as C;
        match self {
            Reply::Register(r) => match r {
                RegisterReply::Ok => 0,
                RegisterReply::AliasInUse => 1,
                RegisterReply::Error => 2,
            },
            Reply::Unregister(r) => match r {
                UnregisterReply::Ok => 0,
                UnregisterReply::NoSuchUser => 1,
                UnregisterReply::Error => 2,
            },
            Reply::Connect(r) => match r {
                ConnectReply::Ok => 0,
                ConnectReply::NoSuchUser => 1,
                ConnectReply::AlreadyConnected => 2,
                ConnectReply::Error => 3,
            },
            Reply::Disconnect(r) => match r {
                DisconnectReply::Ok => 0,
                DisconnectReply::NoSuchUser => 1,
                DisconnectReply::NotConnected => 2,
                DisconnectReply::Error => 3,
            },
            Reply::Send(r) | Reply::SendAttach(r) => match r {
                SendReply::Ok { .. } => 0,
                SendReply::NoSuchUser => 1,
                SendReply::Error => 2,
            },
            Reply::ConnectedUsers(r) => match r {
                C::Ok { .. } => 0,
                C::NotConnected => 1,
                C::Error => 2,
            },
            Reply::Users(r) => match r {
                UsersReply::Ok { .. } => 0,
                UsersReply::NotConnected => 1,
                UsersReply::Error => 2,
            },
        }
    }

    pub fn is_ok(&self) -> bool {
        self.code() == 0
    }

    /// The reply of `op` for `code`, when it carries nothing after the code.
    fn from_bare_code(op: Operation, code: u8) -> Option<Reply> {
        Some(match (op, code) {
            (Operation::Register, 0) => Reply::Register(RegisterReply::Ok),
            (Operation::Register, 1) => Reply::Register(RegisterReply::AliasInUse),
            (Operation::Register, 2) => Reply::Register(RegisterReply::Error),
            (Operation::Unregister, 0) => Reply::Unregister(UnregisterReply::Ok),
            (Operation::Unregister, 1) => Reply::Unregister(UnregisterReply::NoSuchUser),
            (Operation::Unregister, 2) => Reply::Unregister(UnregisterReply::Error),
            (Operation::Connect, 0) => Reply::Connect(ConnectReply::Ok),
            (Operation::Connect, 1) => Reply::Connect(ConnectReply::NoSuchUser),
            (Operation::Connect, 2) => Reply::Connect(ConnectReply::AlreadyConnected),
            (Operation::Connect, 3) => Reply::Connect(ConnectReply::Error),
            (Operation::Disconnect, 0) => Reply::Disconnect(DisconnectReply::Ok),
            (Operation::Disconnect, 1) => Reply::Disconnect(DisconnectReply::NoSuchUser),
            (Operation::Disconnect, 2) => Reply::Disconnect(DisconnectReply::NotConnected),
            (Operation::Disconnect, 3) => Reply::Disconnect(DisconnectReply::Error),
            (Operation::Send, 1) => Reply::Send(SendReply::NoSuchUser),
            (Operation::Send, 2) => Reply::Send(SendReply::Error),
            (Operation::ConnectedUsers, 1) => Reply::ConnectedUsers(ConnectedUsersReply::NotConnected),
            (Operation::ConnectedUsers, 2) => Reply::ConnectedUsers(ConnectedUsersReply::Error),
            (Operation::Users, 1) => Reply::Users(UsersReply::NotConnected),
            (Operation::Users, 2) => Reply::Users(UsersReply::Error),
            (Operation::SendAttach, 1) => Reply::SendAttach(SendReply::NoSuchUser),
            (Operation::SendAttach, 2) => Reply::SendAttach(SendReply::Error),
            _ => return None,
        })
    }

    /// Appends the reply's bytes to `dst`, the code written as `codes` says.
    pub fn encode(&self, codes: CodeEncoding, dst: &mut BytesMut) {
        let code = self.code();
        match codes {
            CodeEncoding::Ascii => put_field(dst, &[b'0' + code]),
            CodeEncoding::Raw => dst.extend_from_slice(&[code]),
        }
        match self {
            Reply::Send(SendReply::Ok { id }) | Reply::SendAttach(SendReply::Ok { id }) => {
                put_number(dst, u64::from(*id))
            }
            Reply::Users(UsersReply::Ok { users }) => {
                put_number(dst, users.len() as u64);
                for user in users {
                    put_field(dst, &user.to_field());
                }
            }
            Reply::ConnectedUsers(ConnectedUsersReply::Ok { users }) => {
                put_number(dst, users.len() as u64);
                for user in users {
                    put_field(dst, user);
                }
            }
            _ => {}
        }
    }
}

/// The most aliases a client accepts in one CONNECTEDUSERS reply; a larger count is an error
/// rather than an allocation the server decides.
pub const MAX_LISTED_USERS: u32 = 10_000_000;

#[derive(Debug)]
enum ReplyStage {
    Code,
    /// An ASCII digit was read; a NUL may follow it.
    AfterAsciiDigit(u8),
    /// The code is known and more fields follow (SEND's id, CONNECTEDUSERS' count).
    Payload,
    Users {
        expected: u32,
        users: Vec<Bytes>,
    },
}

/// Incremental decoder of the reply to one request of a known operation (client side).
/// Accepts both result-code encodings (SPEC 1): a first byte `'0'..'9'` is an ASCII code
/// (the NUL after it is consumed if present), a first byte `0x00..0x09` is a raw code.
#[derive(Debug)]
pub struct ReplyDecoder {
    op: Operation,
    codec: Codec,
    stage: ReplyStage,
    /// The encoding the server used, once the code has been read.
    seen_encoding: Option<CodeEncoding>,
    /// A NUL followed the ASCII code.
    nul_after_code: bool,
    /// SEND's id came as 4 binary bytes, not as text.
    binary_id: bool,
}

/// The longest USERS entry a client reads: a name of 255 bytes, an IPv6 address, a port and
/// the separators fit well within it.
const MAX_USER_ENTRY_LEN: usize = 512;

impl ReplyDecoder {
    pub fn new(op: Operation) -> Self {
        let max_len = if op == Operation::Users { MAX_USER_ENTRY_LEN } else { MAX_FIELD_LEN };
        ReplyDecoder {
            op,
            codec: Codec::new(max_len),
            stage: ReplyStage::Code,
            seen_encoding: None,
            nul_after_code: false,
            binary_id: false,
        }
    }

    /// The code encoding the server used, once its code has been read.
    pub fn seen_encoding(&self) -> Option<CodeEncoding> {
        self.seen_encoding
    }

    /// Whether SEND's id came as a 4-byte big-endian number instead of decimal text (a
    /// deviation some servers make; the client accepts it).
    pub fn saw_binary_id(&self) -> bool {
        self.binary_id
    }

    fn sent(&self, id: u32) -> Reply {
        match self.op {
            Operation::SendAttach => Reply::SendAttach(SendReply::Ok { id }),
            _ => Reply::Send(SendReply::Ok { id }),
        }
    }

    /// Moves on once the code is known: a finished reply, or `None` if fields follow.
    fn after_code(&mut self, code: u8) -> Result<Option<Reply>, ProtocolError> {
        if code == 0
            && matches!(self.op, Operation::Send | Operation::ConnectedUsers | Operation::Users | Operation::SendAttach)
        {
            self.stage = ReplyStage::Payload;
            return Ok(None);
        }
        self.stage = ReplyStage::Code;
        Reply::from_bare_code(self.op, code).map(Some).ok_or(ProtocolError::UnexpectedCode { op: self.op, code })
    }
}

impl Decoder for ReplyDecoder {
    type Item = Reply;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        loop {
            match &mut self.stage {
                ReplyStage::Code => {
                    let Some(&first) = buf.first() else { return Ok(None) };
                    buf.advance(1);
                    match first {
                        b'0'..=b'9' => {
                            self.seen_encoding = Some(CodeEncoding::Ascii);
                            self.stage = ReplyStage::AfterAsciiDigit(first - b'0');
                        }
                        0..=9 => {
                            self.seen_encoding = Some(CodeEncoding::Raw);
                            if let Some(reply) = self.after_code(first)? {
                                return Ok(Some(reply));
                            }
                        }
                        other => return Err(ProtocolError::BadResultCode(other)),
                    }
                }
                ReplyStage::AfterAsciiDigit(code) => {
                    let code = *code;
                    let Some(&next) = buf.first() else { return Ok(None) };
                    if next == 0 {
                        buf.advance(1);
                        self.nul_after_code = true;
                    }
                    if let Some(reply) = self.after_code(code)? {
                        return Ok(Some(reply));
                    }
                }
                ReplyStage::Payload => {
                    let is_send = matches!(self.op, Operation::Send | Operation::SendAttach);
                    if is_send && buf.first().is_some_and(|&b| b < b'0') {
                        // Not decimal text: a 4-byte big-endian id.
                        if buf.len() < 4 {
                            return Ok(None);
                        }
                        let id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                        buf.advance(4);
                        self.binary_id = true;
                        self.stage = ReplyStage::Code;
                        return Ok(Some(self.sent(id)));
                    }
                    let Some(field) = self.codec.decode(buf)? else { return Ok(None) };
                    let n = number(field)?;
                    if self.op == Operation::Send {
                        self.stage = ReplyStage::Code;
                        return Ok(Some(Reply::Send(SendReply::Ok { id: n })));
                    }
                    if self.op == Operation::SendAttach {
                        self.stage = ReplyStage::Code;
                        return Ok(Some(Reply::SendAttach(SendReply::Ok { id: n })));
                    }
                    if n > MAX_LISTED_USERS {
                        return Err(ProtocolError::BadNumber(itoa::Buffer::new().format(n).to_owned().into()));
                    }
                    let users = Vec::with_capacity(n.min(1024) as usize);
                    self.stage = ReplyStage::Users { expected: n, users };
                }
                ReplyStage::Users { expected, users } => {
                    if users.len() as u32 == *expected {
                        let users = std::mem::take(users);
                        self.stage = ReplyStage::Code;
                        if self.op == Operation::Users {
                            let users = users
                                .into_iter()
                                .map(|field| UserEntry::parse(&field).ok_or(ProtocolError::BadUserEntry(field)))
                                .collect::<Result<_, _>>()?;
                            return Ok(Some(Reply::Users(UsersReply::Ok { users })));
                        }
                        return Ok(Some(Reply::ConnectedUsers(ConnectedUsersReply::Ok { users })));
                    }
                    let Some(field) = self.codec.decode(buf)? else { return Ok(None) };
                    users.push(field);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        if let Some(reply) = self.decode(buf)? {
            return Ok(Some(reply));
        }
        let is_send = matches!(self.op, Operation::Send | Operation::SendAttach);
        if is_send
            && matches!(self.stage, ReplyStage::Payload)
            && self.nul_after_code
            && buf.len() == 3
            && buf[0] < 0x20
        {
            // An ASCII code followed by a binary id whose first byte, 0, was taken for the
            // code's NUL.
            let id = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
            buf.advance(3);
            self.binary_id = true;
            self.stage = ReplyStage::Code;
            return Ok(Some(self.sent(id)));
        }
        match self.stage {
            // An ASCII code the server did not follow with NUL before closing.
            ReplyStage::AfterAsciiDigit(code) => self.after_code(code)?.map(Some).ok_or(ProtocolError::Truncated),
            ReplyStage::Code if buf.is_empty() => Ok(None),
            _ => Err(ProtocolError::Truncated),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pushes

/// What the server writes to a client's listening port (SPEC 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Message {
        sender: Bytes,
        id: u32,
        body: Bytes,
    },
    Ack {
        id: u32,
    },
    /// SPEC 8: a SENDATTACH message, with the name of the sender's file.
    AttachMessage {
        sender: Bytes,
        id: u32,
        body: Bytes,
        file: Bytes,
    },
    /// SPEC 8: the acknowledgement of a SENDATTACH message, to its sender.
    AttachAck {
        id: u32,
        file: Bytes,
    },
}

impl Push {
    /// The push's name in the given spelling.
    pub fn name(&self, names: PushNames) -> &'static str {
        match (self, names) {
            (Push::Message { .. }, PushNames::Spaced) => "SEND MESSAGE",
            (Push::Message { .. }, PushNames::Underscored) => "SEND_MESSAGE",
            (Push::Ack { .. }, PushNames::Spaced) => "SEND MESS ACK",
            (Push::Ack { .. }, PushNames::Underscored) => "SEND_MESS_ACK",
            (Push::AttachMessage { .. }, PushNames::Spaced) => "SEND MESSAGE ATTACH",
            (Push::AttachMessage { .. }, PushNames::Underscored) => "SEND_MESSAGE_ATTACH",
            (Push::AttachAck { .. }, PushNames::Spaced) => "SEND MESS ATTACH ACK",
            (Push::AttachAck { .. }, PushNames::Underscored) => "SEND_MESS_ATTACH_ACK",
        }
    }

    /// Appends the push's bytes to `dst`. Fails, writing nothing, if the sender or the body
    /// holds a NUL or is over the protocol's limit.
    pub fn encode(&self, names: PushNames, dst: &mut BytesMut) -> Result<(), CodecError> {
        let codec = Codec::new(MAX_FIELD_LEN);
        match self {
            Push::Message { sender, body, .. } => {
                codec.check(sender)?;
                codec.check(body)?;
            }
            Push::AttachMessage { sender, body, file, .. } => {
                codec.check(sender)?;
                codec.check(body)?;
                codec.check(file)?;
            }
            Push::AttachAck { file, .. } => codec.check(file)?,
            Push::Ack { .. } => {}
        }
        put_field(dst, self.name(names).as_bytes());
        match self {
            Push::Message { sender, id, body } => {
                put_field(dst, sender);
                put_number(dst, u64::from(*id));
                put_field(dst, body);
            }
            Push::Ack { id } => put_number(dst, u64::from(*id)),
            Push::AttachMessage { sender, id, body, file } => {
                put_field(dst, sender);
                put_number(dst, u64::from(*id));
                put_field(dst, body);
                put_field(dst, file);
            }
            Push::AttachAck { id, file } => {
                put_number(dst, u64::from(*id));
                put_field(dst, file);
            }
        }
        Ok(())
    }

    /// The push's bytes in a buffer of their own.
    pub fn to_bytes(&self, names: PushNames) -> Result<Bytes, CodecError> {
        let mut dst = BytesMut::with_capacity(32 + self.payload_len());
        self.encode(names, &mut dst)?;
        Ok(dst.freeze())
    }

    fn payload_len(&self) -> usize {
        match self {
            Push::Message { sender, body, .. } => sender.len() + body.len(),
            Push::Ack { .. } => 0,
            Push::AttachMessage { sender, body, file, .. } => sender.len() + body.len() + file.len(),
            Push::AttachAck { file, .. } => file.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushKind {
    Message,
    Ack,
    AttachMessage,
    AttachAck,
}

/// Incremental decoder of pushes (a client's listener). Accepts both spellings.
#[derive(Debug)]
pub struct PushDecoder {
    codec: Codec,
    kind: Option<PushKind>,
    fields: Vec<Bytes>,
    seen_names: Option<PushNames>,
}

impl Default for PushDecoder {
    fn default() -> Self {
        PushDecoder { codec: Codec::new(MAX_FIELD_LEN), kind: None, fields: Vec::with_capacity(3), seen_names: None }
    }
}

impl PushDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The spelling the server used for the last push name read.
    pub fn seen_names(&self) -> Option<PushNames> {
        self.seen_names
    }
}

impl Decoder for PushDecoder {
    type Item = Push;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Push>, ProtocolError> {
        while let Some(field) = self.codec.decode(buf)? {
            let Some(kind) = self.kind else {
                let (kind, names) = match &field[..] {
                    b"SEND MESSAGE" => (PushKind::Message, PushNames::Spaced),
                    b"SEND_MESSAGE" => (PushKind::Message, PushNames::Underscored),
                    b"SEND MESS ACK" => (PushKind::Ack, PushNames::Spaced),
                    b"SEND_MESS_ACK" => (PushKind::Ack, PushNames::Underscored),
                    b"SEND MESSAGE ATTACH" => (PushKind::AttachMessage, PushNames::Spaced),
                    b"SEND_MESSAGE_ATTACH" => (PushKind::AttachMessage, PushNames::Underscored),
                    b"SEND MESS ATTACH ACK" => (PushKind::AttachAck, PushNames::Spaced),
                    b"SEND_MESS_ATTACH_ACK" => (PushKind::AttachAck, PushNames::Underscored),
                    _ => return Err(ProtocolError::UnknownPush(field)),
                };
                self.kind = Some(kind);
                self.seen_names = Some(names);
                continue;
            };
            self.fields.push(field);
            let done = match kind {
                PushKind::Ack => self.fields.len() == 1,
                PushKind::AttachAck => self.fields.len() == 2,
                PushKind::Message => self.fields.len() == 3,
                PushKind::AttachMessage => self.fields.len() == 4,
            };
            if done {
                self.kind = None;
                let mut f = std::mem::take(&mut self.fields).into_iter();
                let mut next = || f.next().unwrap_or_default();
                return Ok(Some(match kind {
                    PushKind::Ack => Push::Ack { id: number(next())? },
                    PushKind::Message => {
                        let sender = next();
                        let id = number(next())?;
                        Push::Message { sender, id, body: next() }
                    }
                    PushKind::AttachAck => {
                        let id = number(next())?;
                        Push::AttachAck { id, file: next() }
                    }
                    PushKind::AttachMessage => {
                        let sender = next();
                        let id = number(next())?;
                        let body = next();
                        Push::AttachMessage { sender, id, body, file: next() }
                    }
                }));
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Push>, ProtocolError> {
        match self.decode(buf)? {
            Some(push) => Ok(Some(push)),
            None if self.kind.is_none() && self.codec.partial_len() == 0 && buf.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    /// Feeds `bytes` one at a time, then ends the stream; returns every item and the error.
    fn drip<D: Decoder>(dec: &mut D, bytes: &[u8]) -> (Vec<D::Item>, Option<D::Error>) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &byte in bytes {
            buf.extend_from_slice(&[byte]);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(item)) => out.push(item),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        loop {
            match dec.decode_eof(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn every_request_decodes_a_byte_at_a_time() {
        let cases: Vec<(&[u8], Request)> = vec![
            (
                b"REGISTER\0Ana Lopez\0ana\001/02/2000\0",
                Request::Register { full_name: b(b"Ana Lopez"), alias: b(b"ana"), birth_date: Some(b(b"01/02/2000")) },
            ),
            (b"UNREGISTER\0ana\0", Request::Unregister { alias: b(b"ana") }),
            (b"CONNECT\0ana\0456\0", Request::Connect { alias: b(b"ana"), port: b(b"456") }),
            (b"DISCONNECT\0ana\0", Request::Disconnect { alias: b(b"ana") }),
            (
                b"SEND\0ana\0bob\0hola\nque tal\0",
                Request::Send { sender: b(b"ana"), recipient: b(b"bob"), body: b(b"hola\nque tal") },
            ),
            (b"CONNECTEDUSERS\0ana\0", Request::ConnectedUsers { alias: Some(b(b"ana")) }),
            (b"CONNECTEDUSERS\0", Request::ConnectedUsers { alias: None }),
            (b"REGISTER\0ana\0", Request::Register { full_name: b(b"ana"), alias: b(b"ana"), birth_date: None }),
            (b"USERS\0ana\0", Request::Users { alias: Some(b(b"ana")) }),
            (b"USERS\0", Request::Users { alias: None }),
            (
                b"SENDATTACH\0ana\0bob\0mira\0/home/ana/f.txt\0",
                Request::SendAttach {
                    sender: b(b"ana"),
                    recipient: b(b"bob"),
                    body: b(b"mira"),
                    file: b(b"/home/ana/f.txt"),
                },
            ),
        ];
        for (bytes, expected) in cases {
            let (got, err) = drip(&mut RequestDecoder::new(), bytes);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, vec![expected.clone()]);
            let mut encoded = BytesMut::new();
            expected.encode(&mut encoded).unwrap();
            assert_eq!(&encoded[..], bytes);
        }
    }

    #[test]
    fn short_forms_wait_for_the_grace_period_or_eof() {
        let mut dec = RequestDecoder::new();
        let mut buf = BytesMut::from(&b"CONNECTEDUSERS\0"[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(dec.has_short_form());
        assert_eq!(dec.short_form(), Some(Request::ConnectedUsers { alias: None }));
        assert!(!dec.is_started());

        // A half-arrived alias is not a short form.
        let mut buf = BytesMut::from(&b"CONNECTEDUSERS\0an"[..]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(dec.short_form().is_none());
        assert_eq!(dec.operation(), Some(Operation::ConnectedUsers));
    }

    #[test]
    fn bad_requests_are_typed_errors_with_their_operation() {
        let (_, err) = drip(&mut RequestDecoder::new(), b"HELLO\0");
        assert!(matches!(err, Some(ProtocolError::UnknownOperation(op)) if op == "HELLO"));

        let mut dec = RequestDecoder::new();
        let (_, err) = drip(&mut dec, b"SEND\0ana\0bo");
        assert!(matches!(err, Some(ProtocolError::Truncated)));
        assert_eq!(dec.operation(), Some(Operation::Send));

        let mut long = b"SEND\0ana\0bob\0".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100_000));
        let mut dec = RequestDecoder::new();
        let mut buf = BytesMut::from(&long[..]);
        assert!(matches!(dec.decode(&mut buf), Err(ProtocolError::Field(CodecError::FieldTooLong { .. }))));
        assert_eq!(dec.operation(), Some(Operation::Send));

        // Lower case is not the operation: the wire is case-sensitive.
        let (_, err) = drip(&mut RequestDecoder::new(), b"register\0");
        assert!(matches!(err, Some(ProtocolError::UnknownOperation(_))));
    }

    #[test]
    fn encoding_a_request_refuses_nul_and_writes_nothing() {
        let req = Request::Send { sender: b(b"a"), recipient: b(b"b"), body: b(b"x\0y") };
        let mut dst = BytesMut::new();
        assert!(matches!(req.encode(&mut dst), Err(CodecError::ContainsNul { offset: 1 })));
        assert!(dst.is_empty());
        let req = Request::Send { sender: b(b"a"), recipient: b(b"b"), body: Bytes::from(vec![b'x'; 256]) };
        assert!(req.encode(&mut dst).is_err());
    }

    #[test]
    fn replies_in_both_encodings_exact_bytes() {
        let cases: Vec<(Reply, &[u8], &[u8])> = vec![
            (Reply::Register(RegisterReply::Ok), b"0\0", b"\x00"),
            (Reply::Register(RegisterReply::AliasInUse), b"1\0", b"\x01"),
            (Reply::Connect(ConnectReply::Error), b"3\0", b"\x03"),
            (Reply::Send(SendReply::Ok { id: 132 }), b"0\0132\0", b"\x00132\0"),
            (Reply::Send(SendReply::NoSuchUser), b"1\0", b"\x01"),
            (
                Reply::ConnectedUsers(ConnectedUsersReply::Ok { users: vec![b(b"ana"), b(b"bob")] }),
                b"0\02\0ana\0bob\0",
                b"\x002\0ana\0bob\0",
            ),
            (Reply::ConnectedUsers(ConnectedUsersReply::Ok { users: vec![] }), b"0\00\0", b"\x000\0"),
            (Reply::ConnectedUsers(ConnectedUsersReply::NotConnected), b"1\0", b"\x01"),
        ];
        for (reply, ascii, raw) in cases {
            for (codes, bytes) in [(CodeEncoding::Ascii, ascii), (CodeEncoding::Raw, raw)] {
                let mut dst = BytesMut::new();
                reply.encode(codes, &mut dst);
                assert_eq!(&dst[..], bytes, "{reply:?} {codes}");
                let mut dec = ReplyDecoder::new(reply.operation());
                let (got, err) = drip(&mut dec, bytes);
                assert!(err.is_none(), "{err:?}");
                assert_eq!(got, vec![reply.clone()]);
                assert_eq!(dec.seen_encoding(), Some(codes));
            }
        }
    }

    #[test]
    fn reply_decoder_accepts_an_ascii_code_without_its_nul() {
        let (got, err) = drip(&mut ReplyDecoder::new(Operation::Register), b"0");
        assert!(err.is_none());
        assert_eq!(got, vec![Reply::Register(RegisterReply::Ok)]);
        let (got, _) = drip(&mut ReplyDecoder::new(Operation::Send), b"017\0");
        assert_eq!(got, vec![Reply::Send(SendReply::Ok { id: 17 })]);
    }

    #[test]
    fn reply_decoder_reads_a_binary_id_after_send_s_code() {
        for bytes in [&b"\x00\x00\x00\x01\x07"[..], b"0\0\x00\x00\x01\x07", b"0\x00\x00\x01\x07"] {
            let mut dec = ReplyDecoder::new(Operation::Send);
            let (got, err) = drip(&mut dec, bytes);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, vec![Reply::Send(SendReply::Ok { id: 263 })], "{bytes:?}");
            assert!(dec.saw_binary_id());
        }
        let mut dec = ReplyDecoder::new(Operation::Send);
        assert_eq!(drip(&mut dec, b"0\0263\0").0, vec![Reply::Send(SendReply::Ok { id: 263 })]);
        assert!(!dec.saw_binary_id());
    }

    #[test]
    fn reply_decoder_rejects_bad_codes_and_counts() {
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::Register), b"7\0");
        assert!(matches!(err, Some(ProtocolError::UnexpectedCode { op: Operation::Register, code: 7 })));
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::Register), b"x");
        assert!(matches!(err, Some(ProtocolError::BadResultCode(b'x'))));
        // (A first byte below '0' starts a binary id, so the bad text starts higher.)
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::Send), b"0\01-\0");
        assert!(matches!(err, Some(ProtocolError::BadNumber(_))));
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::ConnectedUsers), b"0\099999999999\0");
        assert!(matches!(err, Some(ProtocolError::BadNumber(_))));
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::ConnectedUsers), b"0\03\0a\0");
        assert!(matches!(err, Some(ProtocolError::Truncated)));
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::Register), b"");
        assert!(err.is_none(), "an empty stream is no reply, not an error of the decoder");
    }

    #[test]
    fn pushes_in_both_spellings_exact_bytes() {
        let msg = Push::Message { sender: b(b"ana"), id: 7, body: b(b"hola") };
        let ack = Push::Ack { id: 4294967295 };
        let cases: Vec<(&Push, PushNames, &[u8])> = vec![
            (&msg, PushNames::Spaced, b"SEND MESSAGE\0ana\07\0hola\0"),
            (&msg, PushNames::Underscored, b"SEND_MESSAGE\0ana\07\0hola\0"),
            (&ack, PushNames::Spaced, b"SEND MESS ACK\04294967295\0"),
            (&ack, PushNames::Underscored, b"SEND_MESS_ACK\04294967295\0"),
        ];
        for (push, names, bytes) in cases {
            assert_eq!(&push.to_bytes(names).unwrap()[..], bytes);
            let mut dec = PushDecoder::new();
            let (got, err) = drip(&mut dec, bytes);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, vec![push.clone()]);
            assert_eq!(dec.seen_names(), Some(names));
        }
        let (_, err) = drip(&mut PushDecoder::new(), b"SEND MESSAGE\0ana\04294967296\0x\0");
        assert!(matches!(err, Some(ProtocolError::BadNumber(_))));
        let (_, err) = drip(&mut PushDecoder::new(), b"HELLO\0");
        assert!(matches!(err, Some(ProtocolError::UnknownPush(_))));
        let (_, err) = drip(&mut PushDecoder::new(), b"SEND MESSAGE\0ana\0");
        assert!(matches!(err, Some(ProtocolError::Truncated)));
    }

    #[test]
    fn course_2025_replies_exact_bytes() {
        let ana = UserEntry { name: b(b"ana"), ip: "127.0.0.1".parse().unwrap(), port: 5000 };
        let bob = UserEntry { name: b(b"bob"), ip: "::1".parse().unwrap(), port: 6 };
        let cases: Vec<(Reply, &[u8], &[u8])> = vec![
            (
                Reply::Users(UsersReply::Ok { users: vec![ana, bob] }),
                b"0\02\0ana :: 127.0.0.1 :: 5000\0bob :: ::1 :: 6\0",
                b"\x002\0ana :: 127.0.0.1 :: 5000\0bob :: ::1 :: 6\0",
            ),
            (Reply::Users(UsersReply::NotConnected), b"1\0", b"\x01"),
            (Reply::Users(UsersReply::Error), b"2\0", b"\x02"),
            (Reply::SendAttach(SendReply::Ok { id: 9 }), b"0\09\0", b"\x009\0"),
            (Reply::SendAttach(SendReply::NoSuchUser), b"1\0", b"\x01"),
        ];
        for (reply, ascii, raw) in cases {
            for (codes, bytes) in [(CodeEncoding::Ascii, ascii), (CodeEncoding::Raw, raw)] {
                let mut dst = BytesMut::new();
                reply.encode(codes, &mut dst);
                assert_eq!(&dst[..], bytes, "{reply:?} {codes}");
                let (got, err) = drip(&mut ReplyDecoder::new(reply.operation()), bytes);
                assert!(err.is_none(), "{err:?}");
                assert_eq!(got, vec![reply.clone()]);
            }
        }
        // Entries as other servers write them.
        let (got, err) = drip(&mut ReplyDecoder::new(Operation::Users), b"\x001\0 ana::10.0.0.2::80 \0");
        assert!(err.is_none(), "{err:?}");
        let entry = UserEntry { name: b(b"ana"), ip: "10.0.0.2".parse().unwrap(), port: 80 };
        assert_eq!(got, vec![Reply::Users(UsersReply::Ok { users: vec![entry] })]);
        for bad in [&b"ana"[..], b"ana::1.2.3.4", b"::1.2.3.4::80", b"ana::host::80", b"ana::1.2.3.4::70000"] {
            assert_eq!(UserEntry::parse(bad), None, "{}", bad.escape_ascii());
        }
        let (_, err) = drip(&mut ReplyDecoder::new(Operation::Users), b"0\01\0x::y::5\0");
        assert!(matches!(err, Some(ProtocolError::BadUserEntry(_))));
    }

    #[test]
    fn attach_pushes_in_both_spellings_exact_bytes() {
        let msg = Push::AttachMessage { sender: b(b"ana"), id: 7, body: b(b"mira"), file: b(b"/tmp/f") };
        let ack = Push::AttachAck { id: 7, file: b(b"/tmp/f") };
        let cases: Vec<(&Push, PushNames, &[u8])> = vec![
            (&msg, PushNames::Spaced, b"SEND MESSAGE ATTACH\0ana\07\0mira\0/tmp/f\0"),
            (&msg, PushNames::Underscored, b"SEND_MESSAGE_ATTACH\0ana\07\0mira\0/tmp/f\0"),
            (&ack, PushNames::Spaced, b"SEND MESS ATTACH ACK\07\0/tmp/f\0"),
            (&ack, PushNames::Underscored, b"SEND_MESS_ATTACH_ACK\07\0/tmp/f\0"),
        ];
        for (push, names, bytes) in cases {
            assert_eq!(&push.to_bytes(names).unwrap()[..], bytes);
            let mut dec = PushDecoder::new();
            let (got, err) = drip(&mut dec, bytes);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, vec![push.clone()]);
            assert_eq!(dec.seen_names(), Some(names));
        }
        let (_, err) = drip(&mut PushDecoder::new(), b"SEND MESS ATTACH ACK\07\0");
        assert!(matches!(err, Some(ProtocolError::Truncated)));
        let long = Push::AttachAck { id: 1, file: Bytes::from(vec![b'/'; 256]) };
        assert!(long.to_bytes(PushNames::Spaced).is_err());
    }

    #[test]
    fn numbers_are_plain_decimal_u32() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        for bad in [&b""[..], b"4294967296", b"+1", b"-1", b" 1", b"1 ", b"0x1", b"12345678901"] {
            assert_eq!(parse_u32(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn settings_parse_from_their_names() {
        assert_eq!("raw".parse::<CodeEncoding>().unwrap(), CodeEncoding::Raw);
        assert_eq!("underscored".parse::<PushNames>().unwrap(), PushNames::Underscored);
        let err = "binary".parse::<CodeEncoding>().unwrap_err();
        assert_eq!(err.to_string(), "unknown code encoding \"binary\"; expected one of: ascii, raw");
    }
}
