# Shared by the tests of `sluice serve` (sourced): start a server on a free
# port and wait until it serves, checks, cleanup. Loopback only.
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:?set SLUICE_SRC to the source tree}
T=$(mktemp -d)
servers=()
fails=0
checks=0
cleanup() {
    for p in "${servers[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
eq() { if [ "$1" == "$2" ]; then ok; else bad "$3: got '$1', want '$2'"; fi; }
has() { if grep -aqE -- "$2" "$1"; then ok; else bad "$3: no /$2/ in $(basename "$1")"; head -c 600 "$1" | sed 's/^/  | /' >&2; echo >&2; fi; }
# wait_for, wait_bounded
. "$(dirname "${BASH_SOURCE[0]}")/lib/wait.sh"

# start_server NAME ARGS...: runs `sluice serve ARGS --port 0` and sets
# URL and PID once it is ready (bounded wait), or fails the test.
start_server() {
    local name=$1
    shift
    : >"$T/$name.out" # before the child opens it: the wait below reads it at once
    "$SLUICE" serve "$@" --port 0 >"$T/$name.out" 2>"$T/$name.err" &
    PID=$!
    servers+=("$PID")
    URL=
    for _ in $(seq 600); do
        URL=$(sed -n 's|.* ready at \(http://127\.0\.0\.1:[0-9]*\)/.*|\1|p' "$T/$name.out")
        [ -n "$URL" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "FAIL: server $name did not start: $(tail -3 "$T/$name.err")" >&2
    exit 1
}

# metric URL NAME: a metric's value from /metrics (first match)
metric() { curl -s -H "Authorization: Bearer ${KEY:-}" "$1/metrics" | sed -n "s/^$2 \([0-9.e+-]*\)$/\1/p" | head -1; }

# wait_metric URL NAME VALUE: waits (up to 30 s: a loaded machine can be
# slow) until the metric equals VALUE
wait_metric() {
    for _ in $(seq 600); do
        [ "$(metric "$1" "$2")" == "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

finish() {
    echo "$checks checks, $fails failed"
    [ "$fails" -eq 0 ]
}
