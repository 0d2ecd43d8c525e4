#!/usr/bin/env bash
# The example configs in configs/ run as shipped, with the shipped tiny model
# their relative paths name, and give exactly the greedy tokens of the plain
# one-process run (configs/two-host.yaml needs two hosts: test_pipeline_netns.sh).
set -u
SLUICE=$(readlink -f "${SLUICE:-build/sluice}")
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
MODEL=$SRC/models/tiny-gemma3.gguf
. "$(dirname "$0")/lib/check.sh"
prompts=("This program is free software; you can"
         "Licensed under the Apache License, Version 2.0 (the"
         "THIS SOFTWARE IS PROVIDED BY THE REGENTS AND CONTRIBUTORS")
cd "$SRC/configs" || exit 1
for cfg in one-process.yaml two-process.yaml auto-layers.yaml; do
  for p in "${prompts[@]}"; do
    want=$("$SLUICE" run -m "$MODEL" -p "$p" -n 48 --print-ids 2>&1 >/dev/null | ids)
    got=$("$SLUICE" run -c "$cfg" -p "$p" -n 48 --print-ids 2>&1 >/dev/null | ids)
    if [[ -n $want && "$want" == "$got" ]]; then ok; else bad "$cfg: '$p': got [$got], want [$want]"; fi
  done
done
# no worker left behind by the two-process config
sleep 0.5
if pgrep -f "sluice-two-process/p1" >/dev/null; then bad "a spawned worker outlived its coordinator"; else ok; fi
finish test_configs
