#!/bin/bash
# `sluice run --metrics-port` end to end: while a run goes on, GET /metrics
# (over bash's /dev/tcp, no curl) answers Prometheus text with every stage
# of the one-process pipeline and the client's request counters, and the
# counters move between two fetches; a second run cannot take the same port.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
. "$(dirname "$0")/lib/ports.sh"
scratch slmet
HAS_SHOW=8
run=
at_exit '[ -n "$run" ] && kill -9 "$run" 2>/dev/null'
fetch() { # port path -> the response, CRs dropped
    (exec 3<>/dev/tcp/127.0.0.1/"$1" && printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3 && tr -d '\r' <&3) 2>/dev/null
}
count() { sed -n "s/^sluice_stage_messages_total{stage=\"$2\",index=\"[0-9]*\"} \([0-9]*\)$/\1/p" "$1"; }

# random weights rarely sample the end of sequence, so each request fills
# its context (512 tokens): 48 of them make a run that goes on for seconds
"$SLUICE" synth --arch gemma3 --size test --type q8_0 --seed 3 -o "$T/m.gguf" 2>/dev/null || { echo "FAIL: synth"; exit 1; }
for i in $(seq 48); do echo "prompt $i"; done >"$T/prompts.txt"
# a port reserved for this script (tests/lib/ports.h): the run listens on
# it, no other test can take it
reserve_ports 1
pids+=("$PORT_HOLDER")
port=$PORT
"$SLUICE" run -m "$T/m.gguf" --prompts "$T/prompts.txt" -n 1000000 --temp 1 \
    --metrics-port 127.0.0.1:$port >/dev/null 2>"$T/run.err" &
run=$!
for _ in $(seq 600); do
    # wait for what the checks below need: every stage counted and all
    # 48 prompts submitted (the client submits them one by one, so a
    # fetch right after the start can see fewer)
    fetch $port /metrics >"$T/m1.txt" && grep -q '^sluice_stage_messages_total{stage="sample"' "$T/m1.txt" &&
        grep -q '^sluice_client_requests_total 48$' "$T/m1.txt" && break
    kill -0 $run 2>/dev/null || break
    sleep 0.05
done
kill -0 $run 2>/dev/null || port=
[ -n "$port" ] && ok || { bad "no run served metrics: $(tail -2 "$T/run.err")"; exit 1; }

has "$T/m1.txt" "^HTTP/1\.[01] 200" "HTTP status"
has "$T/m1.txt" "^Content-Type: text/plain; version=0\.0\.4" "content type"
sed '1,/^$/d' "$T/m1.txt" >"$T/b1.txt"
for s in embed 'layers\[0,6\)' head sample; do
    has "$T/b1.txt" "^sluice_stage_tokens_total\{stage=\"$s\",index=\"[0-3]\"\} [0-9]+$" "tokens of $s"
    has "$T/b1.txt" "^sluice_stage_step_seconds_count\{stage=\"$s\",index=\"[0-3]\"\} [0-9]+$" "step histogram of $s"
done
has "$T/b1.txt" "^sluice_client_requests_in_flight ([1-9]|[1-4][0-9])$" "requests in flight"
has "$T/b1.txt" "^sluice_client_requests_total 48$" "requests submitted"
has "$T/b1.txt" "^sluice_client_requests_refused_total 0$" "requests refused"
has "$T/b1.txt" "^sluice_client_foreign_total 0$" "answers of another run dropped"
badlines=$(grep -avE '^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? ([0-9.e+-]+|\+Inf))$' "$T/b1.txt" | head -3)
[ -z "$badlines" ] && ok || bad "not Prometheus text: $badlines"
# the counters move while the run goes on: fetch again until they have
# (up to 20 s: a loaded machine may take long between two steps)
a=$(count "$T/b1.txt" sample)
for _ in $(seq 200); do
    fetch $port /metrics | sed '1,/^$/d' >"$T/b2.txt"
    b=$(count "$T/b2.txt" sample)
    [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] && break
    sleep 0.1
done
[ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] && ok || bad "sample's messages did not move ($a, $b)"
"$SLUICE" run -m "$T/m.gguf" -p hi -n 2 --metrics-port 127.0.0.1:$port >/dev/null 2>"$T/busy.err" &&
    bad "a second run served on a port in use"
has "$T/busy.err" "cannot serve metrics on http://127\.0\.0\.1:$port" "port in use"
kill -0 "$run" 2>/dev/null && ok || bad "the run ended before the checks did: $(tail -1 "$T/run.err")"
kill "$run"
wait_bounded 60 "the metrics run after SIGTERM" "$run"
run=
finish test_metrics_http
