//! `cartero chat <verb>`: the chat's command-line verbs.

pub mod bench;
pub mod check;
pub mod connect;
pub mod serve;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Run the chat server.
    Serve(serve::Args),
    /// The chat console: private messages, broadcasts, the user list.
    Connect(connect::Args),
    /// Check any chat server against every clause of SPEC-chat 1-4.
    Check(check::Args),
    /// Broadcast fan-out on 127.0.0.1 against a no-logic relay, ngircd and the kernel's write floor, and memory per connection.
    Bench(bench::Args),
}

pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(a) => serve::run(a),
        Command::Connect(a) => connect::run(a),
        Command::Check(a) => check::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
