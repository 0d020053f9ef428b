#!/usr/bin/env bash
# Colony beside Redis and a Redis Cluster, in one run, on loopback only:
#   1. builds colony and colony-bench (release);
#   2. times the start-up of an empty Redis and an empty Colony;
#   3. starts Redis, a Redis Cluster (3 masters + 3 replicas), one Colony
#      node and a 3-node Colony cluster (default bucket n_val=3 w=2 r=2,
#      clients spread over the three nodes), and runs the same colony-bench
#      workloads against each, at pipeline 1 and 16: throughput (median of
#      RUNS) and p50/p99 latency;
#   4. for Redis and one Colony node: RSS after loading MEM_KEYS distinct 100-byte
#      values, then restart time after kill -9 with those keys;
#   5. for each target: latency under an open-loop load of half its peak
#      (the median pipeline-1 throughput of HALF_WORKLOAD), for HALF_SECONDS;
#   6. prints a markdown report and writes it to OUT; with UPDATE_BENCHMARKS=1
#      also into BENCHMARKS.md, replacing the previous generated section.
#
# Environment (defaults in brackets):
#   N [200000]            requests per measured run (each run also stops at DURATION)
#   RUNS [3]              runs per (target, workload, pipeline); the median is reported
#   CLIENTS [50]          colony-bench clients
#   KEYSPACE [100000]     keys per workload, written once per target by --load, then an
#                         unrecorded warm-up run of N operations per pipeline
#   DURATION [60]         cap in seconds per phase (load, measured run)
#   PIPELINES ["1 16"]
#   WORKLOADS ["a:zipfian b:zipfian c:zipfian incr:uniform sets:uniform hashes:uniform"]
#   TARGETS ["redis cluster colony colony3"]   any subset
#   MEM_KEYS [1000000]    keys loaded for the memory and recovery rows
#   MEM_DURATION [600]    cap in seconds on loading them
#   STARTUP_RUNS [5]      empty start-ups timed per server (median reported)
#   RECOVERY_RUNS [RUNS]  kill -9 and restarts timed per server (median reported)
#   HALF_WORKLOAD ["a:zipfian"]  workload of the half-of-peak latency runs (needs
#                         pipeline 1 of it among the throughput runs; skipped otherwise)
#   HALF_SECONDS [20]     length of each half-of-peak run
#   HALF_REST [10]        seconds of rest after a `sync` before each half-of-peak run:
#                         the writeback of earlier runs' dirty pages otherwise lands in
#                         the measurement (Redis's own p99 rose 30-fold from it on the VM)
#   SKIP_MEMORY=1         skip memory and recovery
#   OUT [bench-report.md] where the report is written (it is also printed)
#   UPDATE_BENCHMARKS=1   also put the report in BENCHMARKS.md, between the
#                         markers of its "Latest generated run" section
#   RESULTS_DIR           if set, raw colony-bench JSON and server logs are copied here
#   COLONY_BIN, BENCH_BIN use these binaries; the build is skipped for each one given
#   COLONY_ARGS           extra flags for every Colony node (e.g. "--threads 1")
#
# Every server binds 127.0.0.1 on a free port, lives in a temporary directory
# and is stopped on exit. Every load loop is bounded by a count and a time.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SETTINGS="N RUNS CLIENTS KEYSPACE DURATION PIPELINES WORKLOADS TARGETS MEM_KEYS
MEM_DURATION STARTUP_RUNS RECOVERY_RUNS HALF_WORKLOAD HALF_SECONDS HALF_REST SKIP_MEMORY OUT RESULTS_DIR
COLONY_BIN BENCH_BIN COLONY_ARGS UPDATE_BENCHMARKS"
COMMAND=""
for v in $SETTINGS; do
    if [ -n "${!v+x}" ]; then COMMAND+="$v=$(printf %q "${!v}") "; fi
done
COMMAND+=$0

N=${N:-200000}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
DURATION=${DURATION:-60}
PIPELINES=${PIPELINES:-1 16}
WORKLOADS=${WORKLOADS:-a:zipfian b:zipfian c:zipfian incr:uniform sets:uniform hashes:uniform}
TARGETS=${TARGETS:-redis cluster colony colony3}
MEM_KEYS=${MEM_KEYS:-1000000}
MEM_DURATION=${MEM_DURATION:-600}
STARTUP_RUNS=${STARTUP_RUNS:-5}
RECOVERY_RUNS=${RECOVERY_RUNS:-$RUNS}
HALF_WORKLOAD=${HALF_WORKLOAD:-a:zipfian}
HALF_SECONDS=${HALF_SECONDS:-20}
HALF_REST=${HALF_REST:-10}
SKIP_MEMORY=${SKIP_MEMORY:-0}
OUT=${OUT:-bench-report.md}
VALUE_SIZE=100

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"
# shellcheck source=lib/timing.sh
. "$ROOT/scripts/lib/timing.sh"
# shellcheck source=lib/report.sh
. "$ROOT/scripts/lib/report.sh"
# Server ports below the kernel's ephemeral range (32768 and up), cluster bus
# ports (+10000) included, so no client socket can hold one.
PORT_BASE=10000 PORT_SPAN=12000
bench_init colony-bench
RESULTS=$WORK/results
mkdir -p "$RESULTS"
STARTED_AT=$SECONDS

# record KEY VALUE...: one figure for the report.
record() {
    local key=$1
    shift
    echo "$key $*" >>"$RESULTS/metrics.txt"
}

ensure_redis_tools

if [ -z "${COLONY_BIN:-}" ] || [ -z "${BENCH_BIN:-}" ]; then
    packages=()
    [ -n "${COLONY_BIN:-}" ] || packages+=(-p colony-server)
    [ -n "${BENCH_BIN:-}" ] || packages+=(-p colony-bench)
    log "building ${packages[*]} (release)"
    (cd "$ROOT" && cargo build --release "${packages[@]}") >&2
fi
COLONY_BIN=${COLONY_BIN:-$TARGET_DIR/release/colony}
BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/release/colony-bench}
[ -x "$COLONY_BIN" ] || die "no colony binary at $COLONY_BIN"
[ -x "$BENCH_BIN" ] || die "no colony-bench binary at $BENCH_BIN"

describe_machine() {
    record machine.nproc "$(nproc)"
    record machine.cpu "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    record machine.memory "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    record machine.kernel "$(uname -sr)"
    record machine.rustc "$(rustc --version 2>/dev/null || echo n/a)"
    record machine.redis "$(redis-server --version)"
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then
        rev="$rev (with uncommitted changes)"
    fi
    record machine.colony "$rev"
    record machine.date "$(date -u '+%Y-%m-%d %H:%M UTC')"
    record machine.loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_run FILE.json LIMIT_S ARGS...: one colony-bench run; its table and
# stderr go beside the JSON. ARGS name the server(s).
bench_run() {
    local json=$1 limit=$2
    shift 2
    timeout "$limit" "$BENCH_BIN" "$@" --json "$json" --quiet \
        >"${json%.json}.txt" 2>"${json%.json}.err" </dev/null
}

# --- start-up of an empty server -------------------------------------------

measure_startup() {
    local i port redis_us
    for i in $(seq 1 "$STARTUP_RUNS"); do
        pick_port port
        redis_cmd "$WORK/startup-redis-$i" "$port"
        timed_start startup-redis "$port" 60 "" "${CMD[@]}"
        redis_us=$PONG_US
        record startup.redis "$PONG_US"
        stop_pid "$LAST_PID"
        colony_cmd "$WORK/startup-colony-$i"
        timed_start startup-colony "$COLONY_PORT" 60 "" "${CMD[@]}"
        record startup.colony "$PONG_US"
        stop_pid "$LAST_PID"
        log "empty start-up $i/$STARTUP_RUNS: redis $redis_us us, colony $PONG_US us"
    done
}

# --- throughput and latency --------------------------------------------------

# SERVER_OF[t]: colony-bench's arguments naming target t's server(s);
# PIDS_OF[t]: its processes. Neither holds spaces inside a word.
declare -A SERVER_OF PIDS_OF
start_targets() {
    local t addrs
    for t in $TARGETS; do
        case $t in
        redis)
            start_redis redis
            SERVER_OF[redis]="--host $HOST -p $REDIS_PORT" PIDS_OF[redis]=$REDIS_PID
            ;;
        cluster)
            start_redis_cluster cluster
            SERVER_OF[cluster]="--host $HOST -p ${CLUSTER_PORTS[0]} --cluster"
            PIDS_OF[cluster]="${CLUSTER_PIDS[*]}"
            ;;
        colony)
            start_colony colony
            SERVER_OF[colony]="--host $HOST -p $COLONY_PORT" PIDS_OF[colony]=$COLONY_PID
            ;;
        colony3)
            start_colony_cluster colony3
            printf -v addrs "$HOST:%s," "${COLONY3_PORTS[@]}"
            SERVER_OF[colony3]="--addr ${addrs%,}" PIDS_OF[colony3]="${COLONY3_PIDS[*]}"
            record colony3.bucket "$COLONY3_BUCKET"
            ;;
        *) die "unknown target $t (TARGETS takes redis, cluster, colony, colony3)" ;;
        esac
        log "$t ready: ${SERVER_OF[$t]}"
    done
}

# As YCSB does: each workload's keyspace is loaded once per target, then every
# (pipeline) gets one unrecorded warm-up run of N operations per target before
# its measured runs. (Until session 16 each measured run loaded the whole
# keyspace first: a uniform sweep that left Colony's state cache holding the
# load's last keys, so the short runs measured mostly the cache refilling:
# 3 nodes, c zipfian, 21.8 us of CPU per GET right after a load, 14.1-14.7 warm.)
# Runs are interleaved (every target in turn for each run), so a slow patch
# of the machine hurts all targets alike.
measure_throughput() {
    local spec workload dist pipeline run t json
    for spec in $WORKLOADS; do
        workload=${spec%%:*} dist=${spec#*:}
        for t in $TARGETS; do
            log "$t: loading $KEYSPACE keys for workload $workload ($dist)"
            json=$RESULTS/load-$t-$workload-$dist.json
            # shellcheck disable=SC2086 # SERVER_OF holds several words
            bench_run "$json" $((DURATION + 60)) ${SERVER_OF[$t]} \
                --workload "$workload" --dist "$dist" --keyspace "$KEYSPACE" --load \
                --clients "$CLIENTS" --pipeline 16 --requests 0 --duration "$DURATION" ||
                die "$t: loading workload $workload failed: $(tail -n 3 "${json%.json}.err")"
        done
        for pipeline in $PIPELINES; do
            for run in warm-up $(seq 1 "$RUNS"); do
                for t in $TARGETS; do
                    log "$t: workload $workload ($dist), pipeline $pipeline, run $run of $RUNS"
                    json=$RESULTS/tp-$t-$workload-$dist-p$pipeline-r$run.json
                    # Not a measured run: kept apart from the report's files.
                    [ "$run" != warm-up ] || json=$RESULTS/warm-$t-$workload-$dist-p$pipeline.json
                    # shellcheck disable=SC2086 # SERVER_OF holds several words
                    bench_run "$json" $((DURATION + 60)) ${SERVER_OF[$t]} \
                        --workload "$workload" --dist "$dist" --keyspace "$KEYSPACE" \
                        --clients "$CLIENTS" --pipeline "$pipeline" --requests "$N" \
                        --duration "$DURATION" ||
                        log "warning: $t run failed: $(tail -n 3 "${json%.json}.err")"
                    # shellcheck disable=SC2086
                    alive ${PIDS_OF[$t]} || die "$t died during the run (logs in $WORK)"
                done
            done
        done
    done
}

# Latency at half of each target's peak: an open-loop (fixed-rate) run at half
# the median pipeline-1 throughput of HALF_WORKLOAD, latency counted from each
# operation's scheduled send time (no coordinated omission).
measure_half_peak() {
    local workload=${HALF_WORKLOAD%%:*} dist=${HALF_WORKLOAD#*:} t peak rate json
    for t in $TARGETS; do
        peak=$(python3 - "$RESULTS" "$t" "$workload" "$dist" <<'PY'
import glob, json, statistics, sys
d, t, w, dist = sys.argv[1:]
ops = []
for path in glob.glob(f"{d}/tp-{t}-{w}-{dist}-p1-r*.json"):
    with open(path) as f:
        steps = json.load(f)["steps"]
    if steps:
        ops.append(steps[0]["total"]["ops_per_sec"])
print(int(statistics.median(ops)) if ops else "")
PY
)
        if [ -z "$peak" ]; then
            log "$t: no pipeline-1 run of $workload ($dist) to take the peak from; no half-peak run"
            continue
        fi
        rate=$((peak / 2))
        record "half.$t.peak" "$peak"
        record "half.$t.rate" "$rate"
        log "$t: open loop at $rate ops/s (half of $peak), $HALF_SECONDS s"
        json=$RESULTS/half-$t.json
        sync
        sleep "$HALF_REST"
        # shellcheck disable=SC2086 # SERVER_OF holds several words
        bench_run "$json" $((2 * HALF_SECONDS + 60)) ${SERVER_OF[$t]} \
            --workload "$workload" --dist "$dist" --keyspace "$KEYSPACE" \
            --clients "$CLIENTS" --rate "$rate" --requests $((rate * HALF_SECONDS)) \
            --duration $((2 * HALF_SECONDS)) ||
            log "warning: $t half-peak run failed: $(tail -n 3 "${json%.json}.err")"
        # shellcheck disable=SC2086
        alive ${PIDS_OF[$t]} || die "$t died during the half-peak run (logs in $WORK)"
    done
}

# Redis rewrites its AOF (a fork) as it grows: how often it did so during the
# runs is part of what the throughput figures include.
count_aof_rewrites() {
    local t port n total
    for t in $TARGETS; do
        case $t in
        redis) set -- "$REDIS_PORT" ;;
        cluster) set -- "${CLUSTER_PORTS[@]}" ;;
        *) continue ;;
        esac
        total=0
        for port in "$@"; do
            n=$(rcli -p "$port" info persistence | awk -F: '/^aof_rewrites:/ { print $2 + 0 }')
            total=$((total + ${n:-0}))
        done
        record "aof_rewrites.$t" "$total"
    done
}

stop_targets() {
    local t pid
    for t in $TARGETS; do
        for pid in ${PIDS_OF[$t]}; do stop_pid "$pid"; done
    done
}

# --- memory and recovery -------------------------------------------------------

# measure_persistence redis|colony
measure_persistence() {
    local kind=$1 dir=$WORK/mem-$1 port pid key dbsize i
    printf -v key 'key:%012d' $((MEM_KEYS - 1))
    if [ "$kind" = redis ]; then
        pick_port port
        redis_cmd "$dir" "$port"
    else
        colony_cmd "$dir"
        port=$COLONY_PORT
    fi
    launch "mem-$kind" "${CMD[@]}"
    pid=$LAST_PID
    wait_ready "mem-$kind" "$port" "$pid"
    log "$kind: loading $MEM_KEYS distinct $VALUE_SIZE-byte values"
    bench_run "$RESULTS/mem-$kind.json" $((MEM_DURATION + 60)) --host "$HOST" -p "$port" --workload set \
        --load --keyspace "$MEM_KEYS" --value-size "$VALUE_SIZE" --requests 0 \
        --clients "$CLIENTS" --pipeline 16 --duration "$MEM_DURATION" ||
        die "$kind: loading failed: $(tail -n 3 "$RESULTS/mem-$kind.err")"
    dbsize=$(rcli -p "$port" dbsize | tr -dc '0-9')
    wait_idle "$pid"
    record "mem.$kind.rss_kib" "$(rss_kib "$pid")"
    record "mem.$kind.dbsize" "$dbsize"
    [ "$kind" != redis ] || redis_settle "$port"
    record "mem.$kind.disk_kib" "$(du -sk "$dir" | cut -f1)"
    for i in $(seq 1 "$RECOVERY_RUNS"); do
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        forget_pid "$pid"
        timed_start "mem-$kind" "$port" 600 "$key" "${CMD[@]}"
        pid=$LAST_PID
        record "recovery.$kind.pong" "$PONG_US"
        record "recovery.$kind.get" "$GET_US"
        dbsize=$(rcli -p "$port" dbsize | tr -dc '0-9')
        record "recovery.$kind.dbsize" "$dbsize"
        log "$kind: restart $i/$RECOVERY_RUNS after kill -9: PONG after $((PONG_US / 1000)) ms, $key after $((GET_US / 1000)) ms, DBSIZE $dbsize"
        [ "$kind" != redis ] || redis_settle "$port"
    done
    stop_pid "$pid"
}

save_results() {
    [ -n "${RESULTS_DIR:-}" ] || return 0
    mkdir -p "$RESULTS_DIR"
    cp -r "$RESULTS"/. "$RESULTS_DIR"/
    cp "$WORK"/*.log "$RESULTS_DIR"/ 2>/dev/null || true
    log "raw results in $RESULTS_DIR"
}

describe_machine
record settings "N=$N RUNS=$RUNS CLIENTS=$CLIENTS KEYSPACE=$KEYSPACE DURATION=$DURATION"
record command "$COMMAND"
log "timing $STARTUP_RUNS empty start-ups of each server"
measure_startup
start_targets
measure_throughput
measure_half_peak
count_aof_rewrites
stop_targets
if [ "$SKIP_MEMORY" != 1 ]; then
    measure_persistence redis
    measure_persistence colony
fi
record elapsed_s $((SECONDS - STARTED_AT))
record machine.loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
save_results
write_report "$RESULTS" | tee "$OUT"
log "report written to $OUT"
if [ "${UPDATE_BENCHMARKS:-0}" = 1 ]; then
    splice_report "$ROOT/BENCHMARKS.md" "$OUT"
    log "report put in $ROOT/BENCHMARKS.md"
fi
