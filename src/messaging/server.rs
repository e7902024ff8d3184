//! State <-> sockets: the tokio server that drives the [`Engine`].
//!
//! One task per request connection reads the request (bounded by the request deadline and,
//! for short forms, the grace period), asks the engine, and writes the reply. One dispatcher
//! task drains the engine's deliveries and runs each as its own task, at most
//! `max_deliveries` at once; the engine guarantees at most one per user.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::console::ServerConsole;
use crate::messaging::engine::{Change, Delivery, DeliveryOutcome, Engine, EngineConfig, EngineError, Event};
use crate::messaging::store::{AnyStore, Store, StoreError};
use crate::messaging::wire::{ConnectReply, Operation, ProtocolError, Reply, Request, RequestDecoder, WireSettings};
use crate::text::{count, count_as};

/// Where the server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory: lost when the server stops.
    Memory,
    /// In a SQLite store in this directory (created if missing): every reply of 0 is
    /// durable before it is sent.
    Sqlite(PathBuf),
    /// In a PostgreSQL database (`postgres://user@host:port/db`), owned by this server while
    /// it runs: every reply of 0 is committed before it is sent.
    Postgres(String),
    /// In a PostgreSQL database shared by N identical nodes ([`pg_shared`](super::pg_shared)):
    /// each request is answered from the database, and committed before its reply.
    Shared(crate::messaging::pg_shared::NodeConfig),
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store holds a state the server refuses: {0}")]
    Restore(#[from] EngineError),
}

/// Everything `cartero serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub storage: Storage,
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
    /// The host of the RPC log service (SPEC 8, `LOG_RPC_IP`): every operation is reported
    /// to it, without ever delaying or failing one.
    pub log_rpc: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            storage: Storage::Memory,
            wire: WireSettings::default(),
            engine: EngineConfig::default(),
            request_timeout: Duration::from_secs(5),
            grace: Duration::from_millis(100),
            max_connections: 4096,
            max_deliveries: 256,
            console: false,
            log_rpc: None,
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
    /// Batches of changes written to the store, and those that failed.
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
}

/// Changes on their way to the store, with who waits for them.
struct Pending {
    changes: Vec<Change>,
    /// The engine's change number of the last of them.
    seq: u64,
    /// Told whether they became durable (a request's reply waits for it).
    done: Option<oneshot::Sender<bool>>,
    /// The last job: the committer closes the store after it.
    stop: bool,
}

struct Shared {
    engine: Mutex<Engine>,
    config: ServerConfig,
    /// Wakes the dispatcher: new work may be ready, or a delivery slot came free.
    work: Notify,
    delivery_slots: Arc<Semaphore>,
    console: Option<ServerConsole>,
    stats: Arc<Stats>,
    /// The committer's queue, when the state is durable.
    committer: Option<mpsc::Sender<Pending>>,
    /// The store failed: writes are refused and pushes paused until it recovers. Read and
    /// written with the engine locked.
    degraded: AtomicBool,
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The RPC log's reporter, when `log_rpc` is set.
    rpclog: Option<crate::messaging::rpclog::Reporter>,
    /// The shared database's node, which answers requests and makes deliveries instead of
    /// the engine (then empty) when the storage is [`Storage::Shared`].
    node: Option<Arc<crate::messaging::pg_shared::Node>>,
    /// When each user's last CONNECT was answered, for the last [`CONNECT_RETRY_WINDOW`]
    /// (at most one entry per registered user).
    recent_connects: Mutex<HashMap<Bytes, Instant>>,
}

/// How long after a CONNECT reply a refused push is retried (SPEC 2.3): some clients start
/// their listener only after reading the reply.
const CONNECT_RETRY_WINDOW: Duration = Duration::from_secs(2);

/// The first pause before retrying a refused push; it doubles after each retry.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(20);

impl Shared {
    /// Notes that `alias`'s CONNECT was just answered 0.
    fn connected_at(&self, alias: Bytes) {
        let now = Instant::now();
        let mut recent = self.recent_connects.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, at| now.duration_since(*at) < CONNECT_RETRY_WINDOW);
        recent.insert(alias, now);
    }

    /// Until when a refused push to `alias` is retried: two seconds after its CONNECT reply.
    fn retry_until(&self, alias: &[u8]) -> Option<Instant> {
        let recent = self.recent_connects.lock().unwrap_or_else(|p| p.into_inner());
        recent.get(alias).map(|at| *at + CONNECT_RETRY_WINDOW)
    }

    /// Queues the engine's new changes for the store (call with the engine locked, so the
    /// queue keeps the engine's order). Returns what tells whether they became durable, if
    /// there were any; a failure to queue reads as "not durable".
    fn queue_changes(&self, engine: &mut Engine) -> Option<oneshot::Receiver<bool>> {
        let committer = self.committer.as_ref()?;
        let changes: Vec<Change> = std::iter::from_fn(|| engine.poll_change()).collect();
        if changes.is_empty() {
            return None;
        }
        let (done, durable) = oneshot::channel();
        let _ = committer.send(Pending { changes, seq: engine.change_seq(), done: Some(done), stop: false });
        Some(durable)
    }

    /// Writes everything queued so far, then closes the store (so another server may open it
    /// as soon as this returns). A store that is down is waited for a few seconds at most.
    async fn close_store(&self) {
        let Some(committer) = &self.committer else { return };
        let (done, written) = oneshot::channel();
        let closed = committer.send(Pending { changes: Vec::new(), seq: 0, done: Some(done), stop: true }).is_ok()
            && matches!(tokio::time::timeout(Duration::from_secs(5), written).await, Ok(Ok(_)));
        if !closed {
            tracing::warn!("stopping with the store down: the last changes may not be on disk");
            return;
        }
        let thread = self.committer_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

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
            self.print(&event);
        }
    }

    fn print(&self, event: &Event) {
        if let Some(console) = &self.console {
            if !console.print(format!("s> {event}")) {
                self.stats.console_lines_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An engine rebuilt from what `store` holds.
fn restore(store: &mut AnyStore, config: EngineConfig) -> Result<Engine, ServerError> {
    let started = std::time::Instant::now();
    let (users, messages) = store.load()?;
    let counts = (users.len(), messages.len());
    let engine = Engine::restore(config, users, messages)?;
    tracing::info!(
        "storage: {} restored, {} and {}, in {:.2?}",
        store.describe(),
        count(counts.0 as u64, "user"),
        count(counts.1 as u64, "pending message"),
        started.elapsed()
    );
    Ok(engine)
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Opens the storage (restoring what it holds) and binds the listening socket. With
    /// `config.console`, prints SPEC 5's start lines once ready.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        match &config.storage {
            Storage::Memory => Server::bind_any(config, None).await,
            Storage::Sqlite(dir) => {
                let store = Store::open(dir)?;
                Server::bind_any(config, Some(AnyStore::Sqlite(store))).await
            }
            Storage::Postgres(url) => {
                // Bound first, so that the store, once open, never has to be dropped here:
                // the blocking client must not be dropped on the async runtime.
                let listener = TcpListener::bind(config.bind)
                    .await
                    .map_err(|source| ServerError::Bind { addr: config.bind, source })?;
                let url = url.clone();
                let engine_config = Server::engine_config(&config, true);
                let (tx, rx) = oneshot::channel();
                std::thread::spawn(move || {
                    let opened = crate::messaging::pg::PgStore::open(&url)
                        .map_err(ServerError::from)
                        .map(|s| AnyStore::Postgres(Box::new(s)))
                        .and_then(|mut store| restore(&mut store, engine_config).map(|engine| (store, engine)));
                    if let Err(Ok((store, _))) = tx.send(opened) {
                        drop(store); // here, off the runtime
                    }
                });
                let (store, engine) = rx.await.map_err(|_| StoreError::Database {
                    store: "postgres".into(),
                    detail: "the thread opening the database ended".into(),
                })??;
                Server::start(config, listener, engine, Some(store), None)
            }
            Storage::Shared(node) => {
                let listener = TcpListener::bind(config.bind)
                    .await
                    .map_err(|source| ServerError::Bind { addr: config.bind, source })?;
                let node = crate::messaging::pg_shared::Node::open(node, config.engine.clone(), config.wire.push_names)
                    .await?;
                tracing::info!("storage: {} shared with other nodes (each request answered from it)", node.name());
                let engine = Engine::new(Server::engine_config(&config, false));
                Server::start(config, listener, engine, None, Some(Arc::new(node)))
            }
        }
    }

    /// [`bind`](Self::bind) with a store the caller opened (and perhaps tuned); `storage`
    /// in `config` is then ignored.
    pub async fn bind_with(config: ServerConfig, store: Option<Store>) -> Result<Server, ServerError> {
        Server::bind_any(config, store.map(AnyStore::Sqlite)).await
    }

    fn engine_config(config: &ServerConfig, durable: bool) -> EngineConfig {
        EngineConfig { record_events: config.console, record_changes: durable, ..config.engine.clone() }
    }

    async fn bind_any(config: ServerConfig, store: Option<AnyStore>) -> Result<Server, ServerError> {
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| ServerError::Bind { addr: config.bind, source })?;
        let engine_config = Server::engine_config(&config, store.is_some());
        let (engine, store) = match store {
            None => {
                tracing::info!("storage: memory (state is lost when the server stops)");
                (Engine::new(engine_config), None)
            }
            Some(mut store) => {
                let engine = restore(&mut store, engine_config)?;
                (engine, Some(store))
            }
        };
        Server::start(config, listener, engine, store, None)
    }

    fn start(
        config: ServerConfig,
        listener: TcpListener,
        engine: Engine,
        store: Option<AnyStore>,
        node: Option<Arc<crate::messaging::pg_shared::Node>>,
    ) -> Result<Server, ServerError> {
        let console = match config.console {
            true => Some(ServerConsole::start().map_err(|source| ServerError::Bind { addr: config.bind, source })?),
            false => None,
        };
        let (committer, queue) = match store {
            Some(store) => {
                let (tx, rx) = mpsc::channel();
                (Some(tx), Some((store, rx)))
            }
            None => (None, None),
        };
        let rpclog = match &config.log_rpc {
            None => None,
            Some(host) => Some(
                crate::messaging::rpclog::Reporter::start(host.clone())
                    .map_err(|source| ServerError::Bind { addr: config.bind, source })?,
            ),
        };
        let shared = Arc::new(Shared {
            node,
            rpclog,
            recent_connects: Mutex::new(HashMap::new()),
            engine: Mutex::new(engine),
            delivery_slots: Arc::new(Semaphore::new(config.max_deliveries.max(1))),
            config,
            work: Notify::new(),
            console,
            stats: Arc::new(Stats::default()),
            committer,
            degraded: AtomicBool::new(false),
            committer_thread: Mutex::new(None),
        });
        if let Some((store, rx)) = queue {
            let weak = Arc::downgrade(&shared);
            let thread = std::thread::Builder::new()
                .name("cartero-committer".into())
                .spawn(move || run_committer(store, rx, weak))
                .map_err(|source| ServerError::Bind { addr: shared.config.bind, source })?;
            *shared.committer_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        }
        let server = Server { listener, shared };
        if let Some(console) = &server.shared.console {
            let addr =
                server.local_addr().map_err(|source| ServerError::Bind { addr: server.shared.config.bind, source })?;
            console.print(format!("s> init server {}:{}", display_ip(addr.ip()), addr.port()));
            console.print("s>".to_string());
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
        let node = shared.node.clone().map(|node| {
            let printer = shared.clone();
            let hooks = crate::messaging::pg_shared::Hooks {
                print: Box::new(move |event| printer.print(event)),
                stats: shared.stats.clone(),
            };
            tokio::spawn(node.run(hooks, shared.config.max_deliveries, stop.clone(), deliveries.clone()))
        });
        let connection_slots = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));

        tokio::pin!(shutdown);
        while let Some((stream, peer)) = crate::net::accept(&listener, &mut shutdown).await {
            let Ok(permit) = connection_slots.clone().try_acquire_owned() else {
                shared.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "refused connection from {peer}: {} connections in progress",
                    shared.config.max_connections
                );
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
        if let Some(node) = node {
            let _ = node.await;
        }
        deliveries.close();
        deliveries.wait().await;
        shared.close_store().await;
        let st = &shared.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            "stopped: {} ({} bad or idle), {} refused, {} delivered, {} failed, {} ({} failed)",
            count(n(&st.requests), "request"),
            n(&st.bad_requests),
            count(n(&st.refused_connections), "connection"),
            count_as(n(&st.deliveries_ok), "push", "pushes"),
            n(&st.deliveries_failed),
            count(n(&st.commits), "store commit"),
            n(&st.commit_failures)
        );
        if let Some(r) = &shared.rpclog {
            let s = r.stats();
            tracing::info!(
                "RPC log: {} operations reported, {} failed, {} dropped (queue full)",
                n(&s.reported),
                n(&s.failed),
                n(&s.dropped)
            );
        }
        // The last console lines (a request answered during the shutdown) are still queued.
        let _ = tokio::task::spawn_blocking(move || shared.console.as_ref().map(ServerConsole::flush)).await;
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
    /// Not a byte arrived before the request deadline.
    Idle,
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
            Err(_) if !decoder.is_started() && buf.is_empty() => return Err(ReadEnd::Idle),
            Err(_) => {
                return Err(ReadEnd::Bad(decoder.operation(), "request not finished within the request timeout".into()))
            }
        }
    }
}

async fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let deadline = Instant::now() + shared.config.request_timeout;
    let _ = stream.set_nodelay(true);
    let peer_ip = canonical_ip(peer.ip());
    let mut hold = None;
    // The alias of a successful CONNECT: its reply time starts the retry window of SPEC 2.3.
    let mut connected = None;
    // Users a shared node woke with this request: their pushes go once the reply is out.
    let mut wake = Vec::new();
    let reply = match read_request(shared, &mut stream, deadline).await {
        // The seam: on a shared database its node answers, not the (empty) engine.
        Ok(request) if shared.node.is_some() => answer_on_node(shared, &request, peer_ip, &mut wake).await,
        Ok(request) => {
            shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            // Queued, never waited for: a slow or absent log service changes nothing here.
            if let Some(rpclog) = &shared.rpclog {
                rpclog.report(crate::messaging::rpclog::LogEntry::of(&request));
            }
            let op = request.operation();
            if let Request::Disconnect { alias } = &request {
                // SPEC 2.4: the reply waits for the pushes in flight to this user and the
                // acknowledgements owed to it, within the delivery timeout.
                let until = Instant::now() + shared.config.engine.delivery_timeout;
                while shared.engine().disconnect_should_wait(peer_ip, alias) && Instant::now() < until {
                    shared.work.notify_one();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let (reply, durable, events) = {
                let mut engine = shared.engine();
                if shared.degraded.load(Ordering::Acquire)
                    && !matches!(op, Operation::ConnectedUsers | Operation::Users)
                {
                    // The store cannot take writes: refuse rather than answer what would be lost.
                    (Reply::failure(op), None, Vec::new())
                } else {
                    let (reply, h) = engine.handle_request_held(peer_ip, &request);
                    hold = Some(h);
                    let events: Vec<Event> = std::iter::from_fn(|| engine.poll_event()).collect();
                    (reply, shared.queue_changes(&mut engine), events)
                }
            };
            // A reply of 0 leaves only once its change is durable; its console lines say
            // what the client is told.
            let durable = match durable {
                Some(durable) => matches!(durable.await, Ok(true)),
                None => true,
            };
            for event in &events {
                match (durable, event.as_failure()) {
                    (true, _) => shared.print(event),
                    (false, Some(failed)) => shared.print(&failed),
                    (false, None) => {}
                }
            }
            let reply = if durable { reply } else { Reply::failure(op) };
            if let (Reply::Connect(ConnectReply::Ok), Request::Connect { alias, .. }) = (&reply, &request) {
                connected = Some(alias.clone());
            }
            let mut bytes = BytesMut::new();
            reply.encode(shared.config.wire.codes, &mut bytes);
            Some(bytes)
        }
        Err(ReadEnd::Empty) => None,
        Err(ReadEnd::Idle) => {
            // Idle connections are what floods make: not worth a line each by default.
            shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("connection from {peer} sent nothing within the request timeout");
            None
        }
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
    if let Some(bytes) = reply {
        match timeout_at(deadline.max(Instant::now() + Duration::from_secs(1)), stream.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("reply to {peer} not written: {e}"),
            Err(_) => tracing::debug!("reply to {peer} not written in time"),
        }
    }
    if let Some(alias) = connected {
        shared.connected_at(alias);
    }
    if let Some(node) = shared.node.as_ref().filter(|_| !wake.is_empty()) {
        node.wake(wake);
    }
    // The pushes this request caused may go now that its reply is out.
    if let Some(hold) = hold {
        shared.engine().release(hold);
        shared.work.notify_one();
    }
    linger(&mut stream).await;
}

/// A request answered by the shared database's node ([`Storage::Shared`]): the reply's
/// bytes; `wake` gets the users whose pushes may go once the reply is out.
async fn answer_on_node(
    shared: &Shared,
    request: &Request,
    peer_ip: IpAddr,
    wake: &mut Vec<Bytes>,
) -> Option<BytesMut> {
    let node = shared.node.as_ref()?;
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(rpclog) = &shared.rpclog {
        rpclog.report(crate::messaging::rpclog::LogEntry::of(request));
    }
    let answer = node.answer(peer_ip, request).await;
    answer.events.iter().for_each(|event| shared.print(event));
    *wake = answer.wake;
    let mut bytes = BytesMut::new();
    answer.reply.encode(shared.config.wire.codes, &mut bytes);
    Some(bytes)
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
            let paused = shared.degraded.load(Ordering::Acquire);
            while let (false, Ok(slot)) = (paused, shared.delivery_slots.clone().try_acquire_owned()) {
                let Some(delivery) = engine.poll_delivery(now) else { break };
                let shared = shared.clone();
                tasks.spawn(async move {
                    deliver(&shared, delivery).await;
                    drop(slot);
                    shared.work.notify_one();
                });
            }
            shared.flush_events(&mut engine);
            let _ = shared.queue_changes(&mut engine);
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
        Ok(bytes) => match timeout_at(Instant::from_std(delivery.deadline), push_retrying(shared, &delivery, bytes))
            .await
        {
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
    let _ = shared.queue_changes(&mut engine);
}

/// [`push`], retried while the connection is refused within the retry window after the
/// user's CONNECT reply (SPEC 2.3), pausing 20 ms, 40 ms, 80 ms... (the caller bounds the
/// whole by the delivery timeout).
async fn push_retrying(shared: &Shared, delivery: &Delivery, bytes: Bytes) -> io::Result<()> {
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        match push(delivery.addr, bytes.clone()).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let window = shared.retry_until(&delivery.to);
                if window.is_none_or(|until| Instant::now() + pause >= until) {
                    return Err(e);
                }
                tracing::debug!("push to {} refused; retried in {pause:?}", String::from_utf8_lossy(&delivery.to));
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// Most bytes a listener may send back before the push counts as failed.
const MAX_LISTENER_CHATTER: usize = 64 * 1024;

/// One push, as SPEC 3 ends it: write, shut down our side, and read until the listener
/// closes. A clean close is the proof of delivery; a reset is a failure.
pub(crate) async fn push(addr: SocketAddr, bytes: Bytes) -> io::Result<()> {
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

/// Most requests' changes written in one transaction.
const MAX_BATCH: usize = 4096;

/// The committer thread: writes queued changes in batches (group commit: one fsync for all
/// the requests waiting at that moment), tells the engine what is durable, and answers the
/// requests waiting for it. Ends when the server is gone.
fn run_committer(mut store: AnyStore, queue: mpsc::Receiver<Pending>, shared: Weak<Shared>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let last = batch.iter().any(|p| p.stop);
        let result = store.commit(batch.iter().flat_map(|p| p.changes.iter()));
        let Some(shared) = shared.upgrade() else { return };
        match result {
            Ok(()) => {
                shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                let seq = batch.iter().map(|p| p.seq).max().unwrap_or(0);
                shared.engine().mark_durable(seq);
                shared.work.notify_one();
                for pending in batch {
                    if let Some(done) = pending.done {
                        let _ = done.send(true);
                    }
                }
                if last {
                    return; // the store closes as it drops
                }
            }
            Err(e) => {
                shared.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("storage write failed: {e}; writes are refused until the store recovers");
                shared.degraded.store(true, Ordering::Release);
                for pending in batch {
                    if let Some(done) = pending.done {
                        let _ = done.send(false);
                    }
                }
                recover(&mut store, &queue, &shared);
            }
        }
    }
}

/// After a failed write: waits until the store takes writes again, then rebuilds the engine
/// from it (the memory still holds the failed changes) and serves writes again.
fn recover(store: &mut AnyStore, queue: &mpsc::Receiver<Pending>, shared: &Shared) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if store.probe().is_err() {
            continue;
        }
        // No push of the old engine may be in flight when the new one starts (delivery ids
        // start over). Pushes are paused now, so this ends within the delivery timeout.
        while shared.delivery_slots.available_permits() < shared.config.max_deliveries.max(1) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let restored = store.load().map_err(ServerError::from).and_then(|(users, messages)| {
            let config = shared.engine().config().clone();
            Engine::restore(config, users, messages).map_err(ServerError::from)
        });
        match restored {
            Ok(engine) => {
                let mut current = shared.engine();
                *current = engine;
                // Whatever the old engine queued since the failure never reached the store.
                while let Ok(stale) = queue.try_recv() {
                    if let Some(done) = stale.done {
                        let _ = done.send(false);
                    }
                }
                shared.degraded.store(false, Ordering::Release);
                drop(current);
                tracing::info!("storage recovered: serving writes again");
                shared.work.notify_one();
                return;
            }
            Err(e) => tracing::error!("storage takes writes again but cannot be read back: {e}"),
        }
    }
}
