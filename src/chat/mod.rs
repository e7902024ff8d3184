//! The course chat of seed 002, myChatProtocol (`docs/protocols/chat.md`).
//!
//! Layers, each depending only on the ones listed before it:
//! - [`wire`]: lines <-> messages (`COMMAND|field|...`), names checked in one place.
//! - [`codec`]: bytes <-> lines of framed connections ([`LineCodec`]), bounded.
//! - [`engine`]: messages <-> state, sans-IO ([`Engine`]): users, names, who gets what.
//! - [`server`]: state <-> sockets, the tokio server (framed and legacy connections).
//! - [`tls`]: TLS set-up for the server's second port and for the clients (rustls).
//! - [`client`]: async and blocking clients.
//! - [`cli`]: the `cartero chat ...` verbs.

pub mod cli;
pub mod client;
pub mod codec;
pub mod engine;
pub mod server;
pub mod tls;
pub mod wire;

pub use codec::{CodecError, Frame, LineCodec};
pub use engine::{ConnId, Engine, Leave, Limits, LogEvent, Mode, Output};
pub use wire::{
    check_name, check_room, parse_reply, parse_request, Code, NameError, ParseError, Reply, Request, RoomNameError,
};
