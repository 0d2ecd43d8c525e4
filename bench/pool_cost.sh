#!/usr/bin/env bash
# Builds bench/pool_cost.c against build/libsluice_core.a and runs it: a
# one-token matmul's wall time on 1 and 2 threads of the pool by its work
# (multiply-adds), to place SL_POOL_MIN_WORK_DEFAULT (util/pool.h).
#
q4_0]|q4_0]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/libsluice_core.a ]] || { echo "pool_cost: build first (scripts/build.sh)" >&2; exit 1; }
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
libs=$(ninja -C build -t commands sluice | tail -1 | tr ' ' '\n' | grep -E '^-l|\.so$' | tr '\n' ' ')
g++ -O2 -I. -Ibuild -x c -std=gnu17 bench/pool_cost.c -x none build/libsluice_core.a \
    $libs -lpthread -o "$bin"
"$bin" "$@"
