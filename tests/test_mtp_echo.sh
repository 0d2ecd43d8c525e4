#!/bin/bash
# The synth assistants bench/mtp_cross.sh compares with ik_llama.cpp:
# --no-centroids writes llama.cpp's layout (no mtp.* head, no centroid keys)
# and the drafts score the whole vocabulary; --echo-of TARGET makes a head
# whose drafts mostly repeat the token fed, so on a target that falls into
# repeats many drafts are accepted (a random assistant's almost never are),
# with greedy text still that of plain decoding. Drafts past a request's
# budget are not sent: a verification emits at most k + 1 tokens. Bad
# settings are refused naming the reason.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
scratch slecho

cd "$T" || exit 1
"$SLUICE" synth --arch gemma4 --size test --seed 5 --weight-scale 0.6 -o t.gguf >/dev/null 2>&1 &&
    "$SLUICE" synth --arch gemma4-assistant --size test -o a.gguf >/dev/null 2>&1 &&
    "$SLUICE" synth --arch gemma4-assistant --size test --no-centroids -o nc.gguf >/dev/null 2>&1 &&
    "$SLUICE" synth --arch gemma4-assistant --size test --no-centroids --echo-of t.gguf \
        -o echo.gguf >/dev/null 2>&1 ||
    { echo "FAIL: synth"; exit 1; }

# llama.cpp's layout: neither the centroid tensors nor their keys
expect 0 "$SLUICE" inspect nc.gguf
hasnt "$T/out" "mtp\.|n_centroids|centroid_top_k" "--no-centroids file"
has "$T/out" "nextn\.pre_projection\.weight" "--no-centroids file keeps the projections"
expect 0 "$SLUICE" inspect a.gguf
has "$T/out" "mtp\.centroids\.weight" "default file has the centroid head"

PROMPTS=("the quick brown fox" "once upon a time" "hello world")
# accepted A: the accepted count of the last run's --stats
accepted() { awk '/^speculative /{print $6}' "$T/err"; }
total_plain=0 total_echo=0
for p in "${PROMPTS[@]}"; do
    want=$("$SLUICE" run -m t.gguf -p "$p" -n 48 --print-ids 2>&1 >/dev/null | ids)
    [[ -n $want ]] && ok || bad "plain run of '$p' gave no ids"
    for a in nc echo; do
        timeout 120 "$SLUICE" run -m t.gguf --draft $a.gguf --draft-k 3 -p "$p" -n 48 \
            --print-ids --stats >/dev/null 2>"$T/err"
        got=$(ids <"$T/err")
        if [[ "$got" == "$want" ]]; then ok; else
            bad "$a: '$p': got [$got], want [$want]"
            HAS_SHOW=12 _show "$T/err"
        fi
        n=$(accepted)
        [[ -n $n ]] && ok || { bad "$a: '$p': no speculative line"; n=0; }
        if [[ $a == nc ]]; then total_plain=$((total_plain + n)); else total_echo=$((total_echo + n)); fi
    done
done
# 3 prompts x 48 tokens: the echo head is accepted on the repeats (about
# half its drafts on this target), the random one on next to none
[[ $total_echo -ge 40 ]] && ok || bad "echo assistant accepted $total_echo drafts (want >= 40)"
[[ $total_plain -le 5 ]] && ok || bad "random assistant accepted $total_plain drafts (want <= 5)"

# budget: 3 tokens with k = 3: the first verification may draft only 1
# (it emits at most 2 more), and none after it
expect 0 "$SLUICE" run -m t.gguf --draft echo.gguf --draft-k 3 -p "the the the the" -n 3 --stats
has "$T/err" "^speculative +1 verifications, 1 drafted" "drafts cut to the budget"
has "$T/err" "^generated tokens +3 " "3 tokens"

# past the mtp stage's ring of sliding rows (128 on the test target's window
# of 8: the window, the most rows a rejection cuts, whole attention spans),
# drafts still accepted and greedy text still plain decoding's
want=$("$SLUICE" run -m t.gguf -p "once upon a time" -n 300 --print-ids 2>&1 >/dev/null | ids)
timeout 120 "$SLUICE" run -m t.gguf --draft echo.gguf --draft-k 3 -p "once upon a time" -n 300 \
    --print-ids --stats >/dev/null 2>"$T/err"
[[ "$(ids <"$T/err")" == "$want" ]] && ok || bad "300 tokens with the echo assistant differ from plain"
has "$T/err" "a slot's copy at most 0\.66 MB \(sliding rows: 128\)" "the stage keeps a ring"
[[ $(accepted) -ge 100 ]] && ok || bad "300 tokens: $(accepted) drafts accepted (want >= 100)"

# bench --draft: the step against a decode step, and the payload a token
# (the test target's source layers: K and V of 2 x 64 and 1 x 128 floats)
expect 0 "$SLUICE" bench -m t.gguf --draft a.gguf -p 16 -n 4 -r 1 -t 1
has "$T/out" "^draft \(assistant\) +[0-9.]+ +[0-9.]+% of one decode step \(64 logits\); its K/V rows 2048 B a token" \
    "bench --draft line"
expect 0 "$SLUICE" bench -m t.gguf --draft nc.gguf -p 16 -n 4 -r 1 -t 1 --json --kv-type q8_0
has "$T/out" '"draft_vs_decode":' "bench --draft --json ratio"
has "$T/out" '"draft_logits":512,' "no centroids: the whole vocabulary"
has "$T/out" '"draft_kv_bytes_per_token":2048' "bench --draft --json payload"
expect 1 "$SLUICE" bench -m t.gguf --draft t.gguf -p 16 -n 4 -r 1 -t 1
has "$T/err" "is not a Gemma 4 assistant" "bench --draft of a target"

# bad settings
expect 2 "$SLUICE" synth --arch gemma4 --size test --no-centroids -o x.gguf
has "$T/err" "gemma4-assistant only" "--no-centroids on a target"
expect 1 "$SLUICE" synth --arch gemma4-assistant --size e2b --echo-of t.gguf -o x.gguf
has "$T/err" "e2b assistant wants 1536 and 262144" "--echo-of a target of another size"
expect 1 "$SLUICE" synth --arch gemma4-assistant --size test --echo-of missing.gguf -o x.gguf
has "$T/err" "missing.gguf" "--echo-of a missing file"
[[ ! -e x.gguf ]] && ok || bad "a refused synth left x.gguf"

finish test_mtp_echo
