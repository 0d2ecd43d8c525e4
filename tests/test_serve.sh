#!/bin/bash
# `sluice serve` with curl: every endpoint and error code, the API key,
# greedy chat text equal to `sluice run --chat`, stop strings, 429 past the
# queue, a client that disconnects cancelling at once, and SIGTERM ending
# in-flight requests with an answer and leaving no process behind.
set -u
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/lib/ports.sh"
M="$SRC/models/tiny-gemma3.gguf"
KEY=sk-test-0123456789abcdef
printf '%s\n' "$KEY" >"$T/key"
AUTH="Authorization: Bearer $KEY"
start_server main -m "$M" --api-key-file "$T/key" --slots 4
MAIN=$URL
post() { curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" -H 'Content-Type: application/json' "$MAIN$1" -d "$2"; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open('$T/body')); print($1)"; }

# --- health, models, metrics, page ---
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$MAIN/health")" 200 "/health without a key"
has "$T/body" '"status":"ok"' "/health body"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" "$MAIN/v1/models")" 200 "/v1/models"
eq "$(json 'd["data"][0]["id"]')" tiny-gemma3 "model id"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" "$MAIN/")" 200 "the chat page"
has "$T/body" '<html' "the chat page is HTML"

# --- the API key: every endpoint but /health, constant answer shape ---
for ep in /v1/models /metrics; do
    eq "$(curl -s -o "$T/body" -w '%{http_code}' "$MAIN$ep")" 401 "$ep without a key"
done
# the static page opens without one (a browser cannot send the header); it
# asks for the key, which its API calls then carry
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$MAIN/")" 200 "the page without a key"
has "$T/body" 'placeholder="API key"' "the page asks for the key"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H 'Authorization: Bearer sk-wrong' "$MAIN/v1/models")" 401 "wrong key"
has "$T/body" '"code":"invalid_api_key"' "401 body"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer ${KEY}x" "$MAIN/v1/models")" 401 "key plus a byte"
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$MAIN/v1/chat/completions" -d '{}')" 401 "POST without a key"

# --- greedy chat equals sluice run --chat ---
P="Licensed under the Apache License, Version 2.0 (the"
want=$("$SLUICE" run -m "$M" --chat -p "$P" -n 24 2>/dev/null)
eq "$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"$P\"}],\"max_tokens\":24,\"temperature\":0}")" 200 "chat"
eq "$(json 'd["choices"][0]["message"]["content"]')" "$want" "chat text = run --chat"
eq "$(json 'd["object"], d["choices"][0]["message"]["role"]')" "chat.completion assistant" "chat object"
eq "$(json 'd["usage"]["completion_tokens"] <= 24 and d["usage"]["prompt_tokens"] > 10')" True "chat usage"
want=$("$SLUICE" run -m "$M" -p "$P" -n 16 2>/dev/null)
eq "$(post /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":16}")" 200 "completion"
eq "$(json 'd["choices"][0]["text"]')" "$want" "completion text = run"
eq "$(json 'd["choices"][0]["finish_reason"], d["usage"]["completion_tokens"]')" "length 16" "finish length"

# --- streaming: chunks then [DONE]; usage chunk on request ---
curl -sN -H "$AUTH" "$MAIN/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":16,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$T/sse"
# chunks leave as tokens are sampled (two may share a chunk when they come
# faster than the client reads): more than one text chunk, then the finish
# chunk, the usage chunk and [DONE]
n=$(grep -c '^data: ' "$T/sse")
[ "$n" -gt 5 ] && [ "$n" -le 19 ] && ok || bad "$n events for 16 tokens"
has "$T/sse" '"finish_reason":"length"' "the finish chunk"
eq "$(tail -2 "$T/sse" | head -1)" "data: [DONE]" "stream ends with [DONE]"
got=$(/usr/bin/python3 -c "
import json
t=''
for l in open('$T/sse'):
    if l.startswith('data: {'):
        d=json.loads(l[6:])
        if d['choices']: t+=d['choices'][0]['text']
        else: print('usage', d['usage']['completion_tokens'])
print(t)")
eq "$got" "usage 16
$want" "streamed text and usage"

# --- stop strings cut the text, finish_reason stop ---
eq "$(post /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":16,\"stop\":[\"License\"]}")" 200 "stop"
eq "$(json 'd["choices"][0]["text"], d["choices"][0]["finish_reason"]')" "${want%%License*} stop" "text cut at the stop string"

# --- seed: the same seed gives the same sampled text ---
b="{\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":1.5,\"seed\":7}"
post /v1/completions "$b" >/dev/null; a1=$(json 'd["choices"][0]["text"]')
post /v1/completions "$b" >/dev/null; a2=$(json 'd["choices"][0]["text"]')
eq "$a1" "$a2" "same seed, same text"

# --- the output is UTF-8 JSON even when sampled byte tokens are not UTF-8 ---
# (near-uniform sampling over a vocabulary with 256 byte-fallback pieces)
hot="{\"prompt\":\"$P\",\"max_tokens\":40,\"temperature\":100,\"seed\":3"
post /v1/completions "$hot}" >/dev/null
/usr/bin/python3 -c "import json; json.loads(open('$T/body','rb').read().decode('utf-8'))" && ok ||
    bad "a whole answer is not UTF-8 JSON"
curl -sN -H "$AUTH" "$MAIN/v1/completions" -d "$hot,\"stream\":true}" >"$T/sse"
/usr/bin/python3 -c "
import json
for l in open('$T/sse','rb').read().decode('utf-8').splitlines():
    if l.startswith('data: {'): json.loads(l[6:])" && ok || bad "a stream is not UTF-8 JSON"

# --- bad input: 400 naming the field, and the server keeps serving ---
bad_req() { # endpoint body param code-or-empty
    eq "$(post "$1" "$2")" 400 "400 for $2"
    eq "$(json 'd["error"]["param"], d["error"]["type"]')" "$3 invalid_request_error" "param of $2"
}
bad_req /v1/completions '{"prompt": "x"' None
bad_req /v1/completions '[1,2]' None
bad_req /v1/completions '{"prompt":"x"} {}' None
bad_req /v1/completions '{"prompt":5}' prompt
bad_req /v1/completions '{"prompt":""}' prompt
bad_req /v1/completions '{"prompt":"x","max_tokens":"9"}' max_tokens
bad_req /v1/completions '{"prompt":"x","max_tokens":0}' max_tokens
bad_req /v1/completions '{"prompt":"x","max_tokens":5000}' max_tokens
bad_req /v1/chat/completions '{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":4096}' max_completion_tokens
bad_req /v1/completions '{"prompt":"x","temperature":"hot"}' temperature
bad_req /v1/completions '{"prompt":"x","top_p":0}' top_p
bad_req /v1/completions '{"prompt":"x","top_k":1.5}' top_k
bad_req /v1/completions '{"prompt":"x","seed":"s"}' seed
bad_req /v1/completions '{"prompt":"x","stop":[1]}' stop
bad_req /v1/completions '{"prompt":"x","stop":["a","b","c","d","e"]}' stop
bad_req /v1/completions '{"prompt":"x","stream":"yes"}' stream
bad_req /v1/completions '{"prompt":"x","n":2}' n
bad_req /v1/completions '{"prompt":"x","frequency_penalty":0.5}' frequency_penalty
bad_req /v1/chat/completions '{"messages":[]}' messages
bad_req /v1/chat/completions '{"messages":"hi"}' messages
bad_req /v1/chat/completions '{"messages":[{"role":"robot","content":"x"}]}' 'messages[0].role'
bad_req /v1/chat/completions '{"messages":[{"role":"user","content":7}]}' 'messages[0].content'
bad_req /v1/chat/completions '{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}' 'messages[1].role'
bad_req /v1/chat/completions '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}' messages
# a prompt longer than the context (4096 tokens): refused when tokenized
long=$(/usr/bin/python3 -c "print('word ' * 5000)")
bad_req /v1/completions "{\"prompt\":\"$long\"}" prompt
eq "$(json 'd["error"]["code"]')" context_length_exceeded "prompt too long: code"
head -c 1100000 /dev/zero | tr '\0' 'a' >"$T/big"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" "$MAIN/v1/completions" --data-binary @"$T/big")" 400 "a body over 1 MiB"
eq "$(json 'd["error"]["code"]')" request_too_large "1 MiB: code"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" "$MAIN/v2/nothing")" 404 "unknown path"
eq "$(curl -s -o "$T/body" -w '%{http_code}' -H "$AUTH" "$MAIN/v1/completions")" 405 "GET of a POST endpoint"
eq "$(post /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":4}")" 200 "still serving after bad input"

# --- metrics: the pipeline's families and the server's ---
curl -s -H "$AUTH" "$MAIN/metrics" >"$T/metrics"
has "$T/metrics" '^sluice_stage_tokens_total\{stage="sample",index="3"\} [1-9][0-9]*$' "stage metrics"
has "$T/metrics" '^sluice_http_requests_total\{endpoint="/v1/completions",status="400"\} [1-9][0-9]*$' "400s counted"
has "$T/metrics" '^sluice_http_requests_total\{endpoint="/v1/chat/completions",status="2xx"\} [1-9]' "200s counted"
has "$T/metrics" '^sluice_server_queue_length 0$' "queue length"
has "$T/metrics" '^sluice_server_time_to_first_token_seconds_count [1-9]' "TTFT histogram"
has "$T/metrics" '^sluice_server_decode_tokens_per_second_bucket\{le="\+Inf"\} [1-9]' "tok/s histogram"
badlines=$(grep -avE '^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? ([0-9.e+-]+|\+Inf))$' "$T/metrics" | head -3)
[ -z "$badlines" ] && ok || bad "not Prometheus text: $badlines"

# --- 429 past max_requests in flight plus the queue; a disconnect cancels ---
"$SLUICE" synth --arch gemma3 --size test --type q8_0 --seed 3 -o "$T/r.gguf" 2>/dev/null || bad "synth"
cat >"$T/busy.yaml" <<YAML
model: $T/r.gguf
stages: [{kind: embed}, {kind: layers, layers: [0, 6]}, {kind: head}, {kind: sample}]
limits: {max_sequences: 2, context: 20480, max_requests: 1}
YAML
KEY= start_server busy -c "$T/busy.yaml" --queue 1
BUSY=$URL
# greedy on random weights does not stop early: a request ends at its
# max_tokens (20000: many seconds) unless it is cancelled. (The KV cache is
# one mapping: the context costs only what is written.)
long_body='{"prompt":"hello","max_tokens":20000,"stream":true}'
curl -sN "$BUSY/v1/completions" -d "$long_body" >"$T/s1" & c1=$!
wait_metric "$BUSY" sluice_server_requests_running 1 || bad "the first request did not start"
curl -sN "$BUSY/v1/completions" -d "$long_body" >"$T/s2" & c2=$!
wait_metric "$BUSY" sluice_server_queue_length 1 || bad "the second request did not queue"
eq "$(curl -s -D "$T/hdr" -o "$T/body" -w '%{http_code}' "$BUSY/v1/completions" -d '{"prompt":"x"}')" 429 "past the queue"
has "$T/hdr" '^Retry-After: 1' "429 has Retry-After"
has "$T/body" '"code":"rate_limit_exceeded"' "429 body"
# the first client leaves: its request ends at once and the queued one runs
kill $c1; wait_bounded 30 "the first stream's curl after kill" $c1
wait_metric "$BUSY" sluice_server_queue_length 0 || bad "the queued request did not start after a disconnect"
eq "$(metric "$BUSY" sluice_server_requests_running)" 1 "one running after the disconnect"
kill $c2; wait_bounded 30 "the second stream's curl after kill" $c2
wait_metric "$BUSY" sluice_client_requests_in_flight 0 || bad "a streamed request outlived its client"
t1=$(metric "$BUSY" sluice_server_tokens_total)
sleep 0.3
eq "$(metric "$BUSY" sluice_server_tokens_total)" "$t1" "no tokens after every client left"
# a whole (not streamed) answer whose client gives up is cancelled too
curl -s -m 1 "$BUSY/v1/completions" -d '{"prompt":"hello","max_tokens":20000}' >/dev/null
wait_metric "$BUSY" sluice_client_requests_in_flight 0 || bad "a whole request outlived its client"
# A cancel that is ignored lets its request run on to max_tokens: then
# either it is still in flight after wait_metric's 30 s (failed above) or it
# ended there, and the two streams made 20000 tokens or more. Cancelled
# ones stop where their clients left, each short of 20000 (however slow the
# machine, the clients leave after a few HTTP calls, not thousands of tokens).
[ "$t1" -lt 20000 ] && ok || bad "the cancelled streams ran to $t1 tokens (one reached max_tokens 20000)"

# --- SIGTERM: in-flight requests get an answer, every process ends ---
curl -sN "$BUSY/v1/completions" -d "$long_body" >"$T/s3" & c3=$!
wait_metric "$BUSY" sluice_server_requests_running 1 || bad "no request before SIGTERM"
kill -TERM "$PID"
for _ in $(seq 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$PID" 2>/dev/null && bad "the server outlived SIGTERM by 10 s" || ok
wait_bounded 30 "the in-flight stream's curl after the server's SIGTERM" $c3
has "$T/s3" '"code":"unavailable"' "the in-flight stream was told"
eq "$(tail -2 "$T/s3" | head -1)" "data: [DONE]" "and closed properly"
has "$T/busy.err" 'SIGTERM: shutting down' "shutdown message"

# --- a non-loopback address without a key warns ---
"$SLUICE" serve -m "$M" --host 0.0.0.0 --port 0 >"$T/open.out" 2>"$T/open.err" & op=$!
servers+=("$op")
for _ in $(seq 200); do grep -q ready "$T/open.out" && break; sleep 0.05; done
kill -TERM $op; wait_bounded 60 "the 0.0.0.0 server after SIGTERM" $op
has "$T/open.err" 'warning: listening on 0\.0\.0\.0.*no API key' "warning without a key"
"$SLUICE" serve -m "$M" --api-key-file "$T/nokey" >"$T/e.out" 2>&1
eq "$?" 1 "missing key file fails"
"$SLUICE" serve -m "$M" --chat-format llama9 >"$T/e.out" 2>&1
eq "$?" 2 "unknown chat format is a usage error"
"$SLUICE" serve -c "$T/busy.yaml" --slots 2 >"$T/e.out" 2>&1
eq "$?" 2 "--slots with a config is a usage error"
has "$T/e.out" 'a config sets limits\.max_sequences' "--slots with a config: the message says where slots are set"

# --- the turn format is the pipeline's, as `sluice run --chat` resolves it ---
# no template, and the vocabulary holds Gemma 4's markers, not Gemma's: gemma4
EDIT="/usr/bin/python3 $SRC/tests/lib/gguf_edit.py"
$EDIT "$M" "$T/g4.gguf" --rename-token '<start_of_turn>' '<|turn>' --rename-token '<end_of_turn>' '<turn|>' ||
    bad "gguf_edit"
KEY= start_server g4 -m "$T/g4.gguf"
fwant=$("$SLUICE" run -m "$T/g4.gguf" --chat -p "$P" -n 12 2>/dev/null)
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/chat/completions" \
      -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$P\"}],\"max_tokens\":12}")" 200 "chat, gemma4 markers"
eq "$(json 'd["choices"][0]["message"]["content"]')" "$fwant" "chat text = run --chat (format from the vocabulary)"
g4_text=$'<|turn>user\n'"$P"$'<turn|>\n<|turn>model\n'
eq "$(json 'd["usage"]["prompt_tokens"]')" "$("$SLUICE" tokenize -m "$T/g4.gguf" -p "$g4_text" --ids 2>/dev/null | wc -w)" \
    "the prompt in gemma4's format"
kill -TERM "$PID"; wait_bounded 60 "the g4 server after SIGTERM" "$PID"
# a template sluice does not know: chat refused naming its first line,
# completions still served; --chat-format forces one
$EDIT "$M" "$T/chatml.gguf" --set-str tokenizer.chat_template $'{% for m in messages %}<|im_start|>\n{% endfor %}' ||
    bad "gguf_edit"
KEY= start_server chatml -m "$T/chatml.gguf"
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"a"}]}')" \
    400 "unknown template"
eq "$(json 'd["error"]["code"], d["error"]["param"]')" "unsupported_chat_template messages" "unknown template: code"
has "$T/body" "first line: '\{% for m in messages %\}<\|im_start\|>" "unknown template: its first line"
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/completions" -d '{"prompt":"a","max_tokens":2}')" 200 \
    "completions with an unknown template"
kill -TERM "$PID"; wait_bounded 60 "the chatml server after SIGTERM" "$PID"
KEY= start_server forced -m "$T/chatml.gguf" --chat-format gemma
fwant=$("$SLUICE" run -m "$M" --chat -p "$P" -n 12 2>/dev/null)
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$URL/v1/chat/completions" \
      -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$P\"}],\"max_tokens\":12}")" 200 "--chat-format gemma"
eq "$(json 'd["choices"][0]["message"]["content"]')" "$fwant" "forced format: text = run --chat"
kill -TERM "$PID"; wait_bounded 60 "the forced server after SIGTERM" "$PID"

# --- /health: 503 once a worker of a split pipeline is down ---
sed -e "s|^model: .*|model: $M|" -e "s|/tmp/sluice-two-process|$T/ipc|g" "$SRC/configs/two-process.yaml" >"$T/two.yaml"
KEY= start_server two -c "$T/two.yaml"
eq "$(curl -s -o "$T/body" -w '%{http_code}' "$URL/health")" 200 "split pipeline healthy"
# the stages on the worker have live numbers in /metrics too (its
# coordinator asks it every half second): the page draws them
curl -s "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":8}" >/dev/null
remote=
# (a snapshot up to half a second old: wait until it covers the request)
for _ in $(seq 60); do
    remote=$(metric "$URL" 'sluice_stage_tokens_total{stage="sample",index="4"}')
    [ -n "$remote" ] && [ "$remote" -ge 8 ] && break
    sleep 0.05
done
[ -n "$remote" ] && [ "$remote" -ge 8 ] && ok || bad "the worker's sample stage in /metrics: '$remote'"
curl -s "$URL/metrics" >"$T/metrics2"
has "$T/metrics2" '^sluice_stage_busy_seconds_total\{stage="layers\[3,6\)",index="2"\} ' "the worker's layers stage"
has "$T/metrics2" '^sluice_stage_queue_depth\{stage="head",index="3"\} ' "the worker's head stage"
worker=$(pgrep -P "$PID" | head -1)
[ -n "$worker" ] && kill -9 "$worker"
for _ in $(seq 100); do
    [ "$(curl -s -o "$T/body" -w '%{http_code}' "$URL/health")" == 503 ] && break
    sleep 0.05
done
has "$T/body" '"message":"a worker is down"' "/health with a dead worker"
kill -TERM "$PID"

# --- speculative decoding (--draft): the same greedy text ---
KEY= start_server spec -m "$M" --draft "$SRC/models/tiny-gemma3-draft.gguf"
curl -s "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":16}" >"$T/body"
eq "$(json 'd["choices"][0]["text"]')" "$want" "with --draft: text = run"
kill -TERM "$PID"

# --- /health: 503 while loading; a node nobody serves fails the start ---
cat >"$T/away.yaml" <<YAML
model: $M
insecure: true
nodes: [{name: local, address: "ipc://$T/local"}, {name: away, address: "ipc://$T/away"}]
stages: [{kind: embed, node: local}, {kind: layers, node: local, layers: [0, 3]},
         {kind: layers, node: away, layers: [3, 6]}, {kind: head, node: away}, {kind: sample, node: away}]
YAML
# a port reserved for this script (tests/lib/ports.h): /health is asked
# while the pipeline starts, before the server could print its address
reserve_ports 1
servers+=("$PORT_HOLDER")
port=$PORT
"$SLUICE" serve -c "$T/away.yaml" --port $port >"$T/away.out" 2>"$T/away.err" & away=$!
servers+=("$away")
code=
for _ in $(seq 600); do
    code=$(curl -s -o "$T/body" -w '%{http_code}' "http://127.0.0.1:$port/health") && break
    kill -0 $away 2>/dev/null || break
    sleep 0.05
done
eq "$code" 503 "/health while the pipeline starts"
has "$T/body" '"message":"loading the model"' "/health says it loads"
wait_bounded 120 "the server of a node nobody serves" $away
eq "$?" 1 "a node nobody serves fails the start"
has "$T/away.err" "node 'away' .* is unreachable" "the start's error names the node"

kill -TERM "${servers[0]}"
finish
