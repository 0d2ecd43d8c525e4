#!/usr/bin/env bash
# sluice serve under load: aggregate tok/s and time to first token
# (p50/p99) at 1, 4 and 16 concurrent streams (streamed chat, greedy,
# MAX_TOKENS each, REQUESTS a stream), and the sixth turn of a
# conversation's time to first token with the prefix cache on and off
# (best of REPS). One server per setting, loopback.
#
# Side by side: when LLAMA_SERVER names an executable (default: the
# ik_llama.cpp build beside the project), the same load runs against it on
# the same GGUF, same threads, same slots and context per slot, same
# turn format (gemma), and the lines give sluice/llama-server ratios of
# tok/s (higher is better for sluice) and TTFT (lower is better). The two
# servers take turns, REPS rounds; each figure is the best of its rounds.
#   bench/serve.sh [MAX_TOKENS=64] [THREADS=2] [REPS=3]
#   env: MODEL (default the shipped tiny model), CTX (per slot, 1024),
#        REQUESTS (4), LLAMA_SERVER (path; "" skips the side by side),
#        SKIP_PREFIX=1 skips the turn-6 and system-prompt prefix cache
#        sections
#
# The system-prompt section: one slot, a conversation of a shared system
# prompt and a long document (more than max_batch_tokens past the system
# prompt), then a new conversation with the same system prompt and a short
# question: its time to first token with limits.prefix_cache true (the
# sliding-window layers' ring cannot go back that far: nothing reused) and
# full (the system prompt reused), and the server's resident memory after.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_TOKENS=${1:-64}
THREADS=${2:-2}
REPS=${3:-3}
SLUICE=${SLUICE:-build/sluice}
MODEL=${MODEL:-models/tiny-gemma3.gguf}
CTX=${CTX:-1024}
REQUESTS=${REQUESTS:-4}
LLAMA_SERVER=${LLAMA_SERVER-/work/ik_llama.cpp/build/bin/llama-server}
SLOTS=16
T=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$T"' EXIT

start() { # ARGS...: sets URL
  : >"$T/out"
  "$SLUICE" serve -m "$MODEL" -t "$THREADS" --ctx "$CTX" --port 0 "$@" >"$T/out" 2>"$T/err" &
  pid=$!
  URL=
  for _ in $(seq 1200); do
    URL=$(sed -n 's|.* ready at \(http://127\.0\.0\.1:[0-9]*\)/.*|\1|p' "$T/out")
    [ -n "$URL" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench/serve.sh: the server did not start: $(tail -2 "$T/err")" >&2
  exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# llama-server on a free port, SLOTS slots of CTX each, greedy requests;
# ready once /health answers 200. Flash attention off: with it on,
# ik_llama.cpp aborts under 16 streams on Gemma 3 ("found empty attention
# mask", ggml/src/iqk/iqk_flash_attn.cpp:347, its sliding-window shortcut).
# HTTP threads past the streams: its HTTP library holds one per open
# keep-alive connection.
start_llama() {
  local port
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # ik_llama.cpp repacks at load only when asked (-rtr): its fastest here
  local extra=()
  "$LLAMA_SERVER" --help 2>&1 | grep -q -- '--run-time-repack' && extra=(-rtr)
  "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$SLOTS" -c $((SLOTS * CTX)) -cb -no-fa --threads-http 64 \
    --chat-template gemma --host 127.0.0.1 --port "$port" "${extra[@]}" >"$T/lout" 2>&1 &
  pid=$!
  URL=http://127.0.0.1:$port
  for _ in $(seq 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench/serve.sh: llama-server did not start: $(tail -3 "$T/lout")" >&2
  exit 1
}

load() { # STREAMS: the client's line
  BASE_URL=$URL STREAMS=$1 REQUESTS=$REQUESTS MAX_TOKENS=$MAX_TOKENS WARMUP=1 node bench/serve_client.mjs
}
field() { # LINE NAME: tok/s, p50 or p99 of a client line
  case $2 in
    toks) sed -n 's/.* = \([0-9.]*\) tok\/s.*/\1/p' <<<"$1" ;;
    p50) sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p' <<<"$1" ;;
    p99) sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$1" ;;
  esac
}
best() { # FILE COLUMN max|min
  awk -v c="$2" -v m="$3" 'NR == 1 || (m == "max" ? $c > b : $c < b) {b = $c} END {print b}' "$1"
}

echo "model $MODEL, $THREADS threads, $SLOTS slots x context $CTX, $MAX_TOKENS tokens a request, $REQUESTS requests a stream"
side=
[ -n "$LLAMA_SERVER" ] && [ -x "$LLAMA_SERVER" ] && side=1
for ((r = 0; r < (side ? REPS : 1); r++)); do
  start --slots $SLOTS
  for s in 1 4 16; do
    line=$(load $s)
    [ -z "$side" ] || grep -q FAILED <<<"$line" && echo "sluice $line"
    echo "$(field "$line" toks) $(field "$line" p50) $(field "$line" p99)" >>"$T/sluice-$s"
  done
  stop
  [ -z "$side" ] && continue
  start_llama
  for s in 1 4 16; do
    line=$(load $s)
    grep -q FAILED <<<"$line" && echo "llama-server: $line" >&2
    echo "$(field "$line" toks) $(field "$line" p50) $(field "$line" p99)" >>"$T/llama-$s"
  done
  stop
done
one=$(best "$T/sluice-1" 1 max)
for s in 1 4 16; do
  st=$(best "$T/sluice-$s" 1 max) s50=$(best "$T/sluice-$s" 2 min) s99=$(best "$T/sluice-$s" 3 min)
  msg=$(awk -v a="$st" -v o="$one" 'BEGIN {printf "%.2fx one stream", a / o}')
  printf 'streams %2d: sluice %7.1f tok/s (%s), ttft p50 %6.1f ms, p99 %6.1f ms\n' "$s" "$st" "$msg" "$s50" "$s99"
  [ -z "$side" ] && continue
  lt=$(best "$T/llama-$s" 1 max) l50=$(best "$T/llama-$s" 2 min) l99=$(best "$T/llama-$s" 3 min)
  printf '            llama-server %7.1f tok/s, ttft p50 %6.1f ms, p99 %6.1f ms\n' "$lt" "$l50" "$l99"
  awk -v a="$st" -v b="$lt" -v c="$s50" -v d="$l50" -v e="$s99" -v f="$l99" 'BEGIN {
    printf "            sluice/llama-server: tok/s %.2fx, ttft p50 %.2fx, p99 %.2fx\n", a / b, c / d, e / f }'
done
[ -n "$side" ] && echo "(best of $REPS rounds each; llama-server: $LLAMA_SERVER)"
[ "${SKIP_PREFIX:-}" = 1 ] && exit 0

# one request, not streamed: "seconds cached_tokens" (max_tokens 1: the
# time is the time to first token)
ask() {
  curl -s -o "$T/ans" -w '%{time_total}' "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"messages\":[{\"role\":\"system\",\"content\":\"$SYS\"},{\"role\":\"user\",\"content\":\"$1\"}],\"max_tokens\":$2,\"temperature\":0}"
  echo " $(sed -n 's/.*"cached_tokens":\([0-9]*\).*/\1/p' "$T/ans")"
}
SYS="You are a careful assistant for a software licensing office. Answer in plain words, quote the license text where it matters, say when a question needs a lawyer, and keep every answer under a hundred words. $(printf 'Rule %d: cite the section you rely on. ' 1 2 3 4 5 6 7 8)"
DOC=$(for i in $(seq 60); do printf 'Section %d. Permission is hereby granted to use, copy, modify and distribute the Software, subject to the conditions of section %d. ' "$i" $((i + 1)); done)
for mode in on full; do
  best=
  for ((r = 0; r < REPS; r++)); do
    start --slots 1 --ctx 4096 --prefix-cache $mode
    ask "Summarise this document: $DOC" 8 >/dev/null
    read -r s cached < <(ask "Which license is this?" 1)
    rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
    stop
    if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$s; keep="$cached $rss"; fi
  done
  read -r cached rss <<<"$keep"
  printf 'system prompt, prefix cache %-4s: ttft %6.1f ms, cached %s tokens, server RSS %d MiB (best of %d)\n' \
    $mode "$(awk -v s="$best" 'BEGIN {print s * 1000}')" "${cached:-?}" $((rss / 1024)) "$REPS"
done
for mode in on off; do
  best=
  for ((r = 0; r < REPS; r++)); do
    if [ $mode = on ]; then start; else start --no-prefix-cache; fi
    line=$(BASE_URL=$URL TURNS=6 MAX_TOKENS=$MAX_TOKENS node bench/serve_client.mjs)
    stop
    ms=$(sed -n 's/.*ttft \([0-9.]*\) ms.*/\1/p' <<<"$line")
    if [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$ms; keep=$line; fi
  done
  echo "prefix cache $mode: $keep (best of $REPS)"
done
