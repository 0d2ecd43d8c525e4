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

# ---- keygen: creates the directory, says what it wrote, kinds kept apart ----
expect 0 "$SLUICE" keygen -o "$T/keys/w"
[ "$(stat -c %a "$T/keys")" = 700 ] && ok || bad "keygen's new directory is not 0700"
has "$T/out" "wrote .*keys/w\.key" "keygen says it wrote the .key"
has "$T/out" "wrote .*keys/w\.pub" "keygen says it wrote the .pub"
pub=$(sed -n 2p "$T/keys/w.pub")
has "$T/out" "public_key: \"$(printf '%s' "$pub" | sed 's/[][\.*^$(){}?+|/]/\\&/g')\"" "keygen prints the quoted public key"
expect 0 "$SLUICE" keygen -o "$T/keys/c"
# a .pub given as the secret key: refused saying which file is which (not a chmod hint)
expect 1 "$SLUICE" status tcp://127.0.0.1:9 --key "$T/keys/c.pub" --server-key "$T/keys/w.pub" --timeout 1
has "$T/err" "c\.pub is a public key .*secret half" "status --key refuses a .pub"
hasnt "$T/err" "chmod" "a .pub as --key gets no chmod advice"
expect 1 "$SLUICE" status tcp://127.0.0.1:9 --key "$T/keys/c.key" --server-key "$T/keys/w.key" --timeout 1
has "$T/err" "w\.key is a secret key .*public half" "status --server-key refuses a .key"
# the header, not the name, decides: a renamed public file is still refused
cp "$T/keys/c.pub" "$T/keys/renamed"
chmod 600 "$T/keys/renamed"
expect 2 "$SLUICE" worker --listen tcp://127.0.0.1:9 --key "$T/keys/renamed" 2>/dev/null
expect 1 "$SLUICE" worker --listen tcp://127.0.0.1:9 --key "$T/keys/renamed" --allow "$T/keys/c.pub"
has "$T/err" "renamed is a public key" "worker --key refuses a public key file by its first line"
expect 1 "$SLUICE" worker --listen tcp://127.0.0.1:9 --key "$T/keys/w.key" --allow "$T/keys/c.key"
has "$T/err" "c\.key is a secret key" "worker --allow refuses a .key"
# files from before the first line: the bare key still reads
sed -n 2p "$T/keys/c.key" >"$T/keys/old.key"
chmod 600 "$T/keys/old.key"
sed -n 2p "$T/keys/w.pub" >"$T/keys/old.pub"
expect 1 "$SLUICE" status tcp://127.0.0.1:9 --key "$T/keys/old.key" --server-key "$T/keys/old.pub" --timeout 1
has "$T/err" "no answer from tcp://127.0.0.1:9" "key files without the first line still load"

# an inline public key starting with a YAML character: the error says to quote it
for k in '!' '&' '*' '@' '%'; do
    cat >"$T/inline.yaml" <<YEOF
model: $MODEL
nodes:
  - name: coord
    address: tcp://127.0.0.1:1
    key: $T/keys/c.key
  - name: w
    address: tcp://127.0.0.1:2
    public_key: ${k}bcdefghij0123456789abcdefghij012345678
stages:
  - {kind: embed, node: coord}
  - {kind: layers, node: w, layers: [0, 6]}
  - {kind: head, node: coord}
  - {kind: sample, node: coord}
YEOF
    expect 1 "$SLUICE" run -c "$T/inline.yaml" -p hi -n 1
    has "$T/err" "inline\.yaml:8: .*must be quoted: public_key: \"KEY\"" "a key starting with '$k' gets the quoting hint"
done

# ---- metrics port: the URL is printed; a failure names its real cause ----
PY=${PYTHON:-/usr/bin/python3}
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
expect 0 "$SLUICE" run -m "$MODEL" -p hi -n 2 --metrics-port "$port"
has "$T/err" "^metrics: serving http://127\.0\.0\.1:$port/metrics$" "run prints the metrics URL"
# 192.0.2.1 (TEST-NET-1) is no address of this machine: not a port in use
expect 1 "$SLUICE" run -m "$MODEL" -p hi -n 2 --metrics-port 192.0.2.1:9100
has "$T/err" "http://192\.0\.2\.1:9100: Cannot assign requested address" "a foreign address reports its errno"
hasnt "$T/err" "in use" "a foreign address is not called a port in use"
"$PY" - "$SLUICE" "$MODEL" >"$T/busy" 2>&1 <<'PYEOF'
import socket, subprocess, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
p = subprocess.run([sys.argv[1], "run", "-m", sys.argv[2], "-p", "hi", "-n", "2", "--metrics-port",
                    str(s.getsockname()[1])], capture_output=True, text=True)
print(p.returncode, p.stderr)
PYEOF
has "$T/busy" "^1 .*Address already in use" "a port in use says so"

echo "test_newcomer: $checks checks, $fails failed" >&2
[ $fails -eq 0 ]
