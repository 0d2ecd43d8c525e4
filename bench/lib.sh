# What the bench scripts that set llama-bench beside sluice share: usage from
# the script's header comment, argument checks, finding llama-bench, and
# reading its JSON. Source it after `set -euo pipefail`; messages name the
# sourcing script.
# shellcheck shell=bash

bench_name=$(basename "$0" .sh)

# The script's header comment (line 2 down to `set -euo`) as its help.
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "$bench_name: $*" >&2
  exit 1
}

# need_count NAME VALUE: VALUE must be a positive integer.
need_count() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, not '$2'"
}

# find_llama_bench DIR: sets llama_bench to DIR/bin/llama-bench or
# DIR/llama-bench, whichever is executable.
find_llama_bench() {
  [[ -d $1 ]] || die "$1: not a directory (want a llama.cpp build directory)"
  llama_bench=
  local c
  for c in "$1/bin/llama-bench" "$1/llama-bench"; do
    [[ -x $c ]] && llama_bench=$c && break
  done
  [[ -n $llama_bench ]] || die "no llama-bench in $1/bin or $1 (build it: cmake --build $1 --target llama-bench)"
}

# need_sluice_and_models MODEL...: SLUICE is executable, every MODEL readable.
need_sluice_and_models() {
  [[ -x $SLUICE ]] || die "$SLUICE: no sluice binary (build it, or set SLUICE)"
  local m
  for m in "$@"; do
    [[ -f $m && -r $m ]] || die "$m: no such readable file"
  done
}

# max of the numbers on stdin, or "-" when there are none
best() { awk 'NF { if (!n++ || $1 > m) m = $1 } END { if (n) printf "%.2f\n", m; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }

# llama_bench_best MODEL "P:G ..." ARGS...: runs $llama_bench -m MODEL ARGS
# -o json (ik_llama.cpp's llama-bench has no jsonl) with its output in $work,
# and prints for each P:G the best sample's tok/s of the test with n_prompt P
# and n_gen G ("-" where there is none, and for all when llama-bench fails).
# ik_llama.cpp repacks at load only when asked (-rtr 1), which doubles its
# decode on AVX-512 machines; its llama-bench takes one -rtr value a run, so
# a llama-bench that has the option runs with -rtr 0 and -rtr 1 and each
# figure is the best of both.
llama_bench_best() {
  local model=$1 pairs=$2
  shift 2
  local settings=("") s i=0 outs=()
  "$llama_bench" --help 2>&1 | grep -q -- '--run-time-repack' && settings=("-rtr 0" "-rtr 1")
  for s in "${settings[@]}"; do
    i=$((i + 1))
    # shellcheck disable=SC2154 # work: the sourcing script's scratch directory
    local out=$work/llama-bench$i.json
    # shellcheck disable=SC2086 # the setting is two arguments, or none
    if ! "$llama_bench" -m "$model" "$@" $s -o json >"$out" 2>"$work/llama-bench.err"; then
      echo "$bench_name: llama-bench ${s:+($s) }failed on $model:" >&2
      tail -5 "$work/llama-bench.err" >&2
      continue
    fi
    outs+=("$out")
  done
  if [[ ${#outs[@]} -eq 0 ]]; then
    # shellcheck disable=SC2086 # one "-" a pair
    printf '%s\n' "$(printf -- '- %.0s' $pairs)"
    return
  fi
  # shellcheck disable=SC2086 # the pairs are separate arguments
  /usr/bin/python3 - "$pairs" "${outs[@]}" <<'PY'
import json, sys
runs = [r for f in sys.argv[2:] for r in json.load(open(f))]
def best(pair):
    p, g = (int(x) for x in pair.split(":"))
    s = [max(r["samples_ts"]) for r in runs if r["n_prompt"] == p and r["n_gen"] == g]
    return "%.2f" % max(s) if s else "-"
print(" ".join(best(pair) for pair in sys.argv[1].split()))
PY
}

# build_c SRC [FLAGS...]: compiles the C benchmark SRC against
# $BUILD/libsluice_core.a (BUILD defaults to build) and the libraries the
# sluice binary links, as ninja knows them; sets bin to the program, which
# is removed at exit.
build_c() {
  local build=${BUILD:-build} src=$1 libs
  shift
  [[ -f $build/libsluice_core.a ]] || die "build first (scripts/build.sh)"
  bin=$(mktemp)
  trap 'rm -f "$bin"' EXIT
  libs=$(ninja -C "$build" -t commands sluice | tail -1 | tr ' ' '\n' | grep -E '^-l|\.so$' | tr '\n' ' ')
  # shellcheck disable=SC2086
  g++ -O2 "$@" -I. -I"$build" -x c -std=gnu17 "$src" -x none "$build/libsluice_core.a" \
    $libs -lpthread -lm -o "$bin"
}
