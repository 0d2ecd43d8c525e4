#!/usr/bin/env bash
# Where Gemma 4's per-layer embeddings are gathered (limits.ple): at every
# layers stage from its own mapping of the table (local) or once at the
# embed stage, sent down the pipeline (embed). Prefill and decode tok/s of one
# sequence for 2 and 4 layer stages, in one process (inproc) and with the
# later stages in a spawned worker (ipc), side by side in one run, against
# plain `run -m`.
# usage: bench/ple.sh MODEL.gguf CUTS2 CUTS4 [THREADS=2] [TOKENS=32] [REPEAT=3]
#   each row is the best of REPEAT runs (prefill and decode separately)
#   CUTS2 / CUTS4: the layer boundaries, e.g. 13 and 4,8,13 (gemma4 e2b: a
#   cut may not fall inside the KV-sharing layers)
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-build/sluice}
MODEL=$(readlink -f "$1")
CUTS2=$2
CUTS4=$3
THREADS=${4:-2}
N=${5:-32}
REPEAT=${6:-3}
n_layer=$("$SLUICE" inspect "$MODEL" --no-tensors | awk '$1 == "layers" && $2 ~ /^[0-9]+$/ {print $2; exit}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PROMPT="The quick brown fox jumps over the lazy dog while the licence text says that the software is provided as is, without warranty of any kind, express or implied, including but not limited to the warranties of merchantability, fitness for a particular purpose and noninfringement. In no event shall the authors or copyright holders be liable for any claim"

# config NAME CUTS PROCS PLE
config() {
  local name=$1 cuts=$2 procs=$3 ple=$4 f=$work/$1.yaml
  IFS=, read -r -a cut <<<"$cuts"
  local bounds=(0 "${cut[@]}" "$n_layer") n=$((${#cut[@]} + 1))
  {
    echo "model: $MODEL"
    echo "nodes:"
    echo "  - {name: local, address: ipc://$work/$name-local}"
    ((procs > 1)) && echo "  - {name: w1, address: ipc://$work/$name-w1, spawn: true}"
    echo "stages:"
    echo "  - kind: embed"
    local i node
    for ((i = 0; i < n; i++)); do
      node=local
      ((procs > 1 && i >= n / 2)) && node=w1
      echo "  - {kind: layers, layers: [${bounds[i]}, ${bounds[i + 1]}], node: $node}"
    done
    node=local
    ((procs > 1)) && node=w1
    echo "  - {kind: head, node: $node}"
    echo "  - {kind: sample, node: $node}"
    echo "limits: {max_sequences: 2, context: 1024, max_batch_tokens: 512, ple: $ple}"
  } >"$f"
  echo "$f"
}

rates() { awk '/^prefill/ && $2 > p {p = $2} /^decode/ && $2 > d {d = $2} END {printf "%8.2f %8.2f", p, d}'; }
# best of REPEAT runs of: sluice run ARGS...
best() { for ((r = 0; r < REPEAT; r++)); do "$SLUICE" run "$@" -p "$PROMPT" -n "$N" -t "$THREADS" 2>&1 >/dev/null; done | rates; }

echo "model $MODEL ($n_layer layers), $THREADS threads, $N tokens"
printf "  %-40s %8s %8s\n" "" prefill decode
printf "  %-40s %s\n" "run -m (one process, 1 stage)" \
  "$(best -m "$MODEL")"
for spec in "2 $CUTS2 1" "2 $CUTS2 2" "4 $CUTS4 1" "4 $CUTS4 2"; do
  set -- $spec
  for ple in local embed; do
    cfg=$(config "s$1p$3$ple" "$2" "$3" "$ple")
    printf "  %-40s %s\n" "$1 layer stages, $3 process(es), ple: $ple" \
      "$(best -c "$cfg")"
  done
done
