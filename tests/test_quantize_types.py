"""`sluice quantize` to every block type and every llama.cpp mix.

A random f32 Gemma-3-shaped model 288 wide (like Gemma 3 1B's 1152, not a
multiple of 256, so llama.cpp's fallbacks apply to the rows that are 288
or 576 long) with one key/value head per four query heads is quantised to
each --type. For each result:
  - every tensor keeps its name and shape, and has the type llama.cpp's
    llama_tensor_get_type would give it (the rules are written out again
    below, from llama.cpp's source, independently of cli/qmix.c);
  - the file runs (tests/tools/dump_logits) and, with float activations,
    its logits match the numpy reference forward pass on the same file;
    with 8-bit activations (the default) within test_ref's TOL_Q8;
  - cut short, or with a NaN block scale, it is refused with an error
    naming the problem.

Environment (set by ctest): SLUICE, SLUICE_BUILD.
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref import dequant, forward, gguf, writer  # noqa: E402

N_LAYER, N_HEAD, N_KV_HEAD, D_MODEL, D_FF = 8, 4, 1, 288, 576
PLAIN = ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "iq4_xs",
         "q3_K", "q4_K", "q5_K"]
MIXES = ["q2_K", "q3_K_S", "q3_K_M", "q3_K_L", "q4_K_S", "q4_K_M", "q5_K_S", "q5_K_M", "q6_K"]
# base type of each mix (llama_ftype's "mostly" type)
MIX_BASE = {"q2_K": "q2_K", "q3_K_S": "q3_K", "q3_K_M": "q3_K", "q3_K_L": "q3_K",
            "q4_K_S": "q4_K", "q4_K_M": "q4_K", "q5_K_S": "q5_K", "q5_K_M": "q5_K", "q6_K": "q6_K"}
BLOCK = {dequant.NAMES[t]: dequant.BLOCK[t][0] for t in dequant.BLOCK}
# llama.cpp's fallback for K-type rows that are not whole 256-blocks
FALLBACK = {"q2_K": "iq4_nl", "q3_K": "iq4_nl", "iq4_xs": "iq4_nl", "q4_K": "q5_0",
            "q5_K": "q5_1", "q6_K": "q8_0"}
TOL = 1e-5     # float activations: test_ref's bound for every type
TOL_Q8 = 8e-2  # 8-bit activations: test_ref's bound

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_rule(mix, name, n_in):
    """llama_tensor_get_type for the K-quant file types (no imatrix, no MoE)."""
    base = MIX_BASE[mix]
    gqa = N_HEAD // N_KV_HEAD
    if name == "token_embd.weight":  # tied: it is the output matrix
        return "q8_0" if n_in % 256 else "q6_K"
    m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", name)
    il, kind = int(m.group(1)), m.group(2)
    if kind == "attn_v":
        return {"q2_K": "q4_K" if gqa >= 4 else "q3_K",
                "q3_K_M": "q5_K" if il < 2 else "q4_K",
                "q3_K_L": "q5_K",
                "q4_K_M": "q6_K" if more_bits(il, N_LAYER) else base,
                "q5_K_M": "q6_K" if more_bits(il, N_LAYER) else base,
                "q4_K_S": "q5_K" if il < 4 else base}.get(mix, base)
    if kind == "ffn_down":
        return {"q2_K": "q3_K",
                "q3_K_M": "q5_K" if il < N_LAYER // 16 else "q4_K",
                "q3_K_L": "q5_K",
                "q4_K_M": "q6_K" if more_bits(il, N_LAYER) else base,
                "q5_K_M": "q6_K" if more_bits(il, N_LAYER) else base,
                "q4_K_S": "q5_K" if il < N_LAYER // 8 else base}.get(mix, base)
    if kind == "attn_output":
        return {"q2_K": "q3_K", "q3_K_M": "q4_K", "q3_K_L": "q5_K"}.get(mix, base)
    return base


def expected_type(qtype, name, n_in):
    t = mix_rule(qtype, name, n_in) if qtype in MIXES else qtype
    if n_in % BLOCK[t]:
        t = FALLBACK.get(t, t)
    if n_in % BLOCK[t]:
        t = "f16"
    return t


def inspect(sluice, path):
    """{name: (type, shape)} from `sluice inspect`."""
    r = subprocess.run([sluice, "inspect", path], capture_output=True, text=True)
    check(r.returncode == 0, "inspect %s: %s" % (path, r.stderr[-300:]))
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s+(\S+\.weight)\s+(\S+)\s+([\d x]+?)\s+\d+\s+\d+\s*$", line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3).strip())
    return out


def dump(build, path, tokens, act, tmp):
    out = os.path.join(tmp, "logits.bin")
    env = dict(os.environ, OMP_WAIT_POLICY="passive", SLUICE_ACT=act)
    ids = ",".join(str(int(t)) for t in tokens)
    r = subprocess.run([os.path.join(build, "dump_logits"), "-m", path, "-o", out, "-p0", ids],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return None, r.stderr
    return np.fromfile(out, dtype="<f4").astype(np.float64).reshape(len(tokens), -1), r.stderr


def one_type(sluice, build, src, src_tensors, qtype, tmp, tokens):
    path = os.path.join(tmp, "q_%s.gguf" % qtype)
    r = subprocess.run([sluice, "quantize", src, path, "--type", qtype], capture_output=True, text=True)
    if r.returncode != 0:
        check(False, "quantize --type %s: %s" % (qtype, r.stderr[-400:]))
        return
    check("quantize: types:" in r.stderr, "%s: no per-type summary" % qtype)
    got = inspect(sluice, path)
    check(sorted(got) == sorted(src_tensors), "%s: tensor names changed" % qtype)
    wrong = []
    for name, (_, shape) in src_tensors.items():
        if name not in got:
            continue
        n_in = int(shape.split(" x ")[0])
        is_matrix = " x " in shape and "norm" not in name
        want = expected_type(qtype, name, n_in) if is_matrix else "f32"
        if got[name] != (want, shape):
            wrong.append("%s %s (want %s %s)" % (name, got[name], want, shape))
    check(not wrong, "%s: %d tensors off llama.cpp's choice: %s" % (qtype, len(wrong), wrong[:4]))

    ref = forward.Model(path).logits(tokens)
    scale = np.abs(ref).max()
    for act, tol in (("f32", TOL), ("q8", TOL_Q8)):
        logits, err = dump(build, path, tokens, act, tmp)
        if logits is None:
            check(False, "%s (%s activations) does not run: %s" % (qtype, act, err[-300:]))
            continue
        rel = np.abs(logits - ref).max() / scale
        check(np.isfinite(logits).all() and rel <= tol,
              "%s %s activations: max rel err %.3g > %.0e" % (qtype, act, rel, tol))
        print("%-7s %s activations: max rel err %.2e" % (qtype, act, rel), flush=True)

    # a file cut short inside its tensor data is refused, naming the problem
    with open(path, "rb") as fh:
        data = fh.read()
    cut = os.path.join(tmp, "cut.gguf")
    with open(cut, "wb") as fh:
        fh.write(data[:len(data) - 100])
    logits, err = dump(build, cut, tokens[:2], "q8", tmp)
    check(logits is None and re.search(r"past the end|truncated", err),
          "%s: a truncated file is not refused clearly: %s" % (qtype, err[-200:]))
    # a block whose scale is NaN (what no quantiser writes) is refused,
    # naming the tensor and the block
    t = gguf.GGUF(path).tensors["blk.1.attn_q.weight"]
    at = dequant.HALF_AT.get(t.type)
    if at:
        block = dequant.BLOCK[t.type][1]
        bad = bytearray(data)
        bad[t.file_offset + 3 * block + at[-1]:t.file_offset + 3 * block + at[-1] + 2] = b"\x00\x7e"
        with open(cut, "wb") as fh:
            fh.write(bytes(bad))
        logits, err = dump(build, cut, tokens[:2], "q8", tmp)
        check(logits is None and "blk.1.attn_q.weight: block 3 has an infinite or NaN scale" in err,
              "%s: a NaN scale is not refused clearly: %s" % (qtype, err[-200:]))
    os.remove(path)


def main():
    sluice = os.environ.get("SLUICE", "")
    build = os.environ.get("SLUICE_BUILD", "")
    with tempfile.TemporaryDirectory(prefix="sluice_qtypes_") as tmp:
        src = os.path.join(tmp, "f32.gguf")
        writer.tiny_model(src, "gemma3", dequant.F32, seed=31, d_model=D_MODEL, n_layer=N_LAYER,
                          n_head=N_HEAD, n_kv_head=N_KV_HEAD, head_dim=64, d_ff=D_FF, tied=True)
        src_tensors = inspect(sluice, src)
        check(len(src_tensors) > 8 * N_LAYER, "inspect lists the source's tensors")
        tokens = np.random.default_rng(3).integers(0, 512, 12)
        for qtype in PLAIN + MIXES:
            one_type(sluice, build, src, src_tensors, qtype, tmp, tokens)
    if failures:
        print("test_quantize_types: %d failures" % len(failures))
        return 1
    print("test_quantize_types: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
