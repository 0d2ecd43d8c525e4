#!/bin/bash
# Load on `sluice serve`: 32 concurrent openai clients x 4 greedy requests,
# against the one-process pipeline and a two-process split
# (configs/two-process.yaml), every text equal to a solo `sluice run`.
set -u
source "$(dirname "$0")/serve_lib.sh"
NODE_DIR="$SRC/tests/node"
[ -d "$NODE_DIR/node_modules/openai" ] || { echo "FAIL: no $NODE_DIR/node_modules: run scripts/install-deps.sh"; exit 1; }
M="$SRC/models/tiny-gemma3.gguf"
N=24
prompts=("Licensed under the Apache License, Version 2.0 (the" "This program is free software; you can redistribute it"
         "Permission is hereby granted" "THE SOFTWARE IS PROVIDED" "Mozilla Public License"
         "Everyone is permitted to copy and distribute verbatim copies" "Redistribution and use in source and binary forms"
         "The GNU Lesser General Public License")
/usr/bin/python3 - "$T/want.json" "$SLUICE" "$M" "$N" "${prompts[@]}" <<'PY' || { echo "FAIL: solo runs"; exit 1; }
import json, subprocess, sys
out, sluice, model, n, prompts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
want = {p: subprocess.run([sluice, "run", "-m", model, "-p", p, "-n", n], capture_output=True, text=True,
                          check=True).stdout.removesuffix("\n") for p in prompts}
json.dump(want, open(out, "w"))
PY
load() { # name
    BASE_URL=$URL WANT="$T/want.json" CLIENTS=32 ROUNDS=4 MAX_TOKENS=$N timeout 600 node "$NODE_DIR/serve_load.mjs" \
        && ok || bad "load on $1"
}
start_server one -m "$M" --slots 8
load one-process
kill -TERM "$PID"
sed -e "s|^model: .*|model: $M|" -e "s|/tmp/sluice-two-process|$T/ipc|g" "$SRC/configs/two-process.yaml" >"$T/two.yaml"
start_server two -c "$T/two.yaml"
load two-process
worker=$(pgrep -P "$PID" | head -1)
[ -n "$worker" ] && ok || bad "no spawned worker"
kill -TERM "$PID"
for _ in $(seq 200); do
    kill -0 "$PID" 2>/dev/null || kill -0 "$worker" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$PID" 2>/dev/null && bad "the server outlived SIGTERM" || ok
kill -0 "$worker" 2>/dev/null && bad "the spawned worker outlived the server" || ok
finish
