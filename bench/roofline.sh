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

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "roofline: $*" >&2
  exit 1
}

[[ $# -ge 2 ]] || usage
[[ $1 == -h || $1 == --help ]] && usage
root=$(cd "$(dirname "$0")/.." && pwd)
lcpp_dir=$1
shift
THREADS=${THREADS:-2}
REPS=${REPS:-3}
GEN=${GEN:-64}
SLUICE=${SLUICE:-$root/build/sluice}
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, not '$THREADS'"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer, not '$REPS'"
[[ $GEN =~ ^[1-9][0-9]*$ ]] || die "GEN must be a positive integer, not '$GEN'"
llama_bench=
for c in "$lcpp_dir/bin/llama-bench" "$lcpp_dir/llama-bench"; do
  [[ -x $c ]] && llama_bench=$c && break
done
[[ -n $llama_bench ]] || die "no llama-bench in $lcpp_dir/bin or $lcpp_dir"
[[ -x $SLUICE ]] || die "$SLUICE: no sluice binary (build it, or set SLUICE)"
for m in "$@"; do
  [[ -f $m && -r $m ]] || die "$m: no such readable file"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

best() { awk 'NF { if (!n++ || $1 > m) m = $1 } END { if (n) printf "%.2f\n", m; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }

# llama_best MODEL: "pp512 tg" (tok/s, best samples), or "- -"
llama_best() {
  # ik_llama.cpp repacks at load only when asked (-rtr 1), which doubles its
  # decode on this CPU; its llama-bench takes one -rtr value a run, so run
  # both settings and keep the best of each figure, as for sluice
  local settings=("")
  "$llama_bench" --help 2>&1 | grep -q -- '--run-time-repack' && settings=("-rtr 0" "-rtr 1")
  local i=0 s outs=()
  for s in "${settings[@]}"; do
    i=$((i + 1))
    # -o json: ik_llama.cpp's llama-bench has no jsonl
    # shellcheck disable=SC2086
    if ! "$llama_bench" -m "$1" -t "$THREADS" -p 512 -n "$GEN" -r "$REPS" $s -o json \
      >"$work/lb$i.json" 2>"$work/lb.err"; then
      echo "roofline: llama-bench ${s:+($s) }failed on $1:" >&2
      tail -3 "$work/lb.err" >&2
      continue
    fi
    outs+=("$work/lb$i.json")
  done
  if [[ ${#outs[@]} -eq 0 ]]; then
    echo "- -"
    return
  fi
  /usr/bin/python3 - "$GEN" "${outs[@]}" <<'PY'
import json, sys
runs = [r for f in sys.argv[2:] for r in json.load(open(f))]
def best(p, g):
    s = [max(r["samples_ts"]) for r in runs if r["n_prompt"] == p and r["n_gen"] == g]
    return "%.2f" % max(s) if s else "-"
print(best(512, 0), best(0, int(sys.argv[1])))
PY
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
