#!/bin/bash
# Repacked weights at the model level: for each type with a 16-row layout
# (the 32-element types of a llama.cpp K-quant mix among them), a model
# quantized to it reloads and greedily generates the same tokens every
# time, the same tokens as with repacking off (SLUICE_REPACK=0: the row
# kernels), and sluice bench --kernels says the repacked layout ran.
set -u
SLUICE=$(readlink -f "${SLUICE:?set SLUICE to the sluice binary}")
. "$(dirname "$0")/lib/check.sh"
scratch slrepack
gen() { "$SLUICE" run -m "$1" -p "one two three four" -n 24 -t 2 --print-ids 2>&1 >/dev/null | ids; }

for type in q4_0 q4_1 q5_0 q5_1 q8_0 q4_K q6_K; do
    f=$T/$type.gguf
    # a clear top logit: greedy tokens do not hinge on the last bit
    if ! "$SLUICE" synth --arch gemma3 --size test --type "$type" --weight-scale 4 -o "$f" 2>"$T/err"; then
        bad "synth $type"
        continue
    fi
    first=$(gen "$f")
    [[ -n $first ]] && ok || bad "$type: no ids"
    again=$(gen "$f")
    [[ $again == "$first" ]] && ok || bad "$type: a reload gave [$again], first [$first]"
    plain=$(SLUICE_REPACK=0 gen "$f")
    [[ $plain == "$first" ]] && ok || bad "$type: unpacked gave [$plain], repacked [$first]"
    "$SLUICE" bench -m "$f" -p 4 -n 1 -r 1 -t 1 --verify 0 --kernels >"$T/out" 2>"$T/err"
    if grep -q "${type}: avx512-vnni/q8" "$T/out"; then # this CPU has the packed kernels
        has "$T/out" "${type}: avx512-vnni/q8 \(repacked x16\)" "$type repacked"
    fi
done
finish test_repack_reload
