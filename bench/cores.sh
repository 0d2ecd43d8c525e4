#!/usr/bin/env bash
# Cores (issue 16): configs/two-process.yaml on the shipped tiny model with
# default threads, its processes on disjoint cores (this build) against the
# same processes left on every CPU (BEFORE: a sluice binary without the
# split), and the one-process run, for 1 prompt and 200 prompts. All in one
# run, alternating, best of REPS: the numbers are ratios on a shared machine.
# usage: BEFORE=/path/to/old/sluice bench/cores.sh [REPS=3] [TOKENS=128] [PROMPTS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=$(readlink -f "${SLUICE:-build/sluice}")
BEFORE=${BEFORE:?set BEFORE to a sluice binary that does not split cores}
REPS=${1:-3}
N=${2:-128}
MANY=${3:-200}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp configs/two-process.yaml "$work/two.yaml"
sed -i "s|\.\./models/|$PWD/models/|; s|/tmp/sluice-two-process/|$work/|" "$work/two.yaml"
for i in $(seq "$MANY"); do echo "prompt number $i of the benchmark, about licences and foxes"; done >"$work/many.txt"
echo "The quick brown fox jumps over the lazy dog" >"$work/one.txt"

# tok/s BINARY PROMPTS ARGS...: the decode rate the run reports (one
# request: its decode line; several: the aggregate)
rate() {
  local bin=$1 prompts=$2
  shift 2
  "$bin" run "$@" --prompts "$prompts" -n "$N" 2>&1 >/dev/null |
    sed -n 's/.*: \([0-9.]*\) tok\/s aggregate.*/\1/p; s/^decode  *\([0-9.]*\) tok\/s.*/\1/p' | tail -1
}
best() { sort -g | tail -1; }
printf '%-10s %12s %12s %12s\n' prompts "one-proc" "2p before" "2p after"
for p in one many; do
  one=() before=() after=()
  for _ in $(seq "$REPS"); do
    one+=("$(rate "$SLUICE" "$work/$p.txt" -m models/tiny-gemma3.gguf)")
    before+=("$(rate "$BEFORE" "$work/$p.txt" -c "$work/two.yaml")")
    after+=("$(rate "$SLUICE" "$work/$p.txt" -c "$work/two.yaml")")
  done
  printf '%-10s %12s %12s %12s\n' "$p" "$(printf '%s\n' "${one[@]}" | best)" \
    "$(printf '%s\n' "${before[@]}" | best)" "$(printf '%s\n' "${after[@]}" | best)"
done
