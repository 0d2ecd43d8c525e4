#!/usr/bin/env bash
# sluice serve under load, on the shipped tiny model: aggregate tok/s and
# time to first token (p50/p99) at 1, 4 and 16 concurrent streams (streamed
# chat, greedy, MAX_TOKENS each, 4 requests a stream), and the sixth turn
# of a conversation's time to first token with the prefix cache on and off
# (best of REPS). One server per setting, loopback.
#   bench/serve.sh [MAX_TOKENS=64] [THREADS=2] [REPS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_TOKENS=${1:-64}
THREADS=${2:-2}
REPS=${3:-3}
SLUICE=${SLUICE:-build/sluice}
MODEL=models/tiny-gemma3.gguf
T=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$T"' EXIT

start() { # ARGS...: sets URL
  : >"$T/out"
  "$SLUICE" serve -m "$MODEL" -t "$THREADS" --port 0 "$@" >"$T/out" 2>"$T/err" &
  pid=$!
  URL=
  for _ in $(seq 600); do
    URL=$(sed -n 's|.* ready at \(http://127\.0\.0\.1:[0-9]*\)/.*|\1|p' "$T/out")
    [ -n "$URL" ] && return 0
    sleep 0.05
  done
  echo "bench/serve.sh: the server did not start: $(tail -2 "$T/err")" >&2
  exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

start --slots 16
for s in 1 4 16; do
  BASE_URL=$URL STREAMS=$s REQUESTS=4 MAX_TOKENS=$MAX_TOKENS node bench/serve_client.mjs
done
stop
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
