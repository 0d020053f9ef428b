#!/usr/bin/env bash
# Client throughput while active anti-entropy refills a wiped node, against
# the same workload without it (issue "active anti-entropy": during a full
# exchange-and-repair of 100,000 keys, throughput stays >= 70% of baseline).
#
# Per run, on a fresh 3-node cluster (n_val 3, so every node holds every key):
#   load KEYS keys of VALUE bytes; let the stores settle (QUIET_S);
#   baseline: WORKLOAD closed loop, CLIENTS connections over nodes 1 and 2,
#     DURATION seconds, in STEP-second colony-bench steps;
#   wipe: SIGTERM node 3, delete its data directory, start it again (same
#     name, --join node 1) and at once run the same workload for the same
#     DURATION, while a poller watches /api/v1/aae on the three nodes and
#     notes when each partition's three tree roots first agree.
#   Redis reference: the same workload against one redis-server
#     (appendonly yes, appendfsync everysec), same KEYS, same steps.
# The steps give throughput over exactly the repair (steps that start before
# the last partition agreed) as well as over the whole window.
#
#   scripts/bench-aae.sh                  # RUNS=3 KEYS=100000 DURATION=20
#   RUNS=1 DURATION=10 scripts/bench-aae.sh
#
# Every load is bounded by count and time; only 127.0.0.1 is targeted.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-100000}
VALUE=${VALUE:-100}
DURATION=${DURATION:-20}
STEP=${STEP:-1}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-50}
WORKLOAD=${WORKLOAD:-a}
QUIET_S=${QUIET_S:-20}
REPAIR_CAP_S=${REPAIR_CAP_S:-300}
REDIS=${REDIS:-1}
# KEEP_LOGS=DIR: keep each run's node logs and refill progress there.
OUT=${OUT:-aae-report.md}
SECRET=bench-secret
# Requests per step: far above what a step can do, so the duration ends it.
STEP_REQUESTS=10000000

cargo build --release -q -p colony-server -p colony-bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/colony
BENCH=$TARGET_DIR/release/colony-bench
WORK=$(mktemp -d /tmp/colony-aae.XXXXXX)
PIDS=()
declare -A NODE_PID=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

resp() { echo "127.0.0.1:2740$1"; }
http() { echo "127.0.0.1:2741$1"; }
REDIS_PORT=27499

start_node() { # run index [join]
    local r=$1 i=$2 join=${3:-}
    local args=(start --data-dir "$WORK/r$r/d$i" --resp "$(resp "$i")" --http "$(http "$i")"
        --cluster "127.0.0.1:2742$i" --node-name "n$i" --cluster-secret "$SECRET"
        --fsync periodic --threads 1)
    [ -n "$join" ] && args+=(--join "$join")
    "$BIN" "${args[@]}" >>"$WORK/r$r/log$i" 2>&1 &
    NODE_PID[$i]=$!
    PIDS+=($!)
}

stop_pid() { # pid: SIGTERM, then SIGKILL after 30 s
    local p=$1 k=0
    kill "$p" 2>/dev/null || return 0
    while kill -0 "$p" 2>/dev/null && [ $k -lt 300 ]; do
        sleep 0.1
        k=$((k + 1))
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

wait_port() { # port timeout_s
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        if redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}

status() { "$BIN" admin --http "$(http 1)" --json cluster status; }

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

repaired_total() { # sum of colony_aae_keys_repaired_total over nodes 1..3
    python3 - "$(http 1)" "$(http 2)" "$(http 3)" <<'PY'
import sys, urllib.request
total = 0
for addr in sys.argv[1:]:
    try:
        body = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    except OSError:
        continue
    total += sum(float(l.split()[-1]) for l in body.splitlines()
                 if l.startswith("colony_aae_keys_repaired_total"))
print(int(total))
PY
}

# The workload in STEP-second steps for `dur` seconds, and further, up to
# `cap` seconds, until the file `done` exists (when given); at most
# cap/STEP + 5 steps. Each step's wall-clock start and end go to <name>.steps.
measure() { # name dur addr[,addr...] [done cap]
    local name=$1 dur=$2 addrs=$3 done=${4:-} cap=${5:-$2} k=0 t0 t1 start
    local max=$((cap / STEP + 5))
    start=$(date +%s.%N)
    : >"$name.steps"
    while [ $k -lt $max ] && python3 - "$start" "$dur" "$cap" "$done" <<'PY'
import os, sys, time
start, dur, cap, done = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
age = time.time() - start
more = age < dur - 0.05 or (done and not os.path.exists(done) and age < cap)
sys.exit(0 if more else 1)
PY
    do
        t0=$(date +%s.%N)
        "$BENCH" -q --addr "$addrs" -w "$WORKLOAD" --keyspace "$KEYS" -d "$VALUE" \
            -c "$CLIENTS" -n "$STEP_REQUESTS" --duration "$STEP" --json "$name.$k.json" >/dev/null || true
        t1=$(date +%s.%N)
        echo "$k $t0 $t1" >>"$name.steps"
        k=$((k + 1))
    done
}

# ops/s of a measured window: "whole [until]" where `until` (optional, epoch
# seconds) keeps only the steps that started before it.
throughput() { # name [until]
    python3 - "$1" "${2:-}" <<'PY'
import json, sys
name, until = sys.argv[1], sys.argv[2]
ok = el = err = 0
ok_u = el_u = 0
for line in open(name + ".steps"):
    k, t0, t1 = line.split()
    try:
        s = json.load(open(f"{name}.{k}.json"))["steps"][-1]
    except (OSError, ValueError, IndexError):
        continue
    ok += s["total"]["ok"]; err += s["total"]["errors"]; el += s["elapsed_secs"]
    if until and float(t0) < float(until):
        ok_u += s["total"]["ok"]; el_u += s["elapsed_secs"]
whole = ok / el if el else 0
part = ok_u / el_u if el_u else whole
print(round(whole), round(part), err)
PY
}

# Poll /api/v1/aae on the three nodes (every 0.25 s, at most cap_s) until
# node 3 is refilled: in every partition it replicates, its tree holds as
# many entries as the other replicas' (the workload only overwrites loaded
# keys, so the count is not disturbed by writes in flight). Also note, per
# partition, the first poll at which all replicas' roots were equal (under
# load a poll can miss that moment, so it is an upper bound). Touches
# `done` when refilled; prints "fill_s roots_s partitions_agreed" ("-" if
# never) and writes the progress, one line a second, to `log`.
poll_repair() { # t0 cap_s done log
    python3 - "$1" "$2" "$3" "$4" "$(http 1)" "$(http 2)" "$(http 3)" <<'PY'
import json, sys, time, urllib.request
t0, cap, done, log = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
addrs = sys.argv[5:]
agreed, fill, last_log = {}, None, 0.0
out = open(log, "w")
while time.time() < t0 + cap:
    trees = []
    for a in addrs:
        try:
            s = json.load(urllib.request.urlopen(f"http://{a}/api/v1/aae", timeout=5))
            trees.append({p["partition"]: p["tree"] for p in s["partitions"]
                          if p.get("tree") and p["tree"]["built"]})
        except (OSError, ValueError, KeyError, TypeError):
            trees.append({})
    now = time.time()
    parts = set(trees[0]) | set(trees[1])
    # A partition counts on the nodes that replicate it (with 3 nodes on a
    # ring of 64 a few partitions have only two distinct replicas).
    for p in parts:
        roots = [t[p]["root"] for t in trees if p in t]
        if p not in agreed and len(roots) >= 2 and len(set(roots)) == 1:
            agreed[p] = now - t0
    n3 = trees[2]
    full = bool(n3) and all(
        n3[p]["entries"] >= max(t[p]["entries"] for t in trees[:2] if p in t) for p in n3)
    if full and fill is None:
        fill = now - t0
        open(done, "w").close()
    if now - last_log >= 1.0:
        last_log = now
        print(round(now - t0, 1), sum(t["entries"] for t in n3.values()), len(agreed), file=out, flush=True)
    if fill is not None and parts and len(agreed) == len(parts):
        break
    time.sleep(0.25)
if fill is None:
    open(done, "w").close()
roots_s = round(max(agreed.values()), 1) if parts and len(agreed) == len(parts) else "-"
print("-" if fill is None else round(fill, 1), roots_s, len(agreed))
PY
}

# Keys each node holds by its trees (sum of entries), and whether every
# partition's replicas have one root right now: "n1 n2 n3 yes|no".
tree_state() {
    python3 - "$(http 1)" "$(http 2)" "$(http 3)" <<'PY'
import json, sys, urllib.request
roots, counts = {}, []
for a in sys.argv[1:]:
    s = json.load(urllib.request.urlopen(f"http://{a}/api/v1/aae", timeout=5))
    for p in s["partitions"]:
        if p.get("tree"):
            roots.setdefault(p["partition"], set()).add(p["tree"]["root"])
    counts.append(sum(p["tree"]["entries"] for p in s["partitions"] if p.get("tree")))
same = bool(roots) and all(len(r) == 1 for r in roots.values())
print(*counts, "yes" if same else "no")
PY
}

LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
RESULTS=$WORK/results
: >"$RESULTS"
for r in $(seq 1 "$RUNS"); do
    mkdir -p "$WORK/r$r"
    D=$WORK/r$r
    echo "run $r/$RUNS: starting 3 nodes" >&2
    start_node "$r" 1
    wait_port 27401 30
    start_node "$r" 2 127.0.0.1:27421
    start_node "$r" 3 127.0.0.1:27421
    wait_settled 3 120

    echo "run $r: loading $KEYS keys of $VALUE bytes" >&2
    "$BENCH" -q --addr "$(resp 1),$(resp 2),$(resp 3)" -w set --keyspace "$KEYS" -d "$VALUE" \
        --load -n 0 -c 50 -P 16 --duration 300 >/dev/null
    # Let the stores flush and compact the load, and AAE agree, first.
    sleep "$QUIET_S"
    read -r K1 K2 K3 SAME < <(tree_state)
    echo "run $r: keys by tree n1=$K1 n2=$K2 n3=$K3, roots agree: $SAME" >&2

    echo "run $r: baseline ${DURATION} s" >&2
    rep0=$(repaired_total)
    measure "$D/base" "$DURATION" "$(resp 1),$(resp 2)"
    rep1=$(repaired_total)
    read -r BASE _ BASE_ERR < <(throughput "$D/base")

    echo "run $r: wiping node 3" >&2
    # Node 3's counter restarts at 0: keep what 1 and 2 counted before.
    rep12=$(python3 - "$(http 1)" "$(http 2)" <<'PY'
import sys, urllib.request
t = 0
for a in sys.argv[1:]:
    body = urllib.request.urlopen(f"http://{a}/metrics", timeout=5).read().decode()
    t += sum(float(l.split()[-1]) for l in body.splitlines()
             if l.startswith("colony_aae_keys_repaired_total"))
print(int(t))
PY
)
    stop_pid "${NODE_PID[3]}"
    rm -rf "$D/d3"
    t0=$(date +%s.%N)
    start_node "$r" 3 127.0.0.1:27421
    # The window lasts DURATION, or longer if the refill is not done by then.
    measure "$D/during" "$DURATION" "$(resp 1),$(resp 2)" "$D/refilled" "$REPAIR_CAP_S" &
    LOADPID=$!
    read -r REPAIR_S ROOTS_S AGREED < <(poll_repair "$t0" "$REPAIR_CAP_S" "$D/refilled" "$D/progress")
    wait "$LOADPID" || true
    t_end=$(date +%s.%N)
    echo "run $r: refill progress (s, node 3 keys, partitions whose roots agreed):" \
        "$(awk 'NR % 2 == 1 { printf "%s/%s/%s ", $1, $2, $3 }' "$D/progress")" >&2
    rep2=$(repaired_total)
    REPAIRED=$((rep2 - rep12))
    if [ "$REPAIR_S" = "-" ]; then
        read -r DURING DURING_REPAIR DURING_ERR < <(throughput "$D/during")
        INSIDE=no
    else
        read -r DURING DURING_REPAIR DURING_ERR < <(throughput "$D/during" \
            "$(python3 -c "print($t0 + $REPAIR_S)")")
        INSIDE=$(python3 -c "print('yes' if $REPAIR_S <= $DURATION else 'no')")
    fi
    sleep 3
    read -r K1 K2 K3 SAME < <(tree_state)
    echo "run $r: base $BASE ops/s, during $DURING (over the repair $DURING_REPAIR), refilled in ${REPAIR_S} s, roots agreed by ${ROOTS_S} s ($AGREED partitions), window $(python3 -c "print(round($t_end - $t0))") s, $REPAIRED keys repaired, after: n1=$K1 n2=$K2 n3=$K3 roots agree: $SAME" >&2

    for i in 1 2 3; do stop_pid "${NODE_PID[$i]}"; done
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS/r$r" && cp "$D"/log* "$D/progress" "$KEEP_LOGS/r$r/"
    fi

    RED=-
    if [ "$REDIS" = 1 ]; then
        echo "run $r: Redis reference" >&2
        mkdir -p "$D/redis"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$D/redis" --appendonly yes \
            --appendfsync everysec --save '' >"$D/redis.log" 2>&1 &
        RPID=$!
        PIDS+=("$RPID")
        wait_port "$REDIS_PORT" 10
        "$BENCH" -q --port "$REDIS_PORT" -w set --keyspace "$KEYS" -d "$VALUE" \
            --load -n 0 -c 50 -P 16 --duration 300 >/dev/null
        sleep 2
        measure "$D/redis" "$DURATION" "127.0.0.1:$REDIS_PORT"
        read -r RED _ _ < <(throughput "$D/redis")
        stop_pid "$RPID"
    fi
    echo "$r $BASE $DURING $DURING_REPAIR $REPAIR_S $ROOTS_S $INSIDE $REPAIRED $((rep1 - rep0)) $BASE_ERR $DURING_ERR $K3 $SAME $RED" >>"$RESULTS"
done
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

python3 - "$RESULTS" "$KEYS" "$VALUE" "$WORKLOAD" "$CLIENTS" "$DURATION" "$STEP" \
    "$LOAD_BEFORE" "$LOAD_AFTER" >"$OUT" <<'PY'
import statistics, sys
res, keys, value, wl, clients, dur, step, lb, la = sys.argv[1:]
rows = [l.split() for l in open(res) if l.strip()]
print(f"{keys} keys x {value} B, workload {wl}, {clients} clients closed loop over nodes 1+2, "
      f"{dur} s in {step} s steps; load average before: {lb}; after: {la}\n")
print("| run | baseline ops/s | during, whole window | during, over the refill | ratio (refill / baseline) "
      "| node 3 refilled | all roots equal | within DURATION | keys repaired | repaired in baseline "
      "| errors base / during | node 3 keys after | roots equal after | Redis ops/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    n, base, dur_w, dur_r, rep, roots, inside, keys_r, keys_b, eb, ed, k3, same, red = r
    ratio = int(dur_r) / int(base) if int(base) else 0
    print(f"| {n} | {base} | {dur_w} | {dur_r} | {ratio:.2f} | {rep} s | {roots} s | {inside} | {keys_r} "
          f"| {keys_b} | {eb} / {ed} | {k3} | {same} | {red} |")
def med(i):
    v = [float(r[i]) for r in rows if r[i] != "-"]
    return statistics.median(v) if v else float("nan")
b, w, d = med(1), med(2), med(3)
print(f"| **median** | **{b:.0f}** | **{w:.0f}** | **{d:.0f}** | **{d / b:.2f}** | **{med(4)} s** | {med(5)} s "
      f"| | {med(7):.0f} | {med(8):.0f} | | | | {med(13):.0f} |")
print(f"\nratio of medians, whole window / baseline: {w / b:.2f}; over the refill / baseline: {d / b:.2f} "
      f"(target >= 0.70)")
PY
cat "$OUT"
