#!/bin/bash
# The sluice command end to end on synthetic test models: help texts, usage
# errors, synth of every architecture, run (greedy and seeded sampling),
# quantize to the q4_K_M mix, perplexity.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
scratch slcli

# ---- help texts ----
expect 0 "$SLUICE" --help
for c in run inspect synth quantize perplexity bench status; do has "$T/out" "^  $c " "top-level help lists $c"; done
declare -A opts=(
    [run]="--model --prompt --n-predict --temp --top-k --top-p --min-p --repeat-penalty --seed --chat --threads --ctx --no-bos --metrics-port"
    [status]="--key --server-key --insecure --timeout"
    [inspect]="FILE --no-tensors"
    [synth]="--arch --size --type --output --seed --weight-scale q4_K_M"
    [quantize]="IN OUT --type q4_K_M q6_K"
    [perplexity]="--model --file --ctx --batch --chunks"
    [bench]="--model --threads --prompt --gen --repeat --json --kernels --calibrate --kv-type"
)
for c in run inspect synth quantize perplexity status; do
    expect 0 "$SLUICE" "$c" --help
    for o in ${opts[$c]}; do has "$T/out" "$o" "$c --help mentions $o"; done
done

# ---- usage errors: exit 2 with the one-line error and where to find help
# (not the whole usage, which buries the error), never a crash ----
usage_error() {
    expect 2 "$@"
    has "$T/err" "^try 'sluice ([a-z]+ )?--help'$" "help hint for: $*"
    if grep -q "usage:" "$T/err" || [ "$(wc -l <"$T/err")" -gt 2 ]; then
        bad "more than the error and the hint for: $*"
    else ok; fi
}
usage_error "$SLUICE"
usage_error "$SLUICE" frobnicate
usage_error "$SLUICE" worker
usage_error "$SLUICE" run
usage_error "$SLUICE" run -m x.gguf
usage_error "$SLUICE" run -m x.gguf -p hi -n 12x
usage_error "$SLUICE" run -m x.gguf -p hi -n 0
usage_error "$SLUICE" run -m x.gguf -p hi --temp abc
usage_error "$SLUICE" run -m x.gguf -p hi --top-p 1.5
usage_error "$SLUICE" run -m x.gguf -p hi --seed -1
usage_error "$SLUICE" run -m x.gguf -p hi -t 99999999999999999999
usage_error "$SLUICE" run -m x.gguf -p hi --bogus
usage_error "$SLUICE" run -m x.gguf -p hi extra
usage_error "$SLUICE" run -m
usage_error "$SLUICE" run -m x.gguf -p hi --metrics-port 0
usage_error "$SLUICE" run -m x.gguf -p hi --metrics-port localhost:9100
usage_error "$SLUICE" worker --listen ipc:///tmp/x --metrics-port 70000
usage_error "$SLUICE" status
usage_error "$SLUICE" status ipc:///a ipc:///b
usage_error "$SLUICE" status http://host:1
usage_error "$SLUICE" status tcp://127.0.0.1:7100
usage_error "$SLUICE" status tcp://127.0.0.1:7100 --key k --insecure
usage_error "$SLUICE" status ipc:///tmp/x --timeout 0
usage_error "$SLUICE" inspect
usage_error "$SLUICE" inspect a b
usage_error "$SLUICE" synth --arch gemma3
usage_error "$SLUICE" synth --arch gemma3 --size 7b -o "$T/x.gguf"
usage_error "$SLUICE" synth --arch mamba --size test -o "$T/x.gguf"
usage_error "$SLUICE" synth --arch gemma --size test --type iq2_xxs -o "$T/x.gguf"
usage_error "$SLUICE" synth --arch gemma --size test --weight-scale 0 -o "$T/x.gguf"
usage_error "$SLUICE" quantize a.gguf --type q4_0
usage_error "$SLUICE" quantize a.gguf b.gguf
usage_error "$SLUICE" quantize a.gguf b.gguf --type q9
usage_error "$SLUICE" perplexity -m x.gguf
usage_error "$SLUICE" perplexity -m x.gguf -f t.txt -c 1e3
# a number out of range says the range
expect 2 "$SLUICE" run -m x.gguf -p hi --ctx 10
has "$T/err" "bad value '10' for --ctx: must be a whole number 16\.\.[0-9]+" "--ctx error names the range"
has "$T/err" "^try 'sluice run --help'$" "run usage error points to run --help"
expect 2 "$SLUICE" run -m x.gguf -p hi --top-p 1.5
has "$T/err" "must be a number 0\.\.1$" "--top-p error names the range"
expect 2 "$SLUICE" worker --listen ipc:///tmp/x -t 0
has "$T/err" "for --threads: must be a whole number 1\.\.4096" "worker --threads error names the range"
[ ! -e "$T/x.gguf" ] && ok || bad "a rejected synth wrote its output"

# ---- a missing file is an error that names it ----
expect 1 "$SLUICE" run -m "$T/missing.gguf" -p hi
has "$T/err" "missing.gguf" "run names the missing model"
expect 1 "$SLUICE" inspect "$T/missing.gguf"
has "$T/err" "missing.gguf" "inspect names the missing file"
expect 1 "$SLUICE" quantize "$T/missing.gguf" "$T/q.gguf" --type q8_0
has "$T/err" "missing.gguf" "quantize names the missing file"

head -c 300 /dev/urandom >"$T/junk.gguf"
expect 1 "$SLUICE" inspect "$T/junk.gguf"
has "$T/err" "junk.gguf" "inspect names the malformed file"

# ---- synth: every arch's test size loads ----
for a in gemma gemma2 gemma3 gemma4 llama; do
    expect 0 "$SLUICE" synth --arch "$a" --size test -o "$T/$a.gguf"
    expect 0 "$SLUICE" inspect "$T/$a.gguf"
    has "$T/out" "general.architecture +string += \"$a\"" "$a: architecture key"
    has "$T/out" "tokenizer.ggml.tokens +string\[512\]" "$a: vocabulary of exactly 512"
    has "$T/out" "^architecture +$a" "$a: configuration parsed"
done
expect 0 "$SLUICE" inspect "$T/gemma2.gguf"
has "$T/out" "softcap.*50.*30" "gemma2 soft-caps reach the config"
expect 0 "$SLUICE" inspect "$T/gemma3.gguf"
has "$T/out" "5 sliding, 1 global" "gemma3: every 6th layer global"
has "$T/out" "rope.scaling.type +string += \"linear\"" "gemma3 test: linear rope scaling"
has "$T/out" "attn_q_norm" "gemma3: q norm tensors"
expect 0 "$SLUICE" inspect "$T/gemma.gguf"
has "$T/out" "head_count_kv +uint32 += 1$" "gemma test: one kv head"
expect 0 "$SLUICE" inspect "$T/gemma4.gguf"
has "$T/out" "6 sliding, 2 global" "gemma4: every 4th layer global"
has "$T/out" "the last 4 layers read earlier layers' caches" "gemma4: KV sharing reaches the config"
has "$T/out" "per-layer emb +64 per layer" "gemma4: per-layer embeddings"
has "$T/out" "from layer 3 .*rope_dim 128 \\(freq factors\\).*V = K" "gemma4: global layer 3 has V = K"
has "$T/out" "from layer 7 .*d_ff 1024.*reads KV of 3" "gemma4: layer 7 reads layer 3's cache"
has "$T/out" "rope_freqs.weight +f32 +64 " "gemma4: rope_freqs tensor"

# gemma4 metadata the config refuses, by name: a per-layer array of the
# wrong length, and KV sharing whose llama.cpp source is of the other kind
"${PYTHON:-/usr/bin/python3}" - "$(dirname "$0")" "$T" <<'PYEOF' || bad "writing gemma4 metadata files"
import sys
sys.path.insert(0, sys.argv[1])
from ref import writer
base = {"general.architecture": "gemma4", "gemma4.block_count": 6, "gemma4.embedding_length": 64,
        "gemma4.feed_forward_length": 128, "gemma4.attention.head_count": 2,
        "gemma4.vocab_size": 32, "gemma4.attention.key_length": 32,
        "gemma4.attention.key_length_swa": 16, "gemma4.attention.sliding_window": 4,
        "gemma4.attention.sliding_window_pattern": [True, True, False, True, True, False],
        "gemma4.attention.shared_kv_layers": 3}
writer.write_gguf(sys.argv[2] + "/g4arr.gguf", dict(base, **{"gemma4.attention.head_count_kv": [1, 1, 1]}), [])
writer.write_gguf(sys.argv[2] + "/g4share.gguf", dict(base, **{"gemma4.attention.shared_kv_layers": 2}), [])
PYEOF
expect 1 "$SLUICE" inspect --no-tensors "$T/g4arr.gguf"
has "$T/err" "head_count_kv must be one number or one per layer \\(6\\)" "gemma4: per-layer array length checked"
expect 1 "$SLUICE" inspect --no-tensors "$T/g4share.gguf"
has "$T/err" "shared_kv_layers: layer 4 \\(sliding\\) would share the KV cache of layer 2 \\(global\\)" \
    "gemma4: KV sharing across kinds refused"

# same seed: same bytes, whatever the thread count; another seed: other bytes
OMP_NUM_THREADS=1 "$SLUICE" synth --arch gemma3 --size test --type q4_0 --seed 5 -o "$T/s1.gguf" 2>/dev/null
OMP_NUM_THREADS=2 "$SLUICE" synth --arch gemma3 --size test --type q4_0 --seed 5 -o "$T/s2.gguf" 2>/dev/null
"$SLUICE" synth --arch gemma3 --size test --type q4_0 --seed 6 -o "$T/s3.gguf" 2>/dev/null
cmp -s "$T/s1.gguf" "$T/s2.gguf" && ok || bad "synth depends on the thread count"
cmp -s "$T/s1.gguf" "$T/s3.gguf" && bad "synth ignores --seed" || ok

# ---- run ----
N=12
# gen_ids OUTFILE ARGS...: run and keep the generated ids line
gen_ids() {
    local out=$1
    shift
    expect 0 "$SLUICE" run --print-ids "$@"
    grep '^ids:' "$T/err" >"$out"
    cp "$T/err" "$out.err"
}
# n_ids FILE: number of generated ids
n_ids() { awk '{print NF - 1}' "$1"; }
check_count() {
    local n
    n=$(n_ids "$1")
    if [ "$n" -eq "$N" ] || { [ "$n" -lt "$N" ] && grep -q "stop: end of" "$1.err"; }; then ok; else
        bad "$2: generated $n tokens, want $N"
    fi
    has "$1.err" "prompt tokens +[0-9]+" "$2: prompt token count"
    has "$1.err" "prefill +[0-9.]+ tok/s" "$2: prefill speed"
    has "$1.err" "time to first +[0-9.]+ s" "$2: time to first token"
    has "$1.err" "decode +[0-9.]+ tok/s" "$2: decode speed"
}
for a in gemma gemma2 gemma3 gemma4 llama; do
    gen_ids "$T/$a.greedy1" -m "$T/$a.gguf" -p "the water is" -n $N
    check_count "$T/$a.greedy1" "$a greedy"
done
gen_ids "$T/g1" -m "$T/gemma3.gguf" -p "the day" -n $N
gen_ids "$T/g2" -m "$T/gemma3.gguf" -p "the day" -n $N
cmp -s "$T/g1" "$T/g2" && ok || bad "greedy runs differ"
gen_ids "$T/r1" -m "$T/gemma3.gguf" -p "the day" -n $N --temp 1 --seed 7
gen_ids "$T/r2" -m "$T/gemma3.gguf" -p "the day" -n $N --temp 1 --seed 7
gen_ids "$T/r3" -m "$T/gemma3.gguf" -p "the day" -n $N --temp 1 --seed 8
cmp -s "$T/r1" "$T/r2" && ok || bad "seeded sampling runs differ"
cmp -s "$T/r1" "$T/r3" && bad "different seeds gave the same tokens" || ok
gen_ids "$T/f1" -m "$T/gemma3.gguf" -p "the day" -n $N --temp 0.8 --top-k 20 --top-p 0.9 --min-p 0.05 \
    --repeat-penalty 1.1 -t 1
check_count "$T/f1" "filtered sampling"
# chat adds <start_of_turn>user\n ... <end_of_turn>\n<start_of_turn>model\n: 3 markers and
# at least the 2 newlines and the 2 role words
prompt_tokens() { sed -n 's/^prompt tokens *\([0-9]*\).*/\1/p' "$1"; }
gen_ids "$T/c0" -m "$T/gemma3.gguf" -p "hello" -n 4
gen_ids "$T/c1" -m "$T/gemma3.gguf" -p "hello" -n 4 --chat
[ "$(prompt_tokens "$T/c1.err")" -ge $(($(prompt_tokens "$T/c0.err") + 7)) ] && ok ||
    bad "chat prompt ($(prompt_tokens "$T/c1.err") tokens) not wrapped (plain: $(prompt_tokens "$T/c0.err"))"
# a prompt of more than 512 tokens goes through two prefill chunks
long=$(for i in $(seq 1 40); do printf 'the water is long and the day is '; done)
gen_ids "$T/l1" -m "$T/gemma3.gguf" -p "$long" -n 4 --ctx 700
[ "$(prompt_tokens "$T/l1.err")" -gt 512 ] && ok || bad "long prompt has only $(prompt_tokens "$T/l1.err") tokens"
expect 1 "$SLUICE" run -m "$T/gemma3.gguf" -p "$long" -n 4 --ctx 16
has "$T/err" "context" "a prompt longer than --ctx is refused"

# ---- quantize to the q4_K_M mix ----
expect 0 "$SLUICE" quantize "$T/gemma3.gguf" "$T/q4km.gguf" --type q4_K_M
expect 0 "$SLUICE" inspect "$T/q4km.gguf"
# llama.cpp's rule for 6 layers: layers 2 and 5 (and tied token_embd) get q6_K
has "$T/out" "general.file_type +uint32 += 15$" "q4_K_M file type"
has "$T/out" "token_embd.weight +q6_K " "tied token_embd is q6_K"
for il in 2 5; do
    has "$T/out" "blk.$il.attn_v.weight +q6_K " "blk.$il.attn_v q6_K"
    has "$T/out" "blk.$il.ffn_down.weight +q6_K " "blk.$il.ffn_down q6_K"
done
for il in 0 1 3 4; do
    has "$T/out" "blk.$il.attn_v.weight +q4_K " "blk.$il.attn_v q4_K"
    has "$T/out" "blk.$il.ffn_down.weight +q4_K " "blk.$il.ffn_down q4_K"
done
has "$T/out" "blk.2.attn_q.weight +q4_K " "attn_q stays q4_K"
has "$T/out" "blk.2.ffn_up.weight +q4_K " "ffn_up stays q4_K"
has "$T/out" "blk.0.attn_norm.weight +f32 " "norms stay f32"
has "$T/out" "tokenizer.ggml.tokens +string\[512\]" "quantize keeps the metadata"
gen_ids "$T/q1" -m "$T/q4km.gguf" -p "the water is" -n $N
check_count "$T/q1" "q4_K_M run"
# llama has an untied output: that one gets q6_K, token_embd stays q4_K
expect 0 "$SLUICE" quantize "$T/llama.gguf" "$T/llq.gguf" --type q4_K_M
expect 0 "$SLUICE" inspect "$T/llq.gguf"
has "$T/out" "output.weight +q6_K " "llama output q6_K"
has "$T/out" "token_embd.weight +q4_K " "llama token_embd q4_K"
usage_error "$SLUICE" quantize "$T/llama.gguf" "$T/llama.gguf" --type q8_0
# gemma4 to q4_K: the per-layer token embedding's 64-column layer slices
# cannot hold 256-element blocks, so it falls back to q5_0 as llama.cpp's
# q4_K does; the model runs
expect 0 "$SLUICE" quantize "$T/gemma4.gguf" "$T/g4q.gguf" --type q4_K
expect 0 "$SLUICE" inspect "$T/g4q.gguf"
has "$T/out" "per_layer_token_embd.weight +q5_0 " "gemma4 per_layer_token_embd falls back to q5_0"
has "$T/out" "blk.0.attn_q.weight +q4_K " "gemma4 attn_q q4_K"
gen_ids "$T/g4q1" -m "$T/g4q.gguf" -p "the water is" -n $N
check_count "$T/g4q1" "gemma4 q4_K run"

# ---- gemma4 split across two processes: the layer stages compute their
# layers' per-layer inputs from the token ids the batches carry, and sample
# the same tokens as one process; a cut between a KV-sharing layer and its
# source is refused ----
g4cfg() { # g4cfg FILE CUT [MODEL]
    cat >"$1" <<YAML
model: ${3:-$T/gemma4.gguf}
nodes:
  - name: local
    address: ipc://$T/g4-local
  - name: p1
    address: ipc://$T/g4-p1
    spawn: true
stages:
  - {kind: embed, node: local}
  - {kind: layers, node: local, layers: [0, $2]}
  - {kind: layers, node: p1, layers: [$2, 8]}
  - {kind: head, node: p1}
  - {kind: sample, node: p1}
sampling: {temperature: 1.0, seed: 42}
limits: {max_sequences: 2, context: 256, max_batch_tokens: 64}
YAML
}
g4cfg "$T/g4split.yaml" 2
g4cfg "$T/g4bad.yaml" 4
gen_ids "$T/g4one" -m "$T/gemma4.gguf" -p "the water is" -n $N --temp 1 --seed 42
gen_ids "$T/g4two" -c "$T/g4split.yaml" -p "the water is" -n $N
check_count "$T/g4two" "gemma4 split run"
cmp -s "$T/g4one" "$T/g4two" && ok || bad "gemma4 split run differs from one process"
# the same with quantized weights: the second part reads its rows of the
# per-layer projection from the middle of the q4_K matrix
g4cfg "$T/g4qsplit.yaml" 2 "$T/g4q.gguf"
gen_ids "$T/g4qone" -m "$T/g4q.gguf" -p "the water is" -n $N --temp 1 --seed 42
gen_ids "$T/g4qtwo" -c "$T/g4qsplit.yaml" -p "the water is" -n $N
check_count "$T/g4qtwo" "gemma4 q4_K split run"
cmp -s "$T/g4qone" "$T/g4qtwo" && ok || bad "gemma4 q4_K split run differs from one process"
expect 1 "$SLUICE" run -c "$T/g4bad.yaml" -p "the water is" -n 2
has "$T/err" "layer 4 reads the cache of layer 2" "gemma4 cut inside the KV sharing refused"

# ---- perplexity ----
for i in $(seq 1 60); do
    echo "The water is long and the day is short. They said that it was time to go, and we did not come back."
done >"$T/text.txt"
expect 0 "$SLUICE" perplexity -m "$T/gemma3.gguf" -f "$T/text.txt" -c 64 -b 32
has "$T/out" "^\[1\][0-9.]+," "perplexity prints running values"
ppl=$(sed -n 's/^Final estimate: PPL = \([0-9.e+]*\) +\/- \([0-9.e+]*\)$/\1/p' "$T/out")
if [ -n "$ppl" ] && awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 1e30) }'; then ok; else
    bad "perplexity final estimate missing or not finite: '$ppl'"
fi
expect 0 "$SLUICE" perplexity -m "$T/gemma3.gguf" -f "$T/text.txt" -c 64 --chunks 1
has "$T/out" "^\[1\][0-9.]+,$" "--chunks 1 scores one chunk"
# the batch size does not change the result
expect 0 "$SLUICE" perplexity -m "$T/gemma3.gguf" -f "$T/text.txt" -c 64 -b 64 --chunks 2
grep '^Final' "$T/out" >"$T/p64"
expect 0 "$SLUICE" perplexity -m "$T/gemma3.gguf" -f "$T/text.txt" -c 64 -b 16 --chunks 2
grep '^Final' "$T/out" >"$T/p16"
p64=$(sed 's/.*= \([0-9.]*\) .*/\1/' "$T/p64")
p16=$(sed 's/.*= \([0-9.]*\) .*/\1/' "$T/p16")
awk -v a="$p64" -v b="$p16" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-3 * a) }' && ok ||
    bad "perplexity with batch 64 ($p64) and 16 ($p16) differ"
# gemma4: KV-sharing layers read their sources' sliding-window rings (window
# 8: 256 slots, wrapped by a 512-token chunk) whatever the batch size
expect 0 "$SLUICE" perplexity -m "$T/gemma4.gguf" -f "$T/text.txt" -c 512 -b 512 --chunks 1
grep '^Final' "$T/out" >"$T/g4p512"
expect 0 "$SLUICE" perplexity -m "$T/gemma4.gguf" -f "$T/text.txt" -c 512 -b 32 --chunks 1
grep '^Final' "$T/out" >"$T/g4p32"
a=$(sed 's/.*= \([0-9.]*\) .*/\1/' "$T/g4p512")
b=$(sed 's/.*= \([0-9.]*\) .*/\1/' "$T/g4p32")
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-3 * a) }' && ok ||
    bad "gemma4 perplexity with batch 512 ($a) and 32 ($b) differ"
echo "too short" >"$T/short.txt"
expect 1 "$SLUICE" perplexity -m "$T/gemma3.gguf" -f "$T/short.txt" -c 64
has "$T/err" "at least 128 tokens" "short text refused"
expect 1 "$SLUICE" perplexity -m "$T/gemma3.gguf" -f "$T/nothere.txt"
has "$T/err" "nothere.txt" "perplexity names the missing text"

# ---- bench: the JSON holds its promised fields with sane values ----
PY=${PYTHON:-/usr/bin/python3}
expect 0 "$SLUICE" bench -m "$T/gemma3.gguf" -p 24 -n 6 -r 1 --json --kv-type q8_0
"$PY" - "$T/out" <<'PYEOF' && ok || bad "bench --json fields"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["prompt_tokens"] == 24 and j["gen_tokens"] == 6
for k in ("prefill_tok_s", "decode_tok_s", "roofline_pct", "bandwidth_gb_s", "bytes_per_token"):
    assert j[k] > 0, k
for phase in ("prefill", "decode"):
    ops = j["ops"][phase]
    for op in ("embed", "norm", "matmul", "attention", "elementwise", "head", "sampling"):
        assert ops[op + "_ms"] >= 0, (phase, op)
    assert ops["matmul_ms"] > 0
assert "matmul" in j["kernels"] and "attention" in j["kernels"]
PYEOF
expect 0 "$SLUICE" bench -m "$T/gemma3.gguf" -p 8 -n 2 -r 1 --kernels
has "$T/out" "^kernels: matmul " "bench --kernels names the paths"
has "$T/out" "^decode .*roofline" "bench table has the decode roofline"
expect 2 "$SLUICE" bench -m "$T/gemma3.gguf" --kv-type q4_0
has "$T/err" "bad value 'q4_0' for --kv-type" "bench refuses a KV type it lacks"
expect 2 "$SLUICE" bench
has "$T/err" "-m FILE is required" "bench without a model"
expect 0 "$SLUICE" bench --calibrate -t 1
has "$T/out" "^    bandwidth_gb_s: [0-9]" "calibrate prints the bandwidth"
# run with a typed KV cache
expect 0 "$SLUICE" run -m "$T/gemma3.gguf" -p "hello" -n 4 --kv-type f16
expect 2 "$SLUICE" run -m "$T/gemma3.gguf" -p "hello" --kv-type q4_K
has "$T/err" "bad value 'q4_K' for --kv-type" "run refuses a KV type it lacks"

finish test_cli
