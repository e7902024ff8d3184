#!/usr/bin/env bash
# Runs every test of cartero: the Rust crate's unit, integration, property and fault tests,
# a test-mode pass over every benchmark, and a bounded fuzzing run of the request parser.
# It installs what it needs (cargo-fuzz) by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

echo "== Rust: cargo test"
cargo test --locked --all-targets

echo "== Fuzzing the request parser for ${FUZZ_SECONDS:=30}s"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# New inputs go to a scratch directory; the committed corpus is only read.
scratch=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$scratch" "$log"' EXIT
# cargo-fuzz asks for nightly features; this toolchain is stable, hence RUSTC_BOOTSTRAP and
# no sanitizer (the target checks its own invariants with assertions).
if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run request_parser "$scratch" corpus/request_parser -s none -- \
        -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1); then
    cat "$log"
    echo "fuzz: 0 passed, 1 failed (the failing input is under fuzz/artifacts/)"
    exit 1
fi
grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log"
echo "fuzz: 1 passed, 0 failed"
