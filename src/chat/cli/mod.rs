//! `cartero chat <verb>`: the chat's command-line verbs.

pub mod serve;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Run the chat server.
    Serve(serve::Args),
}

pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(a) => serve::run(a),
    }
}
