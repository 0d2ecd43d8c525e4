#!/usr/bin/env bash
# Builds kernels/matmul_r16d_avx512.c once for each SETTING (its -D flags,
# e.g. 'pf8k=-DR16D_PF_Q4_0=8192') beside bench/stream_cost.c, against a
# build's libsluice_core.a, and runs the settings paired: two threads each
# streaming half of one repacked matrix of TYPE (MB megabytes, default 96)
# through the one-token kernel, and a plain read of the same bytes.
# Run it under flock /tmp/sluice-bench.lock and chrt -f 20.
#
# usage: bench/stream_cost.sh TYPE N_IN SETTING...
# environment: BUILD (default build), MB (96), ROUNDS (15)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[[ $# -ge 3 ]] || usage
type=$1 n_in=$2
shift 2
build=${BUILD:-build}
[[ -f $build/libsluice_core.a ]] || die "build first (scripts/build.sh)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
isa=(-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mavx2 -mfma -mf16c)
table=$work/table.c
echo '#include "kernels/matmul_internal.h"' >"$table"
echo 'typedef struct { const char *name; sl_r16_fn (*get)(sl_type); } stream_variant;' >>"$table"
objs=() i=0 names=()
for s in "$@"; do
  name=${s%%=*} flags=${s#*=}
  [[ $s == *=* ]] || flags=
  # shellcheck disable=SC2086 # the setting's flags are separate arguments
  gcc -O2 -std=gnu17 -Wall -Wextra -Werror "${isa[@]}" -I. -I"$build" $flags \
    -Dsl_r16_one_avx512=stream_one_$i -c kernels/matmul_r16d_avx512.c -o "$work/v$i.o"
  echo "sl_r16_fn stream_one_$i(sl_type);" >>"$table"
  objs+=("$work/v$i.o") names+=("$name")
  i=$((i + 1))
done
{
  echo 'const stream_variant stream_variants[] = {'
  for ((k = 0; k < i; k++)); do echo "  {\"${names[k]}\", stream_one_$k},"; done
  echo '};'
  echo "const int n_stream_variants = $i;"
} >>"$table"
gcc -O2 -std=gnu17 "${isa[@]}" -I. -I"$build" -c "$table" -o "$work/table.o"
libs=$(ninja -C "$build" -t commands sluice | tail -1 | tr ' ' '\n' | grep -E '^-l|\.so$' | tr '\n' ' ')
# shellcheck disable=SC2086
g++ -O2 -I. -I"$build" -x c -std=gnu17 "${isa[@]}" bench/stream_cost.c -x none "${objs[@]}" \
  "$work/table.o" "$build/libsluice_core.a" $libs -lpthread -lm -o "$work/stream_cost"
"$work/stream_cost" "$type" "$n_in" "${MB:-96}" "${ROUNDS:-15}"
