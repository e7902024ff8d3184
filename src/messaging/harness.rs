//! An in-memory client/engine harness: every layer of a real exchange (request bytes, the
//! server's decoding and answer, the reply bytes, pushes to listeners and their decoding)
//! with no sockets and a clock the caller moves. For tests, examples and benchmarks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::messaging::engine::{DeliveryOutcome, Engine, EngineConfig};
use crate::messaging::wire::{
    ProtocolError, Push, PushDecoder, Reply, ReplyDecoder, Request, RequestDecoder, WireSettings,
};

/// What one simulated listener received.
#[derive(Debug, Default)]
pub struct MemoryListener {
    /// Pushes received, in order, decoded from the exact bytes the server wrote.
    pub received: Vec<Push>,
    /// The exact bytes of every push received.
    pub raw: Vec<Vec<u8>>,
    /// A listener that is down makes every delivery to it fail.
    pub up: bool,
}

/// An [`Engine`] with simulated clients and listeners around it.
#[derive(Debug)]
pub struct Harness {
    pub engine: Engine,
    pub settings: WireSettings,
    pub now: Instant,
    listeners: HashMap<SocketAddr, MemoryListener>,
}

impl Harness {
    pub fn new(config: EngineConfig, settings: WireSettings) -> Self {
        Harness { engine: Engine::new(config), settings, now: Instant::now(), listeners: HashMap::new() }
    }

    /// Sends `request` from `peer` through every layer and returns the reply as a client
    /// decodes it from the server's bytes.
    pub fn request(&mut self, peer: IpAddr, request: &Request) -> Result<Reply, ProtocolError> {
        let mut bytes = BytesMut::new();
        request.encode(&mut bytes)?;
        let reply_bytes = self.serve_bytes(peer, &bytes);
        let mut buf = BytesMut::from(&reply_bytes[..]);
        ReplyDecoder::new(request.operation()).decode_eof(&mut buf)?.ok_or(ProtocolError::Truncated)
    }

    /// What a server writes back for a connection that sent `bytes` and then half-closed:
    /// the reply, the operation's "any other error" code for a bad request of a known
    /// operation, or nothing (SPEC 4).
    pub fn serve_bytes(&mut self, peer: IpAddr, bytes: &[u8]) -> Vec<u8> {
        let mut decoder = RequestDecoder::new();
        let mut buf = BytesMut::from(bytes);
        let reply = match decoder.decode_eof(&mut buf) {
            Ok(Some(request)) => Some(self.engine.handle_request(peer, &request)),
            Ok(None) => None,
            Err(_) => decoder.operation().map(Reply::failure),
        };
        let mut out = BytesMut::new();
        if let Some(reply) = reply {
            reply.encode(self.settings.codes, &mut out);
        }
        out.to_vec()
    }

    /// Opens (or reopens) a listener at `addr`.
    pub fn listen(&mut self, addr: SocketAddr) {
        self.listeners.entry(addr).or_default().up = true;
    }

    /// Takes a listener down: deliveries to it fail from now on.
    pub fn close_listener(&mut self, addr: SocketAddr) {
        if let Some(l) = self.listeners.get_mut(&addr) {
            l.up = false;
        }
    }

    pub fn listener(&self, addr: SocketAddr) -> Option<&MemoryListener> {
        self.listeners.get(&addr)
    }

    /// Pushes received at `addr` so far.
    pub fn received(&self, addr: SocketAddr) -> &[Push] {
        self.listeners.get(&addr).map_or(&[], |l| &l.received[..])
    }

    /// Makes every delivery the engine has ready, and the ones those make ready, until none
    /// is left. Returns how many were attempted.
    pub fn run_deliveries(&mut self) -> usize {
        let mut attempted = 0;
        // The harness stands for a store that makes every change durable at once.
        self.engine.mark_durable(self.engine.change_seq());
        while let Some(delivery) = self.engine.poll_delivery(self.now) {
            attempted += 1;
            let outcome =
                match (self.listeners.get_mut(&delivery.addr), delivery.push.to_bytes(self.settings.push_names)) {
                    (Some(listener), Ok(bytes)) if listener.up => {
                        let mut buf = BytesMut::from(&bytes[..]);
                        match PushDecoder::new().decode_eof(&mut buf) {
                            Ok(Some(push)) => {
                                listener.received.push(push);
                                listener.raw.push(bytes.to_vec());
                                DeliveryOutcome::Delivered
                            }
                            _ => DeliveryOutcome::Failed,
                        }
                    }
                    _ => DeliveryOutcome::Failed,
                };
            // The id came from poll_delivery just now, so it is in flight.
            let _ = self.engine.handle_delivery_result(delivery.id, outcome);
        }
        attempted
    }

    /// Moves the clock on and fails the deliveries whose deadline passed.
    pub fn advance(&mut self, by: Duration) -> usize {
        self.now += by;
        self.engine.handle_timeout(self.now)
    }

    /// The console lines the engine produced so far, with their `s> ` prompt.
    pub fn console(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.engine.poll_event()).map(|e| format!("s> {e}")).collect()
    }
}
