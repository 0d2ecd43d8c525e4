#!/bin/bash
# The prefix cache of `sluice serve`: a 6-turn conversation (openai client)
# whose turns from the second on find the previous turns cached, with the
# same greedy text as a server without the cache, in one process and split
# over two (configs/two-process.yaml, the cache turned off in the config).
# A conversation with speculative decoding (--draft) gets the same. Then the
# sliding-window rule: with max_batch_tokens 16, a slot cut back by at most
# 16 positions past the window (128) is reused with the same text; cut back
# further it is not reused (cached_tokens 0), unless limits.prefix_cache is
# full. --prefix-cache on turns the cache on over a config's false.
set -u
source "$(dirname "$0")/serve_lib.sh"
NODE_DIR="$SRC/tests/node"
[ -d "$NODE_DIR/node_modules/openai" ] || { echo "FAIL: no $NODE_DIR/node_modules: run scripts/install-deps.sh"; exit 1; }
M="$SRC/models/tiny-gemma3.gguf"
turns() { # name
    BASE_URL=$ON BASE_URL_OFF=$OFF timeout 600 node "$NODE_DIR/serve_turns.mjs" && ok || bad "6 turns, $1"
}
start_server on -m "$M"
ON=$URL
start_server off -m "$M" --no-prefix-cache
OFF=$URL
turns one-process
kill -TERM "${servers[-2]}"
# speculative decoding (--draft) with the cache: the same texts and cached
# tokens (the draft stage keeps the parked slot's text too)
start_server spec -m "$M" --draft "$SRC/models/tiny-gemma3-draft.gguf"
ON=$URL
turns speculative
kill -TERM "${servers[@]}"
sed -e "s|^model: .*|model: $M|" -e "s|/tmp/sluice-two-process|$T/ipc1|g" "$SRC/configs/two-process.yaml" >"$T/two.yaml"
sed -e "s|^model: .*|model: $M|" -e "s|/tmp/sluice-two-process|$T/ipc2|g" \
    -e 's|^limits: {\(.*\)}|limits: {\1, prefix_cache: false}|' "$SRC/configs/two-process.yaml" >"$T/two-off.yaml"
grep -q 'prefix_cache: false' "$T/two-off.yaml" || bad "config edit"
start_server on2 -c "$T/two.yaml"
ON=$URL
start_server off2 -c "$T/two-off.yaml"
OFF=$URL
turns two-process
kill -TERM "${servers[-1]}" "${servers[-2]}"

# --- sliding-window layers: reuse only within max_batch_tokens of the end ---
for c in on off full; do
    cat >"$T/ring-$c.yaml" <<YAML
model: $M
stages: [{kind: embed}, {kind: layers, layers: [0, 6]}, {kind: head}, {kind: sample}]
limits: {max_sequences: 1, context: 1024, max_batch_tokens: 16, prefix_cache: $(case $c in on) echo true;; off) echo false;; full) echo full;; esac)}
YAML
done
start_server ring-on -c "$T/ring-on.yaml"
RON=$URL
start_server ring-off -c "$T/ring-off.yaml"
ROFF=$URL
# a prompt well past the window of 128 positions
X=$(head -c 1100 /usr/share/common-licenses/Apache-2.0 | tr -d '"\\' | tr '\n' ' ')
ask() { # url prompt max_tokens -> "cached<TAB>text"
    curl -s "$1/v1/completions" -d "{\"prompt\":\"$2\",\"max_tokens\":$3}" |
        /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(d['usage']['prompt_tokens_details']['cached_tokens'], d['usage']['prompt_tokens'], json.dumps(d['choices'][0]['text']))"
}
a=$(ask "$RON" "$X" 8)
n_prompt=$(cut -d' ' -f2 <<<"$a")
[ "$n_prompt" -gt 200 ] && ok || bad "the prompt has only $n_prompt tokens"
# the same prompt, another ending: the slot holds the prompt and 7 answer
# tokens; cutting back those 7 (<= 16) keeps every ring valid
b_on=$(ask "$RON" "$X and more" 8)
b_off=$(ask "$ROFF" "$X and more" 8)
eq "${b_on#* }" "${b_off#* }" "reuse within the ring's slack: same text"
c_on=$(cut -d' ' -f1 <<<"$b_on")
[ "$c_on" -gt $((n_prompt - 8)) ] && ok || bad "within the slack: cached only $c_on of $n_prompt"
# a long answer (40 tokens) leaves the slot 40 past the shared prefix: more
# than max_batch_tokens to cut back, so nothing is reused
ask "$RON" "$X" 40 >/dev/null
d_on=$(ask "$RON" "$X and more" 8)
eq "$(cut -d' ' -f1 <<<"$d_on")" 0 "cut back past the slack: no reuse"
eq "${d_on#* }" "${b_off#* }" "and the same text"
# prefix_cache: full keeps every position of the sliding-window layers: the
# same cut is reused, with the same text
start_server ring-full -c "$T/ring-full.yaml"
ask "$URL" "$X" 40 >/dev/null
d_full=$(ask "$URL" "$X and more" 8)
[ "$(cut -d' ' -f1 <<<"$d_full")" -gt $((n_prompt - 8)) ] && ok || bad "full: cached only ${d_full%% *} of $n_prompt"
eq "${d_full#* }" "${b_off#* }" "full: the same text"
# --prefix-cache on over the config's prefix_cache: false: reused as with true
start_server ring-off-on -c "$T/ring-off.yaml" --prefix-cache on
ask "$URL" "$X" 8 >/dev/null
e_on=$(ask "$URL" "$X and more" 8)
[ "$(cut -d' ' -f1 <<<"$e_on")" -gt $((n_prompt - 8)) ] && ok || bad "--prefix-cache on: cached only ${e_on%% *} of $n_prompt"
eq "${e_on#* }" "${b_off#* }" "--prefix-cache on: the same text"
finish
