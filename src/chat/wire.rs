//! Lines <-> messages: the chat's `COMMAND|field|...` text (SPEC-chat 1-4).
//!
//! A line here is a message without its terminator (the codec strips `\n` and `\r\n` on
//! framed connections; on legacy connections a read is a line). Parsing follows SPEC-chat 1:
//! a command with N fields splits on its first N-1 pipes only, so the last field keeps any
//! `|`. User names are checked in one place, [`check_name`].

use bytes::{BufMut, Bytes, BytesMut};

/// The longest message a client may send, and the longest message the server forwards,
/// terminator excluded (SPEC-chat 1 and 3).
pub(crate) const MAX_MESSAGE: usize = 1024;

/// Names are at most this many code points (SPEC-chat 2).
pub(crate) const MAX_NAME_CHARS: usize = 32;

/// The longest message of the protocol, terminator excluded: 1024 bytes.
pub fn max_message() -> usize {
    MAX_MESSAGE
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT|name`
    Connect(String),
    /// `MESSAGE|recipient|content`
    Message { to: String, content: String },
    /// `BROADCAST|content`
    Broadcast(String),
    /// `DISCONNECT` (or `DISCONNECT|`)
    Disconnect,
    /// `JOIN|room` (SPEC-chat 7)
    Join(String),
    /// `PART|room`
    Part(String),
    /// `ROOM|room|content`
    Room { room: String, content: String },
    /// `ROOMS` (or `ROOMS|`)
    Rooms,
    /// `HISTORY|target|n`: n as sent, digits only (above 100 counts as 100, so any number
    /// of digits is taken and saturates).
    History { target: String, n: u64 },
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `CONNECT_ACK|OK` (true) or `CONNECT_ACK|FAIL` (false).
    ConnectAck(bool),
    /// `USER_LIST|u1,u2,...`, in order of joining.
    UserList(Vec<String>),
    /// `MESSAGE|sender|content`
    Message { from: String, content: String },
    /// `BROADCAST|sender|content`
    Broadcast { from: String, content: String },
    /// `ERROR|code|text`
    Error { code: u16, text: String },
    /// `JOINED|room|u1,u2,...`: the room's members in order of joining (SPEC-chat 7).
    Joined { room: String, members: Vec<String> },
    /// `PARTED|room|name`
    Parted { room: String, name: String },
    /// `ROOM|room|sender|content`
    Room { room: String, from: String, content: String },
    /// `ROOM_LIST|r1,r2,...`
    RoomList(Vec<String>),
    /// `HISTORY|target|sender|unix_millis|content`
    History { target: String, from: String, millis: u64, content: String },
    /// `HISTORY_END|target`
    HistoryEnd(String),
}

/// Why a line is not a message (all answered with 400, SPEC-chat 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the line is not valid UTF-8")]
    InvalidUtf8,
    #[error("unknown command")]
    UnknownCommand,
    #[error("wrong number of fields for the command")]
    FieldCount,
    #[error("the content holds a line break")]
    LineBreak,
    #[error("rooms and history (SPEC-chat 7) are not served")]
    Extension,
    #[error("malformed error code")]
    BadCode,
    #[error("the count of HISTORY is not a number")]
    BadCount,
}

impl ParseError {
    /// The text of the `ERROR|400|...` that answers it, in Spanish like the seed.
    pub fn text(self) -> &'static str {
        match self {
            ParseError::InvalidUtf8 => "UTF-8 no válido",
            ParseError::UnknownCommand => "Comando desconocido",
            ParseError::FieldCount => "Número de campos incorrecto",
            ParseError::LineBreak => "Salto de línea en el contenido",
            ParseError::Extension => "Extensión no soportada",
            ParseError::BadCode => "Código no válido",
            ParseError::BadCount => "Número no válido",
        }
    }
}

/// Why a name is not a user name (SPEC-chat 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name has more than 32 characters")]
    TooLong,
    #[error("the name holds {0:?}, which names may not hold")]
    Forbidden(char),
    #[error("the name starts with '#', which is for rooms")]
    RoomPrefix,
}

/// Why a name is not a room name (SPEC-chat 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("a room name starts with '#'")]
    NoPrefix,
    #[error("the room name has more than 32 characters with its '#'")]
    TooLong,
    #[error("after its '#', a room name is a user name: {0}")]
    Name(NameError),
}

/// Checks a room name against SPEC-chat 7: `#` followed by a user name of SPEC-chat 2, at
/// most 32 code points with the `#` (so `##a` is not a room name: the name after `#` may not
/// start with `#`).
pub fn check_room(room: &str) -> Result<(), RoomNameError> {
    let rest = room.strip_prefix('#').ok_or(RoomNameError::NoPrefix)?;
    if rest.chars().count() > MAX_NAME_CHARS - 1 {
        return Err(RoomNameError::TooLong);
    }
    check_name(rest).map_err(RoomNameError::Name)
}

/// Checks a user name against SPEC-chat 2: 1 to 32 code points, none white space (Unicode's
/// list), a control character, `|`, `,` or `@`, and not starting with `#`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.starts_with('#') {
        return Err(NameError::RoomPrefix);
    }
    let mut count = 0;
    for c in name.chars() {
        count += 1;
        if count > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        if c.is_whitespace() || c.is_control() || matches!(c, '|' | ',' | '@') {
            return Err(NameError::Forbidden(c));
        }
    }
    Ok(())
}

fn split_command(line: &[u8]) -> Result<(&str, Option<&str>), ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    Ok(match text.split_once('|') {
        Some((command, rest)) => (command, Some(rest)),
        None => (text, None),
    })
}

fn content(text: &str) -> Result<String, ParseError> {
    if text.contains('\n') {
        return Err(ParseError::LineBreak);
    }
    Ok(text.to_string())
}

/// Parses a client's message (a line without its terminator).
pub fn parse_request(line: &[u8]) -> Result<Request, ParseError> {
    let (command, rest) = split_command(line)?;
    match command {
        "CONNECT" => rest.map(|name| Request::Connect(name.to_string())).ok_or(ParseError::FieldCount),
        "MESSAGE" => {
            let (to, text) = rest.and_then(|r| r.split_once('|')).ok_or(ParseError::FieldCount)?;
            Ok(Request::Message { to: to.to_string(), content: content(text)? })
        }
        "BROADCAST" => Ok(Request::Broadcast(content(rest.ok_or(ParseError::FieldCount)?)?)),
        "DISCONNECT" => match rest {
            None | Some("") => Ok(Request::Disconnect),
            Some(_) => Err(ParseError::FieldCount),
        },
        "JOIN" => rest.map(|room| Request::Join(room.to_string())).ok_or(ParseError::FieldCount),
        "PART" => rest.map(|room| Request::Part(room.to_string())).ok_or(ParseError::FieldCount),
        "ROOM" => {
            let (room, text) = rest.and_then(|r| r.split_once('|')).ok_or(ParseError::FieldCount)?;
            Ok(Request::Room { room: room.to_string(), content: content(text)? })
        }
        "ROOMS" => match rest {
            None | Some("") => Ok(Request::Rooms),
            Some(_) => Err(ParseError::FieldCount),
        },
        "HISTORY" => {
            let (target, n) = rest.and_then(|r| r.split_once('|')).ok_or(ParseError::FieldCount)?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::BadCount);
            }
            // Any run of digits is a number; past u64 it saturates like everything above 100.
            let n = n.parse().unwrap_or(u64::MAX);
            Ok(Request::History { target: target.to_string(), n })
        }
        _ => Err(ParseError::UnknownCommand),
    }
}

fn list(text: &str) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_string).collect()
    }
}

/// Parses a server's message (a line without its terminator).
pub fn parse_reply(line: &[u8]) -> Result<Reply, ParseError> {
    let (command, rest) = split_command(line)?;
    let rest = rest.ok_or(ParseError::FieldCount);
    match command {
        "CONNECT_ACK" => match rest? {
            "OK" => Ok(Reply::ConnectAck(true)),
            "FAIL" => Ok(Reply::ConnectAck(false)),
            _ => Err(ParseError::FieldCount),
        },
        "USER_LIST" => {
            let list = rest?;
            let users = if list.is_empty() { Vec::new() } else { list.split(',').map(str::to_string).collect() };
            Ok(Reply::UserList(users))
        }
        "MESSAGE" | "BROADCAST" => {
            let (from, text) = rest?.split_once('|').ok_or(ParseError::FieldCount)?;
            let (from, content) = (from.to_string(), content(text)?);
            Ok(if command == "MESSAGE" { Reply::Message { from, content } } else { Reply::Broadcast { from, content } })
        }
        "ERROR" => {
            let (code, text) = rest?.split_once('|').ok_or(ParseError::FieldCount)?;
            let code = code.parse().map_err(|_| ParseError::BadCode)?;
            Ok(Reply::Error { code, text: content(text)? })
        }
        "JOINED" => {
            let (room, members) = rest?.split_once('|').ok_or(ParseError::FieldCount)?;
            Ok(Reply::Joined { room: room.to_string(), members: list(members) })
        }
        "PARTED" => {
            let (room, name) = rest?.split_once('|').ok_or(ParseError::FieldCount)?;
            Ok(Reply::Parted { room: room.to_string(), name: name.to_string() })
        }
        "ROOM" => {
            let mut parts = rest?.splitn(3, '|');
            let (Some(room), Some(from), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ParseError::FieldCount);
            };
            Ok(Reply::Room { room: room.to_string(), from: from.to_string(), content: content(text)? })
        }
        "ROOM_LIST" => Ok(Reply::RoomList(list(rest?))),
        "HISTORY" => {
            let mut parts = rest?.splitn(4, '|');
            let (Some(target), Some(from), Some(millis), Some(text)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(ParseError::FieldCount);
            };
            let millis = millis.parse().map_err(|_| ParseError::BadCount)?;
            Ok(Reply::History { target: target.to_string(), from: from.to_string(), millis, content: content(text)? })
        }
        "HISTORY_END" => Ok(Reply::HistoryEnd(rest?.to_string())),
        _ => Err(ParseError::UnknownCommand),
    }
}

impl Request {
    /// Appends the message to `out`, without a terminator.
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Request::Connect(name) => put(out, &["CONNECT", name]),
            Request::Message { to, content } => put(out, &["MESSAGE", to, content]),
            Request::Broadcast(content) => put(out, &["BROADCAST", content]),
            Request::Disconnect => out.put_slice(b"DISCONNECT"),
            Request::Join(room) => put(out, &["JOIN", room]),
            Request::Part(room) => put(out, &["PART", room]),
            Request::Room { room, content } => put(out, &["ROOM", room, content]),
            Request::Rooms => out.put_slice(b"ROOMS"),
            Request::History { target, n } => put(out, &["HISTORY", target, itoa::Buffer::new().format(*n)]),
        }
    }

    /// Length in bytes without a terminator.
    pub fn len(&self) -> usize {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out.len()
    }

    /// Never true: every message has at least its command.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Reply {
    /// Appends the message to `out`, without a terminator.
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Reply::ConnectAck(ok) => put(out, &["CONNECT_ACK", if *ok { "OK" } else { "FAIL" }]),
            Reply::UserList(users) => write_user_list(out, users.iter().map(String::as_str), usize::MAX),
            Reply::Message { from, content } => put(out, &["MESSAGE", from, content]),
            Reply::Broadcast { from, content } => put(out, &["BROADCAST", from, content]),
            Reply::Error { code, text } => put(out, &["ERROR", itoa::Buffer::new().format(*code), text]),
            Reply::Joined { room, members } => {
                put(out, &["JOINED", room, ""]);
                put_list(out, members.iter().map(String::as_str));
            }
            Reply::Parted { room, name } => put(out, &["PARTED", room, name]),
            Reply::Room { room, from, content } => put(out, &["ROOM", room, from, content]),
            Reply::RoomList(rooms) => {
                out.put_slice(b"ROOM_LIST|");
                put_list(out, rooms.iter().map(String::as_str));
            }
            Reply::History { target, from, millis, content } => {
                put(out, &["HISTORY", target, from, itoa::Buffer::new().format(*millis), content])
            }
            Reply::HistoryEnd(target) => put(out, &["HISTORY_END", target]),
        }
    }

    /// The message as a framed line (`\n` at the end).
    pub fn framed(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out.put_u8(b'\n');
        out.freeze()
    }
}

fn put(out: &mut BytesMut, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'|');
        }
        out.put_slice(field.as_bytes());
    }
}

/// Appends `a,b,c`.
pub(crate) fn put_list<'a>(out: &mut BytesMut, items: impl Iterator<Item = &'a str>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item.as_bytes());
    }
}

/// Writes `USER_LIST|u1,u2,...` naming as many users as fit in `limit` bytes (all of them
/// when the limit allows), in the order given.
pub(crate) fn write_user_list<'a>(out: &mut BytesMut, users: impl Iterator<Item = &'a str>, limit: usize) {
    let start = out.len();
    out.put_slice(b"USER_LIST|");
    let mut first = true;
    for user in users {
        let extra = user.len() + usize::from(!first);
        if out.len() - start + extra > limit {
            break;
        }
        if !first {
            out.put_u8(b',');
        }
        out.put_slice(user.as_bytes());
        first = false;
    }
}

/// The error codes of SPEC-chat 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 400
    BadRequest,
    NotConnected,
    /// 403: ROOM, PART or HISTORY of a room the user is not a member of.
    Forbidden,
    NotFound,
    /// 405: JOIN past the limit of rooms per connection.
    TooManyRooms,
    Timeout,
    Conflict,
    TooLarge,
    /// 429: too many connections from one address, or messages past the per-address rate.
    TooManyRequests,
    /// 500: a message could not be stored in the history, so it was not forwarded.
    StoreFailed,
    SlowReader,
}

impl Code {
    /// The code on the wire.
    pub fn number(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::NotConnected => 401,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::TooManyRooms => 405,
            Code::Timeout => 408,
            Code::Conflict => 409,
            Code::TooLarge => 413,
            Code::TooManyRequests => 429,
            Code::StoreFailed => 500,
            Code::SlowReader => 503,
        }
    }
}

/// `ERROR|code|text` as a framed line.
pub fn error_line(code: Code, text: &str) -> Bytes {
    Reply::Error { code: code.number(), text: text.to_string() }.framed()
}

pub(crate) const TEXT_NOT_CONNECTED: &str = "No conectado";
pub(crate) const TEXT_NOT_FOUND: &str = "Usuario no encontrado";
pub(crate) const TEXT_TIMEOUT: &str = "Tiempo agotado sin CONNECT";
pub(crate) const TEXT_NAME_TAKEN: &str = "Nombre en uso";
pub(crate) const TEXT_ALREADY_JOINED: &str = "Ya conectado";
pub(crate) const TEXT_BAD_NAME: &str = "Nombre no válido";
pub(crate) const TEXT_TOO_LARGE: &str = "Mensaje demasiado largo";
pub(crate) const TEXT_SLOW_READER: &str = "Lectura demasiado lenta";
pub(crate) const TEXT_BAD_ROOM: &str = "Nombre de sala no válido";
pub(crate) const TEXT_NOT_MEMBER: &str = "No eres miembro de la sala";
pub(crate) const TEXT_TOO_MANY_ROOMS: &str = "Demasiadas salas";
pub(crate) const TEXT_STORE_FAILED: &str = "No se pudo guardar el mensaje";
pub(crate) const TEXT_TOO_MANY_CONNECTIONS: &str = "Demasiadas conexiones desde esta dirección";
pub(crate) const TEXT_FLOOD: &str = "Demasiados mensajes";
pub(crate) const TEXT_BINARY: &str = "Solo se aceptan mensajes de texto";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_field_keeps_pipes() {
        assert_eq!(parse_request(b"MESSAGE|bob|a|b"), Ok(Request::Message { to: "bob".into(), content: "a|b".into() }));
        assert_eq!(parse_request(b"BROADCAST|x|y"), Ok(Request::Broadcast("x|y".into())));
        assert_eq!(parse_request(b"BROADCAST|"), Ok(Request::Broadcast(String::new())));
        assert_eq!(parse_request(b"CONNECT|a|b"), Ok(Request::Connect("a|b".into())));
    }

    #[test]
    fn field_counts_and_commands() {
        assert_eq!(parse_request(b"DISCONNECT"), Ok(Request::Disconnect));
        assert_eq!(parse_request(b"DISCONNECT|"), Ok(Request::Disconnect));
        assert_eq!(parse_request(b"DISCONNECT|x"), Err(ParseError::FieldCount));
        assert_eq!(parse_request(b"CONNECT"), Err(ParseError::FieldCount));
        assert_eq!(parse_request(b"MESSAGE|bob"), Err(ParseError::FieldCount));
        assert_eq!(parse_request(b"BROADCAST"), Err(ParseError::FieldCount));
        assert_eq!(parse_request(b"connect|ana"), Err(ParseError::UnknownCommand));
        assert_eq!(parse_request(b""), Err(ParseError::UnknownCommand));
        assert_eq!(parse_request(b"JOIN|#a"), Ok(Request::Join("#a".into())));
        assert_eq!(parse_request(b"JOIN"), Err(ParseError::FieldCount));
        assert_eq!(parse_request(b"ROOM|#a|x|y"), Ok(Request::Room { room: "#a".into(), content: "x|y".into() }));
        assert_eq!(parse_request(b"ROOMS|"), Ok(Request::Rooms));
        assert_eq!(parse_request(b"HISTORY|*|0"), Ok(Request::History { target: "*".into(), n: 0 }));
        assert_eq!(
            parse_request(b"HISTORY|#a|99999999999999999999999"),
            Ok(Request::History { target: "#a".into(), n: u64::MAX })
        );
        for bad in ["HISTORY|*|1e9", "HISTORY|*|", "HISTORY|*|-1", "HISTORY|*|x", "HISTORY|*| 1"] {
            assert_eq!(parse_request(bad.as_bytes()), Err(ParseError::BadCount), "{bad}");
        }
        assert_eq!(parse_request(b"HISTORY|*"), Err(ParseError::FieldCount));
        assert_eq!(parse_request(b"CONNECT|\xff"), Err(ParseError::InvalidUtf8));
        assert_eq!(parse_request(b"BROADCAST|a\nb"), Err(ParseError::LineBreak));
    }

    #[test]
    fn names() {
        assert_eq!(check_name("ana"), Ok(()));
        assert_eq!(check_name("Ñandú_1"), Ok(()));
        assert_eq!(check_name(&"a".repeat(32)), Ok(()));
        assert_eq!(check_name(&"é".repeat(32)), Ok(()));
        assert_eq!(check_name(&"a".repeat(33)), Err(NameError::TooLong));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("#room"), Err(NameError::RoomPrefix));
        assert_eq!(check_name("a#"), Ok(()));
        for bad in ["a b", "a\u{a0}", "a\u{3000}", "a\t", "a\u{7f}", "a\u{85}", "a|b", "a,b", "a@b", "\u{1}"] {
            assert!(matches!(check_name(bad), Err(NameError::Forbidden(_))), "{bad:?}");
        }
    }

    #[test]
    fn room_names() {
        assert_eq!(check_room("#sala"), Ok(()));
        assert_eq!(check_room(&format!("#{}", "a".repeat(31))), Ok(()));
        assert_eq!(check_room(&format!("#{}", "a".repeat(32))), Err(RoomNameError::TooLong));
        assert_eq!(check_room("sala"), Err(RoomNameError::NoPrefix));
        assert_eq!(check_room("#"), Err(RoomNameError::Name(NameError::Empty)));
        assert_eq!(check_room("##a"), Err(RoomNameError::Name(NameError::RoomPrefix)));
        assert!(matches!(check_room("#a,b"), Err(RoomNameError::Name(NameError::Forbidden(',')))));
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::ConnectAck(true),
            Reply::ConnectAck(false),
            Reply::UserList(vec![]),
            Reply::UserList(vec!["a".into(), "b".into()]),
            Reply::Message { from: "a".into(), content: "x|y".into() },
            Reply::Broadcast { from: "a".into(), content: String::new() },
            Reply::Error { code: 404, text: "Usuario no encontrado".into() },
            Reply::Joined { room: "#a".into(), members: vec!["x".into(), "y".into()] },
            Reply::Parted { room: "#a".into(), name: "x".into() },
            Reply::Room { room: "#a".into(), from: "x".into(), content: "a|b".into() },
            Reply::RoomList(vec![]),
            Reply::RoomList(vec!["#a".into(), "#b".into()]),
            Reply::History { target: "*".into(), from: "x".into(), millis: 1_700_000_000_000, content: "a|b".into() },
            Reply::HistoryEnd("bob".into()),
        ] {
            let line = reply.framed();
            assert_eq!(parse_reply(&line[..line.len() - 1]), Ok(reply));
        }
    }

    #[test]
    fn user_list_truncation() {
        let mut out = BytesMut::new();
        let names: Vec<String> = (0..500).map(|i| format!("user{i}")).collect();
        write_user_list(&mut out, names.iter().map(String::as_str), 1024);
        assert!(out.len() <= 1024 && out.len() > 1000);
        assert!(out.starts_with(b"USER_LIST|user0,user1,"));
        assert!(!out.ends_with(b","));
    }
}
