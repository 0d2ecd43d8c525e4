#!/bin/bash
# Pipelines across processes on one host: the tokens of a split run equal
# the one-process run's (greedy and seeded sampling, one prompt and several
# in flight); a worker killed mid-generation, an interrupted coordinator, an
# address in use, a model missing on a worker, an unreachable or busy worker
# all end with an error naming the node and stage, in seconds, with no
# process left behind.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
. "$(dirname "$0")/lib/ports.sh"
# (a mount namespace's tmpfs goes with its last process: nothing else to undo at exit)
scratch slp
workers() { pgrep -f "worker --listen [a-z]+://$1" || true; }
no_orphans() { local left; left=$(workers "$T"); if [ -z "$left" ]; then ok; else bad "$1: worker processes left: $(echo $left)"; fi; }
has_workers() { [ -n "$(workers "$1")" ]; }
no_workers() { [ -z "$(workers "$1")" ]; }
n_workers_is() { [ "$(workers "$1" | wc -l)" -eq "$2" ]; }
n_ready_at_least() { [ "$(grep -c 'stage(s) ready' "$1")" -ge "$2" ]; }

cd "$T" || exit 1
"$SLUICE" synth --arch gemma3 --size test --type q8_0 -o m.gguf >/dev/null 2>&1 || { echo "FAIL: synth"; exit 1; }

# config NAME LOCAL_ADDR [NODE ADDR SPAWN]... -- STAGE_LINES: writes NAME
config() {
    local name=$1 local_addr=$2
    shift 2
    {
        echo "model: $T/m.gguf"
        echo "nodes:"
        echo "  - name: local"
        echo "    address: $local_addr"
        while [ "$1" != "--" ]; do
            echo "  - name: $1"
            echo "    address: $2"
            echo "    spawn: $3"
            shift 3
        done
        shift
        echo "stages:"
        printf '%s\n' "$@"
        echo "limits: {max_sequences: 16, context: 2048, max_batch_tokens: 256}"
    } >"$name"
}
S=("  - kind: embed")
lay() { printf '  - kind: layers\n    layers: [%d, %d]\n    node: %s' "$1" "$2" "$3"; }
tail_on() { printf '  - kind: head\n    node: %s\n  - kind: sample\n    node: %s' "$1" "$1"; }

config two.yaml "ipc://$T/c" p1 "ipc://$T/p1" true -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 p1)" "$(tail_on p1)"
# four layer stages over three processes, the activations coming back to
# this process in the middle
config three.yaml "ipc://$T/c" p1 "ipc://$T/p1" true p2 "ipc://$T/p2" true -- \
    "${S[@]}" "$(lay 0 2 p1)" "$(lay 2 3 local)" "$(lay 3 4 p2)" "$(lay 4 6 p2)" "$(tail_on p2)"

# ids FILE: the generated ids a run printed (one line a prompt)

# ---- split runs give the one-process tokens ----
prompts=("the quick brown fox" "hello world" "one two three four five six")
printf '%s\n' "${prompts[@]}" >prompts.txt
for mode in greedy sampled; do
    opt=(-n 24 --print-ids)
    [ $mode = sampled ] && opt+=(--temp 0.8 --seed 11)
    for i in 0 1 2; do
        "$SLUICE" run -m m.gguf -p "${prompts[$i]}" "${opt[@]}" >/dev/null 2>"ref$i.err" || bad "reference run $i"
        ids "ref$i.err" >"ref$i.ids"
        [ "$(wc -w <"ref$i.ids")" -eq 24 ] && ok || bad "reference run $i made $(wc -w <"ref$i.ids") tokens, want 24"
    done
    for cfg in two.yaml three.yaml; do
        for i in 0 1 2; do
            "$SLUICE" run -c $cfg -p "${prompts[$i]}" "${opt[@]}" >/dev/null 2>run.err || bad "$cfg $mode run $i failed: $(tail -1 run.err)"
            if ids run.err | cmp -s - "ref$i.ids"; then ok; else bad "$cfg $mode prompt $i: $(ids run.err) != $(cat "ref$i.ids")"; fi
        done
        # all prompts in flight together, each as it was alone
        "$SLUICE" run -c $cfg --prompts prompts.txt "${opt[@]}" >/dev/null 2>many.err || bad "$cfg $mode --prompts failed: $(tail -1 many.err)"
        if ids many.err | cmp -s - <(cat ref0.ids ref1.ids ref2.ids); then ok; else bad "$cfg $mode --prompts: ids differ from the solo runs"; fi
        # the hops between processes over ZeroMQ's ipc:// instead of the link
        SLUICE_IPC_LINK=zmq "$SLUICE" run -c $cfg --prompts prompts.txt "${opt[@]}" >/dev/null 2>many.err || bad "$cfg $mode over zmq failed: $(tail -1 many.err)"
        if ids many.err | cmp -s - <(cat ref0.ids ref1.ids ref2.ids); then ok; else bad "$cfg $mode over zmq: ids differ from the solo runs"; fi
        no_orphans "$cfg $mode"
    done
done

# ---- a worker killed mid-generation ----
# generating FILE: up to 60 s for a run's progress line (FILE) to show tokens coming out
generating() { for _ in $(seq 600); do grep -aqE "progress: .*[1-9][0-9.]* tok/s" "$1" && return 0; sleep 0.1; done; return 1; }
for i in $(seq 16); do echo "prompt $i of a long run"; done >long.txt
# The time bounds below are what the design promises on an idle machine
# (a killed worker noticed at once, a hung one after the 2 s heartbeat
# timeout, an unreachable node after the 5 s connect timeout) plus slack;
# on a loaded machine starting and stopping processes takes longer, so
# each bound grows with REF, the wall time of a whole short run of the same
# pipeline (coordinator and spawned worker start, load, 2 tokens, stop)
# measured just before: bound MS DESIGN_MS -> max(MS, DESIGN_MS + 3 * REF).
# What each check proves still holds: a coordinator that hangs, or waits
# for a longer timeout than the design's, still fails it (and the messages
# checked name the way each end was noticed).
measure_ref() {
    local t0=$(date +%s%N)
    "$SLUICE" run -c two.yaml -p hi -n 2 >/dev/null 2>ref_run.err || bad "reference run failed: $(tail -1 ref_run.err)"
    REF=$((($(date +%s%N) - t0) / 1000000))
}
bound() { local b=$(($2 + 3 * REF)); [ "$b" -gt "$1" ] && echo "$b" || echo "$1"; }
# long_run CONFIG: a generation of several seconds in the background, its pid in $coord
long_run() {
    "$SLUICE" run -c "$1" --prompts long.txt -n 100000 >/dev/null 2>long.err &
    coord=$!
    pids+=("$coord")
}
measure_ref
long_run two.yaml
if wait_for has_workers "$T/p1"; then ok; else bad "no spawned worker appeared"; fi
generating long.err && ok || bad "killed worker: the run never generated"
# the hops between the processes go over the same-host link (pipeline/link.h):
# p1's input and the driver's return address listen on it
for f in "$T/p1-s2.link" "$T/c-s5.link"; do [ -S "$f" ] && ok || bad "no link socket at $f"; done
victim=$(workers "$T/p1")
t0=$(date +%s%N)
kill -9 $victim
wait_bounded 120 "the coordinator after its worker was killed" "$coord"
status=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $status -ne 0 ] && ok || bad "coordinator exited 0 after its worker was killed"
lim=$(bound 5000 0)
[ $ms -lt $lim ] && ok || bad "coordinator took $ms ms to notice a killed worker (bound $lim ms, a short run took $REF ms)"
has long.err "stage(s)? layers\[3,6\), head, sample on node 'p1' \(ipc://$T/p1\) was killed by signal 9" "killed worker"
no_orphans "killed worker"
echo "killed worker noticed and reported in $ms ms"

# ---- a worker that hangs (stopped): the heartbeats notice ----
measure_ref
long_run two.yaml
wait_for has_workers "$T/p1" && ok || bad "no spawned worker appeared"
generating long.err && ok || bad "hung worker: the run never generated"
t0=$(date +%s%N)
kill -STOP $(workers "$T/p1")
wait_bounded 120 "the coordinator of a hung worker" "$coord"
status=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $status -ne 0 ] && ok || bad "coordinator exited 0 with a hung worker"
lim=$(bound 6000 2000)
[ $ms -lt $lim ] && ok || bad "coordinator took $ms ms to give up on a hung worker (bound $lim ms, a short run took $REF ms)"
has long.err "stage(s)? layers\[3,6\), head, sample on node 'p1' \(ipc://$T/p1\) stopped answering" "hung worker"
no_orphans "hung worker"
echo "hung worker noticed and reported in $ms ms"

# ---- Ctrl-C on the coordinator ----
measure_ref
long_run three.yaml
wait_for n_workers_is "$T" 2 && ok || bad "three.yaml: two spawned workers expected"
generating long.err && ok || bad "Ctrl-C: the run never generated"
t0=$(date +%s%N)
kill -INT "$coord"
wait_bounded 120 "the coordinator after Ctrl-C" "$coord"
status=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $status -ne 0 ] && ok || bad "interrupted run exited 0"
lim=$(bound 4000 0)
[ $ms -lt $lim ] && ok || bad "interrupted run took $ms ms to end (bound $lim ms, a short run took $REF ms)"
has long.err "cancelled" "interrupted run"
no_orphans "Ctrl-C"

# ---- the coordinator killed: its spawned workers die with it ----
long_run two.yaml
wait_for has_workers "$T/p1" && ok || bad "no spawned worker appeared"
kill -9 "$coord"
wait_bounded 60 "the killed coordinator" "$coord"
if wait_for no_workers "$T"; then ok; else bad "spawned worker outlived its killed coordinator"; fi

# ---- addresses already in use ----
# ports base .. base+31 are reserved for this script (tests/lib/ports.h):
# no other test can listen on them or send to them. A node at port P listens
# on P (control) and P+1+i (stage i's input); below p1 is at base (and at
# base+3 in tcp2.yaml) or base+8, this process at base+16 (its return socket
# at base+16+1+5). A squatter sits on base+3, p1's stage 2 input.
reserve_ports 32
pids+=("$PORT_HOLDER")
base=$PORT
"$SLUICE" worker --listen "tcp://127.0.0.1:$((base + 3))" --insecure 2>squat.err &
squatter=$!
pids+=($squatter)
wait_for grep -qsE "listening|cannot listen" squat.err
grep -qs listening squat.err && ok || bad "squatter did not start"
# (plain TCP: these are about addresses, keys come below)
config tcp.yaml "tcp://127.0.0.1:$((base + 16))" p1 "tcp://127.0.0.1:$base" true -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 p1)" "$(tail_on p1)"
echo "insecure: true" >>tcp.yaml
"$SLUICE" run -c tcp.yaml -p hi -n 2 >/dev/null 2>run.err && bad "data address in use: run succeeded"
[ "$(grep -c "warning: .*insecure" run.err)" -eq 1 ] && ok || bad "insecure config: want one warning line"
has run.err "node 'p1' \(tcp://127.0.0.1:$base\): .*cannot listen on tcp://127.0.0.1:$((base + 3)): Address already in use" "data address in use"
config tcp2.yaml "tcp://127.0.0.1:$((base + 16))" p1 "tcp://127.0.0.1:$((base + 3))" true -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 p1)" "$(tail_on p1)"
echo "insecure: true" >>tcp2.yaml
"$SLUICE" run -c tcp2.yaml -p hi -n 2 >/dev/null 2>run.err && bad "control address in use: run succeeded"
has run.err "node 'p1': .*cannot listen on tcp://127.0.0.1:$((base + 3)): Address already in use" "control address in use"
no_orphans "address in use"
# a worker named by host name over tcp (ZeroMQ binds only IPs: the worker resolves it),
# spawned with the secret key the config gives it, every hop CURVE
"$SLUICE" keygen -o local && "$SLUICE" keygen -o p1 || bad "keygen"
config tcpname.yaml "tcp://127.0.0.1:$((base + 16))" p1 "tcp://localhost:$((base + 8))" true -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 p1)" "$(tail_on p1)"
sed -i -e "/^  - name: local\$/a\\    key: $T/local.key" \
    -e "/^  - name: p1\$/a\\    key: $T/p1.key\n    public_key: $T/p1.pub" tcpname.yaml
"$SLUICE" run -m m.gguf -p "${prompts[1]}" -n 24 --print-ids >/dev/null 2>ref.err
"$SLUICE" run -c tcpname.yaml -p "${prompts[1]}" -n 24 --print-ids >/dev/null 2>run.err || bad "tcp by host name failed: $(tail -1 run.err)"
if ids run.err | cmp -s - <(ids ref.err); then ok; else bad "tcp by host name: ids differ"; fi
no_orphans "tcp by host name"

# ---- ipc:// sockets only in a directory private to this user ----
"$SLUICE" worker --listen "ipc:///tmp/sluice-open-$$" 2>open.err && bad "worker listened in /tmp"
has open.err "directory /tmp has mode 1777, so other users can reach its sockets" "ipc in /tmp"
mkdir -m 755 "$T/open"
config open.yaml "ipc://$T/open/c" p1 "ipc://$T/p1" true -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 p1)" "$(tail_on p1)"
"$SLUICE" run -c open.yaml -p hi -n 2 >/dev/null 2>run.err && bad "coordinator listened in a 0755 directory"
has run.err "directory $T/open has mode 0755" "ipc in a 0755 directory"
no_orphans "ipc directory"

# ---- unreachable node ----
config ghost.yaml "ipc://$T/c" ghost "ipc://$T/nobody" false -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 ghost)" "$(tail_on ghost)"
measure_ref
t0=$(date +%s%N)
"$SLUICE" run -c ghost.yaml -p hi -n 2 >/dev/null 2>run.err && bad "unreachable node: run succeeded"
ms=$((($(date +%s%N) - t0) / 1000000))
has run.err "node 'ghost' \(ipc://$T/nobody\) is unreachable" "unreachable node"
lim=$(bound 8000 5000)
[ $ms -lt $lim ] && ok || bad "unreachable node took $ms ms to report (bound $lim ms, a short run took $REF ms)"

# ---- a standing worker: busy while it serves, free again after its coordinator vanished ----
# (--silence 4: 16 heartbeats missed; with 1 s a loaded machine's pause
# between two heartbeats made the worker drop the stages of a live run)
"$SLUICE" worker --listen "ipc://$T/w2" --silence 4 2>w2.err &
w2=$!
pids+=($w2)
wait_for grep -qs listening w2.err && ok || bad "standing worker did not start"
config standing.yaml "ipc://$T/c" w2 "ipc://$T/w2" false -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 w2)" "$(tail_on w2)"
long_run standing.yaml
wait_for grep -qs "stage(s) ready" w2.err && ok || bad "standing worker got no stages"
config standing2.yaml "ipc://$T/c2" w2 "ipc://$T/w2" false -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 w2)" "$(tail_on w2)"
"$SLUICE" run -c standing2.yaml -p hi -n 2 >/dev/null 2>run.err && bad "second coordinator: run succeeded"
has run.err "node 'w2' \(ipc://$T/w2\): busy" "busy worker"
kill -9 "$coord"
wait_bounded 60 "the killed coordinator" "$coord"
WAIT_TRIES=600 wait_for grep -qs "fell silent" w2.err && ok || bad "standing worker kept the stages of a dead coordinator for 30 s"
"$SLUICE" run -c standing2.yaml -p "${prompts[0]}" -n 24 --print-ids >/dev/null 2>run.err || bad "run on a freed worker failed: $(tail -1 run.err)"
if ids run.err | cmp -s - <("$SLUICE" run -m m.gguf -p "${prompts[0]}" -n 24 --print-ids 2>&1 >/dev/null | grep -a '^ids' | sed 's/^ids[^:]*://'); then ok; else bad "freed worker: ids differ"; fi
has w2.err "the coordinator shut the pipeline down" "standing worker after a clean end"
# stopped on its host mid-generation, it tells its coordinator at once
measure_ref
long_run standing2.yaml
wait_for n_ready_at_least w2.err 3 && ok || bad "standing worker got no third assignment"
generating long.err && ok || bad "stopped worker: the run never generated"
t0=$(date +%s%N)
kill -TERM $w2
wait_bounded 120 "the coordinator of a worker stopped by SIGTERM" "$coord"
status=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $status -ne 0 ] && ok || bad "coordinator exited 0 after its worker was stopped"
lim=$(bound 1500 0)
[ $ms -lt $lim ] && ok || bad "a stopped worker took $ms ms to be reported (bound $lim ms, a short run took $REF ms)"
has long.err "node 'w2' \(ipc://$T/w2\) stopped: the worker was stopped by a signal on its host" "worker stopped by SIGTERM"
wait_bounded 60 "worker w2 after SIGTERM" $w2 && ok || bad "worker stopped by SIGTERM exited non-zero"

# ---- a standing worker killed mid-generation and restarted at its address: with
# failure.retries it re-joins, the requests it held are replayed, and every
# prompt still gets exactly its one-process tokens, none twice (a repetition
# penalty on: the replay hands the sampler its window of recent tokens back) ----
"$SLUICE" worker --listen "ipc://$T/w4" --silence 4 2>w4.err &
w4=$!
pids+=($w4)
wait_for grep -qs listening w4.err && ok || bad "worker w4 did not start"
config retry.yaml "ipc://$T/c4" w4 "ipc://$T/w4" false -- \
    "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 w4)" "$(tail_on w4)"
echo "failure: {retries: 1, rejoin_timeout: 10}" >>retry.yaml
"$SLUICE" run -m m.gguf --prompts prompts.txt -n 400 --repeat-penalty 1.3 --repeat-last-n 32 --print-ids >/dev/null 2>retry-ref.err || bad "retry reference run"
"$SLUICE" run -c retry.yaml --prompts prompts.txt -n 400 --repeat-penalty 1.3 --repeat-last-n 32 --print-ids >/dev/null 2>retry.err &
coord=$!
pids+=("$coord")
wait_for grep -qs "stage(s) ready" w4.err && ok || bad "worker w4 got no stages"
sleep 0.05 # the 1200 tokens take about 0.35 s on an idle machine: kill the worker mid-run
kill -9 $w4
wait_bounded 60 "the killed worker w4" $w4
"$SLUICE" worker --listen "ipc://$T/w4" --silence 4 2>>w4.err &
w4=$!
pids+=($w4)
wait_bounded 300 "the run across a worker restart" "$coord" && ok || bad "run across a worker restart failed: $(tail -2 retry.err)"
has retry.err "stages? layers\[3,6\), head, sample on node 'w4' \(ipc://$T/w4\) (stopped answering|lost its stages)" "worker w4 killed"
has retry.err "on node 'w4' \(ipc://$T/w4\) re-joined" "worker w4 re-joins"
# answers from before the death are expected: not logged as errors (SLUICE_DEBUG shows them once)
if grep -aq "unknown batch" retry.err; then bad "stale answers after the restart logged as errors by the driver"; else ok; fi
if grep -aqE "batch [0-9]+ failed:" w4.err; then bad "stale batches logged as errors by the restarted worker"; else ok; fi
if ids retry.err | cmp -s - <(ids retry-ref.err); then ok; else bad "run across a worker restart: ids differ from the one-process run"; fi
[ "$(ids retry.err | wc -w)" -gt 0 ] && ok || bad "run across a worker restart printed no ids"
kill -TERM $w4

# ---- a model file missing on a worker (its own mount namespace hides it) ----
if [ "$(id -u)" -eq 0 ] && unshare --mount true 2>/dev/null; then
    mkdir hide
    cp m.gguf hide/m.gguf
    unshare --mount --propagation private sh -c \
        "mount -t tmpfs none '$T/hide' && exec '$SLUICE' worker --listen 'ipc://$T/w3'" 2>w3.err &
    pids+=($!)
    wait_for grep -qs listening w3.err && ok || bad "worker in its own mount namespace did not start"
    config hidden.yaml "ipc://$T/c" w3 "ipc://$T/w3" false -- \
        "${S[@]}" "$(lay 0 3 local)" "$(lay 3 6 w3)" "$(tail_on w3)"
    sed -i "s|^model: .*|model: $T/hide/m.gguf|" hidden.yaml
    "$SLUICE" run -c hidden.yaml -p hi -n 2 >/dev/null 2>run.err && bad "model missing on worker: run succeeded"
    has run.err "node 'w3' \(ipc://$T/w3\): model file $T/hide/m.gguf is missing on this worker \(host [^)]*\): No such file or directory" "model missing on worker"
else
    echo "SKIP: model missing on a worker (needs root and unshare --mount)"
fi

finish test_pipeline_procs
