#!/bin/bash
# sluice keygen from the command line: the pair is written with a private
# secret half, --help tells the usage, a missing -o is a usage error (2), and
# an existing pair is never overwritten (1, naming the file).
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
scratch slk
check() { checks=$((checks + 1)); if ! eval "$1"; then fails=$((fails + 1)); echo "FAILED: $1" >&2; fi; }

"$SLUICE" keygen -o "$T/a"; rc=$?
check '[ $rc -eq 0 ]'
check '[ "$(stat -c %a "$T/a.key")" = 600 ]'
check '[ "$(sed -n 2p "$T/a.pub" | tr -d "\n" | wc -c)" -eq 40 ] && [ "$(wc -l < "$T/a.pub")" -eq 2 ]'
check '[ "$(head -1 "$T/a.pub")" = "# sluice CURVE public key" ]'
check 'head -1 "$T/a.key" | grep -q "^# sluice CURVE secret key"'
check '! cmp -s "$T/a.key" "$T/a.pub"'
before=$(cat "$T/a.key")
"$SLUICE" keygen -o "$T/a" 2> "$T/err"; rc=$?
check '[ $rc -eq 1 ]'
check 'grep -q "a.key" "$T/err"'
check '[ "$(cat "$T/a.key")" = "$before" ]'
"$SLUICE" keygen 2> "$T/err"; rc=$?
check '[ $rc -eq 2 ]'
check 'grep -q -- "--output" "$T/err"'
"$SLUICE" keygen --help > "$T/out"; rc=$?
check '[ $rc -eq 0 ] && grep -q "0600" "$T/out"'
"$SLUICE" --help > "$T/out"
check 'grep -q "^  keygen" "$T/out"'

finish test_keygen
