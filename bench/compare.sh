#!/usr/bin/env bash
# Side-by-side speed of llama.cpp and sluice on the same GGUF files, run one
# after the other on this machine with the same thread count.
#
# usage: bench/compare.sh LLAMA_CPP_BUILD_DIR MODEL.gguf [MODEL.gguf...]
#
# LLAMA_CPP_BUILD_DIR is a llama.cpp CMake build directory holding
# llama-bench (in bin/ or at its top). llama.cpp is not part of this project:
# build it yourself, outside this tree.
#
# For each model it measures prefill of 128 and 512 tokens and decode of 64
# tokens: llama-bench -p 128,512 -n 64 -r REPS, and `sluice run` REPS times
# per measure; every figure is the best of its REPS runs (the machine is
# shared, so the best run is the least disturbed one). Ratios are
# sluice / llama.cpp: above 1 means sluice is faster.
#
# environment:
#   THREADS   threads for both engines (default 2)
#   REPS      repetitions of every measure (default 3)
#   SLUICE    the sluice binary (default build/sluice of this tree)
#   POLICIES  OMP_WAIT_POLICY values sluice runs under, space-separated;
#             "default" leaves it unset (default: "default passive")
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
SLUICE=${SLUICE:-$root/build/sluice}
POLICIES=${POLICIES:-default passive}
need_count THREADS "$THREADS"
need_count REPS "$REPS"
find_llama_bench "$lcpp_dir"
need_sluice_and_models "$@"
for p in $POLICIES; do
  [[ $p == default || $p == passive || $p == active ]] ||
    die "POLICIES: '$p' is not one of default, passive, active"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# llama_bench_best_of MODEL: prints "pp128 pp512 tg64", each the best sample.
llama_bench_best_of() {
  llama_bench_best "$1" "128:0 512:0 0:64" -t "$THREADS" -p 128,512 -n 64 -r "$REPS"
}

# the_prompt N: N-1 words "the"; sentencepiece vocabularies (Gemma, Llama and
# sluice synth's) make that N tokens with BOS. run_sluice checks the count.
the_prompt() {
  local i s=the
  for ((i = 2; i < $1; i++)); do s+=" the"; done
  printf '%s' "$s"
}

# sluice_once POLICY MODEL PROMPT N_PREDICT: runs sluice, leaves its stderr in
# $work/sluice.err, prints nothing.
sluice_once() {
  local policy=$1 model=$2 prompt=$3 n=$4
  local -a env_cmd=(env -u OMP_WAIT_POLICY)
  [[ $policy != default ]] && env_cmd=(env OMP_WAIT_POLICY="$policy")
  if ! "${env_cmd[@]}" "$SLUICE" run -m "$model" -t "$THREADS" -p "$prompt" -n "$n" \
    >/dev/null 2>"$work/sluice.err"; then
    echo "compare: sluice run failed on $model:" >&2
    tail -5 "$work/sluice.err" >&2
    return 1
  fi
}

# sluice's stderr: "prefill  X tok/s", "decode  X tok/s", "prompt tokens  N",
# "generated tokens  N (stop: ...)"
stat_of() { awk -v k="$1" '$1 == k && $3 == "tok/s" { print $2; exit }' "$work/sluice.err"; }
count_of() { awk -v k="$1" '$1 == k && $2 == "tokens" { print $3; exit }' "$work/sluice.err"; }

# sluice_best POLICY MODEL: prints "pp128 pp512 tg64", each the best of REPS.
sluice_best() {
  local policy=$1 model=$2 n_tok got r vals col
  for n_tok in 128 512; do
    vals=
    for ((r = 0; r < REPS; r++)); do
      sluice_once "$policy" "$model" "$(the_prompt $n_tok)" 1 || break
      got=$(count_of prompt)
      [[ $got == "$n_tok" ]] || echo "compare: note: the $n_tok-token prompt is $got tokens for sluice on $model" >&2
      vals+="$(stat_of prefill)"$'\n'
    done
    col=$(printf '%s' "$vals" | best)
    printf '%s ' "$col"
  done
  vals=
  for ((r = 0; r < REPS; r++)); do
    sluice_once "$policy" "$model" "The" 65 || break
    got=$(count_of generated)
    [[ $got == 65 ]] || echo "compare: note: sluice stopped after $got tokens on $model (EOS?)" >&2
    vals+="$(stat_of decode)"$'\n'
  done
  col=$(printf '%s' "$vals" | best)
  echo "$col"
}

row() { printf '%-34s %-18s %10s %10s %10s\n' "$@"; }

echo "threads $THREADS, best of $REPS; tok/s; ratio = sluice / llama.cpp"
echo "llama-bench: $llama_bench"
echo "sluice:      $SLUICE"
echo
row model engine pp128 pp512 tg64
for m in "$@"; do
  name=$(basename "$m")
  read -r l128 l512 lt < <(llama_bench_best_of "$m")
  row "${name:0:34}" llama.cpp "$l128" "$l512" "$lt"
  for p in $POLICIES; do
    label=sluice
    [[ $p != default ]] && label="sluice ($p)"
    read -r s128 s512 st < <(sluice_best "$p" "$m" || echo "- - -")
    row "" "$label" "$s128" "$s512" "$st"
    row "" "  ratio" "$(ratio "$s128" "$l128")" "$(ratio "$s512" "$l512")" "$(ratio "$st" "$lt")"
  done
done
