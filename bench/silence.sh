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

cargo build --release --locked --quiet
mkdir -p "$OUT"

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# Starts a server logging to $1 and sets $server_addr from its ready line.
start_server() {
    local log=$1
    "$SERVER_BIN" server --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
        --interval "$INTERVAL" --max-missed "$MAX_MISSED" 2>"$log" &
    server_pid=$!
    server_addr=""
    for _ in $(seq 100); do
        server_addr=$(sed -n 's/.*lubdub server ready listen=\([0-9.:]*\).*/\1/p' "$log")
        [[ -n "$server_addr" ]] && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the server did not start:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the server printed no ready line within 10 s; see $log" >&2
    exit 1
}

# Percentage of the machine's CPU time spent busy over one second.
machine_busy() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 1
    read -r -a b < <(head -1 /proc/stat)
    local busy=0 total=0 i d
    for i in 1 2 3 4 5 6 7 8; do
        d=$((b[i] - a[i]))
        total=$((total + d))
        # Fields 4 and 5 are idle and iowait.
        [[ $i -ne 4 && $i -ne 5 ]] && busy=$((busy + d))
    done
    echo $((total > 0 ? 100 * busy / total : 0))
}

# The machine is shared: wait (up to QUIET_WAIT seconds) until other work
# leaves it at most QUIET_BUSY percent busy, so that a neighbour's build does
# not end up in the figures. A run that starts on a busy machine says so.
QUIET_BUSY=${QUIET_BUSY:-10}
QUIET_WAIT=${QUIET_WAIT:-600}
wait_for_quiet() {
    local waited=0 busy
    while busy=$(machine_busy); ((busy > QUIET_BUSY)); do
        if ((waited >= QUIET_WAIT)); then
            echo "warning: the machine is still ${busy}% busy; measuring anyway" >&2
            return 0
        fi
        ((waited % 30 == 0)) && echo "the machine is ${busy}% busy; waiting for it to calm down" >&2
        waited=$((waited + 1))
    done
}

# CPU seconds the machine has spent in processes (user, nice, system) or
# lost to the hypervisor (steal) since boot. Interrupt and softirq time is
# left out: loopback TCP is processed there on behalf of server and client
# without being charged to either.
machine_busy_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $9) / hz }' /proc/stat
}

# Sets $children to the CPU seconds used by this shell's finished children
# (server and client). `times` must run in this shell, not in a $(...)
# subshell, whose own children start from zero.
read_children_seconds() {
    times >"$OUT/.times"
    children=$(tail -1 "$OUT/.times" | awk '{ gsub(/s/, ""); split($1, u, "m");
        split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
}

# One run: fresh server, the scenario, server stopped. Exit status 2 (the
# requirement was missed) is a result, not a failure of the script. Also
# writes $OUT/$name.others: the share of the machine that other processes
# used during the run (a neighbour's build shows up there).
run_once() {
    local name=$1
    shift
    wait_for_quiet
    local busy_before children_before started
    busy_before=$(machine_busy_seconds)
    read_children_seconds
    children_before=$children
    started=$(date +%s.%N)
    start_server "$OUT/$name.server.log"
    local status=0
    "$BIN" bench silence --server "$server_addr" --interval "$INTERVAL" "$@" || status=$?
    stop_server
    read_children_seconds
    awk -v b0="$busy_before" -v b1="$(machine_busy_seconds)" \
        -v c0="$children_before" -v c1="$children" \
        -v t0="$started" -v t1="$(date +%s.%N)" -v cores="$(nproc)" \
        'BEGIN { o = ((b1 - b0) - (c1 - c0)) / ((t1 - t0) * cores) * 100;
                 printf "%.0f\n", (o < 0 ? 0 : o) }' >"$OUT/$name.others"
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
