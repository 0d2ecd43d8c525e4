#!/usr/bin/env bash
# Builds bench/attn_cost.c against build/libsluice_core.a and runs it: one
# layer's attention spans for a K-token verification at position POS
# against a decode step's, on one thread in CPU time (Gemma 3 1B's shape).
#
# usage: bench/attn_cost.sh [POS [K [R [COLD]]]]   (default 576 5 30 1; COLD 0: keys in cache)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
build_c bench/attn_cost.c
"$bin" "$@"
