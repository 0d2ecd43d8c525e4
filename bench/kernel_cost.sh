#!/usr/bin/env bash
# Builds bench/kernel_cost.c against build/libsluice_core.a and runs it for
# each TYPE, repacked and with SLUICE_REPACK=0 (the row kernels), on one
# thread in CPU time: the kernels' own cost, readable on a busy machine.
#
# usage: bench/kernel_cost.sh [TYPE...]   (default: q4_0 q4_1 q5_0 q5_1 q8_0)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
build_c bench/kernel_cost.c -fopenmp
[[ $# -gt 0 ]] || set -- q4_0 q4_1 q5_0 q5_1 q8_0
for t in "$@"; do
  "$bin" "$t"
  SLUICE_REPACK=0 "$bin" "$t"
done
