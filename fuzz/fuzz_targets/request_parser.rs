//! Fuzzes the server's request path: arbitrary bytes, in arbitrary chunk sizes, through the
//! request decoder, and through the whole in-memory server (decoder, engine, reply).
//! Nothing may panic, and a decoded request must encode back to bytes that decode to it.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use cartero::engine::EngineConfig;
use cartero::harness::Harness;
use cartero::wire::RequestDecoder;
use cartero::WireSettings;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 16) + 1;

    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    let mut again = BytesMut::new();
                    request.encode(&mut again).expect("a decoded request encodes");
                    let decoded = RequestDecoder::new().decode_eof(&mut again).expect("its bytes decode");
                    assert_eq!(decoded.as_ref(), Some(&request));
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let _ = decoder.decode_eof(&mut buf);

    let mut harness = Harness::new(EngineConfig::default(), WireSettings::default());
    let _ = harness.serve_bytes(IpAddr::V4(Ipv4Addr::LOCALHOST), stream);
});
