//! The course chat of seed 002, myChatProtocol (`docs/protocols/chat.md`).
//!
//! Layers, each depending only on the ones listed before it:
//! - [`wire`]: lines <-> messages (`COMMAND|field|...`), names checked in one place.
//! - [`codec`]: bytes <-> lines of framed connections ([`LineCodec`]), bounded.
//! - [`engine`]: messages <-> state, sans-IO ([`Engine`]): users, names, who gets what.
//! - [`limits`]: per-address connection and message-rate limits, sans-IO.
//! - [`store`]: the durable history (SQLite), written by a group-commit thread.
//! - [`server`]: state <-> sockets, the tokio server (framed and legacy connections).
//! - [`web`]: the browser client, one page and a WebSocket endpoint beside the server.
//! - [`tls`]: TLS set-up for the server's second port and for the clients (rustls).
//! - [`client`]: async and blocking clients.
//! - [`cli`]: the `cartero chat ...` verbs.

pub mod cli;
pub mod client;
pub mod codec;
pub mod engine;
pub mod limits;
pub mod server;
pub mod store;
pub mod tls;
pub(crate) mod web;
pub mod wire;

pub use codec::{CodecError, Frame, LineCodec};
pub use engine::{Append, ConnId, Engine, Leave, Limits, LogEvent, Mode, Output, Record, Target};
pub use wire::{
    check_name, check_room, parse_reply, parse_request, Code, NameError, ParseError, Reply, Request, RoomNameError,
};
