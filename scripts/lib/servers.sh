# shellcheck shell=bash
# Starting the servers the benchmarks compare: Redis, a Redis Cluster, Colony
# (one node, or a cluster of three).
# Sourced after common.sh. Every server binds 127.0.0.1 only, lives in its own
# directory under $WORK, logs to $WORK/NAME.log and is appended to PIDS.

# The durability both Redis targets run with: an append-only file fsynced
# once a second, no RDB snapshots.
REDIS_DURABILITY=(--appendonly yes --appendfsync everysec --save '')
# shellcheck disable=SC2034 # read by report.sh
REDIS_DURABILITY_TEXT="--appendonly yes --appendfsync everysec --save ''"
COLONY_FSYNC=periodic

# ensure_redis_tools: installs Redis from Debian when it is missing and we are
# root; otherwise explains what to install.
ensure_redis_tools() {
    local missing=0 tool
    for tool in redis-server redis-cli timeout python3; do
        command -v "$tool" >/dev/null || missing=1
    done
    if [ "$missing" = 0 ]; then
        check_redis_version
        return 0
    fi
    command -v timeout >/dev/null || die "timeout not found (coreutils)"
    command -v python3 >/dev/null || die "python3 not found (apt-get install -y python3)"
    if [ "$(id -u)" != 0 ]; then
        die "redis-server/redis-cli not found; as root: apt-get install -y redis-server redis-tools"
    fi
    log "installing redis-server and redis-tools from Debian"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >&2
    fi
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        die "redis-server/redis-cli still missing after apt-get install"
    fi
    check_redis_version
}

# rcli ARGS...: redis-cli against HOST, never waiting more than 30 s.
rcli() { timeout 30 redis-cli -h "$HOST" "$@"; }

redis_version() { redis-server --version | awk '{ sub(/^v=/, "", $3); print $3 }'; }

# The comparison is meant against Redis 7; anything else is said loudly.
check_redis_version() {
    case "$(redis_version)" in
    7.*) ;;
    *) log "warning: redis-server $(redis_version) is not Redis 7; the report names its version" ;;
    esac
}

# launch NAME CMD...: starts CMD in the background with its output in
# $WORK/NAME.log; sets LAST_PID, and LAUNCH_US to the time just before the
# exec (microseconds since the epoch).
launch() {
    local name=$1
    shift
    # shellcheck disable=SC2034 # read by timing.sh
    LAUNCH_US=${EPOCHREALTIME//[!0-9]/}
    "$@" >>"$WORK/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# redis_cmd DIR PORT [EXTRA...]: sets CMD to the redis-server command line.
redis_cmd() {
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    CMD=(redis-server --bind "$HOST" --port "$port" --dir "$dir" --daemonize no
        "${REDIS_DURABILITY[@]}" "$@")
}

# colony_cmd DIR: picks its ports; sets CMD, COLONY_PORT (RESP), COLONY_HTTP
# and COLONY_CLUSTER (inter-node), the last two as HOST:PORT. The data
# directory itself is created by colony.
colony_cmd() {
    local dir=$1 http cluster
    pick_port COLONY_PORT
    pick_port http
    pick_port cluster
    COLONY_HTTP=$HOST:$http COLONY_CLUSTER=$HOST:$cluster
    CMD=("$COLONY_BIN" start --data-dir "$dir" --resp "$HOST:$COLONY_PORT"
        --http "$COLONY_HTTP" --cluster "$COLONY_CLUSTER" --fsync "$COLONY_FSYNC")
    # Extra flags for every Colony node (COLONY_ARGS="--threads 1", say).
    local extra
    read -r -a extra <<<"${COLONY_ARGS:-}"
    CMD+=("${extra[@]}")
}

# start_redis NAME: a standalone Redis; sets REDIS_PORT, REDIS_PID.
start_redis() {
    local name=$1
    pick_port REDIS_PORT
    redis_cmd "$WORK/$name" "$REDIS_PORT"
    launch "$name" "${CMD[@]}"
    REDIS_PID=$LAST_PID
    wait_ready "$name" "$REDIS_PORT" "$REDIS_PID"
}

# start_colony NAME: one Colony node; sets COLONY_PORT, COLONY_PID.
start_colony() {
    local name=$1
    colony_cmd "$WORK/$name"
    launch "$name" "${CMD[@]}"
    COLONY_PID=$LAST_PID
    wait_ready "$name" "$COLONY_PORT" "$COLONY_PID"
}

# start_colony_cluster NAME: three Colony nodes sharing a cluster secret,
# nodes 2 and 3 joining node 1 (n_val is 3 by default). Waits until every
# node sees 3 valid members on its own ring and no transfer, then sets the
# default bucket to COLONY_CLUSTER_PROPS and checks every node reports it.
# Sets COLONY3_PORTS, COLONY3_HTTP, COLONY3_PIDS, and COLONY3_BUCKET to the
# properties `colony admin bucket get default` shows on node 3.
start_colony_cluster() {
    local name=$1 i secret seed=""
    secret=bench-$RANDOM$RANDOM
    COLONY3_PORTS=() COLONY3_HTTP=() COLONY3_PIDS=()
    for i in 1 2 3; do
        colony_cmd "$WORK/$name-$i"
        CMD+=(--node-name "$name-$i" --cluster-secret "$secret")
        [ -z "$seed" ] || CMD+=(--join "$seed")
        launch "$name-$i" "${CMD[@]}"
        COLONY3_PORTS+=("$COLONY_PORT") COLONY3_HTTP+=("$COLONY_HTTP")
        COLONY3_PIDS+=("$LAST_PID")
        # The others join node 1, so it must be up first.
        wait_ready "$name-$i" "$COLONY_PORT" "$LAST_PID"
        [ -n "$seed" ] || seed=$COLONY_CLUSTER
    done
    wait_colony_settled "$name" 3 120
    timeout 30 "$COLONY_BIN" admin --http "${COLONY3_HTTP[0]}" bucket set default \
        "${COLONY_CLUSTER_PROPS[@]}" >>"$WORK/$name-admin.log" 2>&1 ||
        { tail -n 5 "$WORK/$name-admin.log" >&2; die "$name: bucket set default failed"; }
    wait_colony_props "$name" 60
    # What an operator would see, for the report.
    # shellcheck disable=SC2034 # read by bench.sh
    COLONY3_BUCKET=$(timeout 30 "$COLONY_BIN" admin --http "${COLONY3_HTTP[2]}" bucket get default |
        awk 'NR > 1 { printf "%s%s=%s", sep, $1, $2; sep = " " }') ||
        die "$name: colony admin bucket get default failed"
}

# The replication the Colony cluster target runs with, set explicitly.
COLONY_CLUSTER_PROPS=(n_val=3 w=2 r=2)

# colony_status_check NAME CHECK LIMIT_S PATH: polls GET PATH on every node of
# COLONY3_HTTP (about every 100 ms, at most LIMIT_S seconds) until the Python
# expression CHECK, over the decoded JSON answer `s`, is true on all of them.
# The last answers are in $WORK/NAME-status.json.
colony_status_check() {
    local name=$1 check=$2 limit=$3 path=$4
    if python3 - "$check" "$limit" "$path" "$WORK/$name-status.json" "${COLONY3_HTTP[@]}" <<'PY'; then
import json, sys, time, urllib.request
check, limit, path, dump, addrs = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
deadline = time.monotonic() + limit
while True:
    answers = {}
    for addr in addrs:
        try:
            with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
                answers[addr] = json.load(r)
        except (OSError, ValueError) as e:
            answers[addr] = {"error": str(e)}
    try:
        ok = all(eval(check, {"s": s}) for s in answers.values())
    except (KeyError, TypeError):
        ok = False
    if ok:
        sys.exit(0)
    if time.monotonic() >= deadline:
        with open(dump, "w") as f:
            json.dump(answers, f, indent=1)
        sys.exit(1)
    time.sleep(0.1)
PY
        return 0
    fi
    log "$name: last answers in $WORK/$name-status.json"
    return 1
}

# wait_colony_settled NAME MEMBERS LIMIT_S: every node sees MEMBERS valid
# members whose rings are the same as its own, and nothing transferring or
# staged.
wait_colony_settled() {
    local name=$1 members=$2 limit=$3
    colony_status_check "$name" "s['joined'] and not s['transfers'] and not s['staged']['transfers'] and sum(m['status'] == 'Valid' and m['live'] and m['ring_in_sync'] for m in s['members']) == $members and len(s['members']) == $members" \
        "$limit" /api/v1/cluster/status ||
        die "$name: no settled ring of $members valid members within $limit s"
}

# wait_colony_props NAME LIMIT_S: every node reports the default bucket's
# properties as COLONY_CLUSTER_PROPS (they travel in the ring's metadata).
wait_colony_props() {
    local name=$1 limit=$2 prop want=""
    for prop in "${COLONY_CLUSTER_PROPS[@]}"; do
        want+="str(s['${prop%%=*}']) == '${prop#*=}' and "
    done
    colony_status_check "$name" "${want}True" "$limit" /api/v1/buckets/default/props ||
        die "$name: the default bucket is not ${COLONY_CLUSTER_PROPS[*]} on every node within $limit s"
    log "$name: default bucket is ${COLONY_CLUSTER_PROPS[*]} on every node"
}

# start_redis_cluster NAME: 3 masters + 3 replicas, waits until every node
# reports cluster_state:ok and every replica's link to its master is up.
# Sets CLUSTER_PORTS and CLUSTER_PIDS.
start_redis_cluster() {
    local name=$1 i port addrs=()
    CLUSTER_PORTS=() CLUSTER_PIDS=()
    for i in 1 2 3 4 5 6; do
        # Redis Cluster talks on PORT+10000 too.
        pick_port port 10000
        redis_cmd "$WORK/$name-$i" "$port" --cluster-enabled yes \
            --cluster-config-file nodes.conf
        launch "$name-$i" "${CMD[@]}"
        CLUSTER_PORTS+=("$port")
        CLUSTER_PIDS+=("$LAST_PID")
        addrs+=("$HOST:$port")
    done
    for i in 0 1 2 3 4 5; do
        wait_ready "$name-$((i + 1))" "${CLUSTER_PORTS[$i]}" "${CLUSTER_PIDS[$i]}"
    done
    timeout 120 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 \
        --cluster-yes </dev/null >"$WORK/$name-create.log" 2>&1 ||
        { tail -n 20 "$WORK/$name-create.log" >&2; die "redis-cli --cluster create failed"; }
    wait_cluster_ok "$name"
}

# wait_cluster_ok NAME: polls for up to ~120 s.
wait_cluster_ok() {
    local name=$1 i port ok linked info
    for i in $(seq 1 1200); do
        ok=0 linked=0
        for port in "${CLUSTER_PORTS[@]}"; do
            info=$(rcli -p "$port" cluster info 2>/dev/null || true)
            case "$info" in *cluster_state:ok*) ok=$((ok + 1)) ;; esac
            info=$(rcli -p "$port" info replication 2>/dev/null || true)
            case "$info" in *master_link_status:up*) linked=$((linked + 1)) ;; esac
        done
        if [ "$ok" = 6 ] && [ "$linked" = 3 ]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name: cluster not ok after 120 s ($ok/6 nodes ok, $linked/3 replicas linked)"
}

# alive PID...: true when every PID still runs.
alive() {
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null || return 1
    done
}

# redis_settle PORT: waits (up to ~300 s) until no AOF rewrite is running or
# scheduled, so a kill -9 leaves no orphaned rewrite child behind.
redis_settle() {
    local port=$1 i info
    for i in $(seq 1 3000); do
        info=$(rcli -p "$port" info persistence 2>/dev/null || true)
        case "$info" in
        *aof_rewrite_in_progress:0*aof_rewrite_scheduled:0*) return 0 ;;
        esac
        sleep 0.1
    done
    die "redis on $port: AOF rewrite still running after 300 s"
}
