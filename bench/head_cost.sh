#!/usr/bin/env bash
# Builds bench/head_cost.c against build/libsluice_core.a and times a
# model's output head as a decode step runs it (sl_matmul_packed, one token)
# beside the same one-token kernel on static parts of its rows and on a
# fresh copy of its packed weights, in wall time on THREADS threads. Run it
# under flock /tmp/sluice-bench.lock and chrt -f 20.
#
# usage: bench/head_cost.sh MODEL [THREADS [ROUNDS]]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[[ $# -ge 1 ]] || usage
build_c bench/head_cost.c
"$bin" "$@"
