//! `cartero rpclog serve`: the RPC log service of the 2025/26 course (SPEC 8, Part 3).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use crate::messaging::rpclog::{self, LogEntry};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Serve `rpc/cartero_log.x` over TCP, registered with this machine's rpcbind; print each
    /// reported operation as the statement shows it: user, OPERATION and file name, one per line.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TCP port to listen on (0 picks a free one; rpcbind tells clients which).
    #[arg(short, long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
}

pub fn run(command: Command) -> ExitCode {
    let Command::Serve(args) = command;
    let print = |entry: &LogEntry| {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut lines = format!("{}\n{}\n", text(&entry.user), text(&entry.operation));
        if let Some(file) = &entry.file {
            lines.push_str(&text(file));
            lines.push('\n');
        }
        // One write per entry, so that entries of concurrent calls never interleave.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.as_bytes());
        let _ = out.flush();
    };
    let mut service = match rpclog::serve(SocketAddr::new(args.bind, args.port), print) {
        Ok(service) => service,
        Err(e) => {
            eprintln!("cartero: cannot start the RPC log service: {e} (is rpcbind running? apt-get install rpcbind)");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "cartero: RPC log service on TCP port {}, registered with rpcbind as program {:#x} version {}",
        service.port(),
        rpclog::PROGRAM,
        rpclog::VERSION
    );
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(crate::shutdown::signal());
    service.stop();
    ExitCode::SUCCESS
}
