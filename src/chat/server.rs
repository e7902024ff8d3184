//! State <-> sockets: the tokio chat server that drives the [`Engine`].
//!
//! One task per connection. It tells framed from legacy connections on the first message
//! (SPEC-chat 1), reads and decodes, and hands each message to the engine under one lock, so
//! all messages are handled one at a time in one order. The engine's outputs go to bounded
//! per-connection queues; each connection's task writes its own queue, so a slow
//! reader only fills its own queue and is dropped with `ERROR|503` when the queue passes its
//! limits, without slowing anyone else. Legacy connections get one message per write, at
//! least `legacy_gap` apart.
//!
//! With [`ServerConfig::tls`], a second port serves the same chat over TLS: its connections
//! are handled by the same code after the handshake, so users on either port see each other.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Decoder;
use tokio_util::task::TaskTracker;

use crate::chat::codec::{Frame, LineCodec};
use crate::chat::engine::{Append, ConnId, ConnMap, Engine, Leave, Limits, LogEvent, Mode, Output};
use crate::chat::limits::{Limiter, Rate};
use crate::chat::store::{Committer, Store, StoreError};
use crate::chat::tls::{TlsPort, TEXT_TLS_EXPECTED};
use crate::chat::wire::{self, parse_request, Code, ParseError, Request, MAX_MESSAGE};
use crate::console::ServerConsole;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything `cartero chat serve` can be told; [`ServerConfig::new`] gives SPEC-chat's
/// defaults, with history in memory and no per-address limits (the CLI's defaults are a
/// data directory and [`Rate::default`], 16 connections per address).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Time a connection has to join (SPEC-chat 4: 30 s, then 408).
    pub connect_timeout: Duration,
    /// How long after the first bytes without `\n` a connection is taken for legacy
    /// (SPEC-chat 1: 50 ms).
    pub legacy_wait: Duration,
    /// Least time between two writes to a legacy connection (SPEC-chat 1: 20 ms).
    pub legacy_gap: Duration,
    /// Bytes that may wait for one connection (SPEC-chat 4: 1 MiB, then 503).
    pub max_queued_bytes: usize,
    /// Messages that may wait for one connection (SPEC-chat 4: 1,000, then 503).
    pub max_queued_messages: usize,
    /// How long a dropped slow reader is given to take its `ERROR|503`.
    pub drop_grace: Duration,
    /// Print SPEC-chat 5's event lines on standard output.
    pub console: bool,
    /// Rooms per connection and history kept (SPEC-chat 7).
    pub limits: Limits,
    /// Where history is kept: SQLite in this directory (created if missing; each message is
    /// on disk before it is forwarded), or `None` for memory only.
    pub data: Option<PathBuf>,
    /// Connections one IP address may have open at once (`None`: no limit; more get
    /// `ERROR|429` and are closed).
    pub max_per_ip: Option<usize>,
    /// Messages per IP address (`None`: no limit): over the rate they are delayed, and past
    /// its `max_delay` the connection is dropped with `ERROR|429`.
    pub rate: Option<Rate>,
    /// A second port that serves the same chat over TLS.
    pub tls: Option<TlsPort>,
}

impl ServerConfig {
    /// SPEC-chat's limits, listening on `bind`, without the console.
    pub fn new(bind: SocketAddr) -> ServerConfig {
        ServerConfig {
            bind,
            max_connections: 16_384,
            connect_timeout: Duration::from_secs(30),
            legacy_wait: Duration::from_millis(50),
            legacy_gap: Duration::from_millis(20),
            max_queued_bytes: 1 << 20,
            max_queued_messages: 1000,
            drop_grace: Duration::from_secs(2),
            console: false,
            limits: Limits::default(),
            data: None,
            max_per_ip: None,
            rate: None,
            tls: None,
        }
    }
}

/// What the server has done, for tools and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections refused for `max_connections`.
    pub refused: AtomicU64,
    /// Slow readers dropped (503).
    pub slow_readers: AtomicU64,
    /// Console lines dropped because standard output could not keep up.
    pub console_dropped: AtomicU64,
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    /// The browser client's HTTP and WebSocket listener ([`bind_web`](Server::bind_web)).
    web: Option<TcpListener>,
    tls_listener: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) config: ServerConfig,
    pub(super) hub: Mutex<Hub>,
    pub(super) stats: Arc<Stats>,
    pub(super) limiter: Mutex<Limiter>,
    /// The origin of the limiter's clock.
    pub(super) origin: Instant,
}

/// The engine and the queues it writes to, under one lock.
pub(super) struct Hub {
    pub(super) engine: Engine,
    pub(super) outboxes: ConnMap<Arc<Outbox>>,
    console: Option<ServerConsole>,
    stats: Arc<Stats>,
    max_bytes: usize,
    max_messages: usize,
    /// Writes the history when it is durable.
    committer: Option<Committer>,
    /// Outputs waiting for the store, in engine order: each message to store, then what the
    /// engine asked for after it.
    held: VecDeque<Held>,
    /// Connections whose queues overflowed, to drop.
    overflowed: Vec<ConnId>,
}

struct Held {
    seq: u64,
    append: Box<Append>,
    after: Vec<Output>,
}

/// Messages waiting for the store at most; past it they are refused with `ERROR|500`.
const MAX_HELD: usize = 65_536;

/// What happens to a connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Open,
    /// Write what is queued, then close (after DISCONNECT).
    Close,
    /// Dropped as a slow reader: the queue holds only the `ERROR|503`.
    Overflow,
}

/// One connection's outbound queue, bounded by count and bytes.
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    pub(super) notify: Notify,
    peer: SocketAddr,
    mode: Mutex<Mode>,
}

struct Queue {
    items: VecDeque<Bytes>,
    bytes: usize,
    end: End,
    /// The first item is partly written: it must be finished, whatever happens next.
    front_started: bool,
}

/// Buffers handed to one vectored write.
const WRITE_SLICES: usize = 64;
/// Bytes read at once.
const READ_CHUNK: usize = 4096;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    pub(super) fn new(peer: SocketAddr) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue { items: VecDeque::new(), bytes: 0, end: End::Open, front_started: false }),
            notify: Notify::new(),
            peer,
            mode: Mutex::new(Mode::Framed),
        }
    }

    /// Queues `bytes`; false when this passes the limits (the queue then holds only the
    /// `ERROR|503` and takes nothing more).
    fn push(&self, bytes: Bytes, max_bytes: usize, max_messages: usize) -> bool {
        let mut q = lock(&self.queue);
        if q.end != End::Open {
            return true;
        }
        // A user list behind an unsent user list replaces it: the reader is behind, and
        // the newer list says all the older one did (docs/protocols/chat.md, section 9).
        let n = q.items.len();
        if bytes.starts_with(b"USER_LIST|")
            && n > 0
            && !(n == 1 && q.front_started)
            && q.items[n - 1].starts_with(b"USER_LIST|")
        {
            q.bytes = q.bytes - q.items[n - 1].len() + bytes.len();
            q.items[n - 1] = bytes;
            return true;
        }
        // An empty queue always takes one message: a reader that is not behind is no slow
        // reader, whatever the size of the one list it is sent.
        if !q.items.is_empty() && (q.items.len() >= max_messages || q.bytes + bytes.len() > max_bytes) {
            // A message partly written is finished, so the ERROR starts a message.
            let keep = usize::from(q.front_started);
            q.items.truncate(keep);
            let error = wire::error_line(Code::SlowReader, wire::TEXT_SLOW_READER);
            let error = match *lock(&self.mode) {
                Mode::Framed => error,
                Mode::Legacy => error.slice(..error.len() - 1),
            };
            q.bytes = q.items.iter().map(Bytes::len).sum::<usize>() + error.len();
            q.items.push_back(error);
            q.end = End::Overflow;
            drop(q);
            self.notify.notify_one();
            return false;
        }
        q.bytes += bytes.len();
        q.items.push_back(bytes);
        let was_empty = q.items.len() == 1;
        drop(q);
        // The writer waits for a notification only when it found the queue empty (both
        // under the lock), so only the first message of a batch needs to wake it.
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Queues a last `ERROR`, whatever the limits, and closes after it.
    fn push_last(&self, code: Code, text: &str) {
        let error = wire::error_line(code, text);
        let error = match *lock(&self.mode) {
            Mode::Framed => error,
            Mode::Legacy => error.slice(..error.len() - 1),
        };
        let mut q = lock(&self.queue);
        if q.end == End::Open {
            q.bytes += error.len();
            q.items.push_back(error);
            q.end = End::Close;
        }
        drop(q);
        self.notify.notify_one();
    }

    pub(super) fn close_after_flush(&self) {
        let mut q = lock(&self.queue);
        if q.end == End::Open {
            q.end = End::Close;
        }
        drop(q);
        self.notify.notify_one();
    }

    /// (something to write, end state)
    pub(super) fn state(&self) -> (bool, End) {
        let q = lock(&self.queue);
        (!q.items.is_empty(), q.end)
    }

    /// Takes the first whole message, for writers that send messages one by one (the
    /// browser client's WebSocket frames).
    pub(super) fn pop(&self) -> Option<Bytes> {
        let mut q = lock(&self.queue);
        let item = q.items.pop_front()?;
        q.bytes -= item.len();
        q.front_started = false;
        Some(item)
    }

    /// Writes what the stream takes now: everything queued on a framed connection, the
    /// first message on a legacy one. Ready with whether a whole message was finished.
    fn poll_write_to<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        cx: &mut Context<'_>,
        mode: Mode,
    ) -> Poll<io::Result<bool>> {
        let mut q = lock(&self.queue);
        let written = match mode {
            Mode::Framed => {
                let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
                let mut count = 0;
                for (slot, item) in slices.iter_mut().zip(q.items.iter()) {
                    *slot = IoSlice::new(item);
                    count += 1;
                }
                std::task::ready!(Pin::new(stream).poll_write_vectored(cx, &slices[..count]))?
            }
            Mode::Legacy => match q.items.front() {
                Some(first) => std::task::ready!(Pin::new(stream).poll_write(cx, first))?,
                None => 0,
            },
        };
        if written == 0 && !q.items.is_empty() {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        q.bytes -= written;
        let mut left = written;
        let mut finished = false;
        while left > 0 {
            let Some(front) = q.items.front_mut() else { break };
            if front.len() <= left {
                left -= front.len();
                q.items.pop_front();
                q.front_started = false;
                finished = true;
            } else {
                front.advance(left);
                left = 0;
                q.front_started = true;
            }
        }
        Poll::Ready(Ok(finished))
    }
}

impl Hub {
    pub(super) fn log(&self, line: String) {
        if let Some(console) = &self.console {
            if !console.print(line) {
                self.stats.console_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn log_event(&self, event: LogEvent) {
        if self.console.is_some() {
            let line = event.line(|conn| match self.outboxes.get(&conn) {
                Some(o) => o.peer.to_string(),
                None => format!("connection {}", conn.0),
            });
            self.log(line);
        }
    }

    /// Carries out everything the engine asked for; drops slow readers as their queues
    /// overflow (which may ask for more). With durable history, a message to store and
    /// everything after it wait until it is stored.
    pub(super) fn dispatch(&mut self) {
        loop {
            while let Some(output) = self.engine.poll_output() {
                self.carry(output);
            }
            if self.overflowed.is_empty() {
                return;
            }
            for conn in std::mem::take(&mut self.overflowed) {
                self.stats.slow_readers.fetch_add(1, Ordering::Relaxed);
                self.engine.close(conn, Leave::SlowReader);
            }
        }
    }

    fn carry(&mut self, output: Output) {
        match output {
            Output::Append(append) => {
                let Some(committer) = &mut self.committer else {
                    self.engine.remember(&append.record);
                    return append.then.into_iter().for_each(|o| self.carry(o));
                };
                let seq = if self.held.len() < MAX_HELD { committer.queue(append.record.clone()) } else { None };
                match seq {
                    Some(seq) => self.held.push_back(Held { seq, append, after: Vec::new() }),
                    None => self.engine.store_failed(append.sender),
                }
            }
            output => match self.held.back_mut() {
                Some(held) => held.after.push(output),
                None => self.carry_now(output),
            },
        }
    }

    fn carry_now(&mut self, output: Output) {
        match output {
            Output::Send { to, bytes } => {
                if let Some(outbox) = self.outboxes.get(&to) {
                    if !outbox.push(bytes, self.max_bytes, self.max_messages) {
                        self.overflowed.push(to);
                    }
                }
            }
            Output::Close { conn } => {
                if let Some(outbox) = self.outboxes.get(&conn) {
                    outbox.close_after_flush();
                }
            }
            Output::Log(event) => self.log_event(event),
            Output::Append(append) => self.carry(Output::Append(append)),
        }
    }

    /// The messages queued for the store up to number `last` are stored (`ok`) or not:
    /// forwards them, or refuses them to their senders with `ERROR|500`, and releases what
    /// waited behind them.
    fn settle(&mut self, last: u64, ok: bool) {
        while self.held.front().is_some_and(|h| h.seq <= last) {
            let Some(Held { append, after, .. }) = self.held.pop_front() else { break };
            let Append { record, sender, then } = *append;
            if ok {
                self.engine.remember(&record);
                then.into_iter().for_each(|o| self.carry_now(o));
            } else {
                self.engine.store_failed(sender);
            }
            after.into_iter().for_each(|o| self.carry_now(o));
        }
        self.dispatch();
    }
}

impl Server {
    /// Binds the listening sockets. With `config.console`, prints the start line
    /// `s> init server ADDR:PORT` once ready, and with TLS a second one,
    /// `s> init tls ADDR:PORT sha256 FINGERPRINT`.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let store = match &config.data {
            Some(dir) => Some(Store::open(dir, config.limits.history_per_target)?),
            None => None,
        };
        Server::bind_with(config, store).await
    }

    /// [`bind`](Self::bind) with a history store the caller opened (and perhaps tuned);
    /// `config.data` is not looked at.
    pub async fn bind_with(config: ServerConfig, store: Option<Store>) -> Result<Server, ServerError> {
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| ServerError::Bind { addr: config.bind, source })?;
        let tls_listener = match &config.tls {
            Some(port) => {
                let fail = |source| ServerError::Bind { addr: port.bind, source };
                let tls = TcpListener::bind(port.bind).await.map_err(fail)?;
                let addr = tls.local_addr().map_err(fail)?;
                Some((tls, tokio_rustls::TlsAcceptor::from(port.tls.config.clone()), addr))
            }
            None => None,
        };
        let stats = Arc::new(Stats::default());
        let console = match config.console {
            true => Some(ServerConsole::start().map_err(|source| ServerError::Bind { addr: config.bind, source })?),
            false => None,
        };
        let mut engine = Engine::with_limits(config.limits);
        let mut store = store;
        if let Some(store) = &mut store {
            engine.set_durable_history(true);
            let loaded = store.load(|record| engine.remember(&record))?;
            tracing::info!("history: {loaded} messages loaded from {}", store.path().display());
        }
        let hub = Hub {
            engine,
            outboxes: ConnMap::default(),
            console,
            stats: stats.clone(),
            max_bytes: config.max_queued_bytes,
            max_messages: config.max_queued_messages.max(1),
            committer: None,
            held: VecDeque::new(),
            overflowed: Vec::new(),
        };
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.bind, source })?;
        let limiter = Mutex::new(Limiter::new(config.max_per_ip, config.rate));
        let bind = config.bind;
        hub.log(format!("s> init server {addr}"));
        let tls_listener = tls_listener.map(|(tls, acceptor, addr)| {
            if let Some(port) = &config.tls {
                hub.log(format!("s> init tls {addr} sha256 {}", port.tls.fingerprint));
            }
            (tls, acceptor)
        });
        let shared = Arc::new(Shared { config, hub: Mutex::new(hub), stats, limiter, origin: Instant::now() });
        if let Some(store) = store {
            let weak = Arc::downgrade(&shared);
            let committer = Committer::start(store, move |last, result| {
                if let Some(shared) = weak.upgrade() {
                    lock(&shared.hub).settle(last, result.is_ok());
                }
            })
            .map_err(|source| ServerError::Bind { addr: bind, source })?;
            lock(&shared.hub).committer = Some(committer);
        }
        Ok(Server { listener, web: None, tls_listener, shared })
    }

    /// Also serves the browser client (HTTP and WebSocket, `docs/chat.md`) on `addr`; with
    /// the console, prints `s> init web http://ADDR:PORT/`. Returns the address bound.
    pub async fn bind_web(&mut self, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        lock(&self.shared.hub).log(format!("s> init web http://{bound}/"));
        self.web = Some(listener);
        Ok(bound)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The TLS port's address, when the server has one.
    pub fn local_tls_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.tls_listener.as_ref().map(|(l, _)| l.local_addr())
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes; then closes every connection and returns once
    /// their tasks have ended (at most `drop_grace` later).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, web, tls_listener, shared } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = TaskTracker::new();
        if let Some(web) = web {
            tasks.spawn(crate::chat::web::serve(web, shared.clone(), stop_rx.clone(), tasks.clone()));
        }
        let next_id = AtomicU64::new(0);
        {
            let plain = accept_loop(&listener, None, &shared, &tasks, &stop_rx, &next_id);
            let tls = async {
                match &tls_listener {
                    Some((tls, acceptor)) => {
                        accept_loop(tls, Some(acceptor), &shared, &tasks, &stop_rx, &next_id).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown => {}
                _ = plain => {}
                _ = tls => {}
            }
        }
        drop(listener);
        drop(tls_listener);
        let _ = stop_tx.send(true);
        tasks.close();
        let grace = shared.config.drop_grace + Duration::from_secs(1);
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not end in time");
        }
        // What waits for the store is written before the store closes.
        let committer = lock(&shared.hub).committer.take();
        if let Some(committer) = committer {
            let _ = tokio::task::spawn_blocking(move || committer.finish()).await;
        }
        let dropped = shared.stats.console_dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!("{dropped} console lines were dropped: standard output could not keep up");
        }
        // The last console lines are still queued: the process would exit before they are written.
        let console = lock(&shared.hub).console.take();
        let _ = tokio::task::spawn_blocking(move || console.as_ref().map(ServerConsole::flush)).await;
        Ok(())
    }
}

/// Accepts connections on `listener` (over TLS with `tls`) and spawns their tasks; never
/// ends (the caller stops polling it at shutdown).
async fn accept_loop(
    listener: &TcpListener,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    stop: &watch::Receiver<bool>,
    next_id: &AtomicU64,
) {
    let mut never = std::pin::pin!(std::future::pending::<()>());
    while let Some((stream, peer)) = crate::net::accept(listener, &mut never).await {
        if shared.stats.connections.load(Ordering::Relaxed) >= shared.config.max_connections {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{peer}: refused, {} connections open", shared.config.max_connections);
            drop(stream);
            continue;
        }
        if !lock(&shared.limiter).open(peer.ip(), shared.origin.elapsed()) {
            lock(&shared.hub).log(format!("s> ERROR {} {peer}", Code::TooManyRequests.number()));
            // Plain text cannot answer on the TLS port before a handshake: it is just closed.
            if tls.is_none() {
                tasks.spawn(refuse_address(stream));
            }
            continue;
        }
        // Legacy writes must leave one by one; framed ones gain latency too.
        let _ = stream.set_nodelay(true);
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let id = ConnId(next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let (shared, stop) = (shared.clone(), stop.clone());
        match tls {
            None => tasks.spawn(async move {
                connection(&shared, stream, peer, id, stop, false).await;
                lock(&shared.limiter).close(peer.ip(), shared.origin.elapsed());
                shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
            }),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tasks.spawn(async move {
                    if let Some(stream) = tls_handshake(&shared, &acceptor, stream, peer, stop.clone()).await {
                        connection(&shared, stream, peer, id, stop, true).await;
                    }
                    lock(&shared.limiter).close(peer.ip(), shared.origin.elapsed());
                    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
                })
            }
        };
    }
}

/// The server's side of a TLS handshake, within the handshake timeout. A connection whose
/// first byte cannot start a TLS handshake (plain text on the TLS port) is sent
/// `ERROR|400|Se esperaba TLS` in plain text and closed.
async fn tls_handshake(
    shared: &Shared,
    acceptor: &tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    /// A TLS record of type handshake starts with this byte (RFC 8446, 5.1).
    const HANDSHAKE_RECORD: u8 = 0x16;
    let timeout = shared
        .config
        .tls
        .as_ref()
        .map_or_else(crate::chat::tls::default_handshake_timeout, |t| t.tls.handshake_timeout);
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] == HANDSHAKE_RECORD => {}
            Ok(1) => {
                tracing::debug!("{peer}: plain text on the TLS port");
                let _ = stream.write_all(&wire::error_line(Code::BadRequest, TEXT_TLS_EXPECTED)).await;
                let _ = stream.shutdown().await;
                return None;
            }
            _ => return None,
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::debug!("{peer}: TLS handshake failed: {e}");
                None
            }
        }
    };
    tokio::select! {
        done = tokio::time::timeout(timeout, handshake) => done.unwrap_or_else(|_| {
            tracing::debug!("{peer}: TLS handshake not finished within {timeout:?}");
            None
        }),
        _ = stop.changed() => None,
    }
}

/// Where a connection is in telling its framing.
enum Framing {
    /// Nothing yet, or bytes without `\n` since `since`.
    Detecting {
        since: Option<Instant>,
    },
    Known(Mode),
}

/// What one poll of a connection's stream did.
enum Io {
    /// Bytes written; whether a whole message was finished, and whether everything is out
    /// of the stream's own buffers (always, on plain TCP).
    Wrote(io::Result<bool>, bool),
    /// The stream's own buffers (TLS records) were written out.
    Flushed(io::Result<()>),
    /// Bytes read (0: the peer closed).
    Read(io::Result<usize>),
}

/// Writes (when `write`) or flushes (when `flush`), and reads (when `read`, into `buf`),
/// whichever the stream is ready for first.
fn poll_io<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    outbox: &Outbox,
    mode: Mode,
    (write, flush, read): (bool, bool, bool),
    buf: &mut BytesMut,
) -> Poll<Io> {
    if write {
        if let Poll::Ready(wrote) = outbox.poll_write_to(stream, cx, mode) {
            let flushed = wrote.is_err() || Pin::new(&mut *stream).poll_flush(cx).is_ready();
            return Poll::Ready(Io::Wrote(wrote, flushed));
        }
    } else if flush {
        if let Poll::Ready(flushed) = Pin::new(&mut *stream).poll_flush(cx) {
            return Poll::Ready(Io::Flushed(flushed));
        }
    }
    if read {
        // Read through the stack, so an idle connection holds no read buffer.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut chunk);
        if let Poll::Ready(result) = Pin::new(&mut *stream).poll_read(cx, &mut chunk) {
            buf.extend_from_slice(chunk.filled());
            return Poll::Ready(Io::Read(result.map(|()| chunk.filled().len())));
        }
    }
    Poll::Pending
}

/// Serves one connection (plain TCP, or TLS after the handshake) until it ends. With
/// `close_notify`, a TLS close is sent before the stream is dropped.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut stream: S,
    peer: SocketAddr,
    id: ConnId,
    mut stop: watch::Receiver<bool>,
    close_notify: bool,
) {
    let config = &shared.config;
    let outbox = Arc::new(Outbox::new(peer));
    lock(&shared.hub).outboxes.insert(id, outbox.clone());
    let join_deadline = Instant::now() + config.connect_timeout;
    let mut join_checked = false;
    let mut framing = Framing::Detecting { since: None };
    let mut codec = LineCodec::for_requests();
    let mut buf = BytesMut::new();
    // Messages over the per-address rate, with when each may be handled.
    let mut waiting: VecDeque<(Instant, Frame)> = VecDeque::new();
    let mut reading = true;
    let mut next_write = Instant::now();
    // Once the connection is ending, what is queued has this long to be written.
    let mut end_deadline: Option<Instant> = None;
    // One timer, reset to the nearest deadline only when that changes: a connection costs
    // no timer work per message.
    let timer = sleep_until(join_deadline);
    tokio::pin!(timer);
    let mut armed = Some(join_deadline);
    // Bytes accepted by the stream but still in its own buffers (TLS records not yet sent).
    let mut unflushed = false;
    let leave = loop {
        let (pending, end) = outbox.state();
        let mode = match framing {
            Framing::Known(mode) => Some(mode),
            Framing::Detecting { .. } => None,
        };
        match end {
            End::Open => {}
            End::Close if !pending && !unflushed => break Leave::Closed,
            End::Overflow if !pending && !unflushed => break Leave::SlowReader,
            End::Close | End::Overflow => {
                reading = false;
                end_deadline.get_or_insert_with(|| Instant::now() + config.drop_grace);
            }
        }
        let paced = mode == Some(Mode::Legacy) && Instant::now() < next_write;
        let detect_at = match framing {
            Framing::Detecting { since: Some(since) } => Some(since + config.legacy_wait),
            _ => None,
        };
        let wake_at = [
            detect_at,
            (!join_checked).then_some(join_deadline),
            end_deadline,
            (pending && paced).then_some(next_write),
            waiting.front().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = wake_at {
            if armed != Some(at) {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
        }
        tokio::select! {
            _ = outbox.notify.notified(), if !pending => {}
            io = poll_fn(|cx| {
                let wants = (pending && !paced, unflushed, reading);
                poll_io(&mut stream, cx, &outbox, mode.unwrap_or(Mode::Framed), wants, &mut buf)
            }), if (pending && !paced) || unflushed || reading => {
                match io {
                    Io::Wrote(wrote, flushed) => {
                        unflushed = !flushed;
                        match wrote {
                            Ok(true) => next_write = Instant::now() + config.legacy_gap,
                            Ok(false) => {}
                            Err(_) => break Leave::Closed,
                        }
                        continue;
                    }
                    Io::Flushed(Ok(())) => {
                        unflushed = false;
                        continue;
                    }
                    Io::Flushed(Err(_)) => break Leave::Closed,
                    Io::Read(Ok(0) | Err(_)) => break Leave::Closed,
                    Io::Read(Ok(_)) => {}
                }
                match framing {
                    Framing::Detecting { since } => {
                        if memchr::memchr(b'\n', &buf).is_some() || buf.len() > MAX_MESSAGE + 1 {
                            framing = Framing::Known(Mode::Framed);
                            open(shared, id, &outbox, Mode::Framed);
                            admit(shared, id, &outbox, peer.ip(), decode(&mut codec, &mut buf), &mut waiting);
                        } else if since.is_none() {
                            framing = Framing::Detecting { since: Some(Instant::now()) };
                        }
                    }
                    Framing::Known(Mode::Framed) => {
                        admit(shared, id, &outbox, peer.ip(), decode(&mut codec, &mut buf), &mut waiting)
                    }
                    Framing::Known(Mode::Legacy) => {
                        // One read, one message.
                        let frame = if buf.len() > MAX_MESSAGE { Frame::TooLong } else { Frame::Line(buf.split().freeze()) };
                        buf = BytesMut::new();
                        admit(shared, id, &outbox, peer.ip(), vec![frame], &mut waiting);
                    }
                }
                if buf.is_empty() {
                    buf = BytesMut::new(); // an idle connection keeps no buffer
                }
            }
            _ = &mut timer, if wake_at.is_some() => {
                armed = None;
                let now = Instant::now();
                release_due(shared, id, &mut waiting, now);
                if end_deadline.is_some_and(|d| now >= d) {
                    break if end == End::Overflow { Leave::SlowReader } else { Leave::Closed };
                }
                if !join_checked && now >= join_deadline {
                    join_checked = true;
                    let joined = lock(&shared.hub).engine.is_joined(id);
                    if !joined {
                        refuse(shared, id, &outbox, Code::Timeout, wire::TEXT_TIMEOUT);
                    }
                }
                if detect_at.is_some_and(|d| now >= d) {
                match parse_request(&buf) {
                    Ok(Request::Connect(_)) => {
                        framing = Framing::Known(Mode::Legacy);
                        open(shared, id, &outbox, Mode::Legacy);
                        let frame = Frame::Line(buf.split().freeze());
                        buf = BytesMut::new();
                        admit(shared, id, &outbox, peer.ip(), vec![frame], &mut waiting);
                    }
                    other => {
                        let text = match other {
                            Err(e) => e.text(),
                            Ok(_) => ParseError::UnknownCommand.text(),
                        };
                        refuse(shared, id, &outbox, Code::BadRequest, text);
                        framing = Framing::Known(Mode::Framed);
                    }
                }
                }
            }
            _ = stop.changed() => break Leave::Closed,
        }
    };
    leave_hub(shared, id, leave);
    if close_notify {
        // TLS: say goodbye properly (close_notify), bounded like any last write.
        let _ = tokio::time::timeout(config.drop_grace, stream.shutdown()).await;
    }
}

fn open(shared: &Shared, id: ConnId, outbox: &Outbox, mode: Mode) {
    *lock(&outbox.mode) = mode;
    lock(&shared.hub).engine.open(id, mode);
}

fn decode(codec: &mut LineCodec, buf: &mut BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    // The codec never fails on input; it reports over-long lines as frames.
    while let Ok(Some(frame)) = codec.decode(buf) {
        frames.push(frame);
    }
    frames
}

/// Hands `frames` to the engine as the per-address rate allows; those over it wait in
/// `waiting`, in order, until their time. A message that would wait past the rate's
/// `max_delay` drops the connection with `ERROR|429` (what waits is dropped too).
pub(super) fn admit(
    shared: &Shared,
    id: ConnId,
    outbox: &Outbox,
    ip: IpAddr,
    frames: Vec<Frame>,
    waiting: &mut VecDeque<(Instant, Frame)>,
) {
    if shared.config.rate.is_none() {
        return handle(shared, id, frames);
    }
    let now = Instant::now();
    let mut ready = Vec::new();
    let mut flood = false;
    {
        let mut limiter = lock(&shared.limiter);
        for frame in frames {
            match limiter.take(ip, now - shared.origin) {
                Ok(at) if waiting.is_empty() && shared.origin + at <= now => ready.push(frame),
                Ok(at) => waiting.push_back((shared.origin + at, frame)),
                Err(_) => {
                    flood = true;
                    break;
                }
            }
        }
    }
    handle(shared, id, ready);
    if flood {
        waiting.clear();
        refuse(shared, id, outbox, Code::TooManyRequests, wire::TEXT_FLOOD);
    }
}

/// Hands the engine the messages in `waiting` whose time under the rate has come.
pub(super) fn release_due(shared: &Shared, id: ConnId, waiting: &mut VecDeque<(Instant, Frame)>, now: Instant) {
    let due = waiting.iter().take_while(|(at, _)| *at <= now).count();
    if due > 0 {
        handle(shared, id, waiting.drain(..due).map(|(_, frame)| frame));
    }
}

/// A connection's end in the hub: the engine closes it (a slow reader has left already, when
/// its queue overflowed) and its queue goes.
pub(super) fn leave_hub(shared: &Shared, id: ConnId, leave: Leave) {
    let mut hub = lock(&shared.hub);
    if leave == Leave::Closed {
        hub.engine.close(id, Leave::Closed);
    }
    hub.outboxes.remove(&id);
    hub.dispatch();
}

pub(super) fn handle(shared: &Shared, id: ConnId, frames: impl IntoIterator<Item = Frame>) {
    let mut frames = frames.into_iter().peekable();
    if frames.peek().is_none() {
        return;
    }
    let now = unix_millis();
    let mut hub = lock(&shared.hub);
    for frame in frames {
        hub.engine.handle(id, &frame, now);
    }
    hub.dispatch();
}

/// A connection past the limit of its address: `ERROR|429`, then closed (after reading what
/// it sent, for a second at most, so that the close does not reset the connection).
async fn refuse_address(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let error = wire::error_line(Code::TooManyRequests, wire::TEXT_TOO_MANY_CONNECTIONS);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&error).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// Unix time in milliseconds, for the history's stamps (0 if the clock is before 1970).
pub(super) fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Logs a last `ERROR` (408; 400 when the first message is neither framed nor a legacy
/// CONNECT; 429 for a flood) and queues it; the connection closes once it is written.
pub(super) fn refuse(shared: &Shared, id: ConnId, outbox: &Outbox, code: Code, text: &str) {
    let hub = lock(&shared.hub);
    let name = hub.engine.name(id).map(str::to_string);
    hub.log_event(LogEvent::Error { code: code.number(), conn: id, name });
    drop(hub);
    outbox.push_last(code, text);
}
