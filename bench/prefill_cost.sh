#!/usr/bin/env bash
# Builds bench/prefill_cost.c against a build's libsluice_core.a and runs it
# for each TYPE: prefill-shaped matmuls (512 tokens, Gemma 3 1B's FFN
# shapes) on the repacked weights, one thread, in CPU time.
#
# usage: bench/prefill_cost.sh [TYPE...]   (default: q4_0 q8_0 q5_0 q4_K q6_K)
# environment: BUILD (default build), TOKENS (512), REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
build_c bench/prefill_cost.c
[[ $# -gt 0 ]] || set -- q4_0 q8_0 q5_0 q4_K q6_K
for t in "$@"; do
  "$bin" "$t" "${TOKENS:-512}" "${REPS:-5}"
done
