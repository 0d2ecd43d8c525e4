#!/bin/bash
# CURVE between two "hosts" (network namespaces A = 10.77.0.1, the
# coordinator, and B = 10.77.0.2, a `sluice worker --key --allow`), with the
# shipped configs/two-host.yaml and keys made by `sluice keygen`:
#  - the run with the right peers gives exactly the one-process tokens;
#  - the worker refuses, logs (naming the peer's address) and survives: a
#    client with an unknown key, a plain-text client, a replay of the bytes
#    of an accepted session, and strangers at its stages' data sockets while
#    a run is going on; the coordinator refuses a stranger at its return
#    socket the same way;
#  - a coordinator the worker does not --allow, or that names the wrong
#    public key for the worker, fails naming the node;
#  - a secret key group or others can read stops worker and coordinator.
# Needs root and `ip netns`; prints SKIP otherwise.
set -u
SLUICE=${SLUICE:?set SLUICE to the sluice binary}
SRC=${SLUICE_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
PROBE=${SLUICE_BUILD:-$(dirname "$SLUICE")}/sec_probe
. "$(dirname "$0")/lib/check.sh"
. "$(dirname "$0")/lib/netns.sh"
ns_need test_security_netns
[ -x "$PROBE" ] || { echo "FAIL: $PROBE is missing (build the sec_probe tool)"; exit 1; }
NA=slsA$$
NB=slsB$$
scratch sls
inA() { ip netns exec "$NA" "$@"; }
inB() { ip netns exec "$NB" "$@"; }
ns_pair "$NA" "$NB" slsa$$ slsb$$
hosts_setup two-host.yaml local hostb stranger
M=$T/models/tiny-gemma3.gguf
STRANGER=$(cat keys/stranger.pub)
CTL=tcp://10.77.0.2:7100

inB "$SLUICE" worker --listen $CTL --key keys/hostb.key --allow keys/local.pub --silence 4 2>worker.err &
pids+=($!)
wait_for grep -qs "listening (CURVE)" worker.err && ok || bad "worker in B did not start with CURVE"

# ---- the right peers ----
P="the quick brown fox"
"$SLUICE" run -m "$M" -p "$P" -n 24 --print-ids >/dev/null 2>ref.err || bad "reference run"
inA "$SLUICE" run -c configs/two-host.yaml -p "$P" -n 24 --print-ids >/dev/null 2>run.err ||
    bad "two-host run with keys failed: $(tail -1 run.err)"
if ids run.err | cmp -s - <(ids ref.err); then ok; else bad "two-host run: $(ids run.err) != $(ids ref.err)"; fi
grep -aq "refused" run.err worker.err && bad "refusals during a run of the right peers: $(grep -ah refused run.err worker.err)" || ok

# ---- strangers at the control socket ----
inA "$PROBE" hello $CTL --key keys/stranger.key --server keys/hostb.pub >probe.out 2>&1
[ $? -eq 3 ] && ok || bad "a client with an unknown key was answered: $(cat probe.out)"
wait_for grep -qsF -- "$STRANGER" worker.err
has_str worker.err "refused a CURVE peer at 10.77.0.1 on its control sockets: public key $STRANGER is not listed" \
    "unknown key"
inA "$PROBE" hello $CTL >probe.out 2>&1
[ $? -eq 3 ] && ok || bad "a plain-text client was answered: $(cat probe.out)"
# (a libzmq client may hang up first; this one waits for the worker to)
inA "$PROBE" plain $CTL >probe.out 2>&1 && ok || bad "the worker did not hang up on plain text: $(cat probe.out)"
wait_for grep -qs "does not speak CURVE" worker.err
has_str worker.err "to its control socket ($CTL): it does not speak CURVE" "plain text"
# the bytes of a session the worker accepted, sent again on a new connection
inA "$PROBE" replay $CTL --key keys/local.key --server keys/hostb.pub --capture capture.bin >probe.out 2>&1
rc=$?
cat probe.out
[ $rc -eq 0 ] && ok || bad "replay: exit $rc, want 0 (first session answered, replay refused): $(cat probe.out)"
[ -s capture.bin ] && ok || bad "replay: nothing captured"
wait_for grep -qs "handshake failed authentication" worker.err
# (the log names the peer when it read its address before the connection
# closed: best effort, so not required here)
has_str worker.err "to its control socket ($CTL): its handshake failed authentication" "replay"
# a probe holding the coordinator's key is still answered: the worker serves on
inA "$PROBE" hello $CTL --key keys/local.key --server keys/hostb.pub >probe.out 2>&1 && ok ||
    bad "the worker stopped answering after the refusals: $(cat probe.out)"

# ---- strangers at the data sockets while a run goes on ----
# stage 2 (layers [3,6)) listens on hostb at 7100+1+2; the driver's return
# socket on the coordinator at 7100+1+5
for i in $(seq 16); do echo "prompt $i of a long run"; done >long.txt
"$SLUICE" run -m "$M" --prompts long.txt -n 1000 --print-ids >/dev/null 2>longref.err || bad "long reference run"
lines=$(wc -l <worker.err)
inA "$SLUICE" run -c configs/two-host.yaml --prompts long.txt -n 1000 --print-ids >/dev/null 2>long.err &
coord=$!
pids+=($coord)
ready() { [ "$(tail -n +$((lines + 1)) worker.err | grep -c 'stage(s) ready')" -ge 1 ]; }
wait_for ready && ok || bad "worker got no stages for the long run"
inA "$PROBE" hello tcp://10.77.0.2:7103 --push --key keys/stranger.key --server keys/hostb.pub >/dev/null 2>&1
inA "$PROBE" plain tcp://10.77.0.2:7103 >probe.out 2>&1 && ok || bad "plain text at a stage input: $(cat probe.out)"
inB "$PROBE" hello tcp://10.77.0.1:7106 --push --key keys/stranger.key --server keys/local.pub >/dev/null 2>&1
kill -0 "$coord" 2>/dev/null && ok || bad "the long run ended before the strangers were done (make it longer)"
wait_bounded 600 "the long run beside the strangers" "$coord"
[ $? -eq 0 ] && ok || bad "the long run failed: $(tail -2 long.err)"
if ids long.err | cmp -s - <(ids longref.err); then ok; else bad "the long run's tokens differ"; fi
has_str worker.err "refused a CURVE peer at 10.77.0.1 on its data sockets: public key $STRANGER is not listed" \
    "unknown key at a stage input"
has_str worker.err "to its layers[3,6) input (tcp://10.77.0.2:7103): it does not speak CURVE" \
    "plain text at a stage input"
has_str long.err "refused a CURVE peer at 10.77.0.2 on its data sockets: public key $STRANGER is not listed" \
    "unknown key at the coordinator's return socket"

# ---- a coordinator the worker does not know, or that has the wrong key for it ----
sed 's|keys/local.key|keys/stranger.key|' configs/two-host.yaml >configs/stranger.yaml
inA "$SLUICE" run -c configs/stranger.yaml -p hi -n 2 >/dev/null 2>run.err && bad "unknown coordinator: run succeeded"
has_str run.err "node 'hostb' (tcp://10.77.0.2:7100) is unreachable" "unknown coordinator"
has_str run.err "the server refused this process's public key" "unknown coordinator"
sed 's|keys/hostb.pub|keys/stranger.pub|' configs/two-host.yaml >configs/wrongpub.yaml
inA "$SLUICE" run -c configs/wrongpub.yaml -p hi -n 2 >/dev/null 2>run.err && bad "wrong worker key: run succeeded"
has_str run.err "node 'hostb' (tcp://10.77.0.2:7100) is unreachable" "wrong worker key"
# and the worker still serves the right coordinator
inA "$SLUICE" run -c configs/two-host.yaml -p "$P" -n 24 --print-ids >/dev/null 2>run.err ||
    bad "run after the strangers failed: $(tail -1 run.err)"
if ids run.err | cmp -s - <(ids ref.err); then ok; else bad "run after the strangers: ids differ"; fi

# ---- secret keys others can read ----
cp keys/hostb.key keys/open.key && chmod 644 keys/open.key
inB "$SLUICE" worker --listen tcp://10.77.0.2:7200 --key keys/open.key --allow keys/local.pub 2>open.err
[ $? -eq 1 ] && ok || bad "worker started with a world-readable key"
has_str open.err "keys/open.key: secret key file has mode 0644" "worker key mode"
sed 's|keys/local.key|keys/open.key|' configs/two-host.yaml >configs/open.yaml
inA "$SLUICE" run -c configs/open.yaml -p hi -n 2 >/dev/null 2>run.err && bad "coordinator ran with a world-readable key"
has_str run.err "open.key: secret key file has mode 0644" "coordinator key mode"
# and no keys at all is a config error, not a silent plain-text run
grep -v 'key:' configs/two-host.yaml >configs/nokeys.yaml
"$SLUICE" run -c configs/nokeys.yaml -p hi -n 2 >/dev/null 2>run.err && bad "tcp config without keys ran"
has_str run.err "needs its CURVE secret key" "config without keys"
inB "$SLUICE" worker --listen tcp://10.77.0.2:7200 2>open.err
[ $? -eq 2 ] && ok || bad "worker on tcp:// without --key or --insecure did not stop with a usage error"
has_str open.err "needs --key FILE and --allow KEY (or --insecure" "worker without keys"

finish test_security_netns
