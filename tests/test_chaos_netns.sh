#!/bin/bash
# Failure handling across three "hosts" (network namespaces A = 10.78.0.1,
# the coordinator; B = .2 and C = .3, `sluice worker`s) on one bridge, with
# the shipped configs/three-host.yaml (failure: retries 1):
#  - a worker killed mid-generation and restarted re-joins, and with one
#    retry every request still ends with exactly the solo run's tokens;
#  - with retries 0 the requests it held fail with an error naming its
#    node, the others finish once it is back;
#  - the chaos soak: 200 requests from 8 concurrent clients (tests/tools/
#    soak_client) while a worker is killed and restarted, a share of the
#    packets on the veth links is dropped (nftables numgen random) and a
#    link is throttled (tc tbf): every request ends once, with the solo
#    run's text or an error naming the failure; nothing is lost or
#    duplicated; no process leaks descriptors or heap objects, and the
#    workers exit cleanly (under ASan: without leaks).
# SOAK_REQUESTS scales the soak (default 200). Needs root, `ip netns`, nft
# and tc; prints SKIP otherwise.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
CLIENT=${SLUICE_BUILD:-$(dirname "$SLUICE")}/soak_client
N_SOAK=${SOAK_REQUESTS:-200}
. "$(dirname "$0")/lib/check.sh"
. "$(dirname "$0")/lib/netns.sh"
ns_need test_chaos_netns nft tc
[ -x "$CLIENT" ] || { echo "FAIL: $CLIENT is missing (build the soak_client tool)"; exit 1; }
NS=(slcA$$ slcB$$ slcC$$)
HAS_SHOW=8
scratch slc
# field N of the soak's summary line: "soak L: requests R completed C (identical I, different D) errors E lost L duplicated U ..."
summary() { grep -a "^soak $2: requests" "$1" | head -1; }
count() { summary "$1" "$2" | sed -E "s/.*[ (]$3 ([0-9]+).*/\1/"; }

# ---- three hosts on a switch ----
ns_switch slcS$$ "${NS[@]}"
inA() { ip netns exec "${NS[0]}" "$@"; }
inB() { ip netns exec "${NS[1]}" "$@"; }
inC() { ip netns exec "${NS[2]}" "$@"; }

hosts_setup three-host.yaml local hostb hostc
sed 's/retries: 1/retries: 0/' configs/three-host.yaml >configs/no-retry.yaml
cat >prompts.txt <<'EOF'
This program is free software; you can
Licensed under the Apache License, Version 2.0 (the
THIS SOFTWARE IS PROVIDED BY THE REGENTS AND CONTRIBUTORS
the quick brown fox
hello world
Permission is hereby granted, free of charge, to any person
Redistribution and use in source and binary forms
once upon a time
EOF

worker_b=
worker_c=
start_b() {
    # not through a shell function: $! must be the worker itself
    ip netns exec "${NS[1]}" "$SLUICE" worker --listen tcp://10.78.0.2:7200 --key keys/hostb.key --allow keys/local.pub \
        --silence 4 2>>workerb.err &
    worker_b=$!
    pids+=("$worker_b")
    wait_for grep -qs "listening" workerb.err || bad "worker in B did not start"
}
start_c() {
    ip netns exec "${NS[2]}" "$SLUICE" worker --listen tcp://10.78.0.3:7200 --key keys/hostc.key --allow keys/local.pub \
        --silence 4 2>>workerc.err &
    worker_c=$!
    pids+=("$worker_c")
    wait_for grep -qs "listening" workerc.err || bad "worker in C did not start"
}
# kill -9 the worker in B and start a new one at its address
restart_b() {
    kill -9 "$worker_b" 2>/dev/null
    wait_bounded 30 "worker B after kill -9" "$worker_b"
    : >workerb.err
    start_b
}
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
start_b
start_c

# a soak run in the background: soak LABEL CONFIG REQUESTS TOKENS
soak() {
    rm -f ready
    inA env SLUICE="$SLUICE" "$CLIENT" -c "$2" -f prompts.txt -r "$3" -j 8 -n "$4" --label "$1" \
        --ready ready --deadline 120 >"$1.out" 2>"$1.err" &
    soak_pid=$!
    pids+=("$soak_pid")
    # (its solo reference runs come first: up to 60 s on a loaded machine)
    WAIT_TRIES=1200 wait_for test -e ready || bad "$1: the pipeline did not open: $(tail -2 "$1.err")"
}
# wait_soak LABEL: the soak's status, its wait bounded by the client's own
# --deadline (120 s of requests) plus a wide margin for its close on a
# loaded machine
wait_soak() { wait_bounded 300 "the $1 soak" "$soak_pid"; }

# ---- a worker killed mid-generation, with one retry: nothing fails (run
# after the clean soak, below) ----
# CHAOS_RETRY_RUNS=N runs only this scenario, N times (to show the replay race
# gone: on a loaded machine, or with a test build's SLUICE_TEST_DRIVER_NAP_MS)
retry_scenario() {
    # 320 tokens a request and the kill 0.3 s in: with the worker pool the
    # whole run of 160-token requests could end within the second the
    # kill used to wait, and then nothing died mid-generation
    soak retry configs/three-host.yaml 16 320
    wait_for grep -qs "ready in" workerb.err
    sleep 0.3
    # C held still for a moment first: batches past B pile up there, so
    # their answers reach the driver after B died and the driver sends new
    # batches that wait at A for B's address. The restarted B gets them
    # (stale: for sequences it has no cache of), as on a loaded machine.
    kill -STOP "$worker_c"
    sleep 0.3
    kill -9 "$worker_b" 2>/dev/null
    wait_bounded 30 "worker B after kill -9" "$worker_b"
    kill -CONT "$worker_c"
    : >workerb.err
    start_b
    wait_soak retry && ok || bad "retry run: $(tail -3 retry.err)"
    cat retry.out
    [ "$(count retry.out retry completed)" = 16 ] && ok || bad "retry: $(summary retry.out retry)"
    [ "$(count retry.out retry identical)" = 16 ] && ok || bad "retry: replayed texts differ from the solo runs"
    has retry.err "node 'hostb' \(tcp://10.78.0.2:7200\) (stopped answering|lost its stages)" "retry: the death is reported"
    has retry.err "layers\[2,4\) on node 'hostb' \(tcp://10.78.0.2:7200\) re-joined" "retry: the restarted worker re-joins"
    # the restarted worker fails no batch visibly (the stale ones from before
    # its restart are a debug-level line)
    if grep -aE "batch [0-9]+ failed:" workerb.err; then bad "retry: the restarted worker logged failed batches"; else ok; fi
    [ -n "${SLUICE_DEBUG:-}" ] && grep -a -v "^soak retry: \(ok\|done\)" retry.err workerb.err workerc.err
    true
}
if [ -n "${CHAOS_RETRY_RUNS:-}" ]; then
    for run in $(seq "$CHAOS_RETRY_RUNS"); do
        echo "== retry run $run of $CHAOS_RETRY_RUNS"
        retry_scenario
    done
    for w in "$worker_b" "$worker_c"; do kill -TERM "$w"; wait_bounded 60 "worker $w after SIGTERM" "$w"; done
    finish test_chaos_netns
    exit
fi

# ---- a clean run: the baseline, and the workers' descriptors once warm ----
soak clean configs/three-host.yaml "$N_SOAK" 24
wait_soak clean && ok || bad "clean soak: $(tail -3 clean.err)"
cat clean.out
[ "$(count clean.out clean completed)" = "$N_SOAK" ] && ok || bad "clean soak: not every request completed"
[ "$(count clean.out clean identical)" = "$N_SOAK" ] && ok || bad "clean soak: not every text is the solo run's"
sleep 0.5
fds_c0=$(fds "$worker_c")

retry_scenario

# ---- a partition of B for 3 s, with one retry: B re-joins, nothing fails ----
# The coordinator calls a node silent after 2 s (peer_timeout_s), so it
# sees the partition; B, at --silence 4, keeps its stages through 3 s of
# it (had it dropped them, an idle B is re-joined the same way) and takes
# them afresh when the coordinator re-joins it. The link stays down until
# the coordinator has said so (a loaded machine may take past the 3 s),
# 20 s more at most.
soak partition configs/three-host.yaml 16 320
wait_for grep -qs "ready in" workerb.err
sleep 0.3 # mid-generation (see the retry scenario)
ip -n "${NS[1]}" link set eth0 down
sleep 3
WAIT_TRIES=400 wait_for grep -qs "node 'hostb' .* stopped answering" partition.err
ip -n "${NS[1]}" link set eth0 up
wait_soak partition && ok || bad "partition run: $(tail -3 partition.err)"
cat partition.out
[ "$(count partition.out partition identical)" = 16 ] && ok || bad "partition: $(summary partition.out partition)"
has partition.err "node 'hostb' \(tcp://10.78.0.2:7200\) stopped answering" "partition: the silence is reported"
has partition.err "node 'hostb' \(tcp://10.78.0.2:7200\) re-joined" "partition: B re-joins once the link is back"

# ---- the same without retries: the requests it held fail naming it ----
soak noretry configs/no-retry.yaml 16 320
wait_for grep -qs "ready in" workerb.err
sleep 0.3
restart_b
wait_soak noretry && ok || bad "no-retry run: $(tail -3 noretry.err)"
cat noretry.out
errors=$(count noretry.out noretry errors)
completed=$(count noretry.out noretry completed)
[ "${errors:-0}" -ge 1 ] && ok || bad "no retry: no request failed when its worker was killed"
[ $((${errors:-0} + ${completed:-0})) = 16 ] && ok || bad "no retry: $(summary noretry.out noretry)"
[ "$(count noretry.out noretry identical)" = "${completed:-x}" ] && ok || bad "no retry: completed texts differ"
has noretry.err "first .* error: stage layers\[2,4\) on node 'hostb' \(tcp://10.78.0.2:7200\)" "no retry: errors name the stage and node"

# ---- the chaos soak ----
fds_b0=$(fds "$worker_b")
soak chaos configs/three-host.yaml "$N_SOAK" 32
(
    # packet loss on B's and C's links, both ways; C's link throttled
    for ns in "${NS[1]}" "${NS[2]}"; do
        ip netns exec "$ns" nft -f - <<'EOF'
table inet chaos {
    chain in { type filter hook input priority 0; numgen random mod 100 < 3 drop; }
    chain out { type filter hook output priority 0; numgen random mod 100 < 3 drop; }
}
EOF
    done
    inC tc qdisc add dev eth0 root tbf rate 8mbit burst 16kb latency 100ms
    echo "faults: 3% loss on B and C, C throttled to 8 Mbit/s" >>faults.log
) &
fault_pid=$!
wait_bounded 60 "the fault set-up (nft, tc)" "$fault_pid"
# worker B killed and restarted 1 s into the soak, then every 2.5 s while it
# runs (3 times at most)
kills=0
while [ $kills -lt 3 ]; do
    [ $kills -eq 0 ] && sleep 1 || sleep 2.5
    kill -0 "$soak_pid" 2>/dev/null || break
    restart_b
    kills=$((kills + 1))
    echo "faults: worker B killed and restarted at $(date +%T.%N)" >>faults.log
done
wait_soak chaos && ok || bad "chaos soak: $(grep -a -E 'LOST|DUPLICATED|DIFFERS|without naming|leaked|more than' chaos.err | head -5)"
cat faults.log chaos.out
grep -a "first '" chaos.err
# the counts that must hold (soak_client's exit status checks them too)
[ "$(count chaos.out chaos lost)" = 0 ] && ok || bad "chaos: requests lost"
[ "$(count chaos.out chaos duplicated)" = 0 ] && ok || bad "chaos: requests duplicated"
[ "$(count chaos.out chaos different)" = 0 ] && ok || bad "chaos: completed texts differ from the solo runs"
[ "$(count chaos.out chaos completed)" -ge 1 ] && ok || bad "chaos: nothing completed"
[ $kills -ge 1 ] && ok || bad "chaos: the soak ended before a worker was killed"
[ "$(grep -ac 're-joined' chaos.err)" -ge 1 ] && ok || bad "chaos: no worker re-joined"
for ns in "${NS[1]}" "${NS[2]}"; do ip netns exec "$ns" nft delete table inet chaos; done
inC tc qdisc del dev eth0 root

# ---- the workers afterwards: they serve, hold no more descriptors, exit cleanly ----
soak after configs/three-host.yaml 16 24
wait_soak after && ok || bad "run after the chaos: $(tail -3 after.err)"
[ "$(count after.out after identical)" = 16 ] && ok || bad "after the chaos: $(summary after.out after)"
sleep 0.5
fds_c1=$(fds "$worker_c")
fds_b1=$(fds "$worker_b")
echo "worker C descriptors: $fds_c0 after the clean run, $fds_c1 after the chaos; worker B: $fds_b0 -> $fds_b1"
[ "$fds_c1" -le "$fds_c0" ] && ok || bad "worker C holds $fds_c1 descriptors, $fds_c0 before the chaos"
[ "$fds_b1" -le "$fds_b0" ] && ok || bad "worker B holds $fds_b1 descriptors, $fds_b0 before the chaos"
for w in "$worker_b" "$worker_c"; do
    kill -TERM "$w"
    wait_bounded 60 "worker $w after SIGTERM" "$w"
    st=$?
    [ $st -eq 0 ] && ok || bad "worker $w exited with status $st (a leak under ASan?)"
done
grep -a -i "leak" workerb.err workerc.err && bad "leaks reported by a worker" || ok

finish test_chaos_netns
