# Network namespaces as "hosts" for the multi-host shell tests (needs root
# and `ip netns`). Source after check.sh:
#   . "$(dirname "$0")/lib/netns.sh"
# Names get the script's pid: parallel runs must not share namespaces or links.
# Every namespace and link made here is removed at exit, with the processes
# still inside (they would keep a namespace alive).

_ns_made=()
_ns_links=()

_ns_cleanup() {
    for ns in "${_ns_made[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    for l in "${_ns_links[@]}"; do ip link del "$l" 2>/dev/null; done
}
at_exit _ns_cleanup

# ns_need NAME [TOOL...]: exit 0 with SKIP unless root with `ip netns` and TOOLs
ns_need() {
    local name=$1 t
    shift
    local missing=
    [ "$(id -u)" -eq 0 ] && ip netns list >/dev/null 2>&1 || missing=1
    for t in "$@"; do command -v "$t" >/dev/null || missing=1; done
    if [ -n "$missing" ]; then
        echo "SKIP: $name needs root and 'ip netns'${*:+ and $*}"
        exit 0
    fi
}

_ns_add() { ip netns add "$1" && _ns_made+=("$1"); }

# ns_pair A B VA VB: namespaces A (10.77.0.1) and B (10.77.0.2) joined by the
# veth pair VA-VB, loopback up in both
ns_pair() {
    local a=$1 b=$2 va=$3 vb=$4
    _ns_add "$a" && _ns_add "$b" &&
        ip link add "$va" type veth peer name "$vb" && _ns_links+=("$va") &&
        ip link set "$va" netns "$a" && ip link set "$vb" netns "$b" &&
        ip -n "$a" addr add 10.77.0.1/24 dev "$va" && ip -n "$b" addr add 10.77.0.2/24 dev "$vb" &&
        ip -n "$a" link set "$va" up && ip -n "$b" link set "$vb" up &&
        ip -n "$a" link set lo up && ip -n "$b" link set lo up ||
        { echo "FAIL: cannot build the two namespaces"; exit 1; }
}

# ns_switch SW NS...: a bridge in namespace SW and the hosts NS..., host i at
# 10.78.0.(i+1) on its eth0
ns_switch() {
    local sw=$1 i=0 ns
    shift
    _ns_add "$sw" && ip -n "$sw" link add br0 type bridge && ip -n "$sw" link set br0 up ||
        { echo "FAIL: cannot build the switch"; exit 1; }
    for ns in "$@"; do
        _ns_add "$ns" &&
            ip link add "${sw}h$i" type veth peer name "${sw}p$i" &&
            ip link set "${sw}h$i" netns "$ns" && ip link set "${sw}p$i" netns "$sw" &&
            ip -n "$sw" link set "${sw}p$i" master br0 && ip -n "$sw" link set "${sw}p$i" up &&
            ip -n "$ns" link set "${sw}h$i" name eth0 && ip -n "$ns" addr add "10.78.0.$((i + 1))/24" dev eth0 &&
            ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up ||
            { echo "FAIL: cannot build host $i"; exit 1; }
        i=$((i + 1))
    done
}

# hosts_setup CONFIG KEY...: in $T, the shipped configs/CONFIG and the tiny
# model where the config's relative paths point, a key pair keys/KEY for
# each KEY (each "host" makes its own; only the .pub files are shared);
# then cd $T
hosts_setup() {
    local cfg=$1 k
    shift
    mkdir -p "$T/configs" "$T/models" "$T/keys"
    cp "$SRC/configs/$cfg" "$T/configs/" || { echo "FAIL: configs/$cfg is missing"; exit 1; }
    cp "$SRC/models/tiny-gemma3.gguf" "$T/models/" || { echo "FAIL: the shipped model is missing"; exit 1; }
    for k in "$@"; do "$SLUICE" keygen -o "$T/keys/$k" || { echo "FAIL: keygen $k"; exit 1; }; done
    cd "$T" || exit 1
}
