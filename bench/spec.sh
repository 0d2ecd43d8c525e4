#!/usr/bin/env bash
# Speculative decoding on the shipped tiny target + draft: acceptance rate,
# mean accepted length and effective decode speed-up over plain decoding
# (both measured in the same invocation, --spec-baseline), for k = 2, 4, 8
# and auto, greedy and temperature 0.8, and prompt lookup on a prompt that
# repeats text; Gemma 4's assistant drafter on a synthetic gemma4 pair. One
# row per setting, averaged over the prompts.
# Each prompt runs REPS times (plain then speculative each time); the row
# averages all of them, which evens out a noisy machine.
#   bench/spec.sh [N_TOKENS=200] [THREADS=2] [REPS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
THREADS=${2:-2}
REPS=${3:-3}
SLUICE=${SLUICE:-build/sluice}
TARGET=models/tiny-gemma3.gguf
DRAFT=models/tiny-gemma3-draft.gguf
prompts=("This program is free software; you can"
         "Licensed under the Apache License, Version 2.0 (the"
         "Permission is hereby granted, free of charge, to any person obtaining")
# the model continues the last line with the passage the prompt opens with,
# which prompt lookup finds
repeat="$(printf 'it under the terms of the GNU General Public License as published by\n    the Free Software Foundation; either version 2 of the License, or\n    (at your option) any later version.\n\n    This program is distributed in the hope that it will be useful,\n    but WITHOUT ANY WARRANTY; without even the implied warranty of\n\nThis program is free software; you can redistribute it and/or modify\n    ')"

row() { # NAME TEMP ARGS... -- PROMPTS...
  local name=$1 temp=$2
  shift 2
  local args=()
  while [[ $1 != -- ]]; do args+=("$1"); shift; done
  shift
  local acc=0 len=0 eff=0 base=0 n=0
  for p in "$@"; do
   for ((rep = 0; rep < REPS; rep++)); do
    out=$("$SLUICE" run -m "$TARGET" -p "$p" -n "$N" -t "$THREADS" --temp "$temp" --spec-baseline \
          "${args[@]}" 2>&1 >/dev/null)
    acc=$(awk -v a="$acc" '/^acceptance rate/ {sub("%","",$3); print a + $3}' <<<"$out")
    len=$(awk -v a="$len" '/^mean accepted/ {print a + $3}' <<<"$out")
    eff=$(awk -v a="$eff" '/^effective decode/ {print a + $3}' <<<"$out")
    base=$(awk -v a="$base" '/^plain decode/ {print a + $3}' <<<"$out")
    n=$((n + 1))
   done
  done
  awk -v name="$name" -v t="$temp" -v acc="$acc" -v len="$len" -v eff="$eff" -v base="$base" -v n="$n" \
    'BEGIN { printf "%-28s %5s %9.1f%% %9.2f %11.1f %11.1f %8.2fx\n", name, t, acc / n, len / n,
             eff / n, base / n, (base > 0 ? eff / base : 0) }'
}

# Gemma 4's assistant drafter (an mtp stage after sample) on the synthetic
# gemma4 test target and its synthetic assistant: random weights, so the
# rows show what the plumbing costs, not what a trained pair gains
pair=$(mktemp -d /tmp/spec-mtp.XXXXXX)
trap 'rm -rf "$pair"' EXIT
"$SLUICE" synth --arch gemma4 --size test --seed 5 --weight-scale 0.6 -o "$pair/t.gguf" >/dev/null 2>&1
"$SLUICE" synth --arch gemma4-assistant --size test -o "$pair/a.gguf" >/dev/null 2>&1

printf "%-28s %5s %10s %9s %11s %11s %9s\n" setting temp accepted "mean len" "spec tok/s" "plain tok/s" speed-up
for temp in 0 0.8; do
  for k in 2 4 8 auto; do
    row "draft k=$k" "$temp" --draft "$DRAFT" --draft-k "$k" -- "${prompts[@]}"
  done
  row "draft k=4 pipelined" "$temp" --draft "$DRAFT" --draft-k 4 --draft-threads 1 -- "${prompts[@]}"
  row "prompt lookup k=4 (repeat)" "$temp" --draft prompt-lookup --draft-k 4 -- "$repeat"
  row "prompt lookup auto (repeat)" "$temp" --draft prompt-lookup --draft-k auto -- "$repeat"
  for k in 1 3 auto; do
    TARGET=$pair/t.gguf row "gemma4 assistant k=$k (synth)" "$temp" --draft "$pair/a.gguf" --draft-k "$k" \
      -- "${prompts[@]}"
  done
done
