# Loopback tcp ports for shell tests, reserved so no other test can take
# them (sourced; tests/lib/ports.h says how and why).
#
# reserve_ports N: sets PORT to the first of N consecutive ports, held by a
# port_hold process (PORT_HOLDER: its pid) until the caller kills it or
# exits (add PORT_HOLDER to the processes the script kills at exit). The
# program under test can listen on them; nobody else can. Fails the script
# when no ports can be had.
reserve_ports() {
    local f hold=${SLUICE_BUILD:-$(dirname "${SLUICE:?}")}/port_hold
    f=$(mktemp) || exit 1
    # a plain background command: the script is port_hold's parent, whose
    # exit ends the reservation (PR_SET_PDEATHSIG)
    "$hold" "$1" >"$f" &
    PORT_HOLDER=$!
    PORT=
    for _ in $(seq 600); do
        PORT=$(grep -x '[0-9][0-9]*' "$f")
        [ -n "$PORT" ] && break
        kill -0 "$PORT_HOLDER" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$f"
    [ -n "$PORT" ] || { echo "FAIL: reserve_ports $1: no ports from $hold" >&2; exit 1; }
}
