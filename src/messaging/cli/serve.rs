//! `cartero serve`: the message-delivery server on a TCP port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::messaging::engine::EngineConfig;
use crate::messaging::pg_shared::NodeConfig;
use crate::messaging::server::{Server, ServerConfig, Storage};
use crate::messaging::wire::{CodeEncoding, Course, PushNames, WireSettings};

#[derive(clap::Args)]
pub struct Args {
    /// TCP port to listen on (0 picks a free one; the start line shows which).
    #[arg(short, long)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Which course year's wire defaults: `2022` (ASCII codes, spaced pushes) or `2025`
    /// (raw codes, spaced pushes; SPEC 8). `--codes` and `--push-names` override them.
    #[arg(long, default_value = "2022")]
    course: Course,
    /// How result codes are written: `ascii` ("0" and NUL) or `raw` (one byte). Default:
    /// the course's.
    #[arg(long)]
    codes: Option<CodeEncoding>,
    /// How pushes are named: `spaced` (SEND MESSAGE) or `underscored` (SEND_MESSAGE).
    /// Default: the course's.
    #[arg(long)]
    push_names: Option<PushNames>,
    /// Time a client has to send its whole request.
    #[arg(long, default_value = "5s", value_parser = crate::cli::common::duration)]
    request_timeout: Duration,
    /// Time one push to a listener may take, connect to close.
    #[arg(long, default_value = "2s", value_parser = crate::cli::common::duration)]
    delivery_timeout: Duration,
    /// How long CONNECTEDUSERS (and a one-field REGISTER) wait for their optional fields.
    #[arg(long, default_value = "100ms", value_parser = crate::cli::common::duration)]
    grace: Duration,
    /// Request connections served at once; more are closed unanswered.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Pushes in flight at once, over all users.
    #[arg(long, default_value_t = 256)]
    max_deliveries: usize,
    /// Registered users at most.
    #[arg(long, default_value_t = EngineConfig::default().max_users)]
    max_users: usize,
    /// Pending messages per user at most.
    #[arg(long, default_value_t = EngineConfig::default().max_pending_per_user)]
    max_pending: usize,
    /// Directory of the durable store (created if missing): users, connections, pending
    /// messages and id counters survive a crash or a restart.
    #[arg(long, default_value = "./cartero-data", conflicts_with = "memory")]
    data: PathBuf,
    /// Keep all state in memory instead (lost when the server stops).
    #[arg(long)]
    memory: bool,
    /// Keep the state in a PostgreSQL database instead, `postgres://user[:password]@host[:port]/db`
    /// (its tables are created or migrated at start; one server owns a database at a time).
    #[arg(long, value_name = "URL", conflicts_with_all = ["memory", "data"])]
    store: Option<String>,
    /// Share the `--store` database with other `cartero serve --shared` nodes (behind DNS
    /// round-robin or any TCP balancer): each request is answered from the database, and any
    /// node may make any delivery (docs/scaling.md).
    #[arg(long, requires = "store")]
    shared: bool,
    /// Database connections of a shared node for requests and deliveries (one more holds its
    /// leases); a request finding none free within `--pool-wait` is answered "any other error".
    #[arg(long, default_value_t = 8, requires = "shared")]
    pool: usize,
    /// How long a request of a shared node waits for a free database connection.
    #[arg(long, default_value = "2s", value_parser = crate::cli::common::duration, requires = "shared")]
    pool_wait: Duration,
}

pub fn run(args: Args) -> ExitCode {
    // Each request and each push is a socket: allow as many as the system lets us.
    match rlimit::increase_nofile_limit(65_536) {
        Ok(limit) if (limit as usize) < args.max_connections + args.max_deliveries + 64 => tracing::warn!(
            "only {limit} file descriptors allowed: fewer than --max-connections and --max-deliveries need; \
             connections past it are refused until load drops"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the file descriptor limit: {e}"),
    }
    let storage = if let (Some(url), true) = (&args.store, args.shared) {
        Storage::Shared(NodeConfig {
            pool: args.pool,
            pool_wait: args.pool_wait,
            statement_timeout: args.request_timeout,
            ..NodeConfig::new(url.clone())
        })
    } else if let Some(url) = args.store {
        Storage::Postgres(url)
    } else if args.memory {
        Storage::Memory
    } else {
        Storage::Sqlite(args.data)
    };
    let config = ServerConfig {
        bind: SocketAddr::new(args.bind, args.port),
        storage,
        wire: {
            let defaults = args.course.wire();
            WireSettings {
                codes: args.codes.unwrap_or(defaults.codes),
                push_names: args.push_names.unwrap_or(defaults.push_names),
            }
        },
        engine: EngineConfig {
            max_users: args.max_users,
            max_pending_per_user: args.max_pending,
            delivery_timeout: args.delivery_timeout,
            ..EngineConfig::default()
        },
        request_timeout: args.request_timeout,
        grace: args.grace,
        max_connections: args.max_connections,
        max_deliveries: args.max_deliveries,
        console: true,
        // SPEC 8, Part 3: the statement names the variable.
        log_rpc: std::env::var("LOG_RPC_IP").ok().filter(|h| !h.trim().is_empty()),
    };
    crate::cli::common::serve(Server::bind(config), |server| server.run(crate::shutdown::signal()))
}
