#!/bin/bash
# `sluice status` against a worker on another "host" (network namespaces A =
# 10.77.0.1, the coordinator, and B = 10.77.0.2, a CURVE `sluice worker`):
# idle, it says so; while configs/two-host.yaml runs, it lists the three
# stages it serves with counters that move between two asks; a key the
# worker does not allow gets no answer; the coordinator's --status-listen
# socket lists its own stages to its own key only; the worker's Prometheus port
# (--metrics-port) serves the same stages as Prometheus text, fetched with
# bash's /dev/tcp (no curl). Needs root and `ip netns`; prints SKIP otherwise.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$(dirname "$0")/lib/check.sh"
. "$(dirname "$0")/lib/netns.sh"
ns_need test_status_netns
NA=stA$$
NB=stB$$
HAS_SHOW=12
WAIT_TRIES=400
scratch sst
ns_pair "$NA" "$NB" stva$$ stvb$$
hosts_setup two-host.yaml local hostb stranger

W=tcp://10.77.0.2:7100
ip netns exec "$NB" "$SLUICE" worker --listen $W --key keys/hostb.key --allow keys/local.pub \
    --metrics-port 9100 2>>worker.err &
pids+=($!)
wait_for grep -qs listening worker.err && ok || bad "worker in B did not start"
status() { ip netns exec "$NA" "$SLUICE" status $W "$@"; }

# idle
status --key keys/local.key --server-key keys/hostb.pub >idle.txt 2>idle.err || bad "status of an idle worker failed: $(cat idle.err)"
has idle.txt "^worker $W \(host [^)]*\): idle, 0 stage\(s\)$" "idle worker"

# a tcp:// address without keys is a usage error; a stranger's key gets no answer
status >nokey.txt 2>nokey.err
[ $? -eq 2 ] && ok || bad "status without keys did not exit 2"
has nokey.err "needs --key FILE and --server-key KEY" "status without keys"
status --key keys/stranger.key --server-key keys/hostb.pub --timeout 1 >stranger.txt 2>stranger.err &&
    bad "a key the worker does not allow got an answer: $(cat stranger.txt)"
has stranger.err "no answer from $W within 1.0 s" "stranger"
[ -s stranger.txt ] && bad "a stranger was shown: $(cat stranger.txt)" || ok

# serving: a long run in A (many prompts, so it outlasts every ask below
# however fast decoding gets; it is killed at the end)
for i in $(seq 256); do echo "prompt $i of a long run"; done >long.txt
ip netns exec "$NA" "$SLUICE" run -c configs/two-host.yaml --prompts long.txt -n 100000 \
    --status-listen tcp://10.77.0.1:7300 >/dev/null 2>long.err &
coord=$!
pids+=("$coord")
wait_for grep -qs "stage(s) ready" worker.err && ok || bad "worker in B got no stages"
# tokens flow once the coordinator has loaded its own stages too (slow under sanitizers)
flowing() {
    status --key keys/local.key --server-key keys/hostb.pub >s1.txt 2>s1.err &&
        [ "$(awk '/^stage 2 /{getline; print $2}' s1.txt)" -gt 0 ] 2>/dev/null
}
wait_for flowing && ok || bad "no messages reached the worker's stages: $(cat s1.err)"
# asked again until the counters have moved (bounded), not once after a fixed pause
moved() {
    status --key keys/local.key --server-key keys/hostb.pub >s2.txt 2>s2.err &&
        [ "$(awk '/^stage 2 /{getline; print $2}' s2.txt)" -gt "$(awk '/^stage 2 /{getline; print $2}' s1.txt)" ] 2>/dev/null
}
wait_for moved || bad "second status failed or its counters did not move: $(cat s2.err)"
has s1.txt "^worker $W \(host [^)]*\): serving a coordinator, 3 stage\(s\)$" "serving worker"
has s1.txt "^stage 2 layers\[3,6\)$" "layers stage listed"
has s1.txt "^stage 3 head$" "head listed"
has s1.txt "^stage 4 sample$" "sample listed"
has s1.txt "^  messages [1-9][0-9]*  tokens [1-9][0-9]*  errors 0  refused 0  dropped 0  foreign 0$" "counters of a busy stage"
has s1.txt "step mean [0-9.]+ s  p50 <=[0-9.e-]+ s  p99 [<>=]+[0-9.e-]+ s$" "step times"
has s1.txt "^  queue depth [0-9]+ \(mean [0-9.]+, max " "queue depth"
m1=$(awk '/^stage 2 /{getline; print $2}' s1.txt)
m2=$(awk '/^stage 2 /{getline; print $2}' s2.txt)
[ -n "$m1" ] && [ -n "$m2" ] && [ "$m2" -gt "$m1" ] && ok || bad "layers[3,6) messages did not move between two asks ($m1, $m2)"

# the coordinator's status socket: its own stages and the worker's (as the
# worker last reported them), for its own key only
C=tcp://10.77.0.1:7300
ip netns exec "$NB" "$SLUICE" status $C --key keys/local.key --server-key keys/local.pub >c1.txt 2>c1.err ||
    bad "status of the coordinator failed: $(cat c1.err)"
has c1.txt "^coordinator \(sluice run, pid [0-9]+\): 2 stage\(s\) in this process, 3 on workers \(as last reported\)$" \
    "coordinator status"
has c1.txt "^stage 0 embed$" "coordinator's embed stage"
has c1.txt "^stage 1 layers\[0,3\)$" "coordinator's layers stage"
has c1.txt "^stage 2 layers\[3,6\)$" "the worker's layers stage in the coordinator's status"
has c1.txt "^stage 4 sample$" "the worker's sample stage in the coordinator's status"
has c1.txt "^  messages [1-9][0-9]*  tokens [1-9][0-9]*  errors 0  refused 0  dropped 0  foreign 0$" "coordinator's counters"
ip netns exec "$NB" "$SLUICE" status $C --key keys/hostb.key --server-key keys/local.pub --timeout 1 \
    >c2.txt 2>c2.err && bad "the coordinator answered a key other than its own"
has c2.err "no answer from $C within 1.0 s" "coordinator refuses other keys"

# Prometheus text over HTTP from the worker's --metrics-port, fetched with /dev/tcp
fetch() { # host port path -> response on stdout
    ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3 && printf 'GET $4 HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3"
}
fetch "$NB" 127.0.0.1 9100 /metrics >http.txt 2>http.err || bad "GET /metrics failed: $(cat http.err)"
tr -d '\r' <http.txt >http.lf
has http.lf "^HTTP/1\.[01] 200" "HTTP status"
has http.lf "^Content-Type: text/plain; version=0\.0\.4" "content type"
sed '1,/^$/d' http.lf >body.txt
for name in sluice_stage_messages_total sluice_stage_tokens_total sluice_stage_errors_total \
    sluice_stage_refused_total sluice_stage_dropped_total sluice_stage_queue_depth; do
    has body.txt "^$name\{stage=\"layers\[3,6\)\",index=\"2\"\} [0-9]+$" "$name"
done
has body.txt '^# TYPE sluice_stage_step_seconds histogram$' "histogram type"
has body.txt '^sluice_stage_step_seconds_bucket\{stage="sample",index="4",le="\+Inf"\} [1-9][0-9]*$' "histogram +Inf bucket"
# every line is a comment or a sample: name{labels} value
badlines=$(grep -avE '^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+|[a-z_]+\{.*\} \+Inf)$' body.txt | head -3)
[ -z "$badlines" ] && [ -s body.txt ] && ok || bad "not Prometheus text: $badlines"
fetch "$NB" 127.0.0.1 9100 /nothing >h404.txt 2>/dev/null
has h404.txt "^HTTP/1\.[01] 404" "unknown path"
# by default the port listens on 127.0.0.1 only: the other host cannot scrape it ...
fetch "$NA" 10.77.0.2 9100 /metrics >remote.txt 2>/dev/null
[ -s remote.txt ] && bad "the default metrics port answers another host: $(head -1 remote.txt)" || ok
# ... unless the worker names the address to serve on (an idle worker: families, no samples)
ip netns exec "$NB" "$SLUICE" worker --listen tcp://10.77.0.2:7200 --insecure --metrics-port 10.77.0.2:9200 \
    2>>worker2.err &
pids+=($!)
wait_for grep -qs listening worker2.err && ok || bad "second worker in B did not start"
fetch "$NA" 10.77.0.2 9200 /metrics | tr -d '\r' >remote2.txt 2>/dev/null
has remote2.txt "^HTTP/1\.[01] 200" "metrics from the other host"
has remote2.txt "^# TYPE sluice_stage_messages_total counter$" "families of an idle worker"
grep -aq '^sluice_stage_' remote2.txt && bad "an idle worker shows stage samples" || ok
ip netns exec "$NB" "$SLUICE" worker --listen tcp://10.77.0.2:7300 --insecure --metrics-port 10.77.0.2:9200 \
    2>worker3.err && bad "a second worker on a metrics port in use started"
has worker3.err "cannot serve metrics on http://10.77.0.2:9200" "metrics port in use"

kill "$coord" 2>/dev/null
wait_bounded 60 "the coordinator after SIGTERM" "$coord"
finish test_status_netns
