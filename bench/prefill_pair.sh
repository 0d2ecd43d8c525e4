#!/usr/bin/env bash
# Pairs two builds' prefill-shaped matmuls (bench/prefill_cost.c, 512 tokens
# of Gemma 3 1B's FFN shapes, one thread in CPU time) run by run: each round
# runs both builds pinned to each CPU in turn, and the best of the rounds is
# printed per CPU, build and shape. Pinned, because on the 2-vCPU Zen 5
# machine one CPU ran these kernels up to a fifth slower than the other (the
# VNNI peak alike on both), which CPU that was changed from hour to hour, and
# an unpinned run landed where the scheduler put it: two builds of the same
# kernel alternating unpinned measured 15% apart. Take the benchmark lock and
# chrt as for any compute-bound run.
#
# usage: bench/prefill_pair.sh OTHER [TYPE...]   (default: q4_0 q8_0)
# OTHER: the second build's libsluice_core.a, or a build directory holding
# one (e.g. a copy of main's library kept before changing a kernel)
# environment: BUILD (default build: the first of the pair), ROUNDS (4),
# REPS (3, best of a run), TOKENS (512), CPUS (0 1), SHAPE ("N_OUT N_IN",
# default both FFN shapes)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
[[ $# -ge 1 ]] || usage
other=$1
shift
[[ -d $other ]] && other=$other/libsluice_core.a
[[ -f $other ]] || die "$other: no such library (build it first)"
rounds=${ROUNDS:-4} reps=${REPS:-3} tokens=${TOKENS:-512}
need_count ROUNDS "$rounds"
need_count REPS "$reps"
need_count TOKENS "$tokens"
build_c bench/prefill_cost.c
bin_a=$bin
bin_b=$(mktemp)
trap 'rm -f "$bin_a" "$bin_b"' EXIT
# the second program as build_c makes the first, on OTHER's library
libs=$(ninja -C "${BUILD:-build}" -t commands sluice | tail -1 | tr ' ' '\n' | grep -E '^-l|\.so$' | tr '\n' ' ')
# shellcheck disable=SC2086
g++ -O2 -I. -I"${BUILD:-build}" -x c -std=gnu17 bench/prefill_cost.c -x none "$other" $libs \
  -lpthread -lm -o "$bin_b"
[[ $# -gt 0 ]] || set -- q4_0 q8_0
# shellcheck disable=SC2206 # the shape is two numbers
shape=(${SHAPE:-})
for t in "$@"; do
  echo "$t: best of $rounds rounds of $reps, GOP/s, one thread pinned (a: ${BUILD:-build}, b: $other)"
  for ((r = 0; r < rounds; r++)); do
    for c in ${CPUS:-0 1}; do
      for v in a b; do
        b=bin_$v
        taskset -c "$c" "${!b}" "$t" "$tokens" "$reps" 1 "${shape[@]}" |
          awk -v k="cpu$c $v" '/GOP/ { print k, $1, $(NF-1) }'
      done
    done
  done | awk '{ k = $1 " " $2 " " $3; if (!(k in m) || $4 > m[k]) m[k] = $4 }
              END { for (k in m) print "  " k, m[k] }' | sort
done
