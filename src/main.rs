//! The `cartero` command: the server, the console client and the load generator.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match args.command {
        cli::Command::Serve(a) => cli::serve::run(a),
        cli::Command::Client(a) => cli::console::run(a),
        cli::Command::Bench(a) => cli::bench::run(a),
        cli::Command::Check(a) => cli::check::run(a),
        cli::Command::Trace(a) => cli::trace::run(a),
        cli::Command::Webservice(a) => cli::webservice::run(a),
    }
}
