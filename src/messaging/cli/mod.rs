//! `cartero messaging <verb>`: the message-delivery service's command-line verbs.

pub mod bench;
pub mod check;
pub mod console;
pub mod rpclog;
pub mod serve;
pub mod show;
pub mod trace;
pub mod webservice;

use std::process::ExitCode;

use clap::Subcommand;

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
    /// The RPC log service of the 2025/26 course (part 3).
    #[command(subcommand)]
    Rpclog(rpclog::Command),
}

pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(a) => serve::run(a),
        Command::Client(a) => console::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Check(a) => check::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Webservice(a) => webservice::run(a),
        Command::Rpclog(c) => rpclog::run(c),
    }
}
