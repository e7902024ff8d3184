//! N identical nodes on one PostgreSQL database (`cartero serve --store URL --shared`).
//!
//! A single server ([`pg`](super::pg)) answers from its in-memory [`Engine`] and writes what
//! changed; a node of this module keeps nothing between requests: **per request the database is
//! the truth.** A node opens a transaction, locks the users the request names (transaction-level
//! advisory locks, one per alias, taken in key order so two requests never deadlock; they also
//! cover an alias not registered yet, which a row lock could not), reads their rows, restores
//! them into a scratch [`Engine`] with [`Engine::restore`], lets it answer, writes the changes it
//! recorded, commits, and only then replies. The sender's id comes from its locked `last_id`
//! (the engine's [`next_message_id`](super::engine::next_message_id) wraps 4294967295 to 1), so
//! concurrent SENDs of one sender through different nodes get unique, gap-free ids.
//!
//! **Deliveries** go out under a per-recipient lease, `pg_try_advisory_lock` on the node's
//! control connection: the holder pushes the recipient's owed acknowledgements and then its
//! messages, oldest first, one at a time; each push is followed by a transaction that removes
//! what was pushed (and owes the sender its acknowledgement), and the lease is released when
//! nothing is left. A node killed with -9 drops its control connection and with it its leases;
//! its unfinished push stays in the table and another node makes it again (at least once).
//!
//! **Waking**: after replying, the node that committed a stored message or a connection tries
//! the lease itself and sends `NOTIFY cartero, '<alias in hex>'`; every node `LISTEN`s on its
//! control connection and tries the lease too. A slow poll (connected users with pending rows)
//! makes a lost notification, or a dead node's unfinished delivery, only a delay.
//!
//! **Clocks**: nothing compares two nodes' clocks. A delivery's timeout runs on the monotonic
//! clock of the node that holds the lease; the two-second window in which a refused push is
//! retried after a CONNECT (SPEC 2.3) is measured by the database's clock (`conn_at`).
//!
//! Each node keeps a small pool of connections for requests and delivery transactions; waiting
//! for one is bounded (`pool_wait`): an exhausted pool answers "any other error", never hangs.
//! Every statement is bounded by `statement_timeout`. A database lost while running makes
//! requests fail with "any other error"; connections are made again as the database returns.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Statement};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::messaging::engine::{Change, Engine, EngineConfig, Event, UserRecord};
use crate::messaging::pg::{error_text, sql, to_u32, OWNER_LOCK};
use crate::messaging::server::Stats;
use crate::messaging::store::StoreError;
use crate::messaging::wire::{ConnectReply, Push, PushNames, Reply, Request, SendReply};

/// How a node is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `postgres://user[:password]@host[:port]/db`.
    pub url: String,
    /// Database connections for requests and delivery transactions (the control connection,
    /// holding leases and listening, is one more).
    pub pool: usize,
    /// How long a request waits for a free connection before it is answered "any other error".
    pub pool_wait: Duration,
    /// How often the node looks for work a notification may have missed.
    pub poll: Duration,
    /// The longest any one statement may run.
    pub statement_timeout: Duration,
}

impl NodeConfig {
    pub fn new(url: impl Into<String>) -> NodeConfig {
        NodeConfig {
            url: url.into(),
            pool: 8,
            pool_wait: Duration::from_secs(2),
            poll: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// What a node answers to one request.
pub struct Answer {
    pub reply: Reply,
    /// Console lines (SPEC 5), as the client is told.
    pub events: Vec<Event>,
    /// Users with new work (a stored message, a connection): wake them once the reply is out.
    pub wake: Vec<Bytes>,
}

/// Why a request could not be answered from the database.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no database connection free within {0:?}")]
    PoolExhausted(Duration),
    #[error("{0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Database(error_text(&e))
    }
}

/// A pooled connection with its statements prepared.
struct Conn {
    client: Client,
    st: Statements,
}

struct Statements {
    lock: Statement,
    users: Statement,
    listing: Statement,
    user_count: Statement,
    pending: Statement,
    register: Statement,
    unregister_user: Statement,
    unregister_messages: Statement,
    drop_acks: Statement,
    connect: Statement,
    disconnect: Statement,
    store: Statement,
    last_id: Statement,
    recipient: Statement,
    next_ack: Statement,
    next_message: Statement,
    delivered: Statement,
    owe_ack: Statement,
    ack_done: Statement,
    lost: Statement,
    has_work: Statement,
    disconnect_waits: Statement,
}

const USER_COLUMNS: &str = "alias, full_name, birth_date, last_id, conn_ip, conn_port, uid";

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            lock: c.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            users: c
                .prepare(&format!(
                    "SELECT {USER_COLUMNS} FROM cartero_users WHERE alias = ANY($1) ORDER BY conn_order NULLS LAST, uid"
                ))
                .await?,
            listing: c
                .prepare(&format!(
                    "SELECT {USER_COLUMNS} FROM cartero_users WHERE conn_ip IS NOT NULL OR alias = $1 \
                     ORDER BY conn_order NULLS LAST, uid"
                ))
                .await?,
            user_count: c.prepare("SELECT count(*) FROM (SELECT 1 FROM cartero_users LIMIT $1) u").await?,
            pending: c
                .prepare(
                    "SELECT (SELECT count(*) FROM (SELECT 1 FROM cartero_messages WHERE recipient = $1 LIMIT $2) a), \
                     (SELECT count(*) FROM (SELECT 1 FROM cartero_messages LIMIT $3) b)",
                )
                .await?,
            register: c.prepare(sql::REGISTER).await?,
            unregister_user: c.prepare(sql::UNREGISTER_USER).await?,
            unregister_messages: c.prepare(sql::UNREGISTER_MESSAGES).await?,
            drop_acks: c.prepare(sql::DROP_ACKS).await?,
            connect: c.prepare(sql::CONNECT).await?,
            disconnect: c.prepare(sql::DISCONNECT).await?,
            store: c.prepare(sql::STORE).await?,
            last_id: c.prepare(sql::LAST_ID).await?,
            recipient: c
                .prepare(
                    "SELECT conn_ip, conn_port, conn_order, uid, \
                     GREATEST(0, 2000 - EXTRACT(EPOCH FROM clock_timestamp() - conn_at) * 1000)::bigint \
                     FROM cartero_users WHERE alias = $1",
                )
                .await?,
            next_ack: c.prepare("SELECT seq, id, file FROM cartero_acks WHERE alias = $1 ORDER BY seq LIMIT 1").await?,
            next_message: c
                .prepare(
                    "SELECT seq, sender, id, body, file, sender_uid FROM cartero_messages \
                     WHERE recipient = $1 ORDER BY seq LIMIT 1",
                )
                .await?,
            delivered: c.prepare("DELETE FROM cartero_messages WHERE seq = $1").await?,
            owe_ack: c
                .prepare(
                    "INSERT INTO cartero_acks (alias, uid, id, file) SELECT alias, uid, $3::bigint, $4::bytea FROM cartero_users \
                     WHERE alias = $1 AND uid = $2 AND conn_ip IS NOT NULL",
                )
                .await?,
            ack_done: c.prepare("DELETE FROM cartero_acks WHERE seq = $1").await?,
            lost: c
                .prepare(
                    "UPDATE cartero_users SET conn_ip = NULL, conn_port = NULL, conn_order = NULL, conn_at = NULL \
                     WHERE alias = $1 AND conn_order = $2",
                )
                .await?,
            has_work: c
                .prepare(
                    "SELECT EXISTS (SELECT 1 FROM cartero_users WHERE alias = $1 AND conn_ip IS NOT NULL) AND \
                     (EXISTS (SELECT 1 FROM cartero_acks WHERE alias = $1) \
                      OR EXISTS (SELECT 1 FROM cartero_messages WHERE recipient = $1))",
                )
                .await?,
            disconnect_waits: c
                .prepare(
                    "SELECT EXISTS (SELECT 1 FROM cartero_acks WHERE alias = $1) OR EXISTS ( \
                     SELECT 1 FROM cartero_messages m JOIN cartero_users s ON s.alias = m.sender AND s.uid = m.sender_uid \
                     JOIN cartero_users r ON r.alias = m.recipient \
                     WHERE m.sender = $1 AND r.conn_ip IS NOT NULL) \
                     FROM cartero_users WHERE alias = $1 AND conn_ip = $2",
                )
                .await?,
        })
    }
}

/// A bounded pool of connections: at most `size` in use, a wait for one bounded by `wait`.
/// A connection found closed is replaced by a new one.
struct Pool {
    config: Config,
    slots: Semaphore,
    idle: Mutex<Vec<Conn>>,
    wait: Duration,
    statement_timeout: Duration,
}

/// A connection taken from the pool; it goes back when dropped, unless it was closed.
struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Pooled<'_> {
    /// The connection (there from creation to drop).
    fn conn(&mut self) -> Result<&mut Conn, Failure> {
        self.conn.as_mut().ok_or_else(|| Failure::Database("no connection".into()))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take().filter(|c| !c.client.is_closed()) {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}

impl Pool {
    async fn get(&self) -> Result<Pooled<'_>, Failure> {
        let slot = tokio::time::timeout(self.wait, self.slots.acquire())
            .await
            .map_err(|_| Failure::PoolExhausted(self.wait))?
            .map_err(|_| Failure::PoolExhausted(self.wait))?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.client.is_closed());
            idle.pop()
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(Pooled { pool: self, conn: Some(conn), _slot: slot })
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let client = connect(&self.config).await?;
        client.batch_execute(&format!("SET statement_timeout = {}", self.statement_timeout.as_millis())).await?;
        let st = Statements::prepare(&client).await?;
        Ok(Conn { client, st })
    }
}

/// A connection whose driving task runs on the runtime (it ends with the client).
async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("database connection ended: {e}");
        }
    });
    Ok(client)
}

/// The node's control connection: it holds the owner lock (shared) and the delivery leases,
/// and listens for notifications. Replaced when it is lost (its leases are lost with it).
struct Control {
    client: Client,
}

/// One node of a shared database. See the module docs.
pub struct Node {
    name: String,
    engine: EngineConfig,
    push_names: PushNames,
    poll: Duration,
    pool: Pool,
    control: Mutex<Option<Arc<Control>>>,
    wake_tx: mpsc::Sender<Bytes>,
    wake_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Recipients this node is delivering to, each with "woken again since it started".
    active: Mutex<HashMap<Bytes, bool>>,
}

/// A fixed 64-bit hash (FNV-1a) of `alias` in a key space: the same on every node.
fn key(space: &[u8], alias: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in space.iter().chain([0u8].iter()).chain(alias) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The transaction lock of requests naming `alias`.
fn user_key(alias: &[u8]) -> i64 {
    key(b"cartero-user", alias)
}

/// The delivery lease of `alias`.
fn lease_key(alias: &[u8]) -> i64 {
    key(b"cartero-lease", alias)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Bytes> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// A user row (columns [`USER_COLUMNS`]) as [`Engine::restore`] takes it.
fn user_record(row: &tokio_postgres::Row) -> Result<UserRecord, Failure> {
    let bad = |what: &str| Failure::Database(format!("a stored user has a bad {what}"));
    let ip: Option<String> = row.try_get(4)?;
    let port: Option<i32> = row.try_get(5)?;
    let connection = match (ip, port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(
            ip.parse().map_err(|_| bad("address"))?,
            u16::try_from(port).map_err(|_| bad("port"))?,
        )),
        _ => None,
    };
    Ok(UserRecord {
        alias: Bytes::from(row.try_get::<_, Vec<u8>>(0)?),
        full_name: Bytes::from(row.try_get::<_, Vec<u8>>(1)?),
        birth_date: row.try_get::<_, Option<Vec<u8>>>(2)?.map(Bytes::from),
        last_id: to_u32(row.try_get(3)?),
        connection,
        uid: row.try_get::<_, i64>(6)?.max(0) as u64,
        acks: Vec::new(),
    })
}

/// One push to make for a recipient, read under its lease.
enum Work {
    Ack { seq: i64, push: Push },
    Message { seq: i64, push: Push, sender: Bytes, sender_uid: i64, id: u32, file: Option<Bytes> },
}

/// Tells the server's console and counters what deliveries did.
pub struct Hooks {
    pub print: Box<dyn Fn(&Event) + Send + Sync>,
    pub stats: Arc<Stats>,
}

/// Notifications and wake-ups waiting for the dispatcher, at most.
const WAKE_QUEUE: usize = 65_536;

impl Node {
    /// Connects, migrates the schema (serialized with other nodes starting at once) and
    /// checks that no single server owns the database.
    pub async fn open(config: &NodeConfig, engine: EngineConfig, push_names: PushNames) -> Result<Node, StoreError> {
        let mut pg = Config::from_str(&config.url)
            .map_err(|e| StoreError::Database { store: "the --store address".into(), detail: e.to_string() })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        pg.keepalives_idle(Duration::from_secs(5)).keepalives_interval(Duration::from_secs(2));
        pg.keepalives_retries(3).tcp_user_timeout(Duration::from_secs(15));
        pg.application_name("cartero-node");
        let name = crate::messaging::pg::describe(&postgres::Config::from(pg.clone()));
        // The migration is the single server's own code, on its blocking client.
        let blocking = postgres::Config::from(pg.clone());
        let store = name.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let mut client = blocking
                .connect(postgres::NoTls)
                .map_err(|e| StoreError::Unreachable { store: store.clone(), detail: error_text(&e) })?;
            crate::messaging::pg::migrate(&mut client)
                .map_err(|e| StoreError::Database { store: store.clone(), detail: error_text(&e) })
        })
        .await
        .map_err(|e| StoreError::Database { store: name.clone(), detail: e.to_string() })??;
        let (wake_tx, wake_rx) = mpsc::channel(WAKE_QUEUE);
        let node = Node {
            engine: EngineConfig { record_events: true, record_changes: true, ..engine },
            push_names,
            poll: config.poll,
            pool: Pool {
                config: pg,
                slots: Semaphore::new(config.pool.max(1)),
                idle: Mutex::new(Vec::new()),
                wait: config.pool_wait,
                statement_timeout: config.statement_timeout,
            },
            control: Mutex::new(None),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
            active: Mutex::new(HashMap::new()),
            name,
        };
        node.open_control().await?;
        // A first request connection, so that a database refusing them fails the start.
        drop(
            node.pool
                .get()
                .await
                .map_err(|e| StoreError::Database { store: node.name.clone(), detail: e.to_string() })?,
        );
        Ok(node)
    }

    /// The database, for logs: `postgres://user@host:port/db`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// (Re)opens the control connection: the shared owner lock, `LISTEN cartero`, and a task
    /// forwarding notifications to the dispatcher. Its end clears it.
    async fn open_control(&self) -> Result<(), StoreError> {
        let unreachable =
            |e: tokio_postgres::Error| StoreError::Unreachable { store: self.name.clone(), detail: error_text(&e) };
        let failed =
            |e: tokio_postgres::Error| StoreError::Database { store: self.name.clone(), detail: error_text(&e) };
        let (client, mut connection) = self.pool.config.connect(NoTls).await.map_err(unreachable)?;
        let wake = self.wake_tx.clone();
        // Set once known; the connection must be driven before its first query returns.
        let own = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let own_pid = own.clone();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n))
                        if n.channel() == "cartero" && n.process_id() != own_pid.load(Ordering::Relaxed) =>
                    {
                        if let Some(alias) = unhex(n.payload()) {
                            let _ = wake.try_send(alias);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("the control connection to the database ended: {e}");
                        return;
                    }
                }
            }
        });
        let owned: bool = client
            .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&OWNER_LOCK])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(failed)?;
        if !owned {
            return Err(StoreError::InUse { store: self.name.clone() });
        }
        client.batch_execute("LISTEN cartero").await.map_err(failed)?;
        // Notifications this node sent itself are not news to it.
        let pid: i32 =
            client.query_one("SELECT pg_backend_pid()", &[]).await.and_then(|r| r.try_get(0)).map_err(failed)?;
        own.store(pid, Ordering::Relaxed);
        *self.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Control { client }));
        Ok(())
    }

    /// The control connection, if it is up.
    fn control(&self) -> Option<Arc<Control>> {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if control.as_ref().is_some_and(|c| c.client.is_closed()) {
            *control = None;
        }
        control.clone()
    }

    /// Answers `request` from the database; a reply of 0 leaves only after its commit.
    pub async fn answer(&self, peer: IpAddr, request: &Request) -> Answer {
        if let Request::Disconnect { alias } = request {
            self.wait_before_disconnect(peer, alias).await;
        }
        let mut events = Vec::new();
        match self.try_answer(peer, request, &mut events).await {
            Ok((reply, wake)) => Answer { reply, events, wake },
            Err(e) => {
                tracing::warn!("{} from {peer} answered \"any other error\": {e}", request.operation());
                let events = events.iter().filter_map(Event::as_failure).collect();
                Answer { reply: Reply::failure(request.operation()), events, wake: Vec::new() }
            }
        }
    }

    async fn try_answer(
        &self,
        peer: IpAddr,
        request: &Request,
        events: &mut Vec<Event>,
    ) -> Result<(Reply, Vec<Bytes>), Failure> {
        let mut pooled = self.pool.get().await?;
        let Conn { client, st } = pooled.conn()?;
        let named: Vec<&Bytes> = match request {
            Request::ConnectedUsers { alias } | Request::Users { alias } => {
                // Read only: every connected user, and the requester.
                let alias: &[u8] = alias.as_deref().unwrap_or(&[]);
                let users = client.query(&st.listing, &[&alias]).await?;
                let users = users.iter().map(user_record).collect::<Result<Vec<_>, _>>()?;
                let mut engine =
                    Engine::restore(self.engine.clone(), users, []).map_err(|e| Failure::Database(e.to_string()))?;
                let reply = engine.handle_request(peer, request);
                events.extend(std::iter::from_fn(|| engine.poll_event()));
                return Ok((reply, Vec::new()));
            }
            Request::Register { alias, .. }
            | Request::Unregister { alias }
            | Request::Connect { alias, .. }
            | Request::Disconnect { alias } => vec![alias],
            Request::Send { sender, recipient, .. } | Request::SendAttach { sender, recipient, .. } => {
                vec![sender, recipient]
            }
        };
        let tx = client.transaction().await?;
        let mut keys: Vec<i64> = named.iter().map(|a| user_key(a)).collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            tx.execute(&st.lock, &[&k]).await?;
        }
        let aliases: Vec<&[u8]> = named.iter().map(|a| &a[..]).collect();
        let users = tx.query(&st.users, &[&aliases]).await?;
        let users = users.iter().map(user_record).collect::<Result<Vec<_>, _>>()?;
        // The limits the scratch engine cannot see: it holds only the named users, no mail.
        let mut config = self.engine.clone();
        match request {
            Request::Register { .. } if users.is_empty() => {
                let limit = i64::try_from(config.max_users).unwrap_or(i64::MAX);
                let count: i64 = tx.query_one(&st.user_count, &[&limit]).await?.try_get(0)?;
                config.max_users = if count >= limit { 0 } else { usize::MAX };
            }
            Request::Send { recipient, .. } | Request::SendAttach { recipient, .. } => {
                let per_user = i64::try_from(config.max_pending_per_user).unwrap_or(i64::MAX);
                let total = i64::try_from(config.max_pending_total).unwrap_or(i64::MAX);
                let row = tx.query_one(&st.pending, &[&&recipient[..], &per_user, &total]).await?;
                let (mine, all): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                config.max_pending_per_user = if mine >= per_user { 0 } else { usize::MAX };
                config.max_pending_total = if all >= total { 0 } else { usize::MAX };
            }
            _ => {}
        }
        let mut engine = Engine::restore(config, users, []).map_err(|e| Failure::Database(e.to_string()))?;
        let reply = engine.handle_request(peer, request);
        events.extend(std::iter::from_fn(|| engine.poll_event()));
        let changes: Vec<Change> = std::iter::from_fn(|| engine.poll_change()).collect();
        for change in &changes {
            match change {
                Change::Registered { alias, full_name, birth_date } => {
                    tx.execute(&st.register, &[&&alias[..], &&full_name[..], &birth_date.as_deref()]).await?;
                }
                Change::Unregistered { alias } => {
                    tx.execute(&st.unregister_user, &[&&alias[..]]).await?;
                    tx.execute(&st.unregister_messages, &[&&alias[..]]).await?;
                    tx.execute(&st.drop_acks, &[&&alias[..]]).await?;
                }
                Change::Connected { alias, addr } => {
                    let port = i32::from(addr.port());
                    tx.execute(&st.connect, &[&addr.ip().to_string(), &port, &&alias[..]]).await?;
                }
                Change::Disconnected { alias } => {
                    tx.execute(&st.disconnect, &[&&alias[..]]).await?;
                    tx.execute(&st.drop_acks, &[&&alias[..]]).await?;
                }
                Change::Stored { recipient, sender, id, body, file } => {
                    let id = i64::from(*id);
                    tx.execute(&st.store, &[&&recipient[..], &&sender[..], &id, &&body[..], &file.as_deref()]).await?;
                    tx.execute(&st.last_id, &[&id, &&sender[..]]).await?;
                }
                // Made by deliveries only, never by a request.
                Change::Removed { .. } | Change::AckOwed { .. } | Change::AckDone { .. } => {
                    return Err(Failure::Database("a request made a delivery's change".into()));
                }
            }
        }
        tx.commit().await?;
        let wake = match (&reply, request) {
            (Reply::Connect(ConnectReply::Ok), Request::Connect { alias, .. }) => vec![alias.clone()],
            (Reply::Send(SendReply::Ok { .. }), Request::Send { recipient, .. })
            | (Reply::SendAttach(SendReply::Ok { .. }), Request::SendAttach { recipient, .. }) => {
                vec![recipient.clone()]
            }
            _ => Vec::new(),
        };
        Ok((reply, wake))
    }

    /// SPEC 2.4: a DISCONNECT from the user's own address waits, within the delivery timeout,
    /// while acknowledgements are owed to it or messages it sent wait for connected users.
    async fn wait_before_disconnect(&self, peer: IpAddr, alias: &[u8]) {
        let until = Instant::now() + self.engine.delivery_timeout;
        let peer = peer.to_string();
        while Instant::now() < until {
            let waits = match self.pool.get().await {
                Ok(mut pooled) => match pooled.conn() {
                    Ok(Conn { client, st }) => client
                        .query_opt(&st.disconnect_waits, &[&alias, &peer])
                        .await
                        .ok()
                        .flatten()
                        .and_then(|row| row.try_get::<_, bool>(0).ok())
                        .unwrap_or(false),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if !waits {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After a reply: tries the users' leases here and tells the other nodes.
    pub fn wake(&self, aliases: Vec<Bytes>) {
        for alias in aliases {
            if let Some(control) = self.control() {
                let payload = hex(&alias);
                tokio::spawn(async move {
                    let _ = control.client.execute("SELECT pg_notify('cartero', $1)", &[&payload]).await;
                });
            }
            // Full: the poll finds the work later.
            let _ = self.wake_tx.try_send(alias);
        }
    }

    /// Runs the node's deliveries until `stop`: the dispatcher of wake-ups, the slow poll,
    /// and the control connection's upkeep. Deliveries run as tasks of `tasks`, at most
    /// `max_deliveries` at once.
    pub async fn run(
        self: Arc<Self>,
        hooks: Hooks,
        max_deliveries: usize,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) {
        let Some(mut wakes) = self.wake_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let hooks = Arc::new(hooks);
        let slots = Arc::new(Semaphore::new(max_deliveries.max(1)));
        let poller = tokio::spawn(self.clone().poll_loop(stop.clone()));
        loop {
            let alias = tokio::select! {
                _ = stop.cancelled() => break,
                alias = wakes.recv() => match alias { Some(a) => a, None => break },
            };
            {
                let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(again) = active.get_mut(&alias) {
                    *again = true;
                    continue;
                }
                active.insert(alias.clone(), false);
            }
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            };
            let (node, hooks, stop) = (self.clone(), hooks.clone(), stop.clone());
            tasks.spawn(async move {
                node.serve_recipient(&alias, &hooks, &stop).await;
                drop(slot);
            });
        }
        poller.abort();
    }

    /// Every `poll`: reopens a lost control connection, and wakes the connected users that
    /// have pending pushes (a lost notification, a dead node's unfinished delivery).
    async fn poll_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
            if self.control().is_none() {
                match self.open_control().await {
                    Ok(()) => tracing::info!("control connection to {} open again", self.name),
                    Err(e) => {
                        tracing::warn!("no control connection (deliveries paused): {e}");
                        continue;
                    }
                }
            }
            let Ok(mut pooled) = self.pool.get().await else { continue };
            let Ok(conn) = pooled.conn() else { continue };
            let rows = conn
                .client
                .query(
                    "SELECT alias FROM cartero_users u WHERE conn_ip IS NOT NULL AND \
                     (EXISTS (SELECT 1 FROM cartero_acks a WHERE a.alias = u.alias) \
                      OR EXISTS (SELECT 1 FROM cartero_messages m WHERE m.recipient = u.alias))",
                    &[],
                )
                .await;
            drop(pooled);
            for row in rows.unwrap_or_default() {
                if let Ok(alias) = row.try_get::<_, Vec<u8>>(0) {
                    let _ = self.wake_tx.try_send(Bytes::from(alias));
                }
            }
        }
    }

    /// Delivers to `alias` under its lease while there is work, then lets it go.
    async fn serve_recipient(&self, alias: &Bytes, hooks: &Hooks, stop: &CancellationToken) {
        loop {
            if let Some(control) = self.control() {
                let key = lease_key(alias);
                let leased = control
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .await
                    .and_then(|r| r.try_get::<_, bool>(0))
                    .unwrap_or(false);
                if leased {
                    self.deliver_all(alias, &control, hooks, stop).await;
                    let _ = control.client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
                    // Work committed while the lease was held here may have been refused the
                    // lease elsewhere: look again now that it is free.
                    if !stop.is_cancelled() && self.has_work(alias).await {
                        continue;
                    }
                }
            }
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            match active.get_mut(alias) {
                Some(again) if *again && !stop.is_cancelled() => *again = false,
                _ => {
                    active.remove(alias);
                    return;
                }
            }
        }
    }

    async fn has_work(&self, alias: &[u8]) -> bool {
        let Ok(mut pooled) = self.pool.get().await else { return false };
        let Ok(Conn { client, st }) = pooled.conn() else { return false };
        client.query_one(&st.has_work, &[&alias]).await.and_then(|r| r.try_get(0)).unwrap_or(false)
    }

    /// Pushes to `alias` until it has nothing left, its push fails, or the database does.
    /// A lost control connection lost the lease with it: the push in hand is the last one.
    async fn deliver_all(&self, alias: &Bytes, control: &Control, hooks: &Hooks, stop: &CancellationToken) {
        while !stop.is_cancelled() && !control.client.is_closed() {
            let next = match self.next_work(alias).await {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("deliveries to {} paused: {e}", String::from_utf8_lossy(alias));
                    return;
                }
            };
            let (addr, conn_order, retry_for, work) = next;
            let push = match &work {
                Work::Ack { push, .. } | Work::Message { push, .. } => push,
            };
            let deadline = Instant::now() + self.engine.delivery_timeout;
            let outcome = match push.to_bytes(self.push_names) {
                Ok(bytes) => {
                    let retry_until = Instant::now() + retry_for;
                    match timeout_at(deadline, push_retrying(addr, bytes, retry_until)).await {
                        Ok(Ok(())) => true,
                        Ok(Err(e)) => {
                            tracing::info!("push to {} at {addr} failed: {e}", String::from_utf8_lossy(alias));
                            false
                        }
                        Err(_) => {
                            tracing::info!("push to {} at {addr} timed out", String::from_utf8_lossy(alias));
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("push to {} cannot be encoded: {e}", String::from_utf8_lossy(alias));
                    false
                }
            };
            let counter = if outcome { &hooks.stats.deliveries_ok } else { &hooks.stats.deliveries_failed };
            counter.fetch_add(1, Ordering::Relaxed);
            match self.finish(alias, conn_order, &work, outcome).await {
                Ok(ack_to) => {
                    if let Work::Message { sender, id, file, .. } = &work {
                        let (id, sender, recipient, file) = (*id, sender.clone(), alias.clone(), file.clone());
                        (hooks.print)(&if outcome {
                            Event::Delivered { id, sender, recipient, file }
                        } else {
                            Event::Stored { id, sender, recipient, file }
                        });
                    }
                    if let Some(sender) = ack_to {
                        self.wake(vec![sender]);
                    }
                }
                Err(e) => {
                    // What was pushed stays in the table: it is pushed again (at least once).
                    tracing::warn!("a delivery to {} was not recorded: {e}", String::from_utf8_lossy(alias));
                    return;
                }
            }
            if !outcome {
                return;
            }
        }
    }

    /// The recipient's address, connection and retry window, and its next push: an owed
    /// acknowledgement first, else its oldest message. `None`: not connected, or nothing.
    async fn next_work(&self, alias: &[u8]) -> Result<Option<(SocketAddr, i64, Duration, Work)>, Failure> {
        let mut pooled = self.pool.get().await?;
        let Conn { client, st } = pooled.conn()?;
        let Some(user) = client.query_opt(&st.recipient, &[&alias]).await? else { return Ok(None) };
        let (Some(ip), Some(port), Some(order)) = (
            user.try_get::<_, Option<String>>(0)?,
            user.try_get::<_, Option<i32>>(1)?,
            user.try_get::<_, Option<i64>>(2)?,
        ) else {
            return Ok(None);
        };
        let addr = SocketAddr::new(
            ip.parse().map_err(|_| Failure::Database("a stored user has a bad address".into()))?,
            u16::try_from(port).map_err(|_| Failure::Database("a stored user has a bad port".into()))?,
        );
        let retry_ms: Option<i64> = user.try_get(4)?;
        let retry_for = Duration::from_millis(retry_ms.unwrap_or(0).clamp(0, 2000) as u64);
        if let Some(row) = client.query_opt(&st.next_ack, &[&alias]).await? {
            let id = to_u32(row.try_get(1)?);
            let push = match row.try_get::<_, Option<Vec<u8>>>(2)? {
                None => Push::Ack { id },
                Some(file) => Push::AttachAck { id, file: Bytes::from(file) },
            };
            return Ok(Some((addr, order, retry_for, Work::Ack { seq: row.try_get(0)?, push })));
        }
        let Some(row) = client.query_opt(&st.next_message, &[&alias]).await? else { return Ok(None) };
        let sender = Bytes::from(row.try_get::<_, Vec<u8>>(1)?);
        let id = to_u32(row.try_get(2)?);
        let body = Bytes::from(row.try_get::<_, Vec<u8>>(3)?);
        let file = row.try_get::<_, Option<Vec<u8>>>(4)?.map(Bytes::from);
        let push = match &file {
            None => Push::Message { sender: sender.clone(), id, body },
            Some(file) => Push::AttachMessage { sender: sender.clone(), id, body, file: file.clone() },
        };
        let work = Work::Message { seq: row.try_get(0)?, push, sender, sender_uid: row.try_get(5)?, id, file };
        Ok(Some((addr, order, retry_for, work)))
    }

    /// Records a push's outcome in one transaction, under the request locks of the recipient
    /// and (for a message) its sender. Returns the sender now owed an acknowledgement.
    async fn finish(
        &self,
        alias: &Bytes,
        conn_order: i64,
        work: &Work,
        delivered: bool,
    ) -> Result<Option<Bytes>, Failure> {
        let mut pooled = self.pool.get().await?;
        let Conn { client, st } = pooled.conn()?;
        let tx = client.transaction().await?;
        // Not waited for on disk: a delivery record lost with the database's crash only makes
        // the push again (at least once), as a node's crash does. Replies of 0 are still only
        // sent after a synchronous commit, which also flushes every record before it.
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        let mut keys = vec![user_key(alias)];
        if let Work::Message { sender, .. } = work {
            keys.push(user_key(sender));
        }
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            tx.execute(&st.lock, &[&k]).await?;
        }
        let mut ack_to = None;
        match (work, delivered) {
            (Work::Message { seq, sender, sender_uid, id, file, .. }, true) => {
                // Zero rows: already pushed and recorded (by a node that lost its lease).
                if tx.execute(&st.delivered, &[seq]).await? == 1 {
                    let owed =
                        tx.execute(&st.owe_ack, &[&&sender[..], sender_uid, &i64::from(*id), &file.as_deref()]).await?;
                    if owed == 1 {
                        ack_to = Some(sender.clone());
                    }
                }
            }
            (Work::Ack { seq, .. }, _) => {
                tx.execute(&st.ack_done, &[seq]).await?;
            }
            (Work::Message { .. }, false) => {}
        }
        if !delivered && tx.execute(&st.lost, &[&&alias[..], &conn_order]).await? == 1 {
            tx.execute(&st.drop_acks, &[&&alias[..]]).await?;
        }
        tx.commit().await?;
        Ok(ack_to)
    }
}

/// [`push`](super::server::push), retried while the listener refuses it and `retry_until` has
/// not passed (SPEC 2.3: some clients start their listener only after the CONNECT reply).
async fn push_retrying(addr: SocketAddr, bytes: Bytes, retry_until: Instant) -> std::io::Result<()> {
    let mut pause = Duration::from_millis(20);
    loop {
        match super::server::push(addr, bytes.clone()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() + pause < retry_until => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_and_spaces_apart() {
        assert_eq!(user_key(b"ana"), user_key(b"ana"));
        assert_ne!(user_key(b"ana"), lease_key(b"ana"));
        assert_ne!(user_key(b"ana"), user_key(b"bob"));
        // FNV-1a 64 of "\0" alone, a fixed value every node computes alike.
        assert_eq!(key(b"", b""), 0xaf63_bd4c_8601_b7df_u64 as i64);
    }

    #[test]
    fn aliases_travel_in_hex() {
        for alias in [&b""[..], b"ana", b"\xff\x00 x"] {
            assert_eq!(unhex(&hex(alias)).as_deref(), Some(alias));
        }
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
