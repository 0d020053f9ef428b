# shellcheck shell=bash
# Timing a server's start: from the exec to its first PONG, and to the first
# GET that returns a value. Sourced after common.sh.
#
# The probes are bash builtins over /dev/tcp and naps are `read -t` on a pipe
# nobody writes to, so polling every millisecond forks nothing and costs the
# starting server almost no CPU.

exec {NAP_FD}<> <(:)
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }

# Sets NOW_US, microseconds since the epoch (no $(...): that would fork).
now_us() { NOW_US=${EPOCHREALTIME//[!0-9]/}; }

# resp_exchange PORT REQUEST: one connection, one request; sets RESP_REPLY to
# the first line of the reply. Fails when nothing listens or nothing answers
# within 30 s (a server may accept before it can answer).
resp_exchange() {
    local port=$1 request=$2 line=""
    {
        printf '%s' "$request" >&9 && IFS= read -r -t 30 line <&9
    } 2>/dev/null 9<>"/dev/tcp/$HOST/$port" || return 1
    RESP_REPLY=${line%$'\r'}
}

PING_REQUEST=$'PING\r\n'
# get_request KEY: sets GET_REQUEST to GET KEY in RESP.
# shellcheck disable=SC2016 # the $ are RESP, not expansions
get_request() { printf -v GET_REQUEST '*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n' "${#1}" "$1"; }

# await_reply PORT PID LIMIT_S REQUEST PATTERN: polls about every millisecond
# until the first reply line matches the glob PATTERN; sets AWAIT_US to when it
# did. Fails if PID exits or LIMIT_S seconds pass.
await_reply() {
    local port=$1 pid=$2 limit_us=$(($3 * 1000000)) request=$4 pattern=$5 start
    now_us
    start=$NOW_US
    while :; do
        # shellcheck disable=SC2053 # PATTERN is a glob on purpose
        if resp_exchange "$port" "$request" && [[ $RESP_REPLY == $pattern ]]; then
            now_us
            AWAIT_US=$NOW_US
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        now_us
        [ $((NOW_US - start)) -lt "$limit_us" ] || return 1
        nap 0.001
    done
}

# timed_start NAME PORT LIMIT_S KEY CMD...: launches CMD (see launch) and
# measures PONG_US, the microseconds from exec to the first PONG, and, unless
# KEY is empty, GET_US, to the first GET of KEY that returns a value.
timed_start() {
    local name=$1 port=$2 limit=$3 key=$4
    shift 4
    launch "$name" "$@"
    if ! await_reply "$port" "$LAST_PID" "$limit" "$PING_REQUEST" '+PONG'; then
        tail -n 20 "$WORK/$name.log" >&2 || true
        die "$name: no PONG within $limit s of its start (log above)"
    fi
    # shellcheck disable=SC2034 # PONG_US and GET_US are the results
    PONG_US=$((AWAIT_US - LAUNCH_US))
    GET_US=""
    [ -n "$key" ] || return 0
    get_request "$key"
    if ! await_reply "$port" "$LAST_PID" "$limit" "$GET_REQUEST" '$[0-9]*'; then
        tail -n 20 "$WORK/$name.log" >&2 || true
        die "$name: GET $key returned no value within $limit s of its start"
    fi
    # shellcheck disable=SC2034
    GET_US=$((AWAIT_US - LAUNCH_US))
}
