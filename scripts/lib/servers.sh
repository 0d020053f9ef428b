# shellcheck shell=bash
# Starting the servers the benchmarks compare: Redis, a Redis Cluster, Colony.
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

# colony_cmd DIR: picks its ports; sets CMD and COLONY_PORT. The data
# directory itself is created by colony.
colony_cmd() {
    local dir=$1 http cluster
    pick_port COLONY_PORT
    pick_port http
    pick_port cluster
    CMD=("$COLONY_BIN" start --data-dir "$dir" --resp "$HOST:$COLONY_PORT"
        --http "$HOST:$http" --cluster "$HOST:$cluster" --fsync "$COLONY_FSYNC")
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
