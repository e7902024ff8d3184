//! Command-line faces of the library.

pub mod bench;
pub mod check;
pub mod console;
pub mod serve;
pub mod show;
pub mod trace;
pub mod webservice;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cartero", version, about = "The UC3M message-delivery protocol: server, client and tools")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on standard error (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the message-delivery server.
    Serve(serve::Args),
    /// The console client of the course (commands on standard input).
    Client(console::Args),
    /// Load-test the server on 127.0.0.1 against a no-logic baseline.
    Bench(bench::Args),
    /// Check any server (yours, a classmate's) against every clause of the protocol.
    Check(check::Args),
    /// A transparent proxy that prints each exchange decoded and flags deviations.
    Trace(trace::Args),
    /// The web service of part 2: collapses white space (SOAP and JSON).
    Webservice(webservice::Args),
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The tokio runtime every async subcommand runs on, or the exit code after saying why not.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("cartero: cannot start the runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// Parses durations such as `5s`, `100ms` or `1m 30s`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it like 5s or 100ms)"))
}
