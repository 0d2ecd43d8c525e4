#!/bin/bash
# What a new user meets first (issue 19): version, convert's output checks,
# keygen's files, plan's keys and machine checks, --prompts as a batch mode,
# socket files left behind, signals and exit codes, run's timing lines,
# the metrics URL, tokenize.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
MODEL=$SRC/models/tiny-gemma3.gguf
. "$SRC/tests/lib/check.sh"
. "$SRC/tests/lib/ports.sh"
scratch sln

# ---- version: what was built and which kernels run ----
expect 0 "$SLUICE" --version
has "$T/out" "^sluice [0-9a-f]{7,}|^sluice unknown" "--version names the build"
has "$T/out" "^kernels: (scalar|avx2|avx512)" "--version names the kernel path"
expect 0 "$SLUICE" version
has "$T/out" "^kernels: " "version names the kernel path"
if (cd "$SRC" && git rev-parse --git-dir >/dev/null 2>&1); then
    built=$(sed -n 's/^sluice \([0-9a-f]*\).*/\1/p' "$T/out" | head -1)
    (cd "$SRC" && git cat-file -e "$built^{commit}" 2>/dev/null) && ok ||
        bad "version '$built' is no commit of this checkout"
fi
SLUICE_KERNEL=scalar "$SLUICE" version >"$T/out"
has "$T/out" "^kernels: scalar" "SLUICE_KERNEL lowers the reported path"

# ---- convert: output checked before the work; no silent overwrite ----
HF=$SRC/models/hf/tiny-gemma3
echo keep >"$T/existing.gguf"
expect 1 "$SLUICE" convert "$HF" -o "$T/existing.gguf" -q
has "$T/err" "existing.gguf: exists; give --force" "convert refuses to overwrite"
[ "$(cat "$T/existing.gguf")" = keep ] && ok || bad "convert replaced an existing file without --force"
expect 1 "$SLUICE" convert "$HF" -o "$T/no/such/dir/x.gguf" -q
has "$T/err" "cannot write there" "convert checks the output directory first"
expect 1 "$SLUICE" convert "$HF" -o "$T/existing.gguf/x.gguf" -q
has "$T/err" "is not a directory" "convert: a file as the output's directory"
expect 0 "$SLUICE" convert "$HF" -o "$T/existing.gguf" -q --force
expect 0 "$SLUICE" inspect --no-tensors "$T/existing.gguf"
has "$T/out" "gemma3" "convert --force replaced the file with the model"

# ---- keygen: creates the directory, says what it wrote, kinds kept apart ----
expect 0 "$SLUICE" keygen -o "$T/keys/w"
[ "$(stat -c %a "$T/keys")" = 700 ] && ok || bad "keygen's new directory is not 0700"
has "$T/out" "wrote .*keys/w\.key" "keygen says it wrote the .key"
has "$T/out" "wrote .*keys/w\.pub" "keygen says it wrote the .pub"
pub=$(sed -n 2p "$T/keys/w.pub")
has "$T/out" "public_key: \"$(printf '%s' "$pub" | sed 's/[][\.*^$(){}?+|/]/\\&/g')\"" "keygen prints the quoted public key"
expect 0 "$SLUICE" keygen -o "$T/keys/c"
# a .pub given as the secret key: refused saying which file is which (not a chmod hint)
expect 1 "$SLUICE" status tcp://127.0.0.1:9 --key "$T/keys/c.pub" --server-key "$T/keys/w.pub" --timeout 1
has "$T/err" "c\.pub is a public key .*secret half" "status --key refuses a .pub"
hasnt "$T/err" "chmod" "a .pub as --key gets no chmod advice"
expect 1 "$SLUICE" status tcp://127.0.0.1:9 --key "$T/keys/c.key" --server-key "$T/keys/w.key" --timeout 1
has "$T/err" "w\.key is a secret key .*public half" "status --server-key refuses a .key"
# the header, not the name, decides: a renamed public file is still refused
cp "$T/keys/c.pub" "$T/keys/renamed"
chmod 600 "$T/keys/renamed"
expect 2 "$SLUICE" worker --listen tcp://127.0.0.1:9 --key "$T/keys/renamed" 2>/dev/null
expect 1 "$SLUICE" worker --listen tcp://127.0.0.1:9 --key "$T/keys/renamed" --allow "$T/keys/c.pub"
has "$T/err" "renamed is a public key" "worker --key refuses a public key file by its first line"
expect 1 "$SLUICE" worker --listen tcp://127.0.0.1:9 --key "$T/keys/w.key" --allow "$T/keys/c.key"
has "$T/err" "c\.key is a secret key" "worker --allow refuses a .key"
# files from before the first line: the bare key still reads
sed -n 2p "$T/keys/c.key" >"$T/keys/old.key"
chmod 600 "$T/keys/old.key"
sed -n 2p "$T/keys/w.pub" >"$T/keys/old.pub"
expect 1 "$SLUICE" status tcp://127.0.0.1:9 --key "$T/keys/old.key" --server-key "$T/keys/old.pub" --timeout 1
has "$T/err" "no answer from tcp://127.0.0.1:9" "key files without the first line still load"

# an inline public key starting with a YAML character: the error says to quote it
for k in '!' '&' '*' '@' '%'; do
    cat >"$T/inline.yaml" <<YEOF
model: $MODEL
nodes:
  - name: coord
    address: tcp://127.0.0.1:1
    key: $T/keys/c.key
  - name: w
    address: tcp://127.0.0.1:2
    public_key: ${k}bcdefghij0123456789abcdefghij012345678
stages:
  - {kind: embed, node: coord}
  - {kind: layers, node: w, layers: [0, 6]}
  - {kind: head, node: coord}
  - {kind: sample, node: coord}
YEOF
    expect 1 "$SLUICE" run -c "$T/inline.yaml" -p hi -n 1
    has "$T/err" "inline\.yaml:8: .*must be quoted: public_key: \"KEY\"" "a key starting with '$k' gets the quoting hint"
done

# ---- metrics port: the URL is printed; a failure names its real cause ----
PY=${PYTHON:-/usr/bin/python3}
# a port reserved for this script (tests/lib/ports.h), not one let go
# before the run binds it
reserve_ports 1
pids+=("$PORT_HOLDER")
port=$PORT
expect 0 "$SLUICE" run -m "$MODEL" -p hi -n 2 --metrics-port "$port"
has "$T/err" "^metrics: serving http://127\.0\.0\.1:$port/metrics$" "run prints the metrics URL"
# 192.0.2.1 (TEST-NET-1) is no address of this machine: not a port in use
expect 1 "$SLUICE" run -m "$MODEL" -p hi -n 2 --metrics-port 192.0.2.1:9100
has "$T/err" "http://192\.0\.2\.1:9100: Cannot assign requested address" "a foreign address reports its errno"
hasnt "$T/err" "in use" "a foreign address is not called a port in use"
"$PY" - "$SLUICE" "$MODEL" >"$T/busy" 2>&1 <<'PYEOF'
import socket, subprocess, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
p = subprocess.run([sys.argv[1], "run", "-m", sys.argv[2], "-p", "hi", "-n", "2", "--metrics-port",
                    str(s.getsockname()[1])], capture_output=True, text=True)
print(p.returncode, p.stderr)
PYEOF
has "$T/busy" "^1 .*Address already in use" "a port in use says so"

# ---- run output: load, prefill and decode each reported; n/a where nothing to measure ----
expect 0 "$SLUICE" run -m "$MODEL" -p "the quick" -n 6
has "$T/err" "^load +[0-9.]+ s" "run reports the load time"
has "$T/err" "^prefill +[0-9.]+ tok/s \([0-9.]+ s\)" "run reports prefill with its time"
has "$T/err" "^decode +[0-9.]+ tok/s \(5 tokens in [0-9.]+ s\)" "run reports decode apart from prefill"
expect 0 "$SLUICE" run -m "$MODEL" -p "the quick" -n 1
has "$T/err" "^decode +n/a " "-n 1: decode is n/a, not 0.0 tok/s"
hasnt "$T/err" "0\.0 tok/s" "-n 1 shows no 0.0 tok/s"
expect 0 "$SLUICE" run -m "$MODEL" -p "the quick" -n 12 --draft "$SRC/models/tiny-gemma3-draft.gguf"
has "$T/err" "^effective decode +[0-9.]+ tok/s \(drafting" "speculative decode line says what it counts"
[ "$(grep -c "decode" "$T/err")" -eq 1 ] && ok || bad "speculative run repeats its decode rate: $(grep decode "$T/err")"

# ---- --prompts as a batch mode ----
# more prompts than max_requests: queued, not refused; blank lines keep the numbering
sed -e "s|\.\./models/|$SRC/models/|" -e 's/max_batch_tokens: 512}/max_batch_tokens: 512, max_requests: 2}/' \
    "$SRC/configs/one-process.yaml" >"$T/two.yaml"
: >"$T/p.txt"
for i in 1 2 3 4 5 6 7; do
    echo "prompt number $i" >>"$T/p.txt"
    [ $i -eq 3 ] && printf '\n  \n' >>"$T/p.txt"
done
expect 0 "$SLUICE" run -c "$T/two.yaml" --prompts "$T/p.txt" -n 3
[ "$(grep -c '^\[line [0-9]*\] ' "$T/out")" -eq 7 ] && ok || bad "7 prompts past max_requests 2: $(head -3 "$T/err")"
for l in 1 2 3 6 7 8 9; do has "$T/out" "^\[line $l\] " "answer labelled with file line $l"; done
hasnt "$T/out" "^\[line (4|5)\] " "blank lines get no answer"
has "$T/err" "2 blank lines skipped" "blank lines are reported"
has "$T/err" "^progress: 7/7 done, 0 in flight, [0-9.]+ tok/s" "progress on stderr"
# the same answers one by one, labelled in the same way
"$SLUICE" run -m "$MODEL" -p "prompt number 6" -n 3 >"$T/solo" 2>/dev/null
[ "$(sed -n 's/^\[line 8\] //p' "$T/out")" = "$(cat "$T/solo")" ] && ok ||
    bad "the answer of line 8 differs from the prompt run alone"
# JSON lines: one object a line, with the fields the issue names
expect 0 "$SLUICE" run -c "$T/two.yaml" --prompts "$T/p.txt" -n 3 --jsonl
"${PYTHON:-/usr/bin/python3}" - "$T/out" "$T/solo" <<'PYEOF' && ok || bad "--jsonl output"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 7, rows
assert sorted(r["line"] for r in rows) == [1, 2, 3, 6, 7, 8, 9]
assert sorted(r["id"] for r in rows) == list(range(1, 8))
for r in rows:
    assert r["prompt"].startswith("prompt number "), r
    assert r["tokens"] == 3 and r["stop"] == "token limit", r
    assert r["timings"]["prefill_s"] > 0 and "decode_s" in r["timings"], r
line8 = [r for r in rows if r["line"] == 8][0]
assert line8["text"] == open(sys.argv[2]).read().rstrip("\n"), (line8, open(sys.argv[2]).read())
PYEOF
# bytes that are not UTF-8 (a Latin-1 prompt) still make valid JSON lines
printf 'caf\xe9 au lait\n' >"$T/latin1.txt"
expect 0 "$SLUICE" run -m "$MODEL" --prompts "$T/latin1.txt" -n 4 --jsonl
"${PYTHON:-/usr/bin/python3}" -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8", errors="strict")]
assert rows[0]["prompt"] == "caf\ufffd au lait", rows
' "$T/out" && ok || bad "--jsonl with a non-UTF-8 prompt: $(cat "$T/out")"
expect 2 "$SLUICE" run -m "$MODEL" -p hi --jsonl
has "$T/err" "--jsonl is an output format of --prompts" "--jsonl needs --prompts"
# a failing prompt fails alone, summarised by cause with a count
long=$(printf 'word %.0s' $(seq 40))
printf 'short one\n%s\nshort two\n%s\n' "$long" "$long" >"$T/bad.txt"
expect 1 "$SLUICE" run -m "$MODEL" --prompts "$T/bad.txt" -n 2 --ctx 32
[ "$(grep -c '^\[line [13]\] ' "$T/out")" -eq 2 ] && ok || bad "the good prompts of a batch with bad ones were not answered"
has "$T/err" "^sluice run: 2 requests failed: the prompt has [0-9]+ tokens.*\(the first on line 2\)$" "failures summarised by cause"

# ---- signals: one line saying what was interrupted, exit 130 (SIGINT) / 143 (SIGTERM) ----
# wait_for CMD...: up to 60 s for CMD to succeed
wait_for() {
    for _ in $(seq 600); do "$@" && return 0; sleep 0.1; done
    return 1
}
for i in $(seq 40); do echo "a long prompt $i"; done >"$T/long.txt"
for sig in INT TERM; do
    "$SLUICE" run -m "$MODEL" --prompts "$T/long.txt" -n 100000 --temp 1 >"$T/sig.out" 2>"$T/sig.err" &
    pid=$!
    wait_for grep -q "progress: .*[1-9][0-9.]* tok/s" "$T/sig.err" || bad "SIG$sig: the batch never made progress"
    kill -$sig $pid
    wait_bounded 60 "sluice run after SIG$sig" $pid
    rc=$?
    want=$([ $sig = INT ] && echo 130 || echo 143)
    [ $rc -eq "$want" ] && ok || bad "SIG$sig: exit $rc (want $want)"
    has "$T/sig.err" "^sluice run: interrupted by SIG$sig.*: [0-9]+ of 40 prompts answered, [0-9]+ cancelled, [0-9]+ not started$" \
        "SIG$sig: one line says what was interrupted"
    hasnt "$T/sig.err" "failed: cancelled" "SIG$sig: no line per cancelled request"
done
"$SLUICE" run -m "$MODEL" -p "the quick" -n 100000 --temp 1 >"$T/sig.out" 2>"$T/sig.err" &
pid=$!
wait_for test -s "$T/sig.out" || bad "the single run printed nothing"
kill -INT $pid
wait_bounded 60 "a one-prompt run after SIGINT" $pid
rc=$?
[ $rc -eq 130 ] && ok || bad "SIGINT on one prompt: exit $rc (want 130)"
has "$T/sig.err" "^sluice run: interrupted by SIGINT \(Ctrl-C\): generation stopped after [0-9]+ tokens?$" "SIGINT on one prompt says so"
[ "$(grep -c . "$T/sig.err")" -eq 1 ] && ok || bad "SIGINT on one prompt: more than one line: $(cat "$T/sig.err")"

# ---- socket files: removed on every way out; status fails at once on a dead one ----
mkdir -m 700 "$T/ipc"
sed -e "s|ipc:///tmp/sluice-two-process|ipc://$T/ipc|" -e "s|\.\./models/|$SRC/models/|" \
    "$SRC/configs/two-process.yaml" >"$T/twoproc.yaml"
expect 0 "$SLUICE" run -c "$T/twoproc.yaml" -p hi -n 2 --status-listen "ipc://$T/ipc/status"
[ -z "$(ls -A "$T/ipc")" ] && ok || bad "a run (rc 0) left socket files: $(ls "$T/ipc")"
expect 1 "$SLUICE" run -c "$T/twoproc.yaml" -p "$(printf 'word %.0s' $(seq 40))" -n 2 --ctx 32
[ -z "$(ls -A "$T/ipc")" ] && ok || bad "a failed run left socket files: $(ls "$T/ipc")"
"$SLUICE" run -c "$T/twoproc.yaml" --prompts "$T/long.txt" -n 100000 --temp 1 >/dev/null 2>"$T/sig.err" &
pid=$!
wait_for grep -q "progress: .*[1-9][0-9.]* tok/s" "$T/sig.err" || bad "two-process batch never made progress"
kill -INT $pid
wait_bounded 60 "the two-process run after SIGINT" $pid
[ $? -eq 130 ] && ok || bad "two-process run: SIGINT did not exit 130"
wait_for test -z "$(ls -A "$T/ipc")" && ok || bad "an interrupted run left socket files: $(ls "$T/ipc")"
# a worker's control socket, after SIGTERM and after --once
"$SLUICE" worker --listen "ipc://$T/ipc/w" 2>"$T/w.err" &
pid=$!
wait_for grep -q listening "$T/w.err" || bad "worker did not start"
expect 0 "$SLUICE" status "ipc://$T/ipc/w"
kill -TERM $pid
wait_bounded 60 "the worker after SIGTERM" $pid
[ ! -e "$T/ipc/w" ] && ok || bad "a worker stopped by SIGTERM left its socket file"
# status: a path with no socket, and a socket file nobody serves, fail at once
expect 1 "$SLUICE" status "ipc://$T/ipc/w" --timeout 30
has "$T/err" "no socket there" "status on a missing socket says so"
"${PYTHON:-/usr/bin/python3}" -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/ipc/stale"
start=$(date +%s)
expect 1 "$SLUICE" status "ipc://$T/ipc/stale" --timeout 30
[ $(($(date +%s) - start)) -lt 10 ] && ok || bad "status on a stale socket waited its timeout"
has "$T/err" "nobody serves this socket" "status on a stale socket says why"

# ---- tokenize: the ids run feeds, from the vocabulary alone ----
IDS=${SLUICE_BUILD:-$(dirname "$SLUICE")}/pipeline_ids
prompts=("Hello world" "the quick brown fox" "<start_of_turn>user
hi there<end_of_turn>" "naïve café — ünïcödé 日本" "  leading spaces and 'quotes' \\ \" tabs	x" "1234567890")
for pr in "${prompts[@]}"; do
    "$IDS" "$MODEL" "$pr" >"$T/want" 2>"$T/err" || bad "pipeline_ids failed: $(cat "$T/err")"
    expect 0 "$SLUICE" tokenize -m "$MODEL" -p "$pr" --ids
    cmp -s "$T/out" "$T/want" && ok || bad "tokenize --ids differs from run's tokens for '$pr': $(cat "$T/out") vs $(cat "$T/want")"
    "$IDS" "$MODEL" --no-bos "$pr" >"$T/want" 2>/dev/null
    expect 0 "$SLUICE" tokenize -m "$MODEL" -p "$pr" --ids --no-bos
    cmp -s "$T/out" "$T/want" && ok || bad "tokenize --ids --no-bos differs from run's for '$pr'"
done
# the count run reports is tokenize's
expect 0 "$SLUICE" tokenize -m "$MODEL" -p "the quick brown fox"
n=$(grep -c . "$T/out")
expect 0 "$SLUICE" run -m "$MODEL" -p "the quick brown fox" -n 1
has "$T/err" "^prompt tokens +$n$" "run's prompt token count is tokenize's"
expect 0 "$SLUICE" tokenize -m "$MODEL" -p "Hello world"
has "$T/out" "^ +2  '<bos>'$" "tokenize prints id and piece"
has "$T/out" "'▁wor'$" "pieces as the vocabulary writes them"
printf 'from a file\n' >"$T/tok.txt"
expect 0 "$SLUICE" tokenize -m "$MODEL" -f "$T/tok.txt" --json
"$PY" -c '
import json, sys
t = json.load(open(sys.argv[1]))
assert t[0] == {"id": 2, "piece": "<bos>"}, t
assert t[-1]["piece"] == "\n", t
' "$T/out" && ok || bad "tokenize --json: $(cat "$T/out")"
expect 0 "$SLUICE" tokenize -m "$MODEL" -p "Hello" --json --ids --no-bos
"$PY" -c 'import json, sys; t = json.load(open(sys.argv[1])); assert all(isinstance(x, int) for x in t) and 2 not in t[:1], t' "$T/out" &&
    ok || bad "tokenize --json --ids"
usage_err() { expect 2 "$@"; has "$T/err" "^try 'sluice tokenize --help'$" "tokenize usage error: $*"; }
usage_err "$SLUICE" tokenize -m "$MODEL"
usage_err "$SLUICE" tokenize -p hi
usage_err "$SLUICE" tokenize -m "$MODEL" -p hi -f x
expect 1 "$SLUICE" tokenize -m "$T/missing.gguf" -p hi
has "$T/err" "missing.gguf" "tokenize names a missing model"

# ---- plan: a cluster plan names its keys (or insecure: true when asked) ----
CLUSTER=$SRC/configs/cluster-4node.yaml
(cd "$T" && "$SLUICE" plan --shape gemma3:27b --type f16 --topology "$CLUSTER" -o plan.yaml >plan.out 2>&1) ||
    bad "cluster plan failed: $(tail -2 "$T/plan.out")"
has "$T/plan.yaml" "^  key: .*keys/ws\.key$" "cluster plan: the coordinator's key placeholder"
has "$T/plan.yaml" "^  public_key: .*keys/mini1\.pub$" "cluster plan: a worker's public key placeholder"
has "$T/plan.yaml" "^#   sluice keygen -o keys/NAME" "cluster plan: a comment on running keygen"
hasnt "$T/plan.yaml" "insecure" "cluster plan is not insecure unless asked"
has "$T/plan.out" "sluice keygen -o keys/NAME" "plan says to make the keys"
# with the pairs made where the placeholders point, the plan gets past its keys
(cd "$T" && for n in ws mini1 mini2; do "$SLUICE" keygen -o "keys/$n" >/dev/null; done)
expect 1 "$SLUICE" run -c "$T/plan.yaml" -p hi -n 1
hasnt "$T/err" "CURVE secret key|public_key" "the planned keys satisfy the config"
(cd "$T" && "$SLUICE" plan --shape gemma3:27b --type f16 --topology "$CLUSTER" --insecure -o insecure.yaml >/dev/null 2>&1)
has "$T/insecure.yaml" "^insecure: true$" "plan --insecure writes insecure: true"
hasnt "$T/insecure.yaml" "key:" "plan --insecure writes no keys"
# ---- plan for another machine: said so; run refuses numa nodes this machine lacks ----
expect 0 "$SLUICE" plan --shape gemma3:4b --type f16 --topology "pack:2 numa:1(memory=8GB) core:4 pu:1" -o "$T/other.yaml"
has "$T/out" "note: this plan is for the machine \"pack:2" "plan says it is for another machine"
has "$T/other.yaml" "^# Planned for the machine" "the config says it is for another machine"
sed -i 's/numa: 1$/numa: 63/' "$T/other.yaml"
expect 1 "$SLUICE" run -c "$T/other.yaml" -p hi -n 1
has "$T/err" "stage [0-9]+ \(layers\): NUMA node 63 does not exist on this machine, which has [0-9]+ NUMA node\(s\) \(0\.\.[0-9]+\) and [0-9]+ cores" \
    "run refuses a NUMA node this machine lacks, with the numbers"
hasnt "$T/err" "MODEL\.gguf" "the machine check comes before anything loads"
ncores=$(nproc)
sed -e "s|\.\./models/|$SRC/models/|" "$SRC/configs/one-process.yaml" >"$T/threads.yaml"
sed -i "s/    layers: \[0, 6\]/    layers: [0, 6]\n    threads: $((ncores * 8))/" "$T/threads.yaml"
expect 0 "$SLUICE" run -c "$T/threads.yaml" -p hi -n 1
has "$T/err" "warning: .*asks for $((ncores * 8)) threads, but this machine has [0-9]+ cores" "run warns of more threads than cores"

finish test_newcomer
