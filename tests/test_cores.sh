#!/bin/bash
# Cores as an assigned resource, with the processes of configs/two-process.yaml
# (the coordinator and a worker it spawns) on this host:
#  - without `cores:`, the coordinator and its spawned worker share the CPUs
#    the run was given (Cpus_allowed_list in /proc/PID/status); with `cores:`
#    on one of them, the other gets the rest: disjoint sets;
#  - with `cores:`, each process has exactly its node's CPUs;
#  - a config oversubscribing cores (two processes on one CPU, more threads
#    than cores) is refused with the numbers, and a bad `cores:` names the
#    field; more threads than a process's CPUs runs with a warning giving
#    the numbers; fewer CPUs than processes (taskset) runs without one.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$(dirname "$0")/lib/check.sh"
scratch slcores
cd "$T" || exit 1
cp "$SRC/models/tiny-gemma3.gguf" m.gguf || { echo "FAIL: the shipped model is missing"; exit 1; }

# cpus LIST: the CPU numbers of a kernel list ("0-2,5" -> "0 1 2 5")
cpus() {
    local part a b out=()
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        a=${part%-*}
        b=${part#*-}
        for ((c = a; c <= b; c++)); do out+=("$c"); done
    done
    echo "${out[@]}"
}
allowed_of() { sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null; }
mine=($(cpus "$(allowed_of $$)"))
first=${mine[0]}
last=${mine[${#mine[@]} - 1]}

# config NAME LOCAL_EXTRA P1_EXTRA [P1_STAGE_EXTRA]: the two-process pipeline
config() {
    cat >"$1" <<YAML
model: m.gguf
nodes:
  - name: local
    address: ipc://$T/local
$2  - name: p1
    address: ipc://$T/p1
    spawn: true
$3stages:
  - kind: embed
  - kind: layers
    layers: [0, 3]
  - kind: layers
    node: p1
    layers: [3, 6]
${4:-}  - kind: head
    node: p1
  - kind: sample
    node: p1
limits: {max_sequences: 4, context: 1024, max_batch_tokens: 256}
YAML
}
for i in $(seq 32); do echo "prompt $i of a long run"; done >long.txt
worker_pid() { pgrep -f "worker --listen ipc://$T/p1" | head -1; }
has_worker() { [ -n "$(worker_pid)" ]; }

# sets_of CONFIG: starts a long run and, once its worker is up, sets c_list
# and w_list to the coordinator's and the worker's CPUs (the worker is bound
# before it executes, the coordinator before it spawns: no waiting for more)
sets_of() {
    "$SLUICE" run -c "$1" --prompts long.txt -n 100000 >/dev/null 2>run.err &
    local coord=$!
    pids+=("$coord")
    wait_for has_worker || { bad "$1: the spawned worker did not start"; _show run.err; }
    c_list=$(allowed_of "$coord")
    w_list=$(allowed_of "$(worker_pid)")
    kill "$coord" 2>/dev/null
    wait_bounded 60 "the coordinator of $1 after SIGTERM" "$coord"
    wait_for eval '! has_worker' || bad "$1: the worker outlived its coordinator"
}

if [ ${#mine[@]} -ge 2 ]; then
    # without cores: the coordinator and its worker share this run's CPUs
    # (idle pools sleep; a process alone at work gets every core)
    config auto.yaml "" ""
    sets_of auto.yaml
    [ "$(cpus "$c_list")" = "${mine[*]}" ] && [ "$(cpus "$w_list")" = "${mine[*]}" ] && ok ||
        bad "without cores: coordinator ($c_list) and worker ($w_list) do not both have ${mine[*]}"

    # layers: auto (the split decided at load): the same
    sed -E 's/layers: \[[0-9]+, [0-9]+\]/layers: auto/' auto.yaml >layers-auto.yaml
    sets_of layers-auto.yaml
    [ "$(cpus "$c_list")" = "${mine[*]}" ] && [ "$(cpus "$w_list")" = "${mine[*]}" ] && ok ||
        bad "layers: auto: coordinator ($c_list) and worker ($w_list) do not both have ${mine[*]}"

    # cores: for one of them: the other gets the rest, disjoint
    config one-stated.yaml "    cores: [$last]
" ""
    sets_of one-stated.yaml
    c_set=($(cpus "$c_list"))
    w_set=($(cpus "$w_list"))
    common=$(comm -12 <(printf '%s\n' "${c_set[@]}" | sort) <(printf '%s\n' "${w_set[@]}" | sort))
    [ "$c_list" = "$last" ] && [ ${#w_set[@]} -ge 1 ] && [ -z "$common" ] &&
        [ $((${#c_set[@]} + ${#w_set[@]})) -eq ${#mine[@]} ] && ok ||
        bad "coordinator cores: [$last]: coordinator ($c_list) and worker ($w_list) are not disjoint shares of ${mine[*]}"

    config stated.yaml "    cores: [$last]
" "    cores: [$first]
"
    sets_of stated.yaml
    [ "$c_list" = "$last" ] && ok || bad "coordinator has CPUs '$c_list', its cores: say $last"
    [ "$w_list" = "$first" ] && ok || bad "worker has CPUs '$w_list', its cores: say $first"
else
    echo "SKIP: disjoint core sets need 2 CPUs (this run has ${mine[*]})"
fi

# refusals, before anything starts
config shared.yaml "    cores: [$first]
" "    cores: [$first]
"
expect 1 "$SLUICE" run -c shared.yaml -p hello -n 2
has "$T/err" "nodes\\[1\\]\\.cores: nodes 'local' and 'p1' both run on this host and share CPU $first" \
    "two processes on one CPU"
config threads.yaml "" "    cores: [$first]
" "    threads: 3
"
expect 1 "$SLUICE" run -c threads.yaml -p hello -n 2
has "$T/err" "node 'p1' has 1 core\\(s\\) \\($first\\) but its stages ask for 3 threads \\(layers 3\\)" \
    "more threads than cores"
config bad.yaml "    cores: [0, zero]
" ""
expect 1 "$SLUICE" run -c bad.yaml -p hello -n 2
has "$T/err" "bad.yaml:5: nodes\\[0\\]\\.cores\\[1\\]: 'zero' is not a CPU number" "a bad cores: item"
config far.yaml "" "    cores: [1023]
"
expect 1 "$SLUICE" run -c far.yaml -p hello -n 2
has "$T/err" "node 'p1' asks for CPUs 1023, but this process may use only" "cores outside the process's"
! pgrep -f "worker --listen ipc://$T/p1" >/dev/null && ok || bad "a refused config left a worker"

# more threads than a process's share: it runs, and says so with the numbers
config many.yaml "" "" "    threads: $((${#mine[@]} + 1))
"
expect 0 "$SLUICE" run -c many.yaml -p hello -n 2
has "$T/err" "warning: node 'p1' runs $((${#mine[@]} + 1)) threads in its stages on [0-9]+ CPU" \
    "more threads than cores, without cores:"

# fewer CPUs than processes: they share them, as they do any number
config auto.yaml "" ""
expect 0 taskset -c "$first" "$SLUICE" run -c auto.yaml -p hello -n 4
hasnt "$T/err" "warning" "one CPU for two processes"

# Layers stages of one process, chained on one thread or on threads of
# their own (a `threads:` of its own starts a chain), share its cores:
# decoding requests go in one micro-batch at a time, as with one stage (split
# over overlapping batches, each part read the weights again and the parts
# ran one after the other anyway: 0.8x one stage on the 1b model). Two
# processes on disjoint `cores:` overlap, one batch each.
chained() {
    local name=$1
    shift
    { echo "model: m.gguf"; echo "stages:"; echo "  - kind: embed"
      for r in "$@"; do printf '  - kind: layers\n    layers: [%s]\n' "$r"; done
      echo "  - kind: head"; echo "  - kind: sample"
      echo "limits: {max_sequences: 8, context: 512, max_batch_tokens: 256}"; } >"$name"
}
chained chain1.yaml "0, 6"
chained chain2.yaml "0, 3" "3, 6"
sed 's/^    layers: \[3, 6\]$/&\n    threads: 1/' chain2.yaml >threads2.yaml
in_flight() {
    "$SLUICE" run -c "$1" -p hello -n 2 --stats 2>&1 >/dev/null |
        sed -n 's/^micro-batches in flight: at most \([0-9]*\)$/\1/p'
}
for c in chain1.yaml chain2.yaml threads2.yaml auto.yaml; do
    n=$(in_flight $c)
    [ "$n" = 2 ] && ok || bad "$c: '$n' micro-batches in flight, not 2"
done
if [ ${#mine[@]} -ge 2 ]; then
    config disjoint.yaml "    cores: [$first]
" "    cores: [$last]
"
    n=$(in_flight disjoint.yaml)
    [ "$n" = 3 ] && ok || bad "processes on disjoint cores: '$n' micro-batches in flight, not 3"
fi

finish test_cores
