#!/usr/bin/env bash
# One drafted token of the Gemma 4 assistant vs one decode step of its
# target (issue 18's "at most 10%"), on the synth pair of a size: builds
# bench/mtp_cost.c against build/libsluice_core.a, synthesises the target and
# its assistant (kept in bench/.mtp-cache/), prints both times (best of
# REPEAT, same process) and their ratio.
# usage: bench/mtp.sh [SIZE=e2b] [TYPE=q4_0] [PROMPT=128] [REPEAT=20]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-e2b}
TYPE=${2:-q4_0}
PROMPT=${3:-128}
REPEAT=${4:-20}
SLUICE=${SLUICE:-build/sluice}
cache=bench/.mtp-cache
mkdir -p "$cache"
target=$cache/gemma4-$SIZE-$TYPE.gguf
assistant=$cache/gemma4-assistant-$SIZE-$TYPE.gguf
[ -f "$target" ] || "$SLUICE" synth --arch gemma4 --size "$SIZE" --type "$TYPE" -o "$target"
[ -f "$assistant" ] || "$SLUICE" synth --arch gemma4-assistant --size "$SIZE" --type "$TYPE" -o "$assistant"
. bench/lib.sh
build_c bench/mtp_cost.c
"$bin" "$target" "$assistant" "$PROMPT" "$REPEAT"
