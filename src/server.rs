//! State <-> sockets: the tokio server that drives the [`Engine`].
//!
//! One task per request connection reads the request (bounded by the request deadline and,
//! for short forms, the grace period), asks the engine, and writes the reply. One dispatcher
//! task drains the engine's deliveries and runs each as its own task, at most
//! `max_deliveries` at once; the engine guarantees at most one per user.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Delivery, DeliveryOutcome, Engine, EngineConfig};
use crate::wire::{Operation, ProtocolError, Reply, Request, RequestDecoder, WireSettings};

/// Everything `cartero serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub wire: WireSettings,
    pub engine: EngineConfig,
    /// How long a client has to send its whole request (SPEC 4).
    pub request_timeout: Duration,
    /// How long to wait for the optional part of a short-form request (SPEC 2.6).
    pub grace: Duration,
    /// Request connections served at once; more are closed at once, unanswered.
    pub max_connections: usize,
    /// Deliveries in flight at once, over all recipients.
    pub max_deliveries: usize,
    /// Print the console lines of SPEC 5 on standard output.
    pub console: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            wire: WireSettings::default(),
            engine: EngineConfig::default(),
            request_timeout: Duration::from_secs(5),
            grace: Duration::from_millis(100),
            max_connections: 1024,
            max_deliveries: 256,
            console: false,
        }
    }
}

/// Counters a running server keeps, for tests, `cartero bench` and logs.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    pub refused_connections: AtomicU64,
    pub deliveries_ok: AtomicU64,
    pub deliveries_failed: AtomicU64,
    pub console_lines_dropped: AtomicU64,
}

struct Shared {
    engine: Mutex<Engine>,
    config: ServerConfig,
    /// Wakes the dispatcher: new work may be ready, or a delivery slot came free.
    work: Notify,
    delivery_slots: Arc<Semaphore>,
    console: Option<SyncSender<String>>,
    stats: Arc<Stats>,
}

impl Shared {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        // The engine never panics while locked; if it ever did, its state is still
        // consistent between calls, so serving on is better than poisoning every request.
        self.engine.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends the engine's console events to the printer, in engine order (called with the
    /// engine locked). Never blocks: if the printer is that far behind, lines are dropped
    /// and counted rather than stalling the server.
    fn flush_events(&self, engine: &mut Engine) {
        while let Some(event) = engine.poll_event() {
            if let Some(console) = &self.console {
                if let Err(TrySendError::Full(_)) = console.try_send(format!("s> {event}")) {
                    self.stats.console_lines_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Lines of the console printer's queue before lines are dropped.
const CONSOLE_QUEUE: usize = 65_536;

impl Server {
    /// Binds the listening socket. With `config.console`, prints SPEC 5's start lines.
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(config.bind).await?;
        let console = config.console.then(|| {
            let (tx, rx) = sync_channel::<String>(CONSOLE_QUEUE);
            std::thread::spawn(move || {
                use std::io::Write;
                for line in rx {
                    let mut out = std::io::stdout().lock();
                    // A closed stdout is no reason to stop serving.
                    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
                }
            });
            tx
        });
        let engine_config = EngineConfig { record_events: config.console, ..config.engine.clone() };
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(engine_config)),
            delivery_slots: Arc::new(Semaphore::new(config.max_deliveries.max(1))),
            config,
            work: Notify::new(),
            console,
            stats: Arc::new(Stats::default()),
        });
        let server = Server { listener, shared };
        if let Some(console) = &server.shared.console {
            let addr = server.local_addr()?;
            let _ = console.try_send(format!("s> init server {}:{}", display_ip(addr.ip()), addr.port()));
            let _ = console.try_send("s>".to_string());
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets the requests in
    /// progress finish (each is bounded by the request timeout) and the deliveries in flight
    /// end (each is bounded by the delivery timeout), and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, shared } = self;
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let deliveries = TaskTracker::new();
        let dispatcher = tokio::spawn(dispatch(shared.clone(), deliveries.clone(), stop.clone()));
        let connection_slots = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));

        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = connection_slots.clone().try_acquire_owned() else {
                shared.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("refused connection from {peer}: {} connections in progress", shared.config.max_connections);
                continue;
            };
            let shared = shared.clone();
            connections.spawn(async move {
                serve_connection(&shared, stream, peer).await;
                drop(permit);
            });
        }

        tracing::info!("shutting down: finishing requests in progress");
        drop(listener);
        connections.close();
        connections.wait().await;
        stop.cancel();
        let _ = dispatcher.await;
        deliveries.close();
        deliveries.wait().await;
        Ok(())
    }
}

/// The address to show for a listening IP: for "any address", this machine's first
/// non-loopback address (what the course's servers print), else the loopback.
fn display_ip(ip: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| ifs.into_iter().map(|i| i.ip()).find(|a| a.is_ipv4() && !a.is_loopback()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Why reading a request ended without one.
enum ReadEnd {
    /// The peer closed without sending a byte: nothing to answer.
    Empty,
    /// A bad or unfinished request; the operation, if known, decides the answer.
    Bad(Option<Operation>, String),
}

async fn read_request(shared: &Shared, stream: &mut TcpStream, deadline: Instant) -> Result<Request, ReadEnd> {
    let mut decoder = RequestDecoder::new();
    // Bounded: the codec fails any field over 255 bytes, so at most a few fields and one
    // read's worth of bytes are ever held.
    let mut buf = BytesMut::with_capacity(1024);
    let bad = |decoder: &RequestDecoder, e: ProtocolError| ReadEnd::Bad(decoder.operation(), e.to_string());
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(request)) => return Ok(request),
            Ok(None) => {}
            Err(e) => return Err(bad(&decoder, e)),
        }
        let short_form = decoder.has_short_form();
        let wait_until = if short_form { deadline.min(Instant::now() + shared.config.grace) } else { deadline };
        match timeout_at(wait_until, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                return match decoder.decode_eof(&mut buf) {
                    Ok(Some(request)) => Ok(request),
                    Ok(None) => Err(ReadEnd::Empty),
                    Err(e) => Err(bad(&decoder, e)),
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ReadEnd::Bad(decoder.operation(), format!("read failed: {e}"))),
            Err(_) if short_form => {
                if let Some(request) = decoder.short_form() {
                    return Ok(request);
                }
            }
            Err(_) => {
                let what = if decoder.is_started() { "request not finished" } else { "no request" };
                return Err(ReadEnd::Bad(decoder.operation(), format!("{what} within the request timeout")));
            }
        }
    }
}

async fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let deadline = Instant::now() + shared.config.request_timeout;
    let _ = stream.set_nodelay(true);
    let peer_ip = canonical_ip(peer.ip());
    let reply = match read_request(shared, &mut stream, deadline).await {
        Ok(request) => {
            shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut engine = shared.engine();
            let reply = engine.handle_request(peer_ip, &request);
            shared.flush_events(&mut engine);
            let mut bytes = BytesMut::new();
            reply.encode(shared.config.wire.codes, &mut bytes);
            // The reply must leave before any push it causes (SPEC 2.3, 2.5). Replies that
            // cause pushes (SEND, CONNECT) are a dozen bytes, which a new socket's send
            // buffer always takes, so they go out here, before the dispatcher can see the
            // new work; anything the kernel does not take at once follows below.
            let written = if causes_pushes(&reply) { stream.try_write(&bytes).unwrap_or(0) } else { 0 };
            drop(engine);
            shared.work.notify_one();
            Some(bytes.split_off(written))
        }
        Err(ReadEnd::Empty) => None,
        Err(ReadEnd::Bad(op, why)) => {
            shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::info!("bad request from {peer}: {why}");
            op.map(|op| {
                let mut bytes = BytesMut::new();
                Reply::failure(op).encode(shared.config.wire.codes, &mut bytes);
                bytes
            })
        }
    };
    if let Some(rest) = reply {
        if !rest.is_empty() {
            match timeout_at(deadline.max(Instant::now() + Duration::from_secs(1)), stream.write_all(&rest)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("reply to {peer} not written: {e}"),
                Err(_) => tracing::debug!("reply to {peer} not written in time"),
            }
        }
    }
    linger(&mut stream).await;
}

/// Ends a request connection gracefully: shut down our side, then read (and discard) what
/// the client still sends until it closes, for a moment at most. Closing with unread bytes
/// would make the kernel send a reset, which can destroy the reply before the client reads it.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let until = Instant::now() + Duration::from_millis(500);
    for _ in 0..64 {
        match timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
}

fn causes_pushes(reply: &Reply) -> bool {
    matches!(reply.operation(), Operation::Send | Operation::Connect) && reply.is_ok()
}

/// An IPv4 peer on a dual-stack socket shows up as `::ffff:a.b.c.d`; the IP checks of SPEC 2
/// compare it as the IPv4 address it is.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Drains the engine's deliveries into tasks while delivery slots are free; sleeps until new
/// work, a free slot or the next delivery deadline.
async fn dispatch(shared: Arc<Shared>, tasks: TaskTracker, stop: CancellationToken) {
    loop {
        let next_deadline = {
            let mut engine = shared.engine();
            let now = std::time::Instant::now();
            engine.handle_timeout(now);
            while let Ok(slot) = shared.delivery_slots.clone().try_acquire_owned() {
                let Some(delivery) = engine.poll_delivery(now) else { break };
                let shared = shared.clone();
                tasks.spawn(async move {
                    deliver(&shared, delivery).await;
                    drop(slot);
                    shared.work.notify_one();
                });
            }
            shared.flush_events(&mut engine);
            engine.poll_timeout()
        };
        let sleep_until = next_deadline.map_or_else(|| Instant::now() + Duration::from_secs(3600), Instant::from_std);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.work.notified() => {}
            _ = tokio::time::sleep_until(sleep_until) => {}
        }
    }
}

async fn deliver(shared: &Shared, delivery: Delivery) {
    let outcome = match delivery.push.to_bytes(shared.config.wire.push_names) {
        Ok(bytes) => match timeout_at(Instant::from_std(delivery.deadline), push(delivery.addr, bytes)).await {
            Ok(Ok(())) => DeliveryOutcome::Delivered,
            Ok(Err(e)) => {
                tracing::info!("push to {} at {} failed: {e}", String::from_utf8_lossy(&delivery.to), delivery.addr);
                DeliveryOutcome::Failed
            }
            Err(_) => {
                tracing::info!("push to {} at {} timed out", String::from_utf8_lossy(&delivery.to), delivery.addr);
                DeliveryOutcome::Failed
            }
        },
        Err(e) => {
            tracing::warn!("push to {} cannot be encoded: {e}", String::from_utf8_lossy(&delivery.to));
            DeliveryOutcome::Failed
        }
    };
    let counter = match outcome {
        DeliveryOutcome::Delivered => &shared.stats.deliveries_ok,
        DeliveryOutcome::Failed => &shared.stats.deliveries_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let mut engine = shared.engine();
    // Refused only if the engine's own timeout already failed this delivery.
    let _ = engine.handle_delivery_result(delivery.id, outcome);
    shared.flush_events(&mut engine);
}

/// Most bytes a listener may send back before the push counts as failed.
const MAX_LISTENER_CHATTER: usize = 64 * 1024;

/// One push, as SPEC 3 ends it: write, shut down our side, and read until the listener
/// closes. A clean close is the proof of delivery; a reset is a failure.
async fn push(addr: SocketAddr, bytes: Bytes) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    stream.write_all(&bytes).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 512];
    let mut seen = 0;
    loop {
        match stream.read(&mut sink).await? {
            0 => return Ok(()),
            n => {
                seen += n;
                if seen > MAX_LISTENER_CHATTER {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "listener keeps writing"));
                }
            }
        }
    }
}
