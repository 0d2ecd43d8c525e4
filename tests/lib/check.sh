# Shared by the shell tests (source it right after `set -u`):
#   . "$(dirname "$0")/lib/check.sh"
# Check counters and assertions, waits, a scratch directory and the
# background processes to kill however the script ends.
#
# A script adds the pid of everything it starts in the background to `pids`
# (an exit that skips its own kills must not leave workers behind), and
# more to do at exit with `at_exit 'COMMAND'`. KEEP=1 keeps the scratch
# directory for a post-mortem.

fails=0
checks=0
pids=()
T=
_exit_cmds=()

ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }

# the last lines of a file that failed a check, for the log (HAS_SHOW: how many)
_show() { sed 's/^/  | /' "$1" 2>/dev/null | tail -"${HAS_SHOW:-5}" >&2; }

# has FILE ERE WHAT: some line of FILE matches the extended regex ERE
has() { if grep -aqE -- "$2" "$1"; then ok; else bad "$3: no /$2/ in $(basename "$1")"; _show "$1"; fi; }
# hasnt FILE ERE WHAT: no line of FILE matches ERE
hasnt() { if grep -aqE -- "$2" "$1"; then bad "$3: /$2/ in $(basename "$1")"; _show "$1"; else ok; fi; }
# has_str FILE TEXT WHAT: some line of FILE contains TEXT as it is
has_str() { if grep -aqF -- "$2" "$1"; then ok; else bad "$3: no '$2' in $(basename "$1")"; _show "$1"; fi; }

# expect STATUS CMD...: runs CMD with stdout to $T/out and stderr to $T/err,
# and checks its exit status
expect() {
    local want=$1
    shift
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else
        bad "exit $got (want $want): $*"
        sed 's/^/  | /' "$T/err" | head -5 >&2
    fi
}

# ids [FILE]: the token ids a run printed ("ids...: 1 2 3"), from FILE or stdin
ids() { grep -a '^ids' "$@" | sed 's/^ids[^:]*://'; }

# wait_for CMD...: until CMD succeeds, WAIT_TRIES times 50 ms (default 10 s)
wait_for() { for _ in $(seq "${WAIT_TRIES:-200}"); do "$@" && return 0; sleep 0.05; done; return 1; }

# wait_bounded SECS WHAT PID: waits for the background process PID (a child
# of this shell) and returns its exit status; when it is still running after
# SECS seconds it is killed, a check fails naming WHAT as what hung, and the
# status is 124 (its own stderr is kept: the failure goes there). A test's failure then says what hung instead of running
# into ctest's timeout.
wait_bounded() {
    local secs=$1 what=$2 pid=$3
    local end=$(($(date +%s%N) + secs * 1000000000))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s%N)" -ge "$end" ]; then
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            bad "$what (pid $pid) still running after $secs s: killed"
            return 124
        fi
        sleep 0.02
    done
    wait "$pid" 2>/dev/null # (no "Killed" notice: the status tells)
}

# scratch PREFIX: a new scratch directory in T, removed at exit
scratch() { T=$(mktemp -d "/tmp/$1.XXXXXX") || { echo "FAIL: mktemp"; exit 1; }; }

at_exit() { _exit_cmds+=("$1"); }

_cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    for c in "${_exit_cmds[@]}"; do eval "$c"; done
    if [ -n "$T" ] && [ -z "${KEEP:-}" ]; then rm -rf "$T"; fi
}
trap _cleanup EXIT

# finish NAME: the summary line, and the script's status
finish() {
    echo "$1: $checks checks, $fails failed"
    [ "$fails" -eq 0 ]
}
