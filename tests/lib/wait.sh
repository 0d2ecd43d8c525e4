# Waits with a bound, shared by the shell tests: check.sh sources this for
# its scripts, tests/serve_lib.sh for the serve tests. They need the
# caller's `bad` (a failed check).

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
