#!/usr/bin/env bash
# Redis Cluster's side of bench-rebalance.sh: 3 masters + 3 replicas hold KEYS
# keys of VALUE bytes; a 4th master (with its replica) joins, and
# `redis-cli --cluster rebalance --cluster-use-empty-masters` moves slots to it.
# Reports the time the rebalance took, the keys moved, and client latency
# before and during the move (colony-bench --cluster, YCSB-A at a fixed
# open-loop RATE), in the same columns as bench-rebalance.sh.
#
#   scripts/bench-rebalance-redis.sh            # 1M x 100 B, as in BENCHMARKS.md
#   KEYS=100000 scripts/bench-rebalance-redis.sh
#
# Every load is bounded by count and time; only loopback is targeted, and every
# server started here is stopped on exit.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

KEYS=${KEYS:-1000000}
VALUE=${VALUE:-100}
RATE=${RATE:-5000}
OUT=${OUT:-rebalance-redis-report.md}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"
# shellcheck source=lib/steps.sh
. "$ROOT/scripts/lib/steps.sh"
PORT_BASE=10000 PORT_SPAN=12000
bench_init rebalance-redis
ensure_redis_tools

log "building colony-bench (release)"
(cd "$ROOT" && cargo build --release -q -p colony-bench)
BENCH=$TARGET_DIR/release/colony-bench

start_redis_cluster rc
SEED=$HOST:${CLUSTER_PORTS[0]}
TARGET=(--host "$HOST" -p "${CLUSTER_PORTS[0]}" --cluster)

log "loading $KEYS keys of $VALUE bytes"
timeout 960 "$BENCH" -q "${TARGET[@]}" -w set --keyspace "$KEYS" -d "$VALUE" --load -n 0 \
    -c 50 -P 16 --duration 900
# Let the AOF rewrites the load started finish, as the Colony run lets its
# stores compact.
for port in "${CLUSTER_PORTS[@]}"; do redis_settle "$port"; done
sleep "${QUIET_S:-20}"

p99_of() { python3 "$ROOT/scripts/lib/latency.py" one "$1"; }

log "baseline latency"
timeout 60 "$BENCH" -q "${TARGET[@]}" -w a --keyspace "$KEYS" -d "$VALUE" --rate "$RATE" \
    -n $((RATE * 15)) --duration 20 --json "$WORK/before.json"
read -r B50 B99 _ < <(p99_of "$WORK/before.json")

# The new master and its replica.
pick_port NEW 10000
pick_port NEWR 10000
for p in "$NEW" "$NEWR"; do
    redis_cmd "$WORK/rc-$p" "$p" --cluster-enabled yes --cluster-config-file nodes.conf
    launch "rc-$p" "${CMD[@]}"
    wait_ready "rc-$p" "$p" "$LAST_PID"
done
timeout 120 redis-cli --cluster add-node "$HOST:$NEW" "$SEED" </dev/null >"$WORK/add.log" 2>&1 ||
    { tail -n 20 "$WORK/add.log" >&2; die "add-node failed"; }
NEW_ID=$(rcli -p "$NEW" cluster myid)
# redis-cli refuses to change a cluster whose nodes disagree about its
# configuration, which they do until gossip has spread the last change.
agreed() {
    local i
    for i in $(seq 1 300); do
        if timeout 30 redis-cli --cluster check "$SEED" </dev/null >"$WORK/check.log" 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$WORK/check.log" >&2
    die "the cluster's nodes did not agree within 60 s"
}
# known_by_all COUNT: every old node lists COUNT nodes (up to 60 s).
known_by_all() {
    local i port n known=0
    for i in $(seq 1 600); do
        known=0
        for port in "${CLUSTER_PORTS[@]}"; do
            n=$(rcli -p "$port" cluster nodes 2>/dev/null | grep -c . || true)
            [ "$n" = "$1" ] && known=$((known + 1))
        done
        [ "$known" = 6 ] && return 0
        sleep 0.1
    done
    die "only $known of 6 nodes knew $1 nodes after 60 s"
}
known_by_all 7
agreed
timeout 120 redis-cli --cluster add-node "$HOST:$NEWR" "$SEED" --cluster-slave \
    --cluster-master-id "$NEW_ID" </dev/null >>"$WORK/add.log" 2>&1 ||
    { tail -n 20 "$WORK/add.log" >&2; die "add-node (replica) failed"; }
# Every node must know the newcomers before slots move to them.
known_by_all 8
agreed

log "rebalancing onto the new master"
step_load "$BENCH" "$WORK" "$KEYS" "$VALUE" "$RATE" "${TARGET[@]}"
sleep 2
t0=$EPOCHREALTIME
timeout 1800 redis-cli --cluster rebalance "$SEED" --cluster-use-empty-masters \
    </dev/null >"$WORK/rebalance.log" 2>&1 ||
    { tail -n 20 "$WORK/rebalance.log" >&2; die "rebalance failed"; }
t1=$EPOCHREALTIME
step_load_end "$WORK"

moved_keys=$(rcli -p "$NEW" dbsize)
slots=$(rcli -p "$NEW" cluster nodes | awk '/myself/ {
    n = 0; for (i = 9; i <= NF; i++) { split($i, r, "-"); n += (r[2] == "" ? 1 : r[2] - r[1] + 1) } print n }')
read -r D50 D99 _ < <(python3 "$ROOT/scripts/lib/latency.py" steps "$WORK")
secs=$(python3 -c "print(round($t1 - $t0, 1))")
mib=$(python3 -c "print(round($moved_keys * ($VALUE + 16) / 1048576))")
rate=$(python3 -c "print(round($moved_keys * ($VALUE + 16) / 1048576 / max($t1 - $t0, 0.001), 1))")

cat >"$OUT" <<EOF
| keys | value | rebalance 3 -> 4 masters | moved | transfer rate | p50 / p99 before (us) | p50 (median) / p99 (worst 5 s step) during (us) | slots on the new master |
|---|---|---|---|---|---|---|---|
| $KEYS | $VALUE B | ${secs} s | $moved_keys keys (~$mib MiB of keys and values) | ~${rate} MiB/s | $B50 / $B99 | $D50 / $D99 | $slots of 16384 |
EOF
cat "$OUT"
