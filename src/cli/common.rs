//! What every protocol's command-line verbs share: logging, the runtime, argument parsers.

use std::process::ExitCode;
use std::time::Duration;

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
