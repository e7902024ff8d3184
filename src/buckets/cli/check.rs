//! `cartero buckets check HOST PORT`: every clause of SPEC-buckets against any server.

use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use crate::buckets::check::Checker;
use crate::buckets::wire::Vocabulary;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Which {
    Codes,
    Eafit,
    Both,
}

#[derive(clap::Args)]
pub struct Args {
    /// The server's host name or address.
    host: String,
    /// The server's port.
    port: u16,
    /// Which vocabularies to check.
    #[arg(long, value_enum, default_value = "both")]
    vocabulary: Which,
    /// How long each step may take.
    #[arg(long, default_value = "3s", value_parser = crate::cli::common::duration)]
    timeout: Duration,
}

pub fn run(args: Args) -> ExitCode {
    let addr = match (args.host.as_str(), args.port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        _ => {
            println!("check: cannot resolve {:?}", args.host);
            return ExitCode::from(2);
        }
    };
    let random = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    };
    let mut checker = Checker::new(addr, args.timeout, format!("ck{:08x}", random as u32));
    if let Err(e) = checker.reachable() {
        println!("check: {addr} is unreachable: {e}");
        return ExitCode::from(2);
    }
    let vocabularies: &[Vocabulary] = match args.vocabulary {
        Which::Codes => &[Vocabulary::Codes],
        Which::Eafit => &[Vocabulary::Eafit],
        Which::Both => &[Vocabulary::Codes, Vocabulary::Eafit],
    };
    checker.run(vocabularies);
    let color = std::io::stdout().is_terminal();
    let failed = checker.outcomes.iter().filter(|o| !o.pass).count();
    for o in &checker.outcomes {
        let verdict = match (o.pass, color) {
            (true, true) => "\x1b[32mPASS\x1b[0m",
            (false, true) => "\x1b[31mFAIL\x1b[0m",
            (true, false) => "PASS",
            (false, false) => "FAIL",
        };
        println!("{verdict} {:<4} {} | sent: {} | expected: {} | got: {}", o.id, o.title, o.sent, o.expected, o.got);
    }
    println!("check: {} passed, {failed} failed", checker.outcomes.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
