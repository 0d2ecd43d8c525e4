# Shared by the shell tests (source it right after `set -u`):
#   . "$(dirname "$0")/lib/check.sh"
# Check counters and assertions, waits (tests/lib/wait.sh), a scratch
# directory and the background processes to kill however the script ends.
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

# the waits (wait_for, wait_bounded): tests/lib/wait.sh
. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

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
