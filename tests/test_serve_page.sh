#!/bin/bash
# The chat page of `sluice serve` in headless chromium (tests/node/serve_page.mjs):
# a streamed answer read from the DOM equals `sluice run --chat`; the stop
# button cancels a long answer in the server (nothing left in flight); a
# screenshot goes to the build folder (serve_page.png).
set -u
source "$(dirname "$0")/serve_lib.sh"
NODE_DIR="$SRC/tests/node"
[ -d "$NODE_DIR/node_modules/playwright-core" ] || { echo "FAIL: no $NODE_DIR/node_modules: run scripts/install-deps.sh"; exit 1; }
[ -x /usr/bin/chromium ] || { echo "FAIL: no /usr/bin/chromium: run scripts/install-deps.sh"; exit 1; }
M="$SRC/models/tiny-gemma3.gguf"
# (--ctx: room for the long answer the stop button ends, which must not
# end by itself first however slow the browser is)
start_server page -m "$M" --ctx 32768
PROMPT="Licensed under the Apache License, Version 2.0 (the"
WANT=$("$SLUICE" run -m "$M" --chat -p "$PROMPT" -n 24 2>/dev/null)
SHOT="${SLUICE_BUILD:-$T}/serve_page.png"
BASE_URL=$URL PROMPT=$PROMPT WANT=$WANT SHOT=$SHOT HOME="$T" timeout 800 node "$NODE_DIR/serve_page.mjs" \
    && ok || bad "the page's checks"
[ -s "$SHOT" ] && ok || bad "no screenshot"
wait_metric "$URL" sluice_client_requests_in_flight 0 && ok || bad "the stopped answer is still in flight"
# a stop the server ignored lets the answer run on to its 30000 tokens: if
# that ended within wait_metric's wait, the count shows it
t=$(metric "$URL" sluice_server_tokens_total)
[ -n "$t" ] && [ "$t" -lt 30000 ] && ok || bad "the stopped answer ran on: $t tokens in all (max_tokens 30000)"
finish
