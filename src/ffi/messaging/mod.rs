//! The C face of the messaging protocol: `cartero_codec_*`, `cartero_request_decoder_*`,
//! `cartero_engine_*`, `cartero_client_*` and `cartero_listener_*`.

mod client;
mod codec;
mod engine;
