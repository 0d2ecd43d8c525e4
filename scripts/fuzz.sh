#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) in build-fuzz/ and
# runs each for a bounded time on a scratch copy of its committed corpus.
#   scripts/fuzz.sh [SECONDS_EACH=20]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DSLUICE_FUZZ=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=()
for src in tests/fuzz/fuzz_*.c; do
  targets+=("$(basename "${src%.c}")")
done
# ninja prints a failed compile on stdout: show it, or the run ends silent
if ! out=$(ninja -C build-fuzz -j"$(nproc)" "${targets[@]}" 2>&1); then
  grep -v '^\[' <<<"$out" | tail -60 >&2
  echo "fuzz: building the fuzz targets with clang failed" >&2
  exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  mkdir -p "$scratch/$name"
  if [[ -d tests/fuzz/corpus-$name ]]; then
    cp -r tests/fuzz/corpus-"$name"/. "$scratch/$name/"
  fi
  echo "fuzz: $t for ${SECONDS_EACH}s" >&2
  if ! build-fuzz/"$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$scratch/$name-" "$scratch/$name" >"$scratch/$name.log" 2>&1; then
    tail -40 "$scratch/$name.log" >&2
    echo "fuzz: $t found a failure (artifacts were in $scratch)" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units" "$scratch/$name.log" | tail -1 >&2 || true
done
