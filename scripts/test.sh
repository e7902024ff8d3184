#!/usr/bin/env bash
# Runs every test of cartero: the C header's freshness, the Rust crate's unit, integration,
# property and fault tests, the C programs (built with the sanitizers) and the end-to-end
# suite against both servers, a test-mode pass over every benchmark, the Python module and
# examples with pytest (in a virtual environment of its own, under target/py), and a bounded
# fuzzing run of the request parser. It installs what it needs (cbindgen, cargo-fuzz,
# maturin, pytest, zeep, Xvfb) by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
CBINDGEN_VERSION=0.29.2

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

if ! command -v cc >/dev/null; then
    echo "== installing a C compiler (gcc) for the C tests"
    apt-get update -qq && apt-get install -y -qq gcc
fi

echo "== C header: include/cartero.h is what cbindgen $CBINDGEN_VERSION makes of src/ffi"
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --force
fi
fresh=$(mktemp)
cbindgen --quiet --config cbindgen.toml --output "$fresh"
if ! diff -u include/cartero.h "$fresh"; then
    rm -f "$fresh"
    echo "include/cartero.h is stale: run cbindgen --config cbindgen.toml --output include/cartero.h and commit it"
    echo "header: 0 passed, 1 failed"
    exit 1
fi
rm -f "$fresh"

if ! command -v ngircd >/dev/null && [ ! -x /usr/sbin/ngircd ]; then
    echo "== installing ngircd, the IRC server the chat benchmark compares with"
    apt-get update -qq && apt-get install -y -qq ngircd
fi

echo "== Rust, C (compiled with -Werror and ASan/UBSan) and end-to-end: cargo test"
cargo test --locked --all-targets

echo "== Python: the module built by maturin in a virtual environment, then pytest"
if ! command -v Xvfb >/dev/null; then
    echo "== installing Xvfb for the window test"
    apt-get update -qq && apt-get install -y -qq xvfb
fi
venv=target/py
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest zeep
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" maturin develop -q --locked -m bindings/python/Cargo.toml
"$venv/bin/python" -m pytest -q bindings/python/tests

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
