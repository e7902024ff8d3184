//! `cartero buckets <verb>`: the bucket store's command-line verbs.

pub mod bench;
pub mod check;
pub mod client;
pub mod serve;

use std::process::ExitCode;

use clap::Subcommand;

use client::{Target, Verb};

#[derive(Subcommand)]
#[command(disable_help_subcommand = true)]
pub enum Command {
    /// Run the bucket server (both vocabularies on one port).
    Serve(serve::Args),
    /// List the buckets, or the files of one bucket with their sizes.
    Ls {
        bucket: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Make a bucket.
    Mb {
        bucket: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a bucket and its files.
    Rb {
        bucket: String,
        #[command(flatten)]
        target: Target,
    },
    /// Upload a local file into a bucket (as NAME, else under its own name).
    Upload {
        bucket: String,
        path: std::path::PathBuf,
        name: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Download a file (to DEST, a file or a directory; else into the current directory).
    Download {
        bucket: String,
        name: String,
        dest: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a file from a bucket.
    Rm {
        bucket: String,
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check any bucket server against every clause of the protocol (safe for the server's
    /// machine: it only writes into buckets it creates, and deletes them).
    Check(check::Args),
    /// Time cartero's bucket server against a no-logic baseline on 127.0.0.1.
    Bench(bench::Args),
    /// Print the server's help (codes vocabulary).
    Help {
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(a) => serve::run(a),
        Command::Check(a) => check::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Ls { bucket, target } => client::run(target, Verb::Ls { bucket }),
        Command::Mb { bucket, target } => client::run(target, Verb::Mb { bucket }),
        Command::Rb { bucket, target } => client::run(target, Verb::Rb { bucket }),
        Command::Rm { bucket, name, target } => client::run(target, Verb::Rm { bucket, name }),
        Command::Upload { bucket, path, name, target } => client::run(target, Verb::Upload { bucket, path, name }),
        Command::Download { bucket, name, dest, target } => client::run(target, Verb::Download { bucket, name, dest }),
        Command::Help { target } => client::run(target, Verb::Help),
    }
}

/// Parses a byte count such as `1G`, `512M`, `64KiB` or `1000` (powers of 1024).
pub fn byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size (write it like 1G, 64M or 4096)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?} has an unknown unit (K, M, G or T)")),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_sizes() {
        assert_eq!(super::byte_size("1G"), Ok(1 << 30));
        assert_eq!(super::byte_size("64KiB"), Ok(64 << 10));
        assert_eq!(super::byte_size("4096"), Ok(4096));
        assert!(super::byte_size("-1").is_err());
        assert!(super::byte_size("1X").is_err());
        assert!(super::byte_size("99999999999T").is_err());
    }
}
