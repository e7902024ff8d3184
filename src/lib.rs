//! cartero: the small socket protocols of distributed-systems courses, exact on the wire.
//!
//! One folder per protocol, each with the same inner shape (wire format, sans-IO state
//! machine, store, tokio server, client, checker and its CLI verbs):
//! - [`messaging`]: the UC3M message-delivery service (seed 001).
//! - [`chat`]: the course chat, myChatProtocol (seed 002).
//! - [`buckets`]: the bucket stores of seeds 003 and 004 (two vocabularies, one store).
//!
//! Beside them, what several protocols share: [`cli`] (the `cartero` command's grammar and
//! helpers), [`console`] (interactive consoles that print incoming lines above the line being
//! typed), [`net`] (accepting connections), [`shutdown`] (Ctrl-C and SIGTERM), [`text`]
//! (wording) and [`bench`] (what the benchmarks measure: a process's memory, latency
//! percentiles). [`ffi`] is the C face of messaging.
//!
//! `docs/architecture.md` draws the layers; `docs/protocols/` holds each protocol's spec.
//!
//! The names of the first release stay where they were: `cartero::Codec`, `cartero::Engine`,
//! `cartero::client`, `cartero::wire`... are the messaging ones.

pub mod bench;
pub mod buckets;
pub mod chat;
pub mod cli;
pub mod console;
pub mod ffi;
pub mod messaging;
pub mod net;
pub mod shutdown;
pub mod text;

// Messaging's modules and names under their first paths (`cartero::client::Client`, ...),
// which the README, the Python module and existing programs use.
pub use messaging::{client, codec, engine, harness, server, store, webservice, wire};
pub use messaging::{
    Change, CodeEncoding, Codec, CodecError, Delivery, DeliveryId, DeliveryOutcome, Engine, EngineConfig, EngineError,
    Event, Operation, ProtocolError, Push, PushNames, Reply, Request, WireSettings, MAX_FIELD_LEN,
};

/// The Rust snippets of the guides, compiled and run as doc-tests (`cargo test --doc`), so
/// none can drift from the library.
#[cfg(doctest)]
#[doc = include_str!("../docs/messaging.md")]
pub struct MessagingGuide;
