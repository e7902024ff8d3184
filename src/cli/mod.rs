//! The `cartero` command's grammar, `cartero <protocol> <verb>`, and the helpers every
//! protocol's verbs share ([`common`]). Each protocol keeps its own verbs in its folder
//! (`src/messaging/cli/`); this module only routes to them.

pub mod common;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::messaging;

#[derive(Parser)]
#[command(
    name = "cartero",
    version,
    about = "Servers, clients, checkers and load generators for the socket protocols of distributed-systems courses",
    after_help = "Kept from the first release, as aliases of the messaging verbs: cartero serve, client, check, \
                  trace, bench and webservice are cartero messaging serve, client, check, trace, bench and webservice; \
                  cartero rpclog serve (the 2025/26 course's log service) is cartero messaging rpclog serve."
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
    /// The UC3M message-delivery service: serve, client, check, trace, bench, webservice, rpclog.
    #[command(subcommand)]
    Messaging(messaging::cli::Command),
    /// The course chat (myChatProtocol): serve, connect, check, bench.
    #[command(subcommand)]
    Chat(crate::chat::cli::Command),
    /// The bucket stores of seeds 003 and 004: serve, ls, mb, rb, upload, download, rm, check, bench, help.
    #[command(subcommand)]
    Buckets(crate::buckets::cli::Command),
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
    #[command(subcommand, hide = true)]
    Rpclog(messaging::cli::rpclog::Command),
}

/// Parses the command line and runs it: the whole `cartero` binary.
pub fn main() -> ExitCode {
    let args = Cli::parse();
    common::init_logging(args.verbose);
    use messaging::cli::Command as M;
    let messaging_verb = match args.command {
        Command::Messaging(verb) => verb,
        Command::Chat(verb) => return crate::chat::cli::run(verb),
        Command::Buckets(verb) => return crate::buckets::cli::run(verb),
        Command::Serve(a) => M::Serve(a),
        Command::Client(a) => M::Client(a),
        Command::Bench(a) => M::Bench(a),
        Command::Check(a) => M::Check(a),
        Command::Trace(a) => M::Trace(a),
        Command::Webservice(a) => M::Webservice(a),
        Command::Rpclog(c) => M::Rpclog(c),
    };
    messaging::cli::run(messaging_verb)
}
