//! The `cartero` command: `cartero <protocol> <verb>` (see `cartero --help`).

fn main() -> std::process::ExitCode {
    cartero::cli::main()
}
