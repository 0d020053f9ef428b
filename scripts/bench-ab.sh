#!/usr/bin/env bash
# Two builds of Colony side by side, for a claim that one is faster:
# interleaved runs (base, new, new, base, base, new, ...), each on fresh servers,
# the same colony-bench workloads against each, and for every run the
# throughput and the servers' CPU per operation (utime + stime of every node,
# from /proc, over the measured run). On this VM consecutive runs of one build
# differ by 10-30% in throughput; CPU per operation varies less, and only
# medians of interleaved runs separate a change of a few percent.
#
#   BASE=path/to/colony NEW=path/to/colony scripts/bench-ab.sh
#
# Environment (defaults in brackets):
#   BASE, NEW            the two colony binaries (required)
#   TARGET [colony]      colony: one node; colony3: three nodes, as scripts/bench.sh
#                        starts them (default bucket set to PROPS)
#   PROPS ["n_val=3 w=2 r=2"]  the three nodes' default bucket
#   WORKLOADS ["c:zipfian a:zipfian"]  colony-bench workload:distribution pairs
#   PAIRS [3]            interleaved pairs of runs
#   N [200000]           operations per measured run (each also stops at DURATION)
#   RUNS [1]             measured runs per server start and workload, after the
#                        load and one unrecorded warm-up run of N operations (as
#                        scripts/bench.sh measures: right after a load, Colony's
#                        state cache is still refilling from the store)
#   PIPELINE [16]  CLIENTS [50]  KEYSPACE [100000]  DURATION [60]
#   REST [5]             seconds of rest, after a `sync`, before each server starts
#   COLONY_ARGS          extra flags for every node of both builds
#   BENCH_BIN            colony-bench to use (built in release when not given)
#   OUT [bench-ab.md]    where the markdown table is written (it is also printed)
#
# Every server binds 127.0.0.1 on a free port, lives in a temporary directory
# and is stopped after its runs. Every run is bounded by N and DURATION.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

: "${BASE:?set BASE to the colony binary to compare against}"
: "${NEW:?set NEW to the colony binary to compare}"
TARGET=${TARGET:-colony}
PROPS=${PROPS:-n_val=3 w=2 r=2}
WORKLOADS=${WORKLOADS:-c:zipfian a:zipfian}
PAIRS=${PAIRS:-3}
N=${N:-200000}
RUNS=${RUNS:-1}
PIPELINE=${PIPELINE:-16}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
DURATION=${DURATION:-60}
OUT=${OUT:-bench-ab.md}
REST=${REST:-5}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"

require_tools redis-cli python3
for bin in "$BASE" "$NEW"; do
    [ -x "$bin" ] || die "$bin is not an executable colony binary"
done
case "$TARGET" in
colony | colony3) ;;
*) die "TARGET is colony or colony3, not $TARGET" ;;
esac
if [ -z "${BENCH_BIN:-}" ]; then
    log "building colony-bench (release)"
    (cd "$ROOT" && cargo build --release -p colony-bench >&2)
    BENCH_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/colony-bench
fi
read -r -a COLONY_CLUSTER_PROPS <<<"$PROPS"
bench_init colony-ab
HZ=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv

# start SIDE PAIR: starts the target with COLONY_BIN; sets SERVER (colony-bench's
# address flags) and NODES (the pids to account CPU to).
start() {
    local name=$1-$2
    if [ "$TARGET" = colony ]; then
        start_colony "$name"
        SERVER=(--host "$HOST" -p "$COLONY_PORT") NODES=("$COLONY_PID")
    else
        start_colony_cluster "$name"
        local list="" port
        for port in "${COLONY3_PORTS[@]}"; do list+="$HOST:$port,"; done
        SERVER=(--addr "${list%,}") NODES=("${COLONY3_PIDS[@]}")
    fi
}

ticks() {
    local pid sum=0
    for pid in "${NODES[@]}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}

# measure SIDE PAIR WORKLOAD DIST: load the keyspace, warm up, then RUNS
# measured runs; appends "side pair workload ops/s cpu-us-per-op" to RESULTS
# for each.
measure() {
    local side=$1 pair=$2 workload=$3 dist=$4 run
    "$BENCH_BIN" "${SERVER[@]}" --workload "$workload" --dist "$dist" --keyspace "$KEYSPACE" \
        --load --clients "$CLIENTS" --pipeline "$PIPELINE" --requests 0 --duration "$DURATION" \
        --quiet --json "$WORK/load.json" >"$WORK/load.log" 2>&1 ||
        { tail -n 5 "$WORK/load.log" >&2; die "loading $workload failed"; }
    "$BENCH_BIN" "${SERVER[@]}" --workload "$workload" --dist "$dist" --keyspace "$KEYSPACE" \
        --clients "$CLIENTS" --pipeline "$PIPELINE" --requests "$N" --duration "$DURATION" \
        --quiet --json "$WORK/warm.json" >"$WORK/warm.log" 2>&1 ||
        { tail -n 5 "$WORK/warm.log" >&2; die "warming up $workload failed"; }
    for run in $(seq 1 "$RUNS"); do
        measure_once "$side" "$pair.$run" "$workload" "$dist"
    done
}

measure_once() {
    local side=$1 pair=$2 workload=$3 dist=$4 json before after
    json=$WORK/$side-$pair-$workload-$dist.json
    before=$(ticks)
    "$BENCH_BIN" "${SERVER[@]}" --workload "$workload" --dist "$dist" --keyspace "$KEYSPACE" \
        --clients "$CLIENTS" --pipeline "$PIPELINE" --requests "$N" --duration "$DURATION" \
        --quiet --json "$json" >"$WORK/run.log" 2>&1 ||
        { tail -n 5 "$WORK/run.log" >&2; die "running $workload failed"; }
    after=$(ticks)
    python3 - "$json" "$((after - before))" "$HZ" "$side" "$pair" "$workload:$dist" >>"$RESULTS" <<'PY'
import json, sys
path, ticks, hz, side, pair, name = sys.argv[1:7]
step = json.load(open(path))["steps"][0]
ok = sum(o["ok"] for o in step["ops"])
errors = sum(o["errors"] for o in step["ops"])
if ok == 0 or errors:
    sys.exit(f"{name}: {ok} operations answered, {errors} errors")
print(f"{side}\t{pair}\t{name}\t{ok / step['elapsed_secs']:.0f}\t{int(ticks) * 1e6 / int(hz) / ok:.2f}")
PY
    log "$side run $pair $workload:$dist: $(tail -n 1 "$RESULTS" | cut -f 4,5 | sed 's/\t/ ops\/s, /') us of CPU per op"
}

for pair in $(seq 1 "$PAIRS"); do
    # ABBA: the build that goes second in a pair runs after the other's
    # writeback and deleted files, so the order turns with each pair.
    order="base new"
    [ $((pair % 2)) = 1 ] || order="new base"
    for side in $order; do
        if [ "$side" = base ]; then COLONY_BIN=$BASE; else COLONY_BIN=$NEW; fi
        # What the previous servers left for the kernel to write back lands
        # outside the measurement.
        sync
        sleep "$REST"
        start "$side" "$pair"
        for wl in $WORKLOADS; do
            measure "$side" "$pair" "${wl%%:*}" "${wl##*:}"
        done
        for pid in "${NODES[@]}"; do stop_pid "$pid"; done
        rm -rf "${WORK:?}/$side-$pair"*/
    done
done

python3 - "$RESULTS" "$BASE" "$NEW" "$TARGET" "$PROPS" "$PIPELINE" "$CLIENTS" "$KEYSPACE" "$N" >"$OUT" <<'PY'
import statistics, sys
from collections import defaultdict
path, base, new, target, props, pipeline, clients, keyspace, n = sys.argv[1:10]
runs = defaultdict(lambda: defaultdict(list))
for line in open(path):
    side, _, name, ops, cpu = line.split("\t")
    runs[name][side].append((float(ops), float(cpu)))
what = "one node" if target == "colony" else f"three nodes ({props})"
print(f"base `{base}`, new `{new}`: {what}, colony-bench -P {pipeline}, {clients} clients, "
      f"{keyspace} keys, {n} operations per run, after a load and a warm-up run; "
      f"servers started afresh for each build in turn (ABBA).\n")
print("| workload | base ops/s | new ops/s | median change | base CPU/op (us) | new CPU/op (us) | median change |")
print("|---|---|---|---|---|---|---|")
def cell(xs, fmt):
    return " / ".join(fmt.format(x) for x in xs)
for name, sides in runs.items():
    b, w = sides["base"], sides["new"]
    bo, no = [r[0] for r in b], [r[0] for r in w]
    bc, nc = [r[1] for r in b], [r[1] for r in w]
    do = statistics.median(no) / statistics.median(bo) - 1
    dc = statistics.median(nc) / statistics.median(bc) - 1
    print(f"| {name} | {cell(bo, '{:.0f}')} | {cell(no, '{:.0f}')} | {do:+.1%} "
          f"| {cell(bc, '{:.2f}')} | {cell(nc, '{:.2f}')} | {dc:+.1%} |")
PY
cat "$OUT"
