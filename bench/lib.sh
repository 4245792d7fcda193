# Shell functions shared by the benchmark scripts (silence.sh, compare.sh),
# sourced rather than run: start and stop the server under test, wait for
# the shared machine to be quiet, and measure how much of it other processes
# used during a run. The sourcing script sets OUT (its output directory) and
# SERVER_BIN (the lubdub binary to measure).

QUIET_BUSY=${QUIET_BUSY:-10}
QUIET_WAIT=${QUIET_WAIT:-600}

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        # A server left stopped by an interrupted stall run would not act on
        # SIGTERM, and the wait would hang.
        kill -CONT "$server_pid" 2>/dev/null || true
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# Prints what the sed expression $3 extracts from the first line of the log
# $2 it matches, once process $1 has written it; exits if the process dies
# or 10 s pass first.
wait_for_log_line() {
    local pid=$1 log=$2 expression=$3 found
    for _ in $(seq 100); do
        found=$(sed -n "$expression" "$log" 2>/dev/null | head -1)
        if [[ -n "$found" ]]; then
            echo "$found"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server did not start; see $log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the server printed no ready line within 10 s; see $log" >&2
    exit 1
}

# Starts `lubdub server` on free loopback ports with the flags given after
# the log file $1, logging to that file, and sets $server_pid and, from its
# ready line, $server_addr.
#
# The per-source limits and the PING rate limit are lifted: the load
# generator plays thousands of clients from a few source addresses, and the
# pump sends PINGs far faster than the interval calls for on purpose, to
# measure the cost of a heartbeat (Mosquitto, measured beside it, has
# neither limit).
start_server() {
    local log=$1
    shift
    "$SERVER_BIN" server --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
        --max-connections-per-ip 0 --accept-rate-per-ip 0 --max-pings-per-interval 0 \
        "$@" 2>"$log" &
    server_pid=$!
    server_addr=$(wait_for_log_line "$server_pid" "$log" \
        's/.*lubdub server ready listen=\([0-9.:]*\).*/\1/p')
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

# others_begin, then the run (its server and client as this shell's
# children, finished by the end), then `others_end FILE` writes to FILE the
# share of the machine, in percent, that other processes used meanwhile: a
# neighbour's build shows up there.
others_begin() {
    others_busy_before=$(machine_busy_seconds)
    read_children_seconds
    others_children_before=$children
    others_started=$(date +%s.%N)
}
others_end() {
    read_children_seconds
    awk -v b0="$others_busy_before" -v b1="$(machine_busy_seconds)" \
        -v c0="$others_children_before" -v c1="$children" \
        -v t0="$others_started" -v t1="$(date +%s.%N)" -v cores="$(nproc)" \
        'BEGIN { o = ((b1 - b0) - (c1 - c0)) / ((t1 - t0) * cores) * 100;
                 printf "%.0f\n", (o < 0 ? 0 : o) }' >"$1"
}
