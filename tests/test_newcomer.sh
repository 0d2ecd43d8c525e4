#!/bin/bash
# What a new user meets first (issue 19): version, convert's output checks,
# keygen's files, plan's keys and machine checks, --prompts as a batch mode,
# socket files left behind, signals and exit codes, run's timing lines,
# the metrics URL, tokenize.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
MODEL=$SRC/models/tiny-gemma3.gguf
T=$(mktemp -d /tmp/sln.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
# expect STATUS CMD...: runs CMD, stdout to $T/out, stderr to $T/err
expect() {
    local want=$1
    shift
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else
        bad "exit $got (want $want): $*"
        sed 's/^/  | /' "$T/err" | head -5 >&2
    fi
}
# has FILE PATTERN WHAT
has() {
    if grep -qE -- "$2" "$1"; then ok; else bad "$3: no /$2/ in $(basename "$1")"; fi
}
hasnt() {
    if grep -qE -- "$2" "$1"; then bad "$3: /$2/ in $(basename "$1")"; else ok; fi
}

# ---- version: what was built and which kernels run ----
expect 0 "$SLUICE" --version
has "$T/out" "^sluice [0-9a-f]{7,}|^sluice unknown" "--version names the build"
has "$T/out" "^kernels: (scalar|avx2|avx512)" "--version names the kernel path"
expect 0 "$SLUICE" version
has "$T/out" "^kernels: " "version names the kernel path"
if (cd "$SRC" && git rev-parse --git-dir >/dev/null 2>&1); then
    want=$(cd "$SRC" && git describe --always --tags | cut -c1-7)
    has "$T/out" "^sluice $want" "version is git describe of the checkout"
fi
SLUICE_KERNEL=scalar "$SLUICE" version >"$T/out"
has "$T/out" "^kernels: scalar" "SLUICE_KERNEL lowers the reported path"

# ---- convert: output checked before the work; no silent overwrite ----
HF=$SRC/models/hf/tiny-gemma3
echo keep >"$T/existing.gguf"
expect 1 "$SLUICE" convert "$HF" -o "$T/existing.gguf" -q
has "$T/err" "existing.gguf: exists; give --force" "convert refuses to overwrite"
[ "$(cat "$T/existing.gguf")" = keep ] && ok || bad "convert replaced an existing file without --force"
expect 1 "$SLUICE" convert "$HF" -o "$T/no/such/dir/x.gguf" -q
has "$T/err" "cannot write there" "convert checks the output directory first"
expect 1 "$SLUICE" convert "$HF" -o "$T/existing.gguf/x.gguf" -q
has "$T/err" "is not a directory" "convert: a file as the output's directory"
expect 0 "$SLUICE" convert "$HF" -o "$T/existing.gguf" -q --force
expect 0 "$SLUICE" inspect --no-tensors "$T/existing.gguf"
has "$T/out" "gemma3" "convert --force replaced the file with the model"

echo "test_newcomer: $checks checks, $fails failed" >&2
[ $fails -eq 0 ]
