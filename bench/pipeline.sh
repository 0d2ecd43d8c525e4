#!/usr/bin/env bash
# Pipeline benchmarks (issue: pipeline runtime). Everything in one run, so
# the numbers are ratios measured side by side on this (shared) machine:
#   (a) decode tok/s of one sequence with 1, 2 and 4 layer stages, in one
#       process and as separate processes over ipc, against plain `run -m`;
#   (b) aggregate tok/s with 1, 4 and 8 concurrent sequences;
#   (c) per-hop latency of a 1-row decode message over inproc, ipc and tcp
#       (bench/wire_latency.c).
# usage: bench/pipeline.sh [MODEL.gguf] [THREADS=2] [TOKENS=64]
# Without MODEL a synthetic gemma3 1b q4_0 is made in /tmp (once).
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-build/sluice}
MODEL=${1:-}
THREADS=${2:-2}
N=${3:-64}
[[ -x $SLUICE ]] || { echo "bench: $SLUICE not built (scripts/build.sh)" >&2; exit 2; }
if [[ -z $MODEL ]]; then
  MODEL=/tmp/sluice-bench-gemma3-1b-q4_0.gguf
  [[ -f $MODEL ]] || "$SLUICE" synth --arch gemma3 --size 1b --type q4_0 -o "$MODEL" >&2
fi
MODEL=$(readlink -f "$MODEL")
n_layer=$("$SLUICE" inspect "$MODEL" --no-tensors | awk '$1 == "layers" && $2 ~ /^[0-9]+$/ {print $2; exit}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PROMPT="The quick brown fox jumps over the lazy dog while the licence text says that"

# config NAME STAGES PROCS: STAGES layer stages split evenly; PROCS 1 keeps
# them in this process, 2 puts the second half in a spawned worker.
config() {
  local name=$1 stages=$2 procs=$3 f=$work/$1.yaml
  {
    echo "model: $MODEL"
    echo "nodes:"
    echo "  - name: local"
    echo "    address: ipc://$work/$name-local"
    if ((procs > 1)); then
      echo "  - name: w1"
      echo "    address: ipc://$work/$name-w1"
      echo "    spawn: true"
    fi
    echo "stages:"
    echo "  - kind: embed"
    local l0=0 i node
    for ((i = 0; i < stages; i++)); do
      local l1=$(((i + 1) * n_layer / stages))
      node=local
      ((procs > 1 && i >= stages / 2)) && node=w1
      echo "  - {kind: layers, layers: [$l0, $l1], node: $node}"
      l0=$l1
    done
    node=local
    ((procs > 1)) && node=w1
    echo "  - {kind: head, node: $node}"
    echo "  - {kind: sample, node: $node}"
    echo "limits: {max_sequences: 8, context: 512, max_batch_tokens: 512}"
  } >"$f"
  echo "$f"
}

decode_rate() { awk '/^decode/ {print $2}'; }

echo "model $MODEL ($n_layer layers), $THREADS threads, $N tokens"
echo
echo "(a) one sequence: decode tok/s"
base=$("$SLUICE" run -m "$MODEL" -p "$PROMPT" -n "$N" -t "$THREADS" 2>&1 >/dev/null | decode_rate)
printf "  %-34s %8.2f  1.00x\n" "run -m (one process, 1 stage)" "$base"
for spec in "1 1" "2 1" "4 1" "2 2" "4 2"; do
  set -- $spec
  cfg=$(config "s$1p$2" "$1" "$2")
  rate=$("$SLUICE" run -c "$cfg" -p "$PROMPT" -n "$N" -t "$THREADS" 2>&1 >/dev/null | decode_rate)
  printf "  %-34s %8.2f  %.2fx\n" "$1 layer stages, $2 process(es)" "$rate" "$(echo "$rate / $base" | bc -l)"
done
echo
echo "(b) concurrent sequences: aggregate tok/s (one process, 1 and 2 layer stages)"
for stages in 1 2; do
  cfg=$(config "agg$stages" "$stages" 1)
  for n_seq in 1 4 8; do
    : >"$work/prompts.txt"
    for ((i = 0; i < n_seq; i++)); do echo "$PROMPT number $i" >>"$work/prompts.txt"; done
    line=$("$SLUICE" run -c "$cfg" --prompts "$work/prompts.txt" -n "$N" -t "$THREADS" 2>&1 >/dev/null |
           grep aggregate || true)
    if ((n_seq == 1)); then
      line=$("$SLUICE" run -c "$cfg" -p "$PROMPT number 0" -n "$N" -t "$THREADS" 2>&1 >/dev/null | decode_rate)
      printf "  %d stage(s), %d sequence:  %s tok/s (decode)\n" "$stages" "$n_seq" "$line"
    else
      printf "  %d stage(s), %d sequences: %s\n" "$stages" "$n_seq" "$line"
    fi
  done
done
echo
echo "(c) per-hop latency of a 1-row decode message"
BUILD=$(dirname "$SLUICE")
cc -O2 -std=gnu17 -I. -I"$BUILD" bench/wire_latency.c "$BUILD/libsluice_core.a" \
   $(pkg-config --libs libzmq libprotobuf-c) -lm -lpthread -o "$work/wire_latency"
"$work/wire_latency" 5000
