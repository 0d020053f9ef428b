# shellcheck shell=bash
# Helpers shared by the benchmark scripts: logging, a scratch directory that is
# removed on exit, the processes to stop on exit, free loopback ports,
# readiness polling. Sourced, never run; the caller sets `set -euo pipefail`.
#
# After `bench_init NAME`: $WORK is a fresh temporary directory, and every pid
# appended to PIDS is stopped (TERM, then KILL after ~10 s) when the script exits.

# Only loopback is ever targeted.
HOST=127.0.0.1
# free_port draws from PORT_BASE .. PORT_BASE + PORT_SPAN - 1: by default
# 20000-31999, below Linux's ephemeral range (32768-60999). A port picked
# inside it could be taken by some connection's local end before the server
# binds it (a node once failed to start so, mid-run).
PORT_BASE=${PORT_BASE:-20000}
PORT_SPAN=${PORT_SPAN:-12000}

log() { echo "[bench] $*" >&2; }
die() { log "error: $*"; exit 1; }

# bench_init NAME: creates $WORK and installs the exit trap.
bench_init() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    TAKEN=" "
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    local pid _
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# forget_pid PID: drops PID from PIDS (it has been stopped and reaped).
forget_pid() {
    local gone=$1 pid kept=()
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$gone" ] || kept+=("$pid")
    done
    PIDS=("${kept[@]}")
}

# stop_pid PID: TERM, up to ~30 s to exit, then KILL; reaps it and forgets it.
stop_pid() {
    local pid=$1 _
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# require_tools TOOL...: dies naming the first missing one.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y redis-server redis-tools)"
    done
}

# port_free PORT: true when nothing listens on HOST:PORT.
port_free() {
    ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# pick_port VAR [OFFSET]: sets VAR to a port nobody listens on, from a range
# away from the usual defaults; with OFFSET, PORT+OFFSET must be free too (a
# cluster bus port). Ports picked this way are never handed out twice. VAR must
# not start with _ (the locals here would hide it).
pick_port() {
    local _var=$1 _offset=${2:-} _port _i
    for _i in $(seq 1 200); do
        _port=$((PORT_BASE + RANDOM % PORT_SPAN))
        case "$TAKEN" in *" $_port "*) continue ;; esac
        if [ -n "$_offset" ]; then
            case "$TAKEN" in *" $((_port + _offset)) "*) continue ;; esac
            port_free $((_port + _offset)) || continue
        fi
        if port_free "$_port"; then
            TAKEN="$TAKEN$_port "
            [ -z "$_offset" ] || TAKEN="$TAKEN$((_port + _offset)) "
            printf -v "$_var" '%s' "$_port"
            return 0
        fi
    done
    die "no free loopback port found"
}

# free_port: prints a free port. Run as $(free_port) it cannot record the port
# as taken in the caller's shell; prefer pick_port.
free_port() {
    local port
    pick_port port
    echo "$port"
}

# Polls PING until PONG; gives up after ~30 s or if the process died.
wait_ready() {
    local name=$1 port=$2 pid=$3 _
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$WORK/$name.log" >&2 2>/dev/null || true
            die "$name exited during startup (its log is above)"
        fi
        if [ "$(redis-cli -h "$HOST" -p "$port" ping 2>/dev/null)" = "PONG" ]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer PING on $HOST:$port"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# cpu_ticks PID: user + system clock ticks the process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wait_idle PID [LIMIT_S]: waits until the process used under 3% of a core
# over a second (its storage engine's flushes and compactions after a load
# have finished), at most LIMIT_S seconds (default 60). Resident memory read
# mid-compaction swings by a factor of two between runs.
wait_idle() {
    local pid=$1 limit=${2:-60} hz _ before after
    hz=$(getconf CLK_TCK)
    for _ in $(seq 1 "$limit"); do
        before=$(cpu_ticks "$pid") || return 0
        sleep 1
        after=$(cpu_ticks "$pid") || return 0
        if [ $((after - before)) -le $((hz * 3 / 100)) ]; then
            return 0
        fi
    done
    log "warning: pid $pid still busy after $limit s; reading it anyway"
}
