#!/usr/bin/env bash
# Runs every test of cartero: the Rust crate's unit, integration and property tests, and a
# test-mode pass over every benchmark (each runs once, so they are known to build and work).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

echo "== Rust: cargo test"
cargo test --locked --all-targets
