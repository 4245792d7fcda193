#!/usr/bin/env bash
# Issue 15's presence benchmarks, run side by side (lubdub bench presence
# and lubdub bench silence against one release server per run):
#
#   outage:  SESSIONS sessions in ROOMS rooms fall silent at once while
#            READERS curl -N readers hold GET /events?kinds=offline and
#            WATCHERS sessions watch the rooms (each one room, WATCHERS /
#            ROOMS to a room; EVERY_ROOM=1: each every room, which is
#            SESSIONS × WATCHERS frames per burst). Rows: nobody watching;
#            the watchers only; readers and watchers. Reports the verdicts'
#            error (the server's log), the departures every watcher and
#            reader received, the server's CPU seconds for the outage, and
#            from the first two rows the cost per change per watcher.
#   room:    MEMBERS members in one room, CHURN of them leaving and joining
#            again a second; one full and one count-only watcher: what each
#            receives a second, and the server's CPU.
#   memory:  the server's resident memory per room membership (MEMBERS
#            members join) and per watch (WATCH_SESSIONS sessions each
#            watching 10 names).
#
# Usage: bench/presence.sh [outage|room|memory|all]
# Environment: SESSIONS [10000] ROOMS [10] READERS [100] WATCHERS [1000]
#   MEMBERS [10000] CHURN [100] WATCH_SESSIONS [2000] RUNS [3] INTERVAL [1s]
#   READER_NICE [0]: the nice value of the readers and watchers (19 stands
#   in for subscribers on other machines: they take only spare CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
SESSIONS=${SESSIONS:-10000}
ROOMS=${ROOMS:-10}
READERS=${READERS:-100}
WATCHERS=${WATCHERS:-1000}
MEMBERS=${MEMBERS:-10000}
CHURN=${CHURN:-100}
WATCH_SESSIONS=${WATCH_SESSIONS:-2000}
RUNS=${RUNS:-3}
# One second, as fleets heartbeat: at 100 ms, 10,000 sessions on a 2-core
# machine shared with the load generator and 1,000 watchers flap suspect /
# recovered (25,000 a second seen), each change to every watcher of the room.
INTERVAL=${INTERVAL:-1s}
READER_NICE=${READER_NICE:-0}
export RUST_LOG=${RUST_LOG:-info} ROOMS
OUT=target/bench
BIN=target/release/lubdub
SERVER_BIN=$BIN

# shellcheck source=bench/lib.sh
source bench/lib.sh

cargo build --release --locked --quiet
mkdir -p "$OUT"

helpers=()
stop_helpers() {
    for pid in "${helpers[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${helpers[@]}"; do wait "$pid" 2>/dev/null || true; done
    helpers=()
}
trap 'stop_helpers; stop_server' EXIT

# CPU seconds the server has used so far (utime + stime).
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$server_pid/stat"
}

wait_for_text() { # file, text, seconds
    for _ in $(seq $(($3 * 10))); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no '$2' in $1 after $3 s" >&2
    return 1
}

outage_once() {
    local name=$1 readers=$2 watchers=$3
    wait_for_quiet
    # Watchers of an outage read a burst of millions of frames: their
    # queues may hold 8 MiB for up to a minute (--max-outbound,
    # --slow-consumer-timeout), which an operator of such watchers sets.
    start_server "$OUT/$name.server.log" --interval "$INTERVAL" \
        --admin-max-connections $((readers + 16)) --max-outbound 8388608 --slow-consumer-timeout 60s
    local admin
    admin=$(sed -n 's/.*lubdub server ready.* admin=\([0-9.:]*\).*/\1/p' "$OUT/$name.server.log" | head -1)
    rm -f "$OUT/$name".reader-* "$OUT/$name.watchers.json" "$OUT/$name.watchers.err"
    for index in $(seq "$readers"); do
        nice -n "$READER_NICE" curl -sN "http://$admin/events?kinds=offline" >"$OUT/$name.reader-$index" &
        helpers+=($!)
    done
    local rooms
    rooms=$(seq -s, -f '#fleet-%g' 0 $((ROOMS - 1)))
    local spread=(--spread) expected=$((SESSIONS / ROOMS))
    if [[ ${EVERY_ROOM:-0} == 1 ]]; then
        spread=()
        expected=$SESSIONS
    fi
    if [[ $watchers -gt 0 ]]; then
        nice -n "$READER_NICE" "$BIN" bench presence --server "$server_addr" --interval 1s --watchers "$watchers" \
            "${spread[@]}" --watch "$rooms" --expect-leaves "$expected" --duration 180s --server-pid "$server_pid" \
            >"$OUT/$name.watchers.json" 2>"$OUT/$name.watchers.err" &
        helpers+=($!)
        wait_for_text "$OUT/$name.watchers.err" measuring 60
    fi
    # The joins' changes reach every watcher during the warm-up, before the silence.
    local cpu_before status=0
    cpu_before=$(server_cpu)
    "$BIN" bench silence --server "$server_addr" --interval "$INTERVAL" --sessions "$SESSIONS" \
        --rooms "$ROOMS" --warmup 20s --grace 30s --json >"$OUT/$name.json" || status=$?
    # Readers and watchers get the last changes a little later.
    local dropped waited=0
    dropped=$(grep -c 'reason=timeout' "$OUT/$name.server.log" || true)
    for index in $(seq "$readers"); do
        while [[ $(grep -c '"kind":"offline"' "$OUT/$name.reader-$index" || true) -lt $dropped && $waited -lt 600 ]]; do
            sleep 0.1
            waited=$((waited + 1))
        done
    done
    if [[ $watchers -gt 0 ]]; then
        while ! grep -q '"window_s"' "$OUT/$name.watchers.json" 2>/dev/null && [[ $waited -lt 1800 ]]; do
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    echo "$cpu_before $(server_cpu)" >"$OUT/$name.cpu"
    stop_helpers
    stop_server
    if [[ $status -ne 0 && $status -ne 2 ]]; then
        echo "lubdub bench silence failed (exit $status)" >&2
        exit "$status"
    fi
}

outage() {
    for run in $(seq "$RUNS"); do
        for row in "0 0" "0 $WATCHERS" "$READERS $WATCHERS"; do
            read -r readers watchers <<<"$row"
            local name="presence-outage-$readers-$watchers-$run"
            echo "== $name" >&2
            outage_once "$name" "$readers" "$watchers"
        done
    done
    python3 - "$OUT" "$RUNS" "$SESSIONS" "$READERS" "$WATCHERS" <<'PY'
import glob, json, re, statistics, sys
out, runs, sessions, readers_n, watchers_n = sys.argv[1], *map(int, sys.argv[2:])
def p99(values):
    values = sorted(values)
    return values[max(0, -(-99 * len(values) // 100) - 1)] if values else float("nan")
print("| readers | watchers | verdict p99 ms past deadline (server) | max ms | never dropped | offline per reader (min) | departures per watcher (min / median) | last departure at a watcher, s after the window opened | server CPU s (silence run) |")
print("|---|---|---|---|---|---|---|---|---|")
cpu = {}
for readers, watchers in ((0, 0), (0, watchers_n), (readers_n, watchers_n)):
    server, worst, never, got, wmin, wmed, last, cpus = [], [], 0, [], [], [], [], []
    for run in range(1, runs + 1):
        name = f"{out}/presence-outage-{readers}-{watchers}-{run}"
        report = json.load(open(f"{name}.json"))
        deadline = report["settings"]["deadline_ms"]
        silent = [int(m) for m in re.findall(r"dropped .*reason=timeout silent_ms=(\d+)", open(f"{name}.server.log").read())]
        server.append(p99([s - deadline for s in silent]))
        worst.append(max(s - deadline for s in silent))
        never += report["counts"]["never_dropped"]
        for path in glob.glob(f"{name}.reader-*"):
            got.append(open(path).read().count('"kind":"offline"'))
        if watchers:
            w = json.load(open(f"{name}.watchers.json"))["full"]
            wmin.append(w["departures_min"]); wmed.append(w["departures_median"]); last.append(w["last_departure_s"])
        a, b = map(float, open(f"{name}.cpu").read().split())
        cpus.append(b - a)
    cpu[(readers, watchers)] = statistics.median(cpus)
    print(f"| {readers} | {watchers} | {statistics.median(server):.0f} | {max(worst)} | {never} "
          f"| {min(got) if got else '-'} | {(str(min(wmin)) + ' / ' + str(statistics.median(wmed))) if wmin else '-'} "
          f"| {statistics.median(last) if last else '-'} | {statistics.median(cpus):.2f} |")
extra = cpu[(0, watchers_n)] - cpu[(0, 0)]
import os
rooms = int(os.environ.get("ROOMS", "10"))
per = watchers_n if os.environ.get("EVERY_ROOM") == "1" else watchers_n // rooms
print(f"\nmedians of {runs} runs per row; {sessions} sessions in {rooms} rooms #fleet-0..; {per} watchers per room "
      f"(the joins' changes reach them in the 20 s warm-up, inside the CPU figure). Cost per change per watcher, "
      f"joins and departures: {extra:.2f} s / ({2 * sessions} changes × {per} watchers) = "
      f"{extra / (2 * sessions * per) * 1e6:.3f} µs")
PY
}

room() {
    for run in $(seq "$RUNS"); do
        local name="presence-room-$run"
        echo "== $name" >&2
        wait_for_quiet
        # A listing of 10,000 members takes about 480 KB: within half of
        # the default 1 MiB queue.
        start_server "$OUT/$name.server.log"
        "$BIN" bench presence --server "$server_addr" --members "$MEMBERS" --churn "$CHURN" \
            --watchers 1 --count-watchers 1 --duration 20s --server-pid "$server_pid" \
            >"$OUT/$name.json" 2>"$OUT/$name.err"
        stop_server
    done
    python3 - "$OUT" "$RUNS" "$MEMBERS" "$CHURN" <<'PY'
import json, statistics, sys
out, runs, members, churn = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
reports = [json.load(open(f"{out}/presence-room-{run}.json")) for run in range(1, runs + 1)]
med = lambda f: statistics.median(f(r) for r in reports)
print("| watcher | PRESENCE frames / s | bytes / s |")
print("|---|---|---|")
for kind in ("full", "count"):
    print(f"| {kind} | {med(lambda r: r[kind]['frames_per_sec_median']):.1f} | {med(lambda r: r[kind]['bytes_per_sec_median']):.0f} |")
print(f"\nserver CPU: {med(lambda r: r['server_cpu_cores']) * 100:.1f} % of one core (median of {runs} runs of 20 s); "
      f"{members} members, {churn} leaving and joining again a second (each a `leave` and a `join`)")
PY
}

memory() {
    for run in $(seq "$RUNS"); do
        local name="presence-memory-$run"
        echo "== $name" >&2
        wait_for_quiet
        start_server "$OUT/$name.server.log" --interval 1s
        "$BIN" bench presence --server "$server_addr" --members "$MEMBERS" \
            --watchers "$WATCH_SESSIONS" --watch "$(seq -s, -f 'nobody-%g' 0 9)" \
            --duration 1s --server-pid "$server_pid" >"$OUT/$name.json" 2>"$OUT/$name.err"
        stop_server
    done
    python3 - "$OUT" "$RUNS" "$MEMBERS" "$WATCH_SESSIONS" <<'PY'
import json, statistics, sys
out, runs, members, watchers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reports = [json.load(open(f"{out}/presence-memory-{run}.json")) for run in range(1, runs + 1)]
print(f"| per room membership ({members} members join) | per watch ({watchers} sessions × 10 names) |")
print("|---|---|")
m = statistics.median(r["bytes_per_membership"] for r in reports)
w = statistics.median(r["bytes_per_watch"] for r in reports)
print(f"| {m:.0f} B | {w:.0f} B |")
print(f"\nmedians of {runs} runs; the server's resident memory before and 2 s after each stage")
PY
}

case $WHAT in
    outage) outage ;;
    room) room ;;
    memory) memory ;;
    all) memory; room; outage ;;
    *) echo "usage: $0 [outage|room|memory|all]" >&2; exit 2 ;;
esac
