//! `cartero buckets serve`: the bucket server on a TCP port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::buckets::server::{Server, ServerConfig};

#[derive(clap::Args)]
pub struct Args {
    /// TCP port to listen on (0 picks a free one; the start line shows which).
    #[arg(short, long, default_value_t = 1234)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// The store's directory (created when missing).
    #[arg(long, default_value = "./buckets")]
    root: PathBuf,
    /// The largest upload accepted (1G, 512M, 4096...).
    #[arg(long, default_value = "1G", value_parser = super::byte_size)]
    max_file_size: u64,
    /// How long an upload or download may go without a byte moving before it is dropped.
    #[arg(long, default_value = "30s", value_parser = crate::cli::common::duration)]
    stall_timeout: Duration,
    /// How long a connection may wait between requests before it is closed.
    #[arg(long, default_value = "5m", value_parser = crate::cli::common::duration)]
    idle_timeout: Duration,
    /// Connections served at once; more are closed unanswered.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
}

pub fn run(args: Args) -> ExitCode {
    if let Err(e) = rlimit::increase_nofile_limit(65_536) {
        tracing::warn!("cannot raise the file descriptor limit: {e}");
    }
    let config = ServerConfig {
        bind: SocketAddr::new(args.bind, args.port),
        root: args.root,
        max_file_size: args.max_file_size,
        stall_timeout: args.stall_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        console: true,
    };
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("cartero: {e}");
                return ExitCode::FAILURE;
            }
        };
        match server.run(crate::shutdown::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cartero: server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
