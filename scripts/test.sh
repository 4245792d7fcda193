#!/usr/bin/env bash
# Runs lubdub's whole test suite on a fresh machine: installs what the tests
# need, then runs every unit, integration and process test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) and run this again" >&2
    exit 1
fi
# The process tests send signals with kill(1) from procps; the half-open
# connection test builds a network namespace with ip(8) from iproute2 (and
# needs root, as the CI machines give); the load generator's MQTT mode is
# tested against a real Mosquitto broker; deploy/lubdub.service is checked
# with systemd-analyze verify (from systemd; no running systemd is needed).
missing=()
command -v kill >/dev/null 2>&1 || missing+=(procps)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The README's recipes (tests/readme.rs) make certificates with openssl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The admin API tests read it (and its event stream) with curl.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The webhook tests' receiver is a Python http.server.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "the tests need ${missing[*]}; run this as root (it installs them with apt-get), or install them yourself" >&2
        exit 1
    elif command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else
        echo "please install: ${missing[*]}" >&2
        exit 1
    fi
fi

cargo test --workspace --locked "$@"
# The integration tests again against servers with two event loops
# (`--threads 2`; tests/common reads LUBDUB_TEST_THREADS), so that every
# path between loops (takeovers, messages, listings, limits, shutdown) is
# exercised on every run, whatever the machine's core count.
LUBDUB_TEST_THREADS=2 cargo test -p lubdub --tests --locked "$@"
# The README's install command, as written, into a scratch root; --debug
# and this target directory reuse the build above instead of a new one.
install_root=$(mktemp -d)
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}" cargo install --locked --path crates/lubdub --debug --root "$install_root" --quiet
"$install_root/bin/lubdub" --version
rm -rf "$install_root"
# The fuzz crate is a workspace of its own (docs/FUZZING.md). It builds on
# stable too: building its targets and testing its input formats keeps them
# compiling with the core. Running the fuzzers needs nightly and cargo-fuzz,
# and is not part of the suite.
cargo build --manifest-path fuzz/Cargo.toml --locked --all-targets
cargo test --manifest-path fuzz/Cargo.toml --locked
