//! Durable state in PostgreSQL: the same tables as the SQLite [`Store`](super::store::Store)
//! (users with their registration identity, connections, pending messages, acknowledgements
//! owed, id counters), written from the engine's change stream.
//!
//! Opening a database applies the schema's migrations under a transaction-level advisory lock
//! (so two servers started at once do not race; the second finds the work done), records the
//! version in `cartero_schema`, and then takes a session-level advisory lock for as long as the
//! connection lives: one server owns a database at a time, as with SQLite's exclusive lock, and
//! the lock frees itself when that server's connection ends (a crash included). A commit
//! returns once PostgreSQL has committed the transaction (`synchronous_commit` as the server
//! has it; `on` by default, which is what makes a reply of 0 durable).
//!
//! The client is the blocking face of `tokio-postgres`: it runs on the server's committer
//! thread, never on the async runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use postgres::{Client, Config, NoTls, Statement};

use crate::messaging::engine::{Change, MessageRecord, UserRecord};
use crate::messaging::store::StoreError;

/// The key of the advisory lock held while migrating (any value; it names cartero's schema).
const MIGRATION_LOCK: i64 = 0x6361_7274_6572_6f01;
/// The key of the advisory lock the owning server holds for as long as it runs: exclusive for
/// a single server, shared by the nodes of [`pg_shared`](super::pg_shared), so that neither
/// kind starts while the other runs.
pub(crate) const OWNER_LOCK: i64 = 0x6361_7274_6572_6f02;

/// The schema, one step per version; a database at version `n` gets steps `n+1..`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE cartero_users (
        alias bytea PRIMARY KEY, uid bigint NOT NULL UNIQUE, full_name bytea NOT NULL, birth_date bytea,
        last_id bigint NOT NULL, conn_ip text, conn_port integer, conn_order bigint
    );
    CREATE SEQUENCE cartero_uids;
    CREATE SEQUENCE cartero_conn_orders;
    CREATE TABLE cartero_messages (
        seq bigserial PRIMARY KEY, recipient bytea NOT NULL, sender bytea NOT NULL, sender_uid bigint NOT NULL,
        id bigint NOT NULL, body bytea NOT NULL, file bytea
    );
    CREATE INDEX cartero_messages_by_recipient ON cartero_messages (recipient, seq);
    CREATE TABLE cartero_acks (
        seq bigserial PRIMARY KEY, alias bytea NOT NULL, uid bigint NOT NULL, id bigint NOT NULL, file bytea
    );
    CREATE INDEX cartero_acks_by_alias ON cartero_acks (alias, seq);
",
    "
    ALTER TABLE cartero_users ADD COLUMN conn_at timestamptz;
    CREATE INDEX cartero_messages_by_sender ON cartero_messages (sender);
",
];

/// The statements that write the engine's changes, shared with the N-node path of
/// [`pg_shared`](super::pg_shared). `conn_at` is the database's clock, never a node's.
pub(crate) mod sql {
    pub(crate) const REGISTER: &str = "INSERT INTO cartero_users (alias, uid, full_name, birth_date, last_id) \
         VALUES ($1, nextval('cartero_uids'), $2, $3, 0)";
    pub(crate) const UNREGISTER_USER: &str = "DELETE FROM cartero_users WHERE alias = $1";
    pub(crate) const UNREGISTER_MESSAGES: &str = "DELETE FROM cartero_messages WHERE recipient = $1";
    pub(crate) const DROP_ACKS: &str = "DELETE FROM cartero_acks WHERE alias = $1";
    pub(crate) const CONNECT: &str = "UPDATE cartero_users SET conn_ip = $1, conn_port = $2, \
         conn_order = nextval('cartero_conn_orders'), conn_at = now() WHERE alias = $3";
    pub(crate) const DISCONNECT: &str =
        "UPDATE cartero_users SET conn_ip = NULL, conn_port = NULL, conn_order = NULL, conn_at = NULL WHERE alias = $1";
    pub(crate) const STORE: &str = "INSERT INTO cartero_messages (recipient, sender, id, body, file, sender_uid) \
         VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT uid FROM cartero_users WHERE alias = $2), 0))";
    pub(crate) const LAST_ID: &str = "UPDATE cartero_users SET last_id = $1 WHERE alias = $2";
}

/// The statements a commit runs, prepared once per connection.
struct Prepared {
    register: Statement,
    unregister_user: Statement,
    unregister_messages: Statement,
    drop_acks: Statement,
    connect: Statement,
    disconnect: Statement,
    store: Statement,
    last_id: Statement,
    remove: Statement,
    ack_owed: Statement,
    ack_done: Statement,
}

/// An open PostgreSQL store, owned by this process until dropped.
pub struct PgStore {
    config: Config,
    /// The database as logs name it: user@host:port/db, never the password.
    name: String,
    conn: Option<(Client, Prepared)>,
}

/// `user@host:port/dbname` of a connection string, without its password.
pub(crate) fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db` or key=value form),
    /// migrates the schema and takes the database for this process.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let mut config = Config::from_str(url)
            .map_err(|e| StoreError::Database { store: "the --store address".into(), detail: e.to_string() })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A database host that vanishes without a reset fails the connection within seconds
        // (the server then refuses writes and reconnects) instead of leaving commits hanging.
        config.keepalives_idle(Duration::from_secs(5)).keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3).tcp_user_timeout(Duration::from_secs(15));
        config.application_name("cartero");
        let name = describe(&config);
        let mut store = PgStore { config, name, conn: None };
        store.connect()?;
        Ok(store)
    }

    /// The database, for logs: `postgres://user@host:port/db`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn unreachable(&self, e: postgres::Error) -> StoreError {
        StoreError::Unreachable { store: self.name.clone(), detail: error_text(&e) }
    }

    fn failed(&self, e: postgres::Error) -> StoreError {
        StoreError::Database { store: self.name.clone(), detail: error_text(&e) }
    }

    /// (Re)connects: migrates, takes the owner lock and prepares the statements.
    fn connect(&mut self) -> Result<(), StoreError> {
        self.conn = None;
        let mut client = self.config.connect(NoTls).map_err(|e| self.unreachable(e))?;
        migrate(&mut client).map_err(|e| self.failed(e))?;
        let owned: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&OWNER_LOCK])
            .and_then(|row| row.try_get(0))
            .map_err(|e| self.failed(e))?;
        if !owned {
            return Err(StoreError::InUse { store: self.name.clone() });
        }
        let prepared = prepare(&mut client).map_err(|e| self.failed(e))?;
        self.conn = Some((client, prepared));
        Ok(())
    }

    /// The connection, reconnecting if it was lost.
    fn client(&mut self) -> Result<&mut (Client, Prepared), StoreError> {
        if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            self.connect()?;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unreachable { store: self.name.clone(), detail: "no connection".into() })
    }

    /// Everything stored, as [`Store::load`](super::store::Store::load) gives it.
    pub fn load(&mut self) -> Result<(Vec<UserRecord>, Vec<MessageRecord>), StoreError> {
        let name = self.name.clone();
        let (client, _) = self.client()?;
        let failed = |e: postgres::Error| StoreError::Database { store: name.clone(), detail: error_text(&e) };
        let corrupt = |detail: String| StoreError::Database { store: name.clone(), detail };
        let mut tx = client.build_transaction().read_only(true).start().map_err(failed)?;
        let mut acks: HashMap<Vec<u8>, Vec<(u32, Option<Bytes>)>> = HashMap::new();
        for row in tx
            .query(
                "SELECT a.alias, a.id, a.file FROM cartero_acks a \
                 JOIN cartero_users u ON u.alias = a.alias AND u.uid = a.uid ORDER BY a.seq",
                &[],
            )
            .map_err(failed)?
        {
            let alias: Vec<u8> = row.try_get(0).map_err(failed)?;
            let id: i64 = row.try_get(1).map_err(failed)?;
            let file: Option<Vec<u8>> = row.try_get(2).map_err(failed)?;
            acks.entry(alias).or_default().push((to_u32(id), file.map(Bytes::from)));
        }
        let mut users = Vec::new();
        for row in tx
            .query(
                "SELECT alias, full_name, birth_date, last_id, conn_ip, conn_port, uid FROM cartero_users \
                 ORDER BY conn_order NULLS LAST, uid",
                &[],
            )
            .map_err(failed)?
        {
            let alias: Vec<u8> = row.try_get(0).map_err(failed)?;
            let ip: Option<String> = row.try_get(4).map_err(failed)?;
            let port: Option<i32> = row.try_get(5).map_err(failed)?;
            let connection = match (ip, port) {
                (Some(ip), Some(port)) => {
                    let ip = ip.parse().map_err(|_| corrupt(format!("bad address {ip:?} for a user")))?;
                    let port = u16::try_from(port).map_err(|_| corrupt(format!("bad port {port} for a user")))?;
                    Some(SocketAddr::new(ip, port))
                }
                _ => None,
            };
            let owed = if connection.is_some() { acks.remove(&alias).unwrap_or_default() } else { Vec::new() };
            let last_id: i64 = row.try_get(3).map_err(failed)?;
            let uid: i64 = row.try_get(6).map_err(failed)?;
            users.push(UserRecord {
                full_name: Bytes::from(row.try_get::<_, Vec<u8>>(1).map_err(failed)?),
                birth_date: row.try_get::<_, Option<Vec<u8>>>(2).map_err(failed)?.map(Bytes::from),
                last_id: to_u32(last_id),
                connection,
                uid: uid.max(0) as u64,
                acks: owed,
                alias: Bytes::from(alias),
            });
        }
        let mut messages = Vec::new();
        for row in tx
            .query("SELECT recipient, sender, id, body, file, sender_uid FROM cartero_messages ORDER BY seq", &[])
            .map_err(failed)?
        {
            let id: i64 = row.try_get(2).map_err(failed)?;
            let sender_uid: i64 = row.try_get(5).map_err(failed)?;
            messages.push(MessageRecord {
                recipient: Bytes::from(row.try_get::<_, Vec<u8>>(0).map_err(failed)?),
                sender: Bytes::from(row.try_get::<_, Vec<u8>>(1).map_err(failed)?),
                id: to_u32(id),
                body: Bytes::from(row.try_get::<_, Vec<u8>>(3).map_err(failed)?),
                file: row.try_get::<_, Option<Vec<u8>>>(4).map_err(failed)?.map(Bytes::from),
                sender_uid: sender_uid.max(0) as u64,
            });
        }
        tx.commit().map_err(failed)?;
        Ok((users, messages))
    }

    /// Writes `changes` in one transaction; when this returns `Ok` PostgreSQL has committed
    /// them. On an error nothing of the batch is kept.
    pub fn commit<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>) -> Result<(), StoreError> {
        let name = self.name.clone();
        let (client, st) = self.client()?;
        let failed = |e: postgres::Error| StoreError::Database { store: name.clone(), detail: error_text(&e) };
        let mut tx = client.transaction().map_err(failed)?;
        for change in changes {
            match change {
                Change::Registered { alias, full_name, birth_date } => {
                    tx.execute(&st.register, &[&&alias[..], &&full_name[..], &birth_date.as_deref()])
                        .map_err(failed)?;
                }
                Change::Unregistered { alias } => {
                    tx.execute(&st.unregister_user, &[&&alias[..]]).map_err(failed)?;
                    tx.execute(&st.unregister_messages, &[&&alias[..]]).map_err(failed)?;
                    tx.execute(&st.drop_acks, &[&&alias[..]]).map_err(failed)?;
                }
                Change::Connected { alias, addr } => {
                    let port = i32::from(addr.port());
                    tx.execute(&st.connect, &[&addr.ip().to_string(), &port, &&alias[..]]).map_err(failed)?;
                }
                Change::Disconnected { alias } => {
                    tx.execute(&st.disconnect, &[&&alias[..]]).map_err(failed)?;
                    tx.execute(&st.drop_acks, &[&&alias[..]]).map_err(failed)?;
                }
                Change::Stored { recipient, sender, id, body, file } => {
                    let id = i64::from(*id);
                    tx.execute(&st.store, &[&&recipient[..], &&sender[..], &id, &&body[..], &file.as_deref()])
                        .map_err(failed)?;
                    tx.execute(&st.last_id, &[&id, &&sender[..]]).map_err(failed)?;
                }
                Change::Removed { recipient, sender, id } => {
                    tx.execute(&st.remove, &[&&recipient[..], &&sender[..], &i64::from(*id)]).map_err(failed)?;
                }
                Change::AckOwed { sender, id, file } => {
                    tx.execute(&st.ack_owed, &[&&sender[..], &i64::from(*id), &file.as_deref()]).map_err(failed)?;
                }
                Change::AckDone { sender, id } => {
                    tx.execute(&st.ack_done, &[&&sender[..], &i64::from(*id)]).map_err(failed)?;
                }
            }
        }
        tx.commit().map_err(failed)
    }

    /// A small durable write, to tell whether the database takes writes again (reconnecting
    /// if the connection was lost).
    pub fn probe(&mut self) -> Result<(), StoreError> {
        let name = self.name.clone();
        let (client, _) = self.client()?;
        client
            .execute("UPDATE cartero_schema SET version = version", &[])
            .map(|_| ())
            .map_err(|e| StoreError::Database { store: name, detail: error_text(&e) })
    }
}

/// Empties cartero's tables in the database at `url` (migrating it first), for a benchmark's
/// fresh start. Refused while a server owns the database.
pub fn empty(url: &str) -> Result<(), StoreError> {
    let mut store = PgStore::open(url)?;
    let name = store.name.clone();
    let (client, _) = store.client()?;
    client
        .batch_execute(
            "TRUNCATE cartero_users, cartero_messages, cartero_acks;
             ALTER SEQUENCE cartero_uids RESTART; ALTER SEQUENCE cartero_conn_orders RESTART;",
        )
        .map_err(|e| StoreError::Database { store: name, detail: error_text(&e) })
}

/// Applies the migrations a database lacks, under a transaction-level advisory lock: a second
/// server migrating at the same moment waits, then finds the schema current.
pub fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS cartero_schema (version integer NOT NULL)")?;
    let version: Option<i32> = tx.query_opt("SELECT version FROM cartero_schema", &[])?.map(|r| r.get(0));
    let current = version.unwrap_or(0).max(0) as usize;
    for step in MIGRATIONS.iter().skip(current) {
        tx.batch_execute(step)?;
    }
    let latest = MIGRATIONS.len() as i32;
    match version {
        None => tx.execute("INSERT INTO cartero_schema (version) VALUES ($1)", &[&latest])?,
        Some(v) if (v as usize) < MIGRATIONS.len() => {
            tx.execute("UPDATE cartero_schema SET version = $1", &[&latest])?
        }
        Some(_) => 0,
    };
    tx.commit()
}

fn prepare(client: &mut Client) -> Result<Prepared, postgres::Error> {
    Ok(Prepared {
        register: client.prepare(sql::REGISTER)?,
        unregister_user: client.prepare(sql::UNREGISTER_USER)?,
        unregister_messages: client.prepare(sql::UNREGISTER_MESSAGES)?,
        drop_acks: client.prepare(sql::DROP_ACKS)?,
        connect: client.prepare(sql::CONNECT)?,
        disconnect: client.prepare(sql::DISCONNECT)?,
        store: client.prepare(sql::STORE)?,
        last_id: client.prepare(sql::LAST_ID)?,
        remove: client.prepare(
            "DELETE FROM cartero_messages WHERE seq = \
             (SELECT MIN(seq) FROM cartero_messages WHERE recipient = $1 AND sender = $2 AND id = $3)",
        )?,
        ack_owed: client.prepare(
            "INSERT INTO cartero_acks (alias, uid, id, file) \
             VALUES ($1, COALESCE((SELECT uid FROM cartero_users WHERE alias = $1), 0), $2, $3)",
        )?,
        ack_done: client.prepare(
            "DELETE FROM cartero_acks WHERE seq = (SELECT MIN(seq) FROM cartero_acks WHERE alias = $1 AND id = $2)",
        )?,
    })
}

/// An id kept as bigint back to the protocol's u32 (values outside are not written by cartero).
pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// The database's own message when there is one (not just "db error").
pub(crate) fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let text = e.to_string();
            match std::error::Error::source(e) {
                Some(source) if !text.contains(&source.to_string()) => format!("{text}: {source}"),
                _ => text,
            }
        }
    }
}
