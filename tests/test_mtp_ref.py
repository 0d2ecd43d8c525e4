#!/usr/bin/env python3
"""The Gemma 4 assistant's C forward (model/mtp.c) against the numpy
reference (tests/ref/mtp.py) on the synth test pair: `sluice synth --arch
gemma4 --size test` and its `--arch gemma4-assistant --size test`.

tests/tools/dump_mtp runs a prompt through the C target, copies the K/V rows
of the two source layers out of its cache, runs one assistant step and a
4-token greedy draft, and writes the target hidden state, the rows, the
logits (over the centroid-narrowed candidates), the candidate ids, h_next
and the drafts. The reference recomputes the step from the same hidden state
and rows: the candidate ids must be the same list, logits and h_next within
the tolerance of test_ref.py (1e-5 of the largest |value|; float activations,
SLUICE_ACT=f32), and the greedy drafts the same tokens as long as the
reference's top-2 margin is clear of that tolerance. The C target's hidden
state is also held to the reference target's (with an f32 cache). Cases: weight types f32, q8_0,
q4_0; K/V rows in f32, f16 and q8_0; and an assistant without the centroid
head (as llama.cpp's converter writes it: logits over the whole vocabulary).

Environment (set by ctest): SLUICE, SLUICE_BUILD.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref import forward, mtp, writer  # noqa: E402
from ref.gguf import GGUF  # noqa: E402

TOL = 1e-5
PROMPT = [2, 17, 33, 101, 250, 7, 64, 300, 12, 48, 199, 5, 77, 410]
K = 4

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, file=sys.stderr)


def synth(sluice, arch, qtype, path):
    subprocess.run([sluice, "synth", "--arch", arch, "--size", "test", "--type", qtype,
                    "-o", path], check=True, stderr=subprocess.DEVNULL)


def read_dump(path):
    out = {}
    with open(path) as fh:
        for line in fh:
            name, *vals = line.split()
            out[name] = np.array([float(v) for v in vals])
    return out


def strip_centroids(src, dst):
    """The assistant as llama.cpp's converter writes it: no mtp.* tensors."""
    g = GGUF(src)
    tensors = [(t.name, t.type, t.ne, bytes(t.data)) for t in g.tensors.values()
               if not t.name.startswith("mtp.")]
    meta = {k: v for k, v in g.meta.items() if not k.endswith(("n_centroids", "centroid_top_k"))}
    writer.write_gguf(dst, meta, tensors)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def compare(tool, tpath, apath, tmp, label, kv_type="f32"):
    out = os.path.join(tmp, "dump.txt")
    env = dict(os.environ, SLUICE_ACT="f32")
    subprocess.run([tool, "-m", tpath, "-a", apath, "-p", ",".join(map(str, PROMPT)), "-k", str(K),
                    "-o", out, "--kv-type", kv_type], check=True, env=env)
    d = read_dump(out)
    target, asst = forward.Model(tpath), mtp.Assistant(apath)
    tc = target.cfg
    pos, token = int(d["pos"][0]), int(d["token"][0])
    src = [int(s) for s in d["src"]]
    check(pos == len(PROMPT), "%s: position %d" % (label, pos))
    # the C target's hidden state against the reference target's (with a
    # rounded cache the C target itself departs from the float64 one; the
    # assistant is compared on the dumped state and rows either way)
    if kv_type == "f32":
        ref_h = forward.rms_norm(target.hidden(PROMPT)[-1], target.w("output_norm.weight"), tc.eps)
        e = rel_err(d["h"], ref_h)
        check(e <= TOL, "%s: target hidden state differs by %.3g" % (label, e))
    kv = []
    for s, (kn, vn) in enumerate((("k0", "v0"), ("k1", "v1"))):
        L = tc.layers[src[s]]
        shape = (pos, L.n_kv_head, L.head_dim)
        kv.append((d[kn].reshape(shape), d[vn].reshape(shape)))
    logits, ids, h_next = asst.step(target, d["h"], token, pos, kv, src)
    if ids is None:
        check("ids" not in d, "%s: C narrowed the logits, the file has no centroids" % label)
    else:
        check("ids" in d and np.array_equal(d["ids"].astype(np.int64), ids),
              "%s: candidate ids differ" % label)
    check(len(d["logits"]) == len(logits), "%s: %d logits, reference %d"
          % (label, len(d["logits"]), len(logits)))
    if len(d["logits"]) == len(logits):
        e = rel_err(d["logits"], logits)
        check(e <= TOL, "%s: logits differ by %.3g of the largest" % (label, e))
    e = rel_err(d["h_next"], h_next)
    check(e <= TOL, "%s: h_next differs by %.3g" % (label, e))
    # greedy drafts: equal while the reference's choice is clear
    h, tok, compared = d["h"], token, 0
    for i in range(K):
        lg, cand, h = asst.step(target, h, tok, pos, kv, src)
        top = np.sort(lg)[-2:]
        if top[1] - top[0] <= 10 * TOL * np.max(np.abs(lg)):
            break
        best = int(np.argmax(lg))
        tok = int(cand[best]) if cand is not None else best
        check(int(d["drafts"][i]) == tok, "%s: draft %d is %d, reference %d"
              % (label, i, int(d["drafts"][i]), tok))
        compared += 1
    check(compared >= 2, "%s: only %d drafts had a clear margin" % (label, compared))
    print("%s: %d candidates, %d drafts compared: %s" % (label, len(d["logits"]), compared,
                                                         d["drafts"].astype(int).tolist()))


def main():
    sluice = os.environ["SLUICE"]
    tool = os.path.join(os.environ["SLUICE_BUILD"], "dump_mtp")
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in ("f32", "q8_0", "q4_0"):
            tpath, apath = os.path.join(tmp, "t.gguf"), os.path.join(tmp, "a.gguf")
            synth(sluice, "gemma4", qtype, tpath)
            synth(sluice, "gemma4-assistant", qtype, apath)
            compare(tool, tpath, apath, tmp, "weights %s" % qtype)
            if qtype == "f32":
                for kv_type in ("f16", "q8_0"):
                    compare(tool, tpath, apath, tmp, "kv rows %s" % kv_type, kv_type)
                full = os.path.join(tmp, "full.gguf")
                strip_centroids(apath, full)
                compare(tool, tpath, full, tmp, "no centroids")
    if failures:
        print("%d failures" % len(failures), file=sys.stderr)
        return 1
    print("test_mtp_ref: all cases match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
