#!/usr/bin/env bash
# Cores (issue 16), all in one run, alternating, best of REPS: the numbers
# are ratios on a shared machine.
#  (a) one core kept busy by another process (`yes`): `sluice run` with its
#      default threads against -t 1, on the shipped tiny model and on synth
#      gemma3 1b Q4_0; ik_llama.cpp's llama-bench under the same load beside
#      them (its default -t 2, and -t 1), when it is built at $IK;
#  (b) the idle machine: default threads against -t 1 and -t 2;
#  with BEFORE set, (a) and (b) add a row of that binary's default, -t 1 and
#  -t 2, run alternating with this one's (the spread: worst and median too);
#  (c) configs/two-process.yaml (its processes on disjoint cores) against one
#      process, for 1 prompt and 200 prompts; with BEFORE set, also the same
#      two processes run by that binary (one without the core split).
# usage: [BEFORE=old/sluice] [MODEL_1B=FILE] [IK=DIR] [IK_N=16] [SECTIONS="a b c"] bench/cores.sh [REPS=3] [TOKENS=128] [PROMPTS=200]
# MODEL_1B defaults to /tmp/sluice-bench-g3-1b-q4_0.gguf, synthesized when
# missing. Take `flock /tmp/sluice-bench.lock` around it on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=$(readlink -f "${SLUICE:-build/sluice}")
BEFORE=${BEFORE:-}
IK=${IK:-/work/ik_llama.cpp/build/bin}
MODEL_1B=${MODEL_1B:-/tmp/sluice-bench-g3-1b-q4_0.gguf}
REPS=${1:-3}
N=${2:-128}
MANY=${3:-200}
IK_N=${IK_N:-16}
SECTIONS=" ${SECTIONS:-a b c} "
work=$(mktemp -d)
hog=
trap '[ -n "$hog" ] && kill "$hog" 2>/dev/null; rm -rf "$work"' EXIT
cp configs/two-process.yaml "$work/two.yaml"
sed -i "s|\.\./models/|$PWD/models/|; s|/tmp/sluice-two-process/|$work/|" "$work/two.yaml"
for i in $(seq "$MANY"); do echo "prompt number $i of the benchmark, about licences and foxes"; done >"$work/many.txt"
echo "The quick brown fox jumps over the lazy dog" >"$work/one.txt"
[ -f "$MODEL_1B" ] || "$SLUICE" synth --arch gemma3 --size 1b --type q4_0 -o "$MODEL_1B" >/dev/null

# tok/s BINARY PROMPTS ARGS...: the decode rate the run reports (one
# request: its decode line; several: the aggregate)
rate() {
  local bin=$1 prompts=$2
  shift 2
  "$bin" run "$@" --prompts "$prompts" -n "$N" 2>&1 >/dev/null |
    sed -n 's/.*: \([0-9.]*\) tok\/s aggregate.*/\1/p; s/^decode  *\([0-9.]*\) tok\/s.*/\1/p' | tail -1
}
# ik's decode tok/s (llama-bench tg IK_N: under load it slows down a hundredfold;
# -rtr 1, its load-time repacking, is its fastest decode here)
ik_rate() {
  "$IK/llama-bench" -m "$1" -p 0 -n "$IK_N" -t "$2" -r 1 -rtr 1 -o json 2>/dev/null |
    sed -n 's/.*"avg_ts": *\([0-9.e+-]*\).*/\1/p' | tail -1
}
best() { sort -g | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# worst/median/best of the values on stdin
spread() { sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%s/%s/%s", v[1], v[int((NR + 1) / 2)], v[NR] }'; }
# one line of (a) or (b): default, -t 1, -t 2 (and ik when asked); with
# BEFORE, a line of its default, -t 1, -t 2 measured alternating with them
threads_row() {
  local label=$1 model=$2 with_ik=$3
  local d=() t1=() t2=() i2=() i1=() pd=() p1=() p2=()
  for _ in $(seq "$REPS"); do
    d+=("$(rate "$SLUICE" "$work/one.txt" -m "$model")")
    t1+=("$(rate "$SLUICE" "$work/one.txt" -m "$model" -t 1)")
    t2+=("$(rate "$SLUICE" "$work/one.txt" -m "$model" -t 2)")
    if [ -n "$BEFORE" ]; then
      pd+=("$(rate "$BEFORE" "$work/one.txt" -m "$model")")
      p1+=("$(rate "$BEFORE" "$work/one.txt" -m "$model" -t 1)")
      p2+=("$(rate "$BEFORE" "$work/one.txt" -m "$model" -t 2)")
    fi
    if [ "$with_ik" = 1 ]; then
      i2+=("$(ik_rate "$model" 2)")
      i1+=("$(ik_rate "$model" 1)")
    fi
  done
  local bd b1 b2
  bd=$(printf '%s\n' "${d[@]}" | best)
  b1=$(printf '%s\n' "${t1[@]}" | best)
  b2=$(printf '%s\n' "${t2[@]}" | best)
  printf '%-22s default %8s  -t1 %8s  -t2 %8s  default/-t1 %s  default/best-fixed %s' "$label" \
    "$bd" "$b1" "$b2" "$(ratio "$bd" "$b1")" "$(ratio "$bd" "$(printf '%s\n%s\n' "$b1" "$b2" | best)")"
  if [ "$with_ik" = 1 ]; then
    local k2 k1
    k2=$(printf '%s\n' "${i2[@]}" | best)
    k1=$(printf '%s\n' "${i1[@]}" | best)
    printf '  ik -t2 %s -t1 %s  default/ik-t2 %s default/ik-best %s' "$k2" "$k1" \
      "$(ratio "$bd" "$k2")" "$(ratio "$bd" "$(printf '%s\n%s\n' "$k1" "$k2" | best)")"
  fi
  echo
  if [ -n "$BEFORE" ]; then
    printf '%-22s spread (worst/median/best) default %s  -t1 %s  -t2 %s\n' "" \
      "$(printf '%s\n' "${d[@]}" | spread)" "$(printf '%s\n' "${t1[@]}" | spread)" \
      "$(printf '%s\n' "${t2[@]}" | spread)"
    local od o1 o2
    od=$(printf '%s\n' "${pd[@]}" | best)
    o1=$(printf '%s\n' "${p1[@]}" | best)
    o2=$(printf '%s\n' "${p2[@]}" | best)
    printf '%-22s default %8s  -t1 %8s  -t2 %8s  default/-t1 %s  default/best-fixed %s  this default/before %s\n' \
      "  before" "$od" "$o1" "$o2" "$(ratio "$od" "$o1")" \
      "$(ratio "$od" "$(printf '%s\n%s\n' "$o1" "$o2" | best)")" "$(ratio "$bd" "$od")"
    printf '%-22s spread (worst/median/best) default %s  -t1 %s  -t2 %s\n' "" \
      "$(printf '%s\n' "${pd[@]}" | spread)" "$(printf '%s\n' "${p1[@]}" | spread)" \
      "$(printf '%s\n' "${p2[@]}" | spread)"
  fi
}

ik=0
[ -x "$IK/llama-bench" ] && ik=1
if [[ $SECTIONS == *" a "* ]]; then
  echo "(a) one core kept busy by yes"
  yes >/dev/null &
  hog=$!
  threads_row tiny models/tiny-gemma3.gguf "$ik"
  threads_row "gemma3 1b q4_0" "$MODEL_1B" "$ik"
  kill "$hog"
  wait "$hog" 2>/dev/null || true
  hog=
fi
if [[ $SECTIONS == *" b "* ]]; then
  echo "(b) idle"
  threads_row tiny models/tiny-gemma3.gguf 0
  threads_row "gemma3 1b q4_0" "$MODEL_1B" 0

fi
if [[ $SECTIONS == *" c "* ]]; then
  echo "(c) configs/two-process.yaml"
  # "2p zmq": this binary with its ipc:// hops through ZeroMQ, not the
  # same-host link (SLUICE_IPC_LINK=zmq)
  printf '%-10s %10s %10s %10s %10s %10s %10s %11s\n' prompts "one-proc" "2p before" "2p zmq" "2p after" \
    "after/one" "zmq/one" "before/one"
  for p in one many; do
    one=() before=() after=() zmq=()
    for _ in $(seq "$REPS"); do
      one+=("$(rate "$SLUICE" "$work/$p.txt" -m models/tiny-gemma3.gguf)")
      [ -n "$BEFORE" ] && before+=("$(rate "$BEFORE" "$work/$p.txt" -c "$work/two.yaml")")
      zmq+=("$(SLUICE_IPC_LINK=zmq rate "$SLUICE" "$work/$p.txt" -c "$work/two.yaml")")
      after+=("$(rate "$SLUICE" "$work/$p.txt" -c "$work/two.yaml")")
    done
    bo=$(printf '%s\n' "${one[@]}" | best)
    ba=$(printf '%s\n' "${after[@]}" | best)
    bz=$(printf '%s\n' "${zmq[@]}" | best)
    bb=-
    [ -n "$BEFORE" ] && bb=$(printf '%s\n' "${before[@]}" | best)
    printf '%-10s %10s %10s %10s %10s %10s %10s %11s\n' "$p" "$bo" "$bb" "$bz" "$ba" "$(ratio "$ba" "$bo")" \
      "$(ratio "$bz" "$bo")" "$(ratio "$bb" "$bo")"
  done
fi
