//! The bucket stores of seeds 003 and 004 (`docs/protocols/buckets.md`): named buckets of
//! files on the server's disk, served in two vocabularies from one store on one port.
//!
//! Layers, each depending only on the ones listed before it:
//! - [`store`]: buckets and files under a root opened by handle, atomic and durable uploads.
//! - [`s3`]: buckets on an S3-compatible object store (several servers, one set of buckets).
//! - [`backend`]: the [`backend::Backend`] trait the server uses, over either store.
//! - [`wire`]: request lines of both vocabularies, replies, and the [`wire::Session`] that
//!   tells command lines from upload bytes (sans-IO).
//! - [`server`]: the tokio server over the store, in constant memory per connection.
//! - [`client`]: async and blocking clients of any bucket server, in either vocabulary.
//! - [`check`]: the checker of any bucket server, every clause of the spec.
//! - [`cli`]: the `cartero buckets ...` verbs.

pub mod backend;
pub mod check;
pub mod cli;
pub mod client;
pub mod s3;
pub mod server;
pub mod store;
pub mod wire;

pub use backend::{Backend, StoreConfig};
pub use store::{FileEntry, Name, NameError, PutMode, Store, StoreError, Upload};
pub use wire::{Command, Op, Reply, Request, Vocabulary};
