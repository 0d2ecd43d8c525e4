#!/usr/bin/env bash
# The main job: install dependencies, build, and generate text with the
# shipped tiny Gemma 3 model (continuing a licence text it memorised).
# Extra arguments go to `sluice run` (e.g. -p "..." -n 64).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
MODEL=models/tiny-gemma3.gguf
if [[ $# -eq 0 ]]; then
  set -- -p "This program is free software; you can" -n 96
fi
exec build/sluice run -m "$MODEL" "$@"
