//! cartero: the small socket protocols of distributed-systems courses, exact on the wire.
//!
//! One folder per protocol, each with the same inner shape (wire format, sans-IO state
//! machine, store, tokio server, client, checker and its CLI verbs):
//! - [`messaging`]: the UC3M message-delivery service (seed 001).
//! - [`chat`]: the course chat, myChatProtocol (seed 002).
//!
//! Beside them, what several protocols share: [`cli`] (the `cartero` command's grammar and
//! helpers), [`console`] (interactive consoles that print incoming lines above the line being
//! typed) and [`shutdown`] (Ctrl-C and SIGTERM). [`ffi`] is the C face of messaging.
//!
//! `docs/architecture.md` draws the layers; `docs/protocols/` holds each protocol's spec.
//!
//! The names of the first release stay where they were: `cartero::Codec`, `cartero::Engine`,
//! `cartero::client`, `cartero::wire`... are the messaging ones.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod console;
pub mod ffi;
pub mod messaging;
pub mod shutdown;

// Messaging's modules and names under their first paths (`cartero::client::Client`, ...),
// which the README, the Python module and existing programs use.
pub use messaging::{client, codec, engine, harness, server, store, webservice, wire};
pub use messaging::{
    Change, CodeEncoding, Codec, CodecError, Delivery, DeliveryId, DeliveryOutcome, Engine, EngineConfig,
    EngineError, Event, Operation, ProtocolError, Push, PushNames, Reply, Request, WireSettings, MAX_FIELD_LEN,
};
