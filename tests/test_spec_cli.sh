#!/bin/bash
# Speculative decoding from the command line and across processes, on the
# shipped tiny target and draft: `sluice run --draft` (draft model, prompt
# lookup, pipelined) and the example configs give exactly the plain greedy
# tokens; the statistics lines are printed; bad settings are refused with
# their reason; a spawned draft worker does not outlive its coordinator.
set -u
SLUICE=$(readlink -f "${SLUICE:?set SLUICE to the sluice binary}")
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
TARGET=$SRC/models/tiny-gemma3.gguf
DRAFT=$SRC/models/tiny-gemma3-draft.gguf
. "$(dirname "$0")/lib/check.sh"
scratch slspec

prompts=("This program is free software; you can"
         "Licensed under the Apache License, Version 2.0 (the"
         "of the License, or of the License, or of the")
for p in "${prompts[@]}"; do
  want=$("$SLUICE" run -m "$TARGET" -p "$p" -n 64 --print-ids 2>&1 >/dev/null | ids)
  [[ -n $want ]] || bad "plain run of '$p' gave no ids"
  for spec in "--draft $DRAFT" "--draft $DRAFT --draft-k 2" "--draft $DRAFT --draft-k auto" \
              "--draft $DRAFT --draft-k 4 --draft-threads 1" "--draft prompt-lookup" \
              "--draft $DRAFT --draft-k 0"; do
    # shellcheck disable=SC2086
    got=$("$SLUICE" run -m "$TARGET" -p "$p" -n 64 --print-ids $spec 2>"$T/err" >/dev/null; ids <"$T/err")
    if [[ "$got" == "$want" ]]; then ok; else bad "run $spec: '$p': got [$got], want [$want]"; fi
  done
done

# statistics on stderr, and the speed-up against a plain run of the same prompt
"$SLUICE" run -m "$TARGET" -p "${prompts[0]}" -n 48 --draft "$DRAFT" --draft-k 4 --spec-baseline \
  >"$T/out" 2>"$T/err" || bad "run --spec-baseline failed"
has "$T/err" "^acceptance rate +[0-9.]+%" "acceptance rate"
has "$T/err" "^mean accepted +[0-9.]+ tokens a verification" "mean accepted length"
has "$T/err" "^effective decode +[0-9.]+ tok/s" "effective tok/s"
has "$T/err" "^plain decode +[0-9.]+ tok/s; speed-up [0-9.]+x" "speed-up"
has "$T/out" "it under the terms of the GNU General Public License" "speculative text"
# =last: the plain run after the speculative one (its line after the speculative run's summary)
"$SLUICE" run -m "$TARGET" -p "${prompts[0]}" -n 48 --draft "$DRAFT" --draft-k 4 --spec-baseline=last \
  >"$T/out" 2>"$T/err" || bad "run --spec-baseline=last failed"
has "$T/err" "^plain decode +[0-9.]+ tok/s; speed-up [0-9.]+x" "speed-up (baseline last)"
has "$T/out" "it under the terms of the GNU General Public License" "speculative text (baseline last)"
first_line() { grep -n -m1 -E "$1" "$T/err" | cut -d: -f1; }
if [[ $(first_line "^baseline:") -gt $(first_line "^time to first") ]]; then ok
else bad "--spec-baseline=last: the baseline line comes before the speculative run's summary"; fi

# refused, with the reason
expect_fail() { # STATUS PATTERN ARGS...
  local want=$1 pat=$2
  shift 2
  "$SLUICE" run "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [[ $got -eq $want ]]; then ok; else bad "exit $got (want $want): run $*"; fi
  has "$T/err" "$pat" "run $*"
}
expect_fail 2 "bad value '40' for --draft-k" -m "$TARGET" -p x --draft "$DRAFT" --draft-k 40
expect_fail 2 "need --draft" -m "$TARGET" -p x --draft-k 3
expect_fail 2 "bad value 'middle' for --spec-baseline" -m "$TARGET" -p x --draft "$DRAFT" --spec-baseline=middle
expect_fail 1 "$T/none.gguf" -m "$TARGET" -p x --draft "$T/none.gguf"
"$SLUICE" synth --arch gemma3 --size test --seed 3 -o "$T/other.gguf" 2>/dev/null
expect_fail 1 "draft $T/other.gguf has a vocabulary of [0-9]+ tokens but target $TARGET has 1536" \
  -m "$TARGET" -p x --draft "$T/other.gguf"
expect_fail 1 "speculative section already" -c "$SRC/configs/speculative.yaml" -p x --draft "$DRAFT"

# the example configs: in one process, and with the draft in its own worker
cd "$SRC/configs" || exit 1
for cfg in speculative.yaml speculative-procs.yaml; do
  for p in "${prompts[@]}"; do
    want=$("$SLUICE" run -m "$TARGET" -p "$p" -n 64 --print-ids 2>&1 >/dev/null | ids)
    got=$("$SLUICE" run -c "$cfg" -p "$p" -n 64 --print-ids 2>"$T/err" >/dev/null; ids <"$T/err")
    if [[ "$got" == "$want" ]]; then ok; else bad "$cfg: '$p': got [$got], want [$want]"; fi
  done
  "$SLUICE" run -c "$cfg" -p "${prompts[0]}" -n 48 --temp 0.8 --stats >"$T/out" 2>"$T/err" ||
    bad "$cfg at temperature 0.8 failed"
  has "$T/err" "^acceptance rate" "$cfg at temperature 0.8: statistics"
done
# a draft on its own thread drafts ahead; --stats says how much of it was used
"$SLUICE" run -m "$TARGET" -p "${prompts[0]}" -n 64 --draft "$DRAFT" --draft-k 4 --draft-threads 1 --stats \
  >"$T/out" 2>"$T/err" || bad "pipelined run failed"
has "$T/err" "drafted ahead: [1-9][0-9]* used, [0-9]+ dropped" "pipelined draft statistics"
# the spawned worker exits on its own once its coordinator is gone: wait for that (bounded)
for _ in $(seq 100); do pgrep -f "sluice-spec-procs" >/dev/null || break; sleep 0.1; done
if pgrep -f "sluice-spec-procs" >/dev/null; then bad "a spawned worker outlived its coordinator"; else ok; fi

finish test_spec_cli
