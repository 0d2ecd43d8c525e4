#!/bin/bash
# Gemma 4's per-layer embeddings across processes: with limits.ple: embed the
# embed stage, hosted by a spawned worker (so the choice travels in its
# stage assignment), gathers every layer's per-layer inputs and the layers
# stages downstream, in that worker and in the coordinator, take theirs from
# the message; with local each layers stage gathers its own. Both give the
# greedy text of the one-process run; a cut inside the KV-sharing layers is
# refused naming the layers.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
scratch slple

cd "$T" || exit 1
"$SLUICE" synth --arch gemma4 --size test --type q4_0 --seed 5 --weight-scale 0.6 -o m.gguf \
    >/dev/null 2>&1 || { echo "FAIL: synth"; exit 1; }
PROMPT="Permission is hereby granted, free of charge, to any person"
timeout 120 "$SLUICE" run -m m.gguf -p "$PROMPT" -n 24 --temp 0 >base.txt 2>base.err || bad "one-process run"
[ -s base.txt ] && ok || bad "one-process run printed nothing"

# config NAME PLE CUT: embed and layers [0, CUT) on the spawned worker p1,
# layers [CUT, 8) with head and sample here
config() {
    cat >"$1" <<EOF
model: $T/m.gguf
nodes:
  - {name: local, address: ipc://$T/c}
  - {name: p1, address: ipc://$T/p1-$1, spawn: true}
stages:
  - {kind: embed, node: p1}
  - {kind: layers, layers: [0, $3], node: p1}
  - {kind: layers, layers: [$3, 8], node: local}
  - {kind: head, node: local}
  - {kind: sample, node: local}
sampling: {temperature: 0}
limits: {max_sequences: 2, context: 256, max_batch_tokens: 64, ple: $2}
EOF
}

for ple in embed local; do
    config "$ple.yaml" "$ple" 2
    timeout 120 "$SLUICE" run -c "$ple.yaml" -p "$PROMPT" -n 24 --stats >"$ple.txt" 2>"$ple.err" ||
        bad "ple: $ple pipeline run failed: $(tail -3 "$ple.err")"
    if cmp -s base.txt "$ple.txt"; then ok; else bad "ple: $ple: text differs from the one-process run"; fi
done
# the coordinator's layers stage took the rows the worker's embed stage sent
has embed.err "layers\[2,8\) +per-layer inputs: gathered here 0 batches, from upstream [1-9]" \
    "ple: embed reaches the worker's embed stage"
has local.err "layers\[2,8\) +per-layer inputs: gathered here [1-9][0-9]* batches, from upstream 0" \
    "ple: local gathers at the layers stage"

config cut.yaml embed 3
timeout 120 "$SLUICE" run -c cut.yaml -p "$PROMPT" -n 4 >cut.txt 2>cut.err && bad "a KV-sharing cut ran"
has cut.err "reads the cache of layer 2, which is outside this part's layers \[3, 8\)" \
    "a cut inside the KV-sharing layers is refused"

finish test_ple_procs
