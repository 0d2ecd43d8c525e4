#!/bin/bash
# The prefix cache of `sluice serve` with Gemma 4's assistant drafter (an
# mtp stage, which keeps its own copy of the target's K/V rows a slot): a
# 6-turn conversation (openai client) on a synthetic gemma4 test target with
# its synthetic assistant as --draft finds the previous turns cached from
# turn 2 on, as many tokens as the same target served without the drafter,
# and its greedy texts are those of the same server with the cache off and
# of plain decoding (no drafter, no cache). k is fixed at 3 so the mtp
# stage drafts, and its copy is read, every step.
set -u
source "$(dirname "$0")/serve_lib.sh"
NODE_DIR="$SRC/tests/node"
[ -d "$NODE_DIR/node_modules/openai" ] || { echo "FAIL: no $NODE_DIR/node_modules: run scripts/install-deps.sh"; exit 1; }
"$SLUICE" synth --arch gemma4 --size test --seed 5 --weight-scale 0.6 -o "$T/t.gguf" >/dev/null 2>&1 &&
    "$SLUICE" synth --arch gemma4-assistant --size test -o "$T/a.gguf" >/dev/null 2>&1 ||
    { echo "FAIL: synth"; exit 1; }
start_server mtp-on -m "$T/t.gguf" --draft "$T/a.gguf" --draft-k 3
ON=$URL
start_server mtp-off -m "$T/t.gguf" --draft "$T/a.gguf" --draft-k 3 --no-prefix-cache
OFF=$URL
start_server plain-on -m "$T/t.gguf"
LIKE=$URL
start_server plain-off -m "$T/t.gguf" --no-prefix-cache
ALSO=$URL
BASE_URL=$ON BASE_URL_OFF=$OFF BASE_URL_LIKE=$LIKE BASE_URL_ALSO=$ALSO timeout 600 node "$NODE_DIR/serve_turns.mjs" &&
    ok || bad "6 turns with the mtp drafter"
# the drafter ran: its stage's messages on the served pipeline
n=$(metric "$ON" 'sluice_stage_messages_total{stage="mtp",index="[0-9]*"}')
[ "${n:-0}" -gt 0 ] && ok || bad "no mtp stage in the served pipeline (messages: '${n:-}')"
finish
