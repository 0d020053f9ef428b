#!/usr/bin/env bash
# Colony beside Redis under redis-benchmark: throughput per command at pipeline
# 1 and 16 (median of RUNS runs), then resident memory with 1M distinct
# 100-byte values (median of MEM_ROUNDS loads, each into a fresh server).
# Prints a markdown table.
#
# Environment:
#   N=1000000        requests per redis-benchmark run
#   RUNS=3           runs per (server, pipeline); the median is reported
#   CLIENTS=50       redis-benchmark connections
#   MEM_KEYS=1000000 distinct keys loaded for the memory rows
#   MEM_ROUNDS=3     loads for the memory rows, each into a fresh server
#                    (Colony's resident memory after a load is bimodal: one
#                    reading cannot be trusted)
#   SKIP_COLONY=1    measure Redis only (Colony is neither built nor started)
#   COLONY_BIN=path  use this colony binary instead of building one
#   COLONY_ARGS=""   extra flags for the Colony node
#   ALT_ARGS=""      if set, a second Colony node with these extra flags is
#                    measured too, in its own column (ALT_ARGS="--threads 1")
#   SKIP_MEMORY=1    skip the memory rows
#   BENCH_TIMEOUT=900  seconds any single benchmark command may take
#
# Only loopback addresses are used. Everything started here is stopped on exit.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

N=${N:-1000000}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-50}
MEM_KEYS=${MEM_KEYS:-1000000}
MEM_ROUNDS=${MEM_ROUNDS:-3}
SKIP_COLONY=${SKIP_COLONY:-0}
SKIP_MEMORY=${SKIP_MEMORY:-0}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}
TESTS=set,get,incr,sadd,hset

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
PORT_BASE=20000 PORT_SPAN=12000
bench_init colony-vs-redis

require_tools redis-server redis-cli redis-benchmark timeout

log "building colony-bench"
(cd "$ROOT" && cargo build --release -q -p colony-bench)
BENCH_BIN=$TARGET_DIR/release/colony-bench

# start_redis NAME: a Redis in $WORK/NAME with the durability settings the
# table states; sets NODE_PORT and NODE_PID.
start_redis() {
    local name=$1
    NODE_PORT=$(free_port)
    mkdir -p "$WORK/$name"
    redis-server --bind "$HOST" --port "$NODE_PORT" --dir "$WORK/$name" \
        --appendonly yes --appendfsync everysec --save '' \
        --daemonize no --logfile "$WORK/$name.log" &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_ready "$name" "$NODE_PORT" "$NODE_PID"
    log "$name $(redis-server --version | awk '{sub(/^v=/, "", $3); print $3}') on $HOST:$NODE_PORT (pid $NODE_PID)"
}

# stop_server PID: stops a server started here and waits for it.
stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

start_redis redis
REDIS_PORT=$NODE_PORT

# start_node NAME EXTRA_FLAGS: a Colony node in $WORK/NAME with the extra
# flags (one string, split on spaces); sets NODE_PORT and NODE_PID.
start_node() {
    local name=$1 extra http cluster
    read -r -a extra <<<"$2"
    NODE_PORT=$(free_port)
    http=$(free_port)
    cluster=$(free_port)
    mkdir -p "$WORK/$name"
    "$COLONY_BIN" start --data-dir "$WORK/$name" \
        --resp "$HOST:$NODE_PORT" --http "$HOST:$http" \
        --cluster "$HOST:$cluster" --fsync periodic "${extra[@]}" \
        >"$WORK/$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_ready "$name" "$NODE_PORT" "$NODE_PID"
    log "$name ${2:-} on $HOST:$NODE_PORT (pid $NODE_PID)"
}

COLONY_PORT="" COLONY_PID="" ALT_PORT=""
if [ "$SKIP_COLONY" != 1 ]; then
    if [ -z "${COLONY_BIN:-}" ]; then
        log "building colony"
        (cd "$ROOT" && cargo build --release -q -p colony-server)
        COLONY_BIN=$TARGET_DIR/release/colony
    fi
    start_node colony "${COLONY_ARGS:-}"
    COLONY_PORT=$NODE_PORT COLONY_PID=$NODE_PID
    if [ -n "${ALT_ARGS:-}" ]; then
        start_node colony-alt "$ALT_ARGS"
        ALT_PORT=$NODE_PORT
    fi
fi

# bench_once NAME PORT PIPELINE RUN: one redis-benchmark run; appends "name
# pipeline TEST rps" lines to $WORK/rps.
bench_once() {
    local name=$1 port=$2 pipeline=$3 run=$4
    log "$name: pipeline $pipeline, run $run/$RUNS"
    timeout "$BENCH_TIMEOUT" redis-benchmark -h "$HOST" -p "$port" -t "$TESTS" \
        -n "$N" -c "$CLIENTS" -P "$pipeline" --csv </dev/null |
        awk -F, -v n="$name" -v p="$pipeline" 'NR > 1 {
            gsub(/"/, ""); print n, p, $1, $2 }' >>"$WORK/rps"
}

# Runs are interleaved (each server in turn for every run), so a slow patch
# of this machine hurts every server alike instead of whichever ran then.
: >"$WORK/rps"
for pipeline in 1 16; do
    for run in $(seq 1 "$RUNS"); do
        bench_once redis "$REDIS_PORT" "$pipeline" "$run"
        if [ -n "$COLONY_PID" ]; then
            bench_once colony "$COLONY_PORT" "$pipeline" "$run"
        fi
        if [ -n "$ALT_PORT" ]; then
            bench_once alt "$ALT_PORT" "$pipeline" "$run"
        fi
    done
done

# measure_memory NAME PORT PID: loads MEM_KEYS distinct keys, prints "rss_kib dbsize".
measure_memory() {
    local name=$1 port=$2 pid=$3 dbsize
    redis-cli -h "$HOST" -p "$port" flushall >/dev/null 2>&1 || true
    log "$name: loading $MEM_KEYS distinct 100-byte values"
    timeout "$BENCH_TIMEOUT" "$BENCH_BIN" --host "$HOST" -p "$port" --workload set --load \
        --keyspace "$MEM_KEYS" --value-size 100 --requests 0 --clients 50 --pipeline 16 \
        --duration "$BENCH_TIMEOUT" --quiet >"$WORK/$name-load.txt"
    dbsize=$(redis-cli -h "$HOST" -p "$port" dbsize 2>/dev/null | tr -dc '0-9')
    wait_idle "$pid"
    echo "$(rss_kib "$pid") ${dbsize:-n/a}"
}

# median_line LINE...: of "rss dbsize" lines, the one with the median rss
# (the lower middle one of an even count).
median_line() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'
}

# rss_list LINE...: every rss of "rss dbsize" lines, in MiB, in load order.
rss_list() {
    printf '%s\n' "$@" | awk '{ printf "%s%.0f", (NR > 1 ? ", " : ""), $1 / 1024 }'
}

# Each load goes into a fresh server (new data directory), so that one
# load's memory does not depend on what the benchmark runs left behind.
REDIS_MEM="" COLONY_MEM="" REDIS_MEMS="" COLONY_MEMS=""
if [ "$SKIP_MEMORY" != 1 ]; then
    rmem=() cmem=()
    for round in $(seq 1 "$MEM_ROUNDS"); do
        start_redis "redis-mem$round"
        rmem+=("$(measure_memory "redis-mem$round" "$NODE_PORT" "$NODE_PID")")
        stop_server "$NODE_PID"
        if [ -n "$COLONY_PID" ]; then
            start_node "colony-mem$round" "${COLONY_ARGS:-}"
            cmem+=("$(measure_memory "colony-mem$round" "$NODE_PORT" "$NODE_PID")")
            stop_server "$NODE_PID"
        fi
    done
    REDIS_MEM=$(median_line "${rmem[@]}")
    REDIS_MEMS=$(rss_list "${rmem[@]}")
    if [ "${#cmem[@]}" -gt 0 ]; then
        COLONY_MEM=$(median_line "${cmem[@]}")
        COLONY_MEMS=$(rss_list "${cmem[@]}")
    fi
fi

# The table: medians per (command, pipeline), then memory.
awk -v runs="$RUNS" -v n="$N" -v clients="$CLIENTS" -v alt="${ALT_PORT:+${ALT_ARGS:-}}" \
    -v rmem="$REDIS_MEM" -v cmem="$COLONY_MEM" -v keys="$MEM_KEYS" \
    -v rmems="$REDIS_MEMS" -v cmems="$COLONY_MEMS" -v rounds="$MEM_ROUNDS" '
function median(key,   i, j, k, t, a) {
    k = cnt[key]
    if (k == 0) return ""
    for (i = 1; i <= k; i++) a[i] = val[key, i]
    for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return (k % 2) ? a[(k+1)/2] : (a[k/2] + a[k/2+1]) / 2
}
function fmt(v) { return v == "" ? "n/a" : sprintf("%.0f", v) }
function ratio(c, r) { return (c == "" || r == "" || r == 0) ? "n/a" : sprintf("%.2f", c / r) }
{
    key = $1 SUBSEP $2 SUBSEP $3
    val[key, ++cnt[key]] = $4
    if (!(($2 SUBSEP $3) in seen)) { seen[$2 SUBSEP $3] = 1; order[++rows] = $2 SUBSEP $3 }
}
END {
    printf "redis-benchmark, -n %d -c %d, median of %d run(s)\n\n", n, clients, runs
    if (alt == "") {
        print "| command | pipeline | Redis ops/s | Colony ops/s | Colony / Redis |"
        print "|---|---|---|---|---|"
    } else {
        printf "| command | pipeline | Redis ops/s | Colony ops/s | Colony / Redis | Colony `%s` ops/s | its / Redis |\n", alt
        print "|---|---|---|---|---|---|---|"
    }
    for (i = 1; i <= rows; i++) {
        split(order[i], f, SUBSEP)
        r = median("redis" SUBSEP order[i]); c = median("colony" SUBSEP order[i])
        printf "| %s | %s | %s | %s | %s |", f[2], f[1], fmt(r), fmt(c), ratio(c, r)
        if (alt != "") {
            a = median("alt" SUBSEP order[i])
            printf " %s | %s |", fmt(a), ratio(a, r)
        }
        printf "\n"
    }
    if (rmem != "") {
        split(rmem, rm, " "); split(cmem, cm, " ")
        rmib = rm[1] / 1024; cmib = (cmem == "") ? "" : cm[1] / 1024
        printf "| memory: RSS, %d x 100 B values, median of %d fresh loads (MiB) | - | %.1f | %s | %s |\n", keys, rounds, rmib, (cmib == "" ? "n/a" : sprintf("%.1f", cmib)), ratio(cmib, rmib)
        printf "| memory: RSS of each load (MiB) | - | %s | %s | - |\n", rmems, (cmems == "" ? "n/a" : cmems)
        printf "| memory: DBSIZE after the median load | - | %s | %s | - |\n", rm[2], (cmem == "" ? "n/a" : cm[2])
    }
}' "$WORK/rps"
