//! `cartero buckets serve`: the bucket server on a TCP port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::buckets::backend::StoreConfig;
use crate::buckets::s3::S3Config;
use crate::buckets::server::{Server, ServerConfig};

#[derive(clap::Args)]
pub struct Args {
    /// TCP port to listen on (0 picks a free one; the start line shows which).
    #[arg(short, long, default_value_t = 1234)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// The store's directory (created when missing), unless --backend names an object store.
    #[arg(long, default_value = "./buckets")]
    root: PathBuf,
    /// Keep the buckets in an S3-compatible object store instead: s3://S3BUCKET[/PREFIX], each
    /// cartero bucket a prefix in it. Credentials and region come from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION (and the other AWS_* variables).
    #[arg(long, value_name = "s3://S3BUCKET[/PREFIX]", conflicts_with = "root")]
    backend: Option<String>,
    /// The object store's URL (http:// allowed, for local stores); else AWS_ENDPOINT, else
    /// Amazon S3.
    #[arg(long, value_name = "URL", requires = "backend")]
    endpoint: Option<String>,
    /// For stores that ignore If-None-Match on PUT: EAFIT's create-new then checks the name
    /// and writes, and is not atomic (two racing uploads of one name may both succeed).
    #[arg(long, requires = "backend")]
    no_conditional_put: bool,
    /// Retries of a failed or throttled object store request (with backoff from 100 ms).
    #[arg(long, default_value_t = 3, requires = "backend")]
    s3_retries: usize,
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
    let store = match args.backend {
        None => StoreConfig::Dir(args.root),
        Some(url) => match S3Config::parse(&url, args.endpoint) {
            Ok(mut s3) => {
                s3.conditional_put = !args.no_conditional_put;
                s3.retries = args.s3_retries;
                StoreConfig::S3(s3)
            }
            Err(e) => {
                eprintln!("cartero: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = ServerConfig {
        bind: SocketAddr::new(args.bind, args.port),
        store,
        max_file_size: args.max_file_size,
        stall_timeout: args.stall_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        console: true,
    };
    crate::cli::common::serve(Server::bind(config), |server| server.run(crate::shutdown::signal()))
}
