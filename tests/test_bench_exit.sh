#!/bin/bash
# sluice bench's exit status: 0 for a run that completes, 1 with a message
# naming the problem for every failure: a missing file, a tensor type the
# engine does not know, a file cut short, in table and JSON mode.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(dirname "$0")/..}
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d /tmp/slb.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
checks=0
check() { checks=$((checks + 1)); if ! eval "$1"; then fails=$((fails + 1)); echo "FAILED: $1" >&2; sed 's/^/  | /' "$T/err" | tail -3 >&2; fi; }
bench() { "$SLUICE" bench -p 8 -n 2 -r 1 -t 1 "$@" > "$T/out" 2> "$T/err"; }

# a good model, and copies of it: one whose token_embd claims GGML type 16
# (IQ2_XXS, not supported) and one cut short inside its tensor data
"$SLUICE" synth --arch gemma3 --size test --type q8_0 -o "$T/good.gguf" 2> "$T/err"
"$PY" - "$SRC" "$T" <<'PY'
import struct, sys
sys.path.insert(0, sys.argv[1] + "/tests")
from ref import dequant
t = sys.argv[2]
data = bytearray(open(t + "/good.gguf", "rb").read())
name = b"token_embd.weight"
at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
n_dims = struct.unpack_from("<I", data, at)[0]
type_at = at + 4 + 8 * n_dims
assert struct.unpack_from("<I", data, type_at)[0] == dequant.Q8_0
struct.pack_into("<I", data, type_at, 16)
open(t + "/type16.gguf", "wb").write(bytes(data))
good = open(t + "/good.gguf", "rb").read()
open(t + "/short.gguf", "wb").write(good[:len(good) - 1000])
PY

bench -m "$T/good.gguf"; rc=$?
check '[ $rc -eq 0 ] && grep -q "^decode" "$T/out"'
bench -m "$T/good.gguf" --json; rc=$?
check '[ $rc -eq 0 ] && grep -q "\"decode\"" "$T/out"'
for json in "" --json; do
    bench -m "$T/missing.gguf" $json; rc=$?
    check '[ $rc -eq 1 ] && grep -q "missing.gguf" "$T/err"'
    bench -m "$T/type16.gguf" $json; rc=$?
    check '[ $rc -eq 1 ] && grep -q "tensor type 16 is unknown or not supported" "$T/err"'
    bench -m "$T/short.gguf" $json; rc=$?
    check '[ $rc -eq 1 ] && grep -qE "past the end|truncated" "$T/err"'
done
# a usage error stays 2
bench -m "$T/good.gguf" --kv-type q3; rc=$?
check '[ $rc -eq 2 ]'
bench -m "$T/good.gguf" --verify 65; rc=$?
check '[ $rc -eq 2 ] && grep -q "verify" "$T/err"'
# the verification step: K rows timed against a decode step, or skipped
bench -m "$T/good.gguf" --verify 7; rc=$?
check '[ $rc -eq 0 ] && grep -qE "^verify +[0-9.]+ +[0-9.]+x the time of one decode step" "$T/out"'
bench -m "$T/good.gguf" --verify 0; rc=$?
check '[ $rc -eq 0 ] && ! grep -q "^verify" "$T/out"'
bench -m "$T/good.gguf" --verify 3 --json; rc=$?
check '[ $rc -eq 0 ] && "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); assert j[\"verify_rows\"] == 3 and j[\"verify_vs_decode\"] > 0 and j[\"prefill_gop_s\"] > 0 and j[\"repacked_mb\"] >= j[\"repacked_head_mb\"] >= 0" "$T/out"'
# --profile: the decode step op by op; the ops' bytes are what a token reads
# (bytes_per_token, less the one embedding row), each matmul's its weights
bench -m "$T/good.gguf" --verify 0 --profile; rc=$?
check '[ $rc -eq 0 ] && grep -qE "^  gate_up +[0-9.]+ " "$T/out" && grep -qE "^  head +[0-9.]+ " "$T/out"'
bench -m "$T/good.gguf" --verify 0 --profile --json; rc=$?
check '[ $rc -eq 0 ] && "$PY" - "$T/out" <<"PY"
import json, sys
j = json.load(open(sys.argv[1]))
p = j["decode_profile"]
for op in ("qkv", "attention", "o", "gate_up", "down", "head"):
    assert p[op]["mb"] > 0 and p[op]["ms"] > 0, op
mb = sum(r["mb"] for r in p.values())
assert 0.99 * j["bytes_per_token"] / 1e6 < mb <= j["bytes_per_token"] / 1e6, (mb, j["bytes_per_token"])
assert sum(r["ms"] for r in p.values()) <= 1e3 / j["decode_tok_s"] * 1.001
PY'

echo "test_bench_exit: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
