//! The message-delivery protocol of the UC3M course (seed 001; `docs/protocols/messaging.md`).
//!
//! Layers, each depending only on the ones listed before it:
//! - [`codec`]: bytes <-> NUL-terminated fields ([`Codec`]).
//! - [`wire`]: fields <-> requests, replies and pushes, with incremental decoders.
//! - [`engine`]: requests <-> state, sans-IO ([`Engine`]): users, mailboxes, the delivery
//!   scheduler. No sockets, no clock, no threads.
//! - [`harness`]: an in-memory client/engine harness that runs every layer with no sockets.
//! - [`store`]: the engine's state made durable in SQLite; [`pg`]: the same in PostgreSQL;
//!   [`pg_shared`]: N nodes answering from one PostgreSQL database.
//! - [`server`]: state <-> sockets, the tokio server that drives the engine.
//! - [`client`]: async and blocking clients and listeners.
//! - [`webservice`]: the white-space normalizer of part 2 (SOAP and JSON), and its client.
//! - [`cli`]: the `cartero messaging ...` verbs (`serve`, `client`, `check`, `trace`, `bench`,
//!   `webservice`), on top of all of the above.
//!
//! Its C face is [`crate::ffi`]; its Python face is `bindings/python`.

pub mod cli;
pub mod client;
pub mod codec;
pub mod engine;
pub mod files;
pub mod harness;
pub mod pg;
pub mod pg_shared;
pub mod rpclog;
pub mod server;
pub mod store;
pub mod webservice;
pub mod wire;

pub use codec::{Codec, CodecError, MAX_FIELD_LEN};
pub use engine::{Change, Delivery, DeliveryId, DeliveryOutcome, Engine, EngineConfig, EngineError, Event};
pub use wire::{CodeEncoding, Operation, ProtocolError, Push, PushNames, Reply, Request, WireSettings};
