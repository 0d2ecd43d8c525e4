#!/bin/bash
# Gemma 4's assistant drafter as a pipeline stage, on a synthetic gemma4
# test target and its synthetic assistant of the same size: `--draft
# ASSISTANT.gguf` and `speculative: {draft: ASSISTANT.gguf}` recognise it by
# its architecture and put an mtp stage after sample. Greedy text is token
# for token that of plain decoding with one, two and three layers stages,
# the mtp stage on the coordinator and on a spawned worker (the K/V rows and
# hidden states reach it over ipc://); the acceptance rate and the stage's
# line are printed; bad settings are refused naming the reason.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
. "$(dirname "$0")/lib/check.sh"
scratch slmtp

cd "$T" || exit 1
"$SLUICE" synth --arch gemma4 --size test --seed 5 --weight-scale 0.6 -o t.gguf >/dev/null 2>&1 &&
    "$SLUICE" synth --arch gemma4-assistant --size test -o a.gguf >/dev/null 2>&1 ||
    { echo "FAIL: synth"; exit 1; }
PROMPTS=("Permission is hereby granted, free of charge, to any person" "the the the the")

# the plain greedy ids of each prompt
declare -a want
for i in "${!PROMPTS[@]}"; do
    want[i]=$(timeout 120 "$SLUICE" run -m t.gguf -p "${PROMPTS[i]}" -n 24 --print-ids 2>&1 >/dev/null | ids)
    [[ -n ${want[i]} ]] && ok || bad "plain run of '${PROMPTS[i]}' gave no ids"
done

# same_ids WHAT ARGS...: every prompt's ids with ARGS equal the plain ones
same_ids() {
    local what=$1 got
    shift
    for ((i = 0; i < ${N_PROMPTS:-${#PROMPTS[@]}}; i++)); do
        got=$(timeout 120 "$SLUICE" run "$@" -p "${PROMPTS[i]}" -n 24 --print-ids --stats 2>"$T/err" \
              >/dev/null; ids <"$T/err")
        if [[ "$got" == "${want[i]}" ]]; then ok; else
            bad "$what: '${PROMPTS[i]}': got [$got], want [${want[i]}]"
            HAS_SHOW=8 _show "$T/err"
        fi
    done
    cp "$T/err" "$T/last.err"
}

# one process, one layers stage
for k in auto 3; do
    same_ids "run --draft-k $k" -m t.gguf --draft a.gguf --draft-k $k
done
has last.err "^acceptance rate +[0-9.]+%" "acceptance rate printed"
has last.err "^stage mtp +.*assistant drafted [1-9][0-9]* tokens in [1-9][0-9]* rounds" "mtp stage drafted"
has last.err "took [1-9][0-9]* K/V rows of 2048 B" "mtp stage took the target's rows"

# config NAME CUTS MTP_NODE: layers stages split at CUTS, the first here,
# the next on the spawned worker p1, the third on p2 (so the stage holding
# the source layers 2 and 3 is on a worker: their K/V rows cross ipc://),
# the mtp stage on MTP_NODE (local: after sample by default)
config() {
    local name=$1 cuts=$2 mtp=$3 stages prev=0 node n=0
    for c in $cuts 8; do
        node=local
        [[ $n -gt 0 ]] && node=p$n
        n=$((n + 1))
        stages+="  - {kind: layers, layers: [$prev, $c], node: $node}"$'\n'
        prev=$c
    done
    local placement=""
    [[ $mtp != local ]] && placement=", placement: {node: $mtp}"
    local nodes="  - {name: local, address: ipc://$T/c-$name}"$'\n'
    for w in p1 p2 m; do
        [[ $stages$placement == *"node: $w"* ]] &&
            nodes+="  - {name: $w, address: ipc://$T/$w-$name, spawn: true}"$'\n'
    done
    cat >"$name" <<EOF
model: $T/t.gguf
nodes:
$nodes
stages:
  - {kind: embed, node: local}
$stages  - {kind: head, node: local}
  - {kind: sample, node: local}
sampling: {temperature: 0}
limits: {max_sequences: 2, context: 256, max_batch_tokens: 64}
speculative: {draft: $T/a.gguf, k: 3$placement}
EOF
}

for cuts in "" "2" "1 2"; do
    for mtp in local m; do
        name="s$(echo "$cuts" | tr -d ' ')-$mtp.yaml"
        config "$name" "$cuts" "$mtp"
        N_PROMPTS=1 same_ids "config layers cut at [${cuts:-none}], mtp on $mtp" -c "$name"
        has last.err "^speculative +[0-9]+ verifications, [1-9][0-9]* drafted" "$name: the assistant drafted"
        has last.err "^acceptance rate +[0-9.]+%" "$name: acceptance rate"
    done
done

# refused, with the reason
config bad.yaml "2" local
sed -i 's/k: 3}/k: 3, pipelined: true}/' bad.yaml
expect 1 timeout 120 "$SLUICE" run -c bad.yaml -p x -n 2
has_str "$T/err" "a Gemma 4 assistant drafts after each verification" "pipelined assistant refused"
cp t.gguf other.gguf
"$SLUICE" synth --arch gemma4-assistant --size e2b -o big.gguf >/dev/null 2>&1 ||
    bad "synth of the e2b assistant"
expect 1 timeout 120 "$SLUICE" run -m t.gguf --draft big.gguf -p x -n 2
has "$T/err" "reads hidden states of width [0-9]+, the target's is 256" "a mismatched assistant is refused"

finish test_mtp_procs
