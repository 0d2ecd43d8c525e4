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
start_server page -m "$M"
PROMPT="Licensed under the Apache License, Version 2.0 (the"
WANT=$("$SLUICE" run -m "$M" --chat -p "$PROMPT" -n 24 2>/dev/null)
SHOT="${SLUICE_BUILD:-$T}/serve_page.png"
BASE_URL=$URL PROMPT=$PROMPT WANT=$WANT SHOT=$SHOT HOME="$T" timeout 300 node "$NODE_DIR/serve_page.mjs" \
    && ok || bad "the page's checks"
[ -s "$SHOT" ] && ok || bad "no screenshot"
wait_metric "$URL" sluice_client_requests_in_flight 0 && ok || bad "the stopped answer is still in flight"
finish
