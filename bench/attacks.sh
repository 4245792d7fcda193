#!/usr/bin/env bash
# Issue 12's attacks (crates/lubdub/tests/attacks.rs) against two server
# builds side by side, release profile: prints each test's measured figures
# (FIGURE lines) and whether it passed.
#
#   bench/attacks.sh OLD_BINARY [NEW_BINARY]
#
# OLD_BINARY is run with LUBDUB_LEGACY=1 (the flags it does not know are
# left out). NEW_BINARY defaults to this tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/attacks.sh OLD_BINARY [NEW_BINARY]}
cargo build --release --locked -p lubdub --bin lubdub
new=${2:-$(pwd)/target/release/lubdub}
run() {
    local label=$1 binary=$2 legacy=$3
    echo "== $label: $binary"
    env LUBDUB_BIN="$binary" ${legacy:+LUBDUB_LEGACY=1} \
        cargo test --release --locked -p lubdub --test attacks -- --nocapture --test-threads 1 2>&1 |
        grep -oE 'FIGURE.*|test [a-z_]+ \.\.\. (ok|FAILED)|^(ok|FAILED)$' || true
}
run "before (legacy flags)" "$old" 1
run "after" "$new" ""
