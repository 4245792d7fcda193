#!/usr/bin/env bash
# Issue 15's first benchmark, its event-stream half: N sessions fall silent
# at once (`lubdub bench silence`) while CONSUMERS readers hold GET /events
# (curl -N, ?kinds=offline). Reports, side by side in one run each: the
# verdicts' error without readers and with them, and how many of the N
# offline changes each reader received (all, or how many short).
#
# Usage: bench/events.sh
# Environment (defaults in brackets):
#   SESSIONS [10000]  CONSUMERS [100]  RUNS [3]  INTERVAL [100ms]  MAX_MISSED [5]
#   READER_NICE [0]: the readers' nice value; 19 stands in for readers on
#   other machines (they take only the CPU the server leaves spare)
#   RUST_LOG [info]; QUIET_BUSY, QUIET_WAIT: see bench/lib.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-10000}
CONSUMERS=${CONSUMERS:-100}
RUNS=${RUNS:-3}
INTERVAL=${INTERVAL:-100ms}
MAX_MISSED=${MAX_MISSED:-5}
READER_NICE=${READER_NICE:-0}
export RUST_LOG=${RUST_LOG:-info}
OUT=target/bench
BIN=target/release/lubdub
SERVER_BIN=$BIN

# shellcheck source=bench/lib.sh
source bench/lib.sh

cargo build --release --locked --quiet
mkdir -p "$OUT"

consumers=()
stop_consumers() {
    for pid in "${consumers[@]}"; do kill "$pid" 2>/dev/null || true; done
    consumers=()
}
trap 'stop_consumers; stop_server' EXIT

# One run: fresh server, $1 readers of /events, the silence scenario.
run_once() {
    local name=$1 readers=$2
    wait_for_quiet
    others_begin
    start_server "$OUT/$name.server.log" --interval "$INTERVAL" --max-missed "$MAX_MISSED" \
        --admin-max-connections $((readers + 16))
    local admin
    admin=$(sed -n 's/.*lubdub server ready.* admin=\([0-9.:]*\).*/\1/p' "$OUT/$name.server.log" | head -1)
    rm -f "$OUT/$name".reader-*
    for index in $(seq "$readers"); do
        nice -n "$READER_NICE" curl -sN "http://$admin/events?kinds=offline" >"$OUT/$name.reader-$index" &
        consumers+=($!)
    done
    # Every reader's stream is open (its first comment line) before the load.
    for index in $(seq "$readers"); do
        for _ in $(seq 100); do
            [[ -s "$OUT/$name.reader-$index" ]] && break
            sleep 0.1
        done
    done
    local status=0
    "$BIN" bench silence --server "$server_addr" --interval "$INTERVAL" \
        --sessions "$SESSIONS" --json >"$OUT/$name.json" || status=$?
    # The readers get the last changes within a second or so: wait until
    # each has as many as the server logged (a session lost in the warm-up
    # is one fewer), or 30 s in all.
    local dropped waited=0
    dropped=$(grep -c 'reason=timeout' "$OUT/$name.server.log" || true)
    for index in $(seq "$readers"); do
        while [[ $(grep -c '"kind":"offline"' "$OUT/$name.reader-$index" || true) -lt $dropped && $waited -lt 300 ]]; do
            sleep 0.1
            waited=$((waited + 1))
        done
    done
    stop_consumers
    stop_server
    others_end "$OUT/$name.others"
    if [[ $status -ne 0 && $status -ne 2 ]]; then
        echo "lubdub bench silence failed (exit $status)" >&2
        exit "$status"
    fi
}

for run in $(seq "$RUNS"); do
    for readers in 0 "$CONSUMERS"; do
        name="events-$SESSIONS-$readers-$run"
        echo "== $name" >&2
        run_once "$name" "$readers"
    done
done

python3 - "$OUT" "$RUNS" "$SESSIONS" "$CONSUMERS" "$READER_NICE" <<'PY'
import glob, json, re, statistics, sys
out, runs, sessions, consumers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
nice = sys.argv[5]
def p99(values):
    values = sorted(values)
    return values[max(0, -(-99 * len(values) // 100) - 1)] if values else float("nan")
print("| readers of /events | client p50 ms | client p99 ms | client max ms | server verdict p99 ms "
      "| before deadline | never dropped | offline changes per reader (min / median) | readers short | resync notices per reader (median) | others' CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for readers in (0, consumers):
    reports, server, got, short, resyncs, others = [], [], [], 0, [], []
    for run in range(1, runs + 1):
        name = f"{out}/events-{sessions}-{readers}-{run}"
        report = json.load(open(f"{name}.json"))
        reports.append(report)
        deadline = report["settings"]["deadline_ms"]
        silent = [int(m) for m in re.findall(r"dropped .*reason=timeout silent_ms=(\d+)",
                                             open(f"{name}.server.log").read())]
        server.append(p99([s - deadline for s in silent]))
        dropped = len(silent)
        for path in glob.glob(f"{name}.reader-*"):
            text = open(path).read()
            count = text.count('"kind":"offline"')
            got.append(count)
            resyncs.append(text.count('"kind":"resync"'))
            short += count < dropped
        others.append(open(f"{name}.others").read().strip())
    med = lambda key: statistics.median(r["error"][key] for r in reports)
    total = lambda key: sum(r["counts"][key] for r in reports)
    readers_col = f"{min(got)} / {statistics.median(got):.0f}" if got else "-"
    print(f"| {readers} | {med('p50_ms'):.1f} | {med('p99_ms'):.1f} | {med('max_ms'):.1f} "
          f"| {statistics.median(server):.0f} | {total('dropped_before_deadline')} "
          f"| {total('never_dropped')} | {readers_col} | {short} "
          f"| {statistics.median(resyncs) if resyncs else '-'} | {'/'.join(others)} |")
print(f"\nmedians of {runs} runs per row; {sessions} sessions fall silent at once; readers hold "
      f"GET /events?kinds=offline with curl -N (nice {nice})")
PY
