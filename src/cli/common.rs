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

/// What every `serve` verb does once its configuration is read: on a new runtime, `bind`s
/// the server (a failure is said in one line), then `run`s it (until
/// [`shutdown::signal`](crate::shutdown::signal), as the callers pass it).
pub fn serve<S, E, Run>(bind: impl std::future::Future<Output = Result<S, E>>, run: impl FnOnce(S) -> Run) -> ExitCode
where
    E: std::fmt::Display,
    Run: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let server = match bind.await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("cartero: {e}");
                return ExitCode::FAILURE;
            }
        };
        match run(server).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cartero: server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Parses durations such as `5s`, `100ms` or `1m 30s`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it like 5s or 100ms)"))
}
