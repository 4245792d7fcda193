#!/usr/bin/env bash
# Reproduces the detection-error table of BENCHMARKS.md (issue 4, silence
# scenario) with one command: builds the release binary, and for every
# session count and mode starts a fresh `lubdub server`, runs
# `lubdub bench silence` against it, stops the server, and prints the median
# of the runs as a Markdown table. Each run's JSON report and server log stay
# in target/bench/ for inspection.
#
# Usage:
#   bench/silence.sh                 the whole table (SESSIONS x spread/synchronized x RUNS)
#   bench/silence.sh -- FLAGS...     one run with these `lubdub bench silence` flags
# Environment (defaults in brackets):
#   SESSIONS ["10000 1000"]  RUNS [3]  INTERVAL [100ms]  MAX_MISSED [5]
#   RUST_LOG [info]: the server's log level; info logs one line per presence event
#   QUIET_BUSY [10], QUIET_WAIT [600]: before each run, wait up to QUIET_WAIT
#     seconds for the shared machine to be at most QUIET_BUSY percent busy
#   SERVER_BIN [target/release/lubdub]: the server to measure, e.g. another
#     build for an A/B comparison (the client is always this tree's)
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-"10000 1000"}
RUNS=${RUNS:-3}
INTERVAL=${INTERVAL:-100ms}
MAX_MISSED=${MAX_MISSED:-5}
export RUST_LOG=${RUST_LOG:-info}
OUT=target/bench
BIN=target/release/lubdub
SERVER_BIN=${SERVER_BIN:-$BIN}

# shellcheck source=bench/lib.sh
source bench/lib.sh

cargo build --release --locked --quiet
mkdir -p "$OUT"

# One run: fresh server, the scenario, server stopped. Exit status 2 (the
# requirement was missed) is a result, not a failure of the script. Also
# writes $OUT/$name.others: the share of the machine that other processes
# used during the run (a neighbour's build shows up there).
run_once() {
    local name=$1
    shift
    wait_for_quiet
    others_begin
    start_server "$OUT/$name.server.log" --interval "$INTERVAL" --max-missed "$MAX_MISSED"
    local status=0
    "$BIN" bench silence --server "$server_addr" --interval "$INTERVAL" "$@" || status=$?
    stop_server
    others_end "$OUT/$name.others"
    if [[ $status -ne 0 && $status -ne 2 ]]; then
        echo "lubdub bench silence failed (exit $status)" >&2
        exit "$status"
    fi
}

if [[ "${1:-}" == "--" ]]; then
    shift
    run_once single "$@"
    exit 0
fi

for sessions in $SESSIONS; do
    for mode in spread synchronized; do
        flags=(--sessions "$sessions" --json)
        [[ $mode == synchronized ]] && flags+=(--synchronized)
        for run in $(seq "$RUNS"); do
            name="silence-$sessions-$mode-$run"
            echo "== $name" >&2
            run_once "$name" "${flags[@]}" >"$OUT/$name.json"
        done
    done
done

# Medians over the runs, from the JSON reports; the server-side columns read
# the server's own `dropped ... silent_ms=` log lines (its clock read at each
# drop, in listening time, whole milliseconds).
python3 - "$OUT" "$RUNS" $SESSIONS <<'PY'
import json, re, statistics, sys
out, runs, sessions = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| sessions | last PINGs | p50 ms | p90 ms | p99 ms | max ms | min ms "
      "| before deadline | never dropped | not BYE timeout "
      "| server verdict p99 ms | server verdict max ms | server verdict min ms | others' CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def p99(values):
    values = sorted(values)
    return values[max(0, -(-99 * len(values) // 100) - 1)] if values else float("nan")
for n in sessions:
    for mode in ("spread", "synchronized"):
        reports, server, server_max, server_min, others = [], [], [], [], []
        for run in range(1, runs + 1):
            name = f"{out}/silence-{n}-{mode}-{run}"
            reports.append(json.load(open(f"{name}.json")))
            deadline = reports[-1]["settings"]["deadline_ms"]
            silent = [int(m) for m in re.findall(r"dropped .*reason=timeout silent_ms=(\d+)",
                                                 open(f"{name}.server.log").read())]
            late = [s - deadline for s in silent]
            server.append(p99(late))
            server_max.append(max(late, default=float("nan")))
            server_min.append(min(late, default=float("nan")))
            others.append(open(f"{name}.others").read().strip())
        med = lambda f: statistics.median(f(r) for r in reports)
        err = lambda key: med(lambda r: r["error"][key])
        total = lambda key: sum(r["counts"][key] for r in reports)
        print(f"| {n} | {mode} | {err('p50_ms'):.1f} | {err('p90_ms'):.1f} | {err('p99_ms'):.1f} "
              f"| {err('max_ms'):.1f} | {err('min_ms'):.2f} | {total('dropped_before_deadline')} "
              f"| {total('never_dropped')} | {total('ended_otherwise')} "
              f"| {statistics.median(server):.0f} | {statistics.median(server_max):.0f} "
              f"| {min(server_min):.0f} | {'/'.join(others)} |")
print(f"\nmedians of {runs} runs per row (server verdict min: the smallest over the runs); "
      "counts are totals over the runs; server verdict = silent_ms - deadline from the server's "
      "own drop log lines (its clock read at each drop, whole ms); others' CPU is each run's "
      "share of the machine used by other processes")
PY
