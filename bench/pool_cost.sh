#!/usr/bin/env bash
# Builds bench/pool_cost.c against build/libsluice_core.a and runs it: a
# one-token matmul's wall time on 1 and 2 threads of the pool by its work
# (multiply-adds), to place SL_POOL_MIN_WORK_DEFAULT (util/pool.h).
#
# usage: bench/pool_cost.sh [bf16|q4_0] [TOKENS=1]   (default: both types)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
build_c bench/pool_cost.c
"$bin" "$@"
