#!/usr/bin/env bash
# Issue 14's benchmarks, side by side in one run: the server before the
# issue (BASELINE), this server with --threads 1 and --threads 2, and the
# floor (bench/floor.rs: one epoll loop, a read and a write per PING), each
# driven by the same `lubdub bench hold|pump --json` at SESSIONS sessions.
# For --threads 2 it also reports how the sessions spread over the loops
# (from the session ids in the server's log) and each loop thread's CPU time.
# Reports and logs stay in target/bench/loops/; the Markdown table
# (medians of the runs, ratios to the baseline and to the floor) goes to
# stdout.
#
# Usage: bench/loops.sh
# Environment (defaults in brackets):
#   BASELINE [27adf7d: the last commit before issue 14]  SESSIONS [19000]
#   RUNS [3]  SCENARIOS ["hold pump"]  DURATION [the scenario's default]
#   PUMP_RATE [20000]: heartbeats per second offered in the pump runs
#   QUIET_BUSY [10], QUIET_WAIT [600]: as in bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BASELINE=${BASELINE:-27adf7d}
SESSIONS=${SESSIONS:-19000}
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"hold pump"}
DURATION=${DURATION:-}
PUMP_RATE=${PUMP_RATE:-20000}
OUT=target/bench/loops
BIN=target/release/lubdub
FLOOR=target/release/examples/floor
SERVER_BIN=$BIN

# shellcheck source=bench/lib.sh
source bench/lib.sh

mkdir -p "$OUT"
cargo build --release --locked --quiet --bin lubdub --example floor
baseline_src=$OUT/baseline-src
if [[ ! -d $baseline_src ]]; then
    git worktree add --detach "$baseline_src" "$BASELINE" >&2
fi
(cd "$baseline_src" && CARGO_TARGET_DIR=$PWD/../baseline-target \
    cargo build --release --locked --quiet --bin lubdub)
BASELINE_BIN=$OUT/baseline-target/release/lubdub
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Each loop thread's CPU time (ns) of server $1, as "name=ns" words.
loop_cpu() {
    local pid=$1 task
    for task in /proc/"$pid"/task/*; do
        local comm
        comm=$(cat "$task/comm" 2>/dev/null) || continue
        [[ $comm == lubdub-loop-* ]] || continue
        awk -v name="$comm" '{print name "=" $2}' "$task/schedstat"
    done | tr '\n' ' '
}

run_once() {
    local kind=$1 scenario=$2 name=$3
    shift 3
    echo "== $name" >&2
    wait_for_quiet
    others_begin
    case $kind in
        floor)
            "$FLOOR" 127.0.0.1:0 2>"$OUT/$name.server.log" &
            server_pid=$!
            server_addr=$(wait_for_log_line "$server_pid" "$OUT/$name.server.log" \
                's/.*floor server ready listen=\([0-9.:]*\).*/\1/p')
            ;;
        baseline)
            SERVER_BIN=$BASELINE_BIN start_server "$OUT/$name.server.log"
            ;;
        threads1)
            SERVER_BIN=$BIN start_server "$OUT/$name.server.log" --threads 1
            ;;
        threads2)
            SERVER_BIN=$BIN start_server "$OUT/$name.server.log" --threads 2
            ;;
    esac
    local before after status=0
    before=$(loop_cpu "$server_pid")
    "$BIN" bench "$scenario" --protocol lubdub --server "$server_addr" \
        --server-pid "$server_pid" --json "$@" >"$OUT/$name.json" || status=$?
    after=$(loop_cpu "$server_pid")
    echo "before: $before" >"$OUT/$name.loops"
    echo "after: $after" >>"$OUT/$name.loops"
    stop_server
    others_end "$OUT/$name.others"
    if [[ $status -ne 0 && $status -ne 2 ]]; then
        echo "lubdub bench $scenario against $kind failed (exit $status)" >&2
        exit "$status"
    fi
}

for scenario in $SCENARIOS; do
    flags=(--sessions "$SESSIONS")
    if [[ $scenario == hold ]]; then
        flags+=(--period 2.4s)
    else
        flags+=(--period "$((SESSIONS * 1000 / PUMP_RATE))ms")
    fi
    [[ -n "$DURATION" ]] && flags+=(--duration "$DURATION")
    for run in $(seq "$RUNS"); do
        for kind in baseline threads1 threads2 floor; do
            run_once "$kind" "$scenario" "$scenario-$kind-$run" "${flags[@]}"
        done
    done
done

python3 - "$OUT" "$RUNS" "$SCENARIOS" <<'PY'
import json, re, statistics, sys
out, runs, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
kinds = (("baseline", "before issue 14"), ("threads1", "--threads 1"),
         ("threads2", "--threads 2"), ("floor", "floor"))

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def cell(value, digits):
    return "–" if value is None else f"{value:,.{digits}f}"

print("| scenario | server | held | acked/s | RSS bytes/session | CPU µs/heartbeat | "
      "CPU % of a core | RTT p99 ms | × baseline CPU | × floor CPU | × floor RSS |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for scenario in scenarios:
    rows = {}
    for kind, label in kinds:
        reports = [json.load(open(f"{out}/{scenario}-{kind}-{run}.json"))
                   for run in range(1, runs + 1)]
        server = lambda r, k: r["server"][k] if r.get("server") else None
        rows[kind] = {
            "held": median(r["sessions_open"] for r in reports),
            "acked": median(r["acked_per_s"] for r in reports),
            "rss": median(server(r, "rss_per_session_bytes") for r in reports),
            "cpu": median(server(r, "cpu_us_per_heartbeat") for r in reports),
            "core": median(server(r, "cpu_percent_of_core") for r in reports),
            "p99": median((r["round_trip"] or {}).get("p99_ms") for r in reports),
        }
    for kind, label in kinds:
        row = rows[kind]
        ratio = lambda a, b: None if a is None or not b else a / b
        print(f"| {scenario} | {label} | {cell(row['held'], 0)} | {cell(row['acked'], 0)} "
              f"| {cell(row['rss'], 0)} | {cell(row['cpu'], 2)} | {cell(row['core'], 1)} "
              f"| {cell(row['p99'], 2)} | {cell(ratio(row['cpu'], rows['baseline']['cpu']), 3)} "
              f"| {cell(ratio(row['cpu'], rows['floor']['cpu']), 3)} "
              f"| {cell(ratio(row['rss'], rows['floor']['rss']), 3)} |")
for scenario in scenarios:
    for run in range(1, runs + 1):
        text = open(f"{out}/{scenario}-threads2-{run}.loops").read()
        before = dict(re.findall(r"(lubdub-loop-\d+)=(\d+)", text.split("after:")[0]))
        after = dict(re.findall(r"(lubdub-loop-\d+)=(\d+)", text.split("after:")[1]))
        busy = {name: (int(after[name]) - int(before.get(name, 0))) / 1e9 for name in after}
        # Where each session landed: the loop is bits 24..32 of the session
        # id every `joined` line of the server's log carries.
        spread = {}
        for line in open(f"{out}/{scenario}-threads2-{run}.server.log"):
            found = re.search(r" joined .*session=(\d+)", line)
            if found:
                loop = (int(found.group(1)) >> 24) & 0xff
                spread[loop] = spread.get(loop, 0) + 1
        print(f"{scenario} --threads 2 run {run}: loop CPU seconds "
              f"{ {name: round(seconds, 2) for name, seconds in busy.items()} }; "
              f"sessions per loop {dict(sorted(spread.items()))}")
PY
