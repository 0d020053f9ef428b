#!/usr/bin/env bash
# How long a 4th node takes to join a 3-node cluster holding KEYS keys of
# VALUE bytes, the transfer rate, and client latency before and during the
# move (colony-bench, YCSB-A at a fixed open-loop RATE through node 1).
#
#   scripts/bench-rebalance.sh            # 1M x 100 B, as in BENCHMARKS.md
#   KEYS=100000 scripts/bench-rebalance.sh
#
# Every load is bounded by count and time; only loopback is targeted.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
VALUE=${VALUE:-100}
RATE=${RATE:-5000}
HANDOFF_MIB=${HANDOFF_MIB:-64}
OUT=${OUT:-rebalance-report.md}
SECRET="bench-secret"

cargo build --release -q -p colony-server -p colony-bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/colony
BENCH=$TARGET_DIR/release/colony-bench
WORK=$(mktemp -d /tmp/colony-rebalance.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_node() { # index [join]
    local i=$1 join=${2:-}
    local args=(start --data-dir "$WORK/d$i" --resp "127.0.0.1:2700$i" --http "127.0.0.1:2710$i"
        --cluster "127.0.0.1:2720$i" --node-name "n$i" --cluster-secret "$SECRET"
        --handoff-rate-mib "$HANDOFF_MIB" --threads 1)
    [ -n "$join" ] && args+=(--join "$join")
    "$BIN" "${args[@]}" >"$WORK/log$i" 2>&1 &
    PIDS+=($!)
}

status() { "$BIN" admin --http 127.0.0.1:27101 --json cluster status; }

# Settled: `want` valid members, no transfer under way, nothing planned.
wait_settled() { # want timeout_s
    local want=$1 deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        if status 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
valid = [m for m in s["members"] if m["status"] == "Valid"]
ok = (len(valid) == int(sys.argv[1]) and not s["transfers"]
      and not s["staged"]["transfers"] and all(m["ring_in_sync"] for m in valid))
sys.exit(0 if ok else 1)' "$want"; then
            return 0
        fi
        sleep 0.2
    done
    echo "cluster did not settle on $want members" >&2
    return 1
}

# shellcheck source=lib/steps.sh
. scripts/lib/steps.sh

p99_of() { python3 scripts/lib/latency.py one "$1"; }

handoff_bytes() { # sum of colony_handoff_bytes_total over nodes 1..3
    local total=0 v
    for i in 1 2 3; do
        v=$(python3 - "$i" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:2710{sys.argv[1]}/metrics").read().decode()
print(int(sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith("colony_handoff_bytes_total"))))
PY
)
        total=$((total + v))
    done
    echo "$total"
}

start_node 1
sleep 1
start_node 2 127.0.0.1:27201
start_node 3 127.0.0.1:27201
wait_settled 3 120

echo "loading $KEYS keys of $VALUE bytes" >&2
"$BENCH" -q --port 27001 -w set --keyspace "$KEYS" -d "$VALUE" --load -n 0 -c 50 -P 16 --duration 900

# The load leaves the stores compacting for a while; let that finish first.
sleep "${QUIET_S:-20}"
echo "baseline latency" >&2
"$BENCH" -q --port 27001 -w a --keyspace "$KEYS" -d "$VALUE" --rate "$RATE" -n $((RATE * 15)) \
    --duration 20 --json "$WORK/before.json"
read -r B50 B99 _ < <(p99_of "$WORK/before.json")

bytes0=$(handoff_bytes)
echo "node 4 joins" >&2
t0=$(date +%s.%N)
start_node 4 127.0.0.1:27201
# Measure in 5-second steps while the move runs.
step_load "$BENCH" "$WORK" "$KEYS" "$VALUE" "$RATE" --port 27001
sleep 2
wait_settled 4 900
t1=$(date +%s.%N)
step_load_end "$WORK"
bytes1=$(handoff_bytes)
read -r D50 D99 _ < <(python3 scripts/lib/latency.py steps "$WORK")
secs=$(python3 -c "print(round($t1 - $t0, 1))")
moved=$((bytes1 - bytes0))
rate=$(python3 -c "print(round($moved / 1048576 / max($t1 - $t0, 0.001), 1))")
parts=$(status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join("%s=%s" % (m["node"], m["partitions"]) for m in s["members"]))')

cat >"$OUT" <<EOF
| keys | value | rebalance 3 -> 4 | moved | transfer rate | p50 / p99 before (us) | p50 (median) / p99 (worst 5 s step) during (us) | ownership after |
|---|---|---|---|---|---|---|---|
| $KEYS | $VALUE B | ${secs} s | $((moved / 1048576)) MiB | ${rate} MiB/s | $B50 / $B99 | $D50 / $D99 | $parts |
EOF
cat "$OUT"
