#!/usr/bin/env bash
# Builds bench/prefill_cost.c against a build's libsluice_core.a and runs it
# for each TYPE: prefill-shaped matmuls (512 tokens, Gemma 3 1B's FFN
# shapes) on the repacked weights, one thread, in CPU time.
#
# usage: bench/prefill_cost.sh [TYPE...]   (default: q4_0 q8_0 q5_0 q4_K q6_K)
# environment: BUILD (default build), TOKENS (512), REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
[[ -f $build/libsluice_core.a ]] || { echo "prefill_cost: build first (scripts/build.sh)" >&2; exit 1; }
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
libs=$(ninja -C "$build" -t commands sluice | tail -1 | tr ' ' '\n' | grep -E '^-l|\.so$' | tr '\n' ' ')
gcc -O2 -I. -I"$build" -std=gnu17 bench/prefill_cost.c "$build/libsluice_core.a" $libs -lpthread -lm -o "$bin"
[[ $# -gt 0 ]] || set -- q4_0 q8_0 q5_0 q4_K q6_K
for t in "$@"; do
  "$bin" "$t" "${TOKENS:-512}" "${REPS:-5}"
done
