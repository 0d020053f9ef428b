# shellcheck shell=bash
# The load the rebalance scripts measure a move under. Sourced.

# step_load BENCH WORK KEYS VALUE RATE TARGET_ARGS...: in the background,
# YCSB-A at a fixed open-loop RATE in 5-second steps (WORK/duringK.json,
# summed up by latency.py steps) until WORK/moved exists; at most 120 steps,
# each bounded by count and time. Sets LOADPID.
step_load() {
    local bench=$1 work=$2 keys=$3 value=$4 rate=$5
    shift 5
    rm -f "$work/moved"
    (
        k=0
        while [ $k -lt 120 ] && ! [ -e "$work/moved" ]; do
            timeout 30 "$bench" -q "$@" -w a --keyspace "$keys" -d "$value" --rate "$rate" \
                -n $((rate * 5)) --duration 10 --json "$work/during$k.json" || true
            k=$((k + 1))
        done
    ) &
    LOADPID=$!
}

# step_load_end: the move is over; wait for the step under way.
step_load_end() {
    touch "$1/moved"
    wait "$LOADPID" 2>/dev/null || true
}
