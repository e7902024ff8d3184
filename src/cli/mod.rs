//! The `cartero` command's grammar, `cartero <protocol> <verb>`, and the helpers every
//! protocol's verbs share. Each protocol keeps its own verbs in its folder
//! (`src/messaging/cli/`); this module only routes to them.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::messaging;

#[derive(Parser)]
#[command(
    name = "cartero",
    version,
    about = "Servers, clients, checkers and load generators for the socket protocols of distributed-systems courses",
    after_help = "Kept from the first release, as aliases of the messaging verbs: cartero serve, client, check, \
                  trace, bench and webservice are cartero messaging serve, client, check, trace, bench and webservice."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on standard error (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand)]
pub enum Command {
    /// The UC3M message-delivery service: serve, client, check, trace, bench, webservice.
    #[command(subcommand)]
    Messaging(messaging::cli::Command),
    /// The course chat (myChatProtocol): serve, connect, check, bench.
    #[command(subcommand)]
    Chat(crate::chat::cli::Command),
    // The first release's top-level verbs, aliases of `cartero messaging <verb>`; hidden from
    // the list, named in the help's last lines.
    #[command(hide = true)]
    Serve(messaging::cli::serve::Args),
    #[command(hide = true)]
    Client(messaging::cli::console::Args),
    #[command(hide = true)]
    Bench(messaging::cli::bench::Args),
    #[command(hide = true)]
    Check(messaging::cli::check::Args),
    #[command(hide = true)]
    Trace(messaging::cli::trace::Args),
    #[command(hide = true)]
    Webservice(messaging::cli::webservice::Args),
}

/// Parses the command line and runs it: the whole `cartero` binary.
pub fn main() -> ExitCode {
    let args = Cli::parse();
    init_logging(args.verbose);
    use messaging::cli::Command as M;
    let messaging_verb = match args.command {
        Command::Messaging(verb) => verb,
        Command::Chat(verb) => return crate::chat::cli::run(verb),
        Command::Serve(a) => M::Serve(a),
        Command::Client(a) => M::Client(a),
        Command::Bench(a) => M::Bench(a),
        Command::Check(a) => M::Check(a),
        Command::Trace(a) => M::Trace(a),
        Command::Webservice(a) => M::Webservice(a),
    };
    messaging::cli::run(messaging_verb)
}

/// Diagnostics go to standard error; standard output is kept for the protocol's console.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "cartero=info",
        1 => "cartero=debug",
        _ => "cartero=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The tokio runtime every async verb runs on, or the exit code after saying why not.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("cartero: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Parses durations such as `5s`, `100ms` or `1m 30s`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it like 5s or 100ms)"))
}
