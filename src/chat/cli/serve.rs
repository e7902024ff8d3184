//! `cartero chat serve`: the chat server on a TCP port (SPEC-chat 5).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::chat::engine::Limits;
use crate::chat::limits::Rate;
use crate::chat::server::{Server, ServerConfig, ServerError};
use crate::chat::tls::{SelfSigned, ServerTls, TlsError, TlsPort};

#[derive(clap::Args)]
pub struct Args {
    /// TCP port to listen on (0 picks a free one; the start line shows which).
    #[arg(short, long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Connections open at once; more are closed at once.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Time a connection has to join before ERROR|408.
    #[arg(long, default_value = "30s", value_parser = crate::cli::common::duration)]
    connect_timeout: Duration,
    /// Time after the first bytes without a newline before a connection counts as legacy.
    #[arg(long, default_value = "50ms", value_parser = crate::cli::common::duration)]
    legacy_wait: Duration,
    /// Least time between two writes to a legacy connection.
    #[arg(long, default_value = "20ms", value_parser = crate::cli::common::duration)]
    legacy_gap: Duration,
    /// Bytes that may wait for one reader before it is dropped with ERROR|503.
    #[arg(long, default_value_t = 1 << 20)]
    max_queued_bytes: usize,
    /// Messages that may wait for one reader before it is dropped with ERROR|503.
    #[arg(long, default_value_t = 1000)]
    max_queued_messages: usize,
    /// Rooms one connection may be in at once; one more JOIN gets ERROR|405.
    #[arg(long, default_value_t = 100)]
    max_rooms: usize,
    /// Messages of history kept per target (a room, the broadcasts, two users' private messages).
    #[arg(long, default_value_t = 10_000)]
    history_per_target: usize,
    /// Directory of the durable history (created if missing; the file is chat.db, beside
    /// `cartero serve`'s cartero.db): each message is on disk before it is forwarded, and
    /// the history survives a crash or a restart.
    #[arg(long, default_value = "./cartero-data", conflicts_with = "memory")]
    data: PathBuf,
    /// Keep history in memory instead (lost when the server stops).
    #[arg(long)]
    memory: bool,
    /// Connections one IP address may have open at once; more get ERROR|429 (0: no limit).
    #[arg(long, default_value_t = 16)]
    max_per_ip: usize,
    /// Messages per second one IP address may send after its burst; faster ones are delayed
    /// (0: no limit).
    #[arg(long, default_value_t = Rate::default().per_second)]
    rate: u32,
    /// Messages one IP address may send at once before the rate applies.
    #[arg(long, default_value_t = Rate::default().burst)]
    burst: u32,
    /// Longest a message over the rate is delayed; one more drops the connection with ERROR|429.
    #[arg(long, default_value = "10s", value_parser = crate::cli::common::duration)]
    max_delay: Duration,
    /// Also serve the browser client (a page and its WebSocket /ws) on this HTTP port, on the
    /// same address (0 picks a free one; the line `s> init web` shows which).
    #[arg(long, value_name = "PORT")]
    web: Option<u16>,
    /// Serve TLS too, with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS too, with a certificate made at start for localhost, 127.0.0.1 and ::1
    /// (its SHA-256 fingerprint is on the start line).
    #[arg(long)]
    tls_self_signed: bool,
    /// Write the self-signed certificate (not its key) to this file, as PEM: what clients
    /// give to --ca.
    #[arg(long, value_name = "FILE", requires = "tls_self_signed")]
    tls_cert_out: Option<PathBuf>,
    /// TCP port of TLS connections (0 picks a free one), beside --port's plain ones.
    #[arg(long, default_value_t = 8443)]
    tls_port: u16,
    /// Time a TLS connection has to finish its handshake before it is closed.
    #[arg(long, default_value = "10s", value_parser = crate::cli::common::duration)]
    tls_handshake_timeout: Duration,
}

/// The TLS port `args` ask for, if any; self-signed certificates are made here (and written
/// where --tls-cert-out says).
fn tls_port(args: &Args) -> Result<Option<TlsPort>, String> {
    let mut tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        ServerTls::from_pem_files(cert, key).map_err(|e| e.to_string())?
    } else if args.tls_self_signed {
        let made = SelfSigned::localhost().map_err(|e| e.to_string())?;
        if let Some(out) = &args.tls_cert_out {
            std::fs::write(out, &made.cert_pem).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        }
        made.server_tls().map_err(|e: TlsError| e.to_string())?
    } else {
        return Ok(None);
    };
    tls.handshake_timeout = args.tls_handshake_timeout;
    Ok(Some(TlsPort { bind: SocketAddr::new(args.bind, args.tls_port), tls }))
}

pub fn run(args: Args) -> ExitCode {
    match rlimit::increase_nofile_limit(args.max_connections as u64 + 64) {
        Ok(limit) if (limit as usize) < args.max_connections + 64 => tracing::warn!(
            "only {limit} file descriptors allowed: fewer than --max-connections needs; \
             connections past it are refused until others close"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the file descriptor limit: {e}"),
    }
    let tls = match tls_port(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("cartero: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ServerConfig {
        max_connections: args.max_connections,
        connect_timeout: args.connect_timeout,
        legacy_wait: args.legacy_wait,
        legacy_gap: args.legacy_gap,
        max_queued_bytes: args.max_queued_bytes,
        max_queued_messages: args.max_queued_messages,
        console: true,
        tls,
        limits: Limits { max_rooms: args.max_rooms, history_per_target: args.history_per_target, ..Limits::default() },
        data: (!args.memory).then_some(args.data),
        max_per_ip: (args.max_per_ip > 0).then_some(args.max_per_ip),
        rate: (args.rate > 0).then_some(Rate {
            burst: args.burst.max(1),
            per_second: args.rate,
            max_delay: args.max_delay,
        }),
        ..ServerConfig::new(SocketAddr::new(args.bind, args.port))
    };
    let bind = async move {
        let mut server = Server::bind(config).await?;
        if let Some(port) = args.web {
            server.bind_web(SocketAddr::new(args.bind, port)).await?;
        }
        Ok::<_, ServerError>(server)
    };
    crate::cli::common::serve(bind, |server| server.run(crate::shutdown::signal()))
}
