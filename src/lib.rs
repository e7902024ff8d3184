//! cartero: the UC3M message-delivery protocol, exact on the wire.
//!
//! Layers, each depending only on the one below it:
//! - [`codec`]: bytes <-> NUL-terminated fields ([`Codec`]).
//! - [`wire`]: fields <-> requests, replies and pushes, with incremental decoders.
//! - [`engine`]: requests <-> state, sans-IO ([`Engine`]): users, mailboxes, the delivery
//!   scheduler. No sockets, no clock, no threads.
//! - [`harness`]: an in-memory client/engine harness that runs every layer with no sockets.
//! - [`store`]: the engine's state made durable in SQLite.
//! - [`server`]: state <-> sockets, the tokio server that drives the engine.
//! - [`client`]: async and blocking clients and listeners.
//! - [`ffi`]: the C ABI of `include/cartero.h`.
//! - [`webservice`]: the white-space normalizer of part 2 (SOAP and JSON), and its client.
//!
//! The protocol itself is described in `SPEC.md` of the project; the README shows the
//! layers at work.

pub mod client;
pub mod codec;
pub mod engine;
pub mod ffi;
pub mod harness;
pub mod server;
pub mod store;
pub mod webservice;
pub mod wire;

pub use codec::{Codec, CodecError, MAX_FIELD_LEN};
pub use engine::{Change, Delivery, DeliveryId, DeliveryOutcome, Engine, EngineConfig, EngineError, Event};
pub use wire::{CodeEncoding, Operation, ProtocolError, Push, PushNames, Reply, Request, WireSettings};
