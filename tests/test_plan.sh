#!/usr/bin/env bash
# sluice plan end to end: plans for synthetic 2-socket machines and the
# 4-node cluster file for gemma3 1b/4b/12b shapes are configs the loader
# takes (the command reads each back), with the layers where the topology
# says; a plan for this machine runs and gives the plain run's tokens;
# layers: auto splits the layers in the order given; the errors name their
# cause. Figures are not asserted: they depend on this machine.
set -u
SLUICE=$(readlink -f "${SLUICE:-build/sluice}")
SRC=$(readlink -f "${SLUICE_SRC:-$(dirname "$0")/..}")
MODEL=$SRC/models/tiny-gemma3.gguf
. "$(dirname "$0")/lib/check.sh"
scratch slplan

# synthetic two-socket machines and the cluster file, three model sizes
for size in 1b 4b 12b; do
  expect 0 "$SLUICE" plan --shape "gemma3:$size" --topology "pack:2 numa:1 core:16 pu:2" \
    --objective throughput -o "$T/s2-$size.yaml"
  has "$T/out" "^wrote " "2-socket $size plan written"
  has "$T/s2-$size.yaml" "numa: 1" "2-socket $size: a stage on the second socket"
  has "$T/s2-$size.yaml" "threads: 16" "2-socket $size: teams of the socket's cores"
  expect 0 "$SLUICE" plan --shape "gemma3:$size" --topology "$SRC/configs/cluster-4node.yaml" \
    --context 8192 -o "$T/c4-$size.yaml"
  has "$T/c4-$size.yaml" "address: tcp://10.0.0.1:7100" "cluster $size: the coordinator's address"
  has "$T/out" "bottleneck: stage" "cluster $size: the bottleneck is named"
done
# throughput on the cluster: the slow board gets nothing, the workstation most
expect 0 "$SLUICE" plan --shape gemma3:12b --topology "$SRC/configs/cluster-4node.yaml" --objective throughput
if grep -q "board" "$T/out" && ! grep -qE "^[0-9]+ +board" "$T/out"; then ok; else bad "the slow board got layers"; fi

# this machine: the plan runs and gives the plain run's tokens
prompt="This program is free software; you can"
want=$("$SLUICE" run -m "$MODEL" -p "$prompt" -n 32 --print-ids 2>&1 >/dev/null | grep '^ids')
expect 0 "$SLUICE" plan -m "$MODEL" --topology local --context 512 --sequences 2 -o "$T/local.yaml"
got=$("$SLUICE" run -c "$T/local.yaml" -p "$prompt" -n 32 --print-ids 2>&1 >/dev/null | grep '^ids')
if [[ -n $want && "$want" == "$got" ]]; then ok; else bad "plan for this machine: [$got], want [$want]"; fi

# --processes 2: this machine as two processes, each with its own cores:
# disjoint, together every CPU this run may use; the config runs and gives
# the plain run's tokens
cpus() { # a kernel CPU list ("0-2,5") as numbers, one a line
  local part
  for part in $(tr -d " '[]" <<<"$1" | tr ',' ' '); do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}
allowed=$(cpus "$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)" | sort -n)
if [ "$(wc -l <<<"$allowed")" -ge 2 ]; then
  expect 0 "$SLUICE" plan -m "$MODEL" --processes 2 --context 512 --sequences 2 -o "$T/procs.yaml"
  lists=$(grep -oE '^  cores: \[.*\]' "$T/procs.yaml" | sed 's/^  cores: //')
  [ "$(wc -l <<<"$lists")" = 2 ] && ok || bad "--processes 2: not one cores: per node: $lists"
  given=$(while read -r l; do cpus "$l"; done <<<"$lists" | sort -n)
  [ "$given" = "$(sort -nu <<<"$given")" ] && ok || bad "--processes 2: a CPU given twice: $lists"
  [ "$given" = "$allowed" ] && ok || bad "--processes 2: cores $lists do not cover the CPUs allowed ($allowed)"
  has "$T/procs.yaml" "spawn: true" "--processes 2: the second process is spawned"
  got=$("$SLUICE" run -c "$T/procs.yaml" -p "$prompt" -n 32 --print-ids 2>&1 >/dev/null | grep '^ids')
  if [[ -n $want && "$want" == "$got" ]]; then ok; else bad "--processes 2 plan: [$got], want [$want]"; fi
  expect 1 taskset -c "$(head -1 <<<"$allowed")" "$SLUICE" plan -m "$MODEL" --processes 2
  has "$T/err" "processes 2: this process may use 1 CPU" "more processes than CPUs refused with the numbers"
fi
expect 1 "$SLUICE" plan --shape gemma3:1b --topology "pack:2 numa:1 core:4 pu:1" --processes 2
has "$T/err" "processes splits this machine" "--processes with another machine's topology refused"

# calibration: bench --calibrate writes a file plan takes
expect 0 "$SLUICE" bench --calibrate -t 1
cp "$T/out" "$T/cal.yaml"
expect 0 "$SLUICE" plan -m "$MODEL" --calibration "$T/cal.yaml"
bw=$(grep -oE 'bandwidth_gb_s: [0-9.]+' "$T/cal.yaml" | awk '{print $2}')
has "$T/out" "numa0 .* ${bw} GB/s" "plan uses the calibrated bandwidth"

# layers: auto, two stages: every layer once, in order, at least one each
cat >"$T/auto.yaml" <<EOF2
model: $MODEL
stages:
  - kind: embed
  - {kind: layers, layers: auto}
  - {kind: layers, layers: auto}
  - {kind: layers, layers: auto}
  - kind: head
  - kind: sample
EOF2
"$SLUICE" run -c "$T/auto.yaml" -p "$prompt" -n 8 --stats >"$T/out" 2>"$T/err"
ranges=$(grep -oE 'stage layers\[[0-9]+,[0-9]+\)' "$T/err" | tr '\n' ' ')
if [[ $ranges =~ ^stage\ layers\[0,([0-9]+)\)\ stage\ layers\[([0-9]+),([0-9]+)\)\ stage\ layers\[([0-9]+),6\)\ $ ]] &&
   [[ ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" && ${BASH_REMATCH[3]} == "${BASH_REMATCH[4]}" ]]; then ok
else bad "layers: auto ranges: '$ranges'"; sed "s/^/  | /" "$T/err" | tail -5; fi
sed -i '0,/layers: auto}/s//layers: [0, 3]}/' "$T/auto.yaml"
expect 1 "$SLUICE" run -c "$T/auto.yaml" -p "$prompt" -n 4
has "$T/err" "layers: auto must be on every layers stage or none" "mixed auto refused"

# errors
expect 1 "$SLUICE" plan --shape gemma3:27b --type f32 --topology "$SRC/configs/cluster-4node.yaml"
has "$T/err" "no placement fits" "a model too large for the cluster"
expect 1 "$SLUICE" plan --shape gemma3:12b --topology "pack:two"
has "$T/err" "not a valid hwloc synthetic description" "a bad synthetic string"
expect 1 "$SLUICE" plan --shape gemma3:13b
has "$T/err" "unknown; known shapes" "an unknown shape"
expect 2 "$SLUICE" plan
has "$T/err" "exactly one of -m FILE and --shape" "plan without a model"
printf 'nodes:\n  - {name: a, cores: 8}\n  - {name: b, cores: 4}\n' >"$T/c.yaml"
expect 1 "$SLUICE" plan --shape gemma3:1b --topology "$T/c.yaml"
has "$T/err" "c.yaml:3: nodes\[1\]: node 'b' needs an address" "cluster file error names file and line"
# a stage bound to a NUMA node this machine lacks
sed 's/numa: 0/numa: 97/' "$T/local.yaml" >"$T/numa.yaml"
if grep -q "numa: 97" "$T/numa.yaml"; then
  expect 1 "$SLUICE" run -c "$T/numa.yaml" -p "$prompt" -n 4
  has "$T/err" "NUMA node 97 does not exist" "binding to a missing NUMA node"
else bad "the local plan names no numa node"; fi

finish test_plan
