#!/usr/bin/env bash
# Issue 17's targets in one run per model: sluice bench (prefill 512, decode,
# memory roofline, share of the VNNI int8 peak, a 5-token verification step
# against one decode step) beside ik_llama.cpp's / llama.cpp's llama-bench on
# the same file and thread count, interleaved model by model so both see the
# same machine. Every figure is the best of REPS runs.
#
# usage: bench/roofline.sh LLAMA_CPP_BUILD_DIR MODEL.gguf [MODEL.gguf...]
#
# environment:
#   THREADS   threads for both engines (default 2)
#   REPS      repetitions (default 3)
#   GEN       decode steps per run (default 64)
#   SLUICE    the sluice binary (default build/sluice of this tree)
# Take `flock /tmp/sluice-bench.lock` around it on a shared machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $# -ge 2 ]] || usage
[[ $1 == -h || $1 == --help ]] && usage
lcpp_dir=$1
shift
THREADS=${THREADS:-2}
REPS=${REPS:-3}
GEN=${GEN:-64}
SLUICE=${SLUICE:-$root/build/sluice}
need_count THREADS "$THREADS"
need_count REPS "$REPS"
need_count GEN "$GEN"
find_llama_bench "$lcpp_dir"
need_sluice_and_models "$@"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# llama_best MODEL: "pp512 tg" (tok/s, best samples), or "- -"
llama_best() {
  llama_bench_best "$1" "512:0 0:$GEN" -t "$THREADS" -p 512 -n "$GEN" -r "$REPS"
}

# sluice_best MODEL: "pp512 tg roofline% compute% verify_x" from sluice bench --json
sluice_best() {
  if ! "$SLUICE" bench -m "$1" -t "$THREADS" -p 512 -n "$GEN" -r "$REPS" --verify 5 --json \
    >"$work/sb.json" 2>"$work/sb.err"; then
    echo "roofline: sluice bench failed on $1:" >&2
    tail -3 "$work/sb.err" >&2
    echo "- - - - -"
    return
  fi
  /usr/bin/python3 - "$work/sb.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print("%.2f %.2f %.1f %.1f %.2f" % (j["prefill_tok_s"], j["decode_tok_s"], j["roofline_pct"],
      j.get("prefill_compute_pct", 0), j.get("verify_vs_decode", 0)))
EOF
}

row() { printf '%-28s %-8s %9s %9s %9s %9s %9s\n' "$@"; }
echo "threads $THREADS, best of $REPS, decode $GEN steps; tok/s; ratio = sluice / llama.cpp"
echo "llama-bench: $llama_bench"
echo
row model engine pp512 tg roof% vnni% verify5
for m in "$@"; do
  name=$(basename "$m")
  read -r lp lt < <(llama_best "$m")
  read -r sp st sr sc sv < <(sluice_best "$m")
  row "${name:0:28}" llama "$lp" "$lt" "" "" ""
  row "" sluice "$sp" "$st" "$sr" "$sc" "${sv}x"
  row "" ratio "$(ratio "$sp" "$lp")" "$(ratio "$st" "$lt")" "" "" ""
done
