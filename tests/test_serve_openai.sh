#!/bin/bash
# `sluice serve` driven by the openai npm package (tests/node): chat and
# completions, streamed and whole, stop, seed, usage, errors; greedy texts
# equal to `sluice run`.
set -u
source "$(dirname "$0")/serve_lib.sh"
NODE_DIR="$SRC/tests/node"
[ -d "$NODE_DIR/node_modules/openai" ] || { echo "FAIL: no $NODE_DIR/node_modules: run scripts/install-deps.sh"; exit 1; }
M="$SRC/models/tiny-gemma3.gguf"
KEY=sk-test-openai-0123456789
printf '%s\n' "$KEY" >"$T/key"
start_server main -m "$M" --api-key-file "$T/key"
PROMPT="Licensed under the Apache License, Version 2.0 (the"
WANT_CHAT=$("$SLUICE" run -m "$M" --chat -p "$PROMPT" -n 24 2>/dev/null)
WANT_TEXT=$("$SLUICE" run -m "$M" -p "$PROMPT" -n 16 2>/dev/null)
BASE_URL=$URL API_KEY=$KEY PROMPT=$PROMPT WANT_CHAT=$WANT_CHAT WANT_TEXT=$WANT_TEXT \
    timeout 300 node "$NODE_DIR/serve_openai.mjs" && ok || bad "the openai client's checks"
finish
