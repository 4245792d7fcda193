#!/usr/bin/env bash
# Runs lubdub's whole test suite on a fresh machine: installs what the tests
# need, then runs every unit, integration and process test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) and run this again" >&2
    exit 1
fi
# The process tests send signals with kill(1) from procps.
if ! command -v kill >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq procps
fi

cargo test --workspace --locked "$@"
