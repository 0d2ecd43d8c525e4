#!/usr/bin/env python3
"""The C forward pass against the independent numpy reference (tests/ref/).

1. Self-tests of the reference: hand-computed blocks of every quantised
   format, the vectorised K-quant decoders against literal per-element ports
   of llama.cpp's loops, RoPE's relative-position property and frequency
   factors, causality, the Gemma 4 config (per-layer sizes, KV-sharing
   sources) and its per-layer embeddings reaching the logits.
2. For each architecture and weight type: a synthetic model (`sluice synth`,
   plus models written here whose K-quant blocks hold random bit patterns)
   runs through tests/tools/dump_logits in several scenarios:
     chunked   one sequence, prompt prefilled in chunks, then decode steps
     solo0/1   each sequence alone, prompt in one batch, then decode steps
     pair      both sequences in one batch (interleaved), then decode steps
               holding one token of each
     pairchunk both sequences concatenated, prefilled in chunks
   Every run's logits must match the reference's within the type's
   tolerance, with the same argmax at every position whose reference top-2
   margin is clear of that tolerance. The engine promises batch invariance:
   a token's logits do not depend on what else shares its batch, so pair
   must equal solo0/solo1 bit for bit, and chunked / pairchunk must too.
   The pair scenario runs again on the scalar and AVX2 kernel paths
   (SLUICE_KERNEL), each of which must match the reference as well.
   All of that runs with float activations (SLUICE_ACT=f32); for the types
   whose default is the integer path (activations quantised to 8 bits) the
   pair scenario runs again that way on every path (see TOL_Q8).

Environment (set by ctest): SLUICE (the CLI), SLUICE_BUILD (dump_logits is
there). Run by hand: SLUICE=build/sluice SLUICE_BUILD=build python3 tests/test_ref.py
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref import dequant, forward, writer  # noqa: E402

# Tolerances: max |C - reference| over all logits of a run, relative to the
# largest |reference logit|. Both sides dequantise the same bytes exactly
# (an fp16 scale times a small integer is exact in f32), so quantisation
# error cancels and what remains is the engine's f32 arithmetic against
# float64: f32 rounding is 6e-8 relative per operation, a dot product of
# length n (256..512 here) accumulates about sqrt(n) roundings, i.e. ~1e-6
# relative, and 6 layers of residual stream carry it to the logits without
# growth beyond a small factor (measured: 1.5e-7..6e-7 on every model here).
# 1e-5 leaves room for other summation orders (AVX2 / AVX-512 / scalar
# paths, thread splits) while a wrong scale, a dropped norm, an off-by-one
# position or window, or a misread quant bit moves logits by 1e-2 or more.
# No type adds error of its own, hence one bound for all.
TOL = {"f32": 1e-5, "f16": 1e-5, "bf16": 1e-5, "q8_0": 1e-5,
       "q4_0": 1e-5, "q4_K": 1e-5, "q5_K": 1e-5, "q6_K": 1e-5,
       "q4_1": 1e-5, "q5_0": 1e-5, "q5_1": 1e-5, "q2_K": 1e-5, "q3_K": 1e-5,
       "iq4_nl": 1e-5, "iq4_xs": 1e-5}

# With activations quantised to 8 bits (the default for these types; the
# runs above set SLUICE_ACT=f32) each matmul input carries a rounding error of
# up to half a step, a step being 1/127 of its block's largest |value|: ~0.3%
# relative per matmul, accumulated over 6 layers of 7 matmuls plus the head.
# Measured over the 13 models below: 1.0% to 3.9% of the largest logit (the
# worst on llama, whose logits are the smallest). The bound is twice the
# worst measured. It is a coarse check on purpose: the integer kernels are
# checked exactly, on the same quantised activations, in test_matmul; this
# catches what a whole model adds (a wrong scale or a misread quant moves
# logits by 30% or more).
TOL_Q8 = 8e-2
# BF16 weights take activations rounded to bf16 in the same mode (8
# significant bits instead of 8-bit block quantisation: well inside TOL_Q8).
Q8_TYPES = ("q8_0", "q4_0", "q4_K", "q6_K", "bf16", "q5_K", "q4_1", "q5_0", "q5_1", "q2_K",
            "q3_K", "iq4_nl", "iq4_xs")

ALL_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q5_K", "q6_K"]
FEW_TYPES = ["f32", "q4_0", "q6_K"]
# llama.cpp's other block types (`synth --type q2_K` is llama.cpp's q2_K mix:
# q2_K with q3_K/q4_K where it gives more bits)
NEW_TYPES = ["q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "iq4_nl", "iq4_xs"]
SYNTH_MATRIX = [("gemma3", t) for t in ALL_TYPES + NEW_TYPES] + \
    [(a, t) for a in ("gemma", "gemma2", "llama") for t in FEW_TYPES] + \
    [("gemma4", t) for t in ALL_TYPES]
# Models written by tests/ref/writer.py: untied head, random K-quant bits.
WRITER_MATRIX = [("gemma", "q4_K"), ("gemma2", "q5_K"), ("gemma3", "q6_K"),
                 ("llama", "q4_K"), ("gemma3", "bf16"), ("gemma4", "q4_K"), ("gemma4", "q4_0")]
TYPE_ID = {v: k for k, v in dequant.NAMES.items()}

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)


def half_bytes(x):
    return np.array([x], dtype="<f2").tobytes()


# ---------------------------------------------------------------- self-tests

def test_dequant_by_hand():
    # Q4_0: d = 0.5; qs[0] = 0x1F -> x[0] = (15-8)*0.5, x[16] = (1-8)*0.5
    blk = half_bytes(0.5) + bytes([0x1F]) + bytes([0x88] * 15)
    x = dequant.dequantize(dequant.Q4_0, blk, 32)
    check(x[0] == 3.5 and x[16] == -3.5 and x[1] == 0 and x[31] == 0, "q4_0 by hand: %s" % x[[0, 16]])

    # Q8_0: d = 2, q[5] = -3
    q = [0] * 32
    q[5] = -3
    blk = half_bytes(2.0) + np.array(q, dtype=np.int8).tobytes()
    x = dequant.dequantize(dequant.Q8_0, blk, 32)
    check(x[5] == -6 and np.count_nonzero(x) == 1, "q8_0 by hand")

    # K scales: sub-block 1 scale 2 min 1; sub-block 5 scale 5|(3<<4)=53,
    # min 7|(1<<4)=23 (top bits from bytes 1 and 5)
    scales = bytearray(12)
    scales[1] = 0b11000010
    scales[5] = 0b01000001
    scales[9] = 0x75
    # Q4_K: d = 1, dmin = 0.5; element 35 (sub-block 1) is the high nibble
    # of qs[3] = 4; element 163 (sub-block 5) the high nibble of qs[64+3] = 10
    qs = bytearray(128)
    qs[3] = 0x40
    qs[67] = 0xA0
    blk = half_bytes(1.0) + half_bytes(0.5) + bytes(scales) + bytes(qs)
    x = dequant.dequantize(dequant.Q4_K, blk, 256)
    check(x[35] == 1 * 2 * 4 - 0.5 * 1, "q4_K sub-block 1: %g" % x[35])
    check(x[163] == 53 * 10 - 0.5 * 23, "q4_K sub-block 5: %g" % x[163])
    check(x[32] == -0.5 and x[0] == 0.0, "q4_K zero quants give -dmin*min: %g %g" % (x[32], x[0]))

    # Q5_K: same, plus bit 5 of qh[3] -> element 163 gains 16
    qh = bytearray(32)
    qh[3] = 1 << 5
    blk = half_bytes(1.0) + half_bytes(0.5) + bytes(scales) + bytes(qh) + bytes(qs)
    x = dequant.dequantize(dequant.Q5_K, blk, 256)
    check(x[163] == 53 * 26 - 0.5 * 23 and x[35] == 7.5, "q5_K by hand: %g %g" % (x[163], x[35]))

    # Q6_K: element 197 = second half, third quarter, l = 5: high nibble of
    # ql[64+5] = 7, bits 4-5 of qh[32+5] = 2 -> q = 7 + 32 - 32 = 7; scale
    # sc[197 // 16 = 12] = -3; d = 0.25
    ql, qh6 = bytearray(128), bytearray(64)
    ql[69] = 0x70
    qh6[37] = 0b00100000
    sc = np.zeros(16, dtype=np.int8)
    sc[12] = -3
    blk = bytes(ql) + bytes(qh6) + sc.tobytes() + half_bytes(0.25)
    x = dequant.dequantize(dequant.Q6_K, blk, 256)
    check(x[197] == 0.25 * -3 * 7, "q6_K by hand: %g" % x[197])
    check(np.count_nonzero(x) == 16 + 0 and x[192] == 0.25 * -3 * -32,
          "q6_K zero quants are -32 under their scale")

    # BF16 and F16
    bf = np.array([0x3FC0, 0xC000], dtype="<u2").tobytes()  # 1.5, -2
    check(list(dequant.dequantize(dequant.BF16, bf, 2)) == [1.5, -2.0], "bf16")
    check(list(dequant.dequantize(dequant.F16, half_bytes(-0.125), 1)) == [-0.125], "f16")


def _scale_min_literal(j, s):
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def _f16(b):
    return float(np.frombuffer(bytes(b), dtype="<f2")[0])


def _q4k_literal(blk):
    d, dmin, s, q = _f16(blk[0:2]), _f16(blk[2:4]), blk[4:16], blk[16:144]
    y, qi = [], 0
    for j in range(0, 256, 64):
        sc1, m1 = _scale_min_literal(j // 32, s)
        sc2, m2 = _scale_min_literal(j // 32 + 1, s)
        y += [d * sc1 * (q[qi + l] & 0xF) - dmin * m1 for l in range(32)]
        y += [d * sc2 * (q[qi + l] >> 4) - dmin * m2 for l in range(32)]
        qi += 32
    return y


def _q5k_literal(blk):
    d, dmin, s = _f16(blk[0:2]), _f16(blk[2:4]), blk[4:16]
    qh, q = blk[16:48], blk[48:176]
    y, qi, u1, u2 = [], 0, 1, 2
    for j in range(0, 256, 64):
        sc1, m1 = _scale_min_literal(j // 32, s)
        sc2, m2 = _scale_min_literal(j // 32 + 1, s)
        y += [d * sc1 * ((q[qi + l] & 0xF) + (16 if qh[l] & u1 else 0)) - dmin * m1 for l in range(32)]
        y += [d * sc2 * ((q[qi + l] >> 4) + (16 if qh[l] & u2 else 0)) - dmin * m2 for l in range(32)]
        qi += 32
        u1 <<= 2
        u2 <<= 2
    return y


def _q6k_literal(blk):
    ql, qh = blk[0:128], blk[128:192]
    sc = np.frombuffer(bytes(blk[192:208]), dtype=np.int8).astype(int)
    d = _f16(blk[208:210])
    y = [0.0] * 256
    for half in range(2):
        o, L, H, S = 128 * half, 64 * half, 32 * half, 8 * half
        for l in range(32):
            i = l // 16
            q1 = ((ql[L + l] & 0xF) | (((qh[H + l] >> 0) & 3) << 4)) - 32
            q2 = ((ql[L + l + 32] & 0xF) | (((qh[H + l] >> 2) & 3) << 4)) - 32
            q3 = ((ql[L + l] >> 4) | (((qh[H + l] >> 4) & 3) << 4)) - 32
            q4 = ((ql[L + l + 32] >> 4) | (((qh[H + l] >> 6) & 3) << 4)) - 32
            y[o + l] = d * sc[S + i] * q1
            y[o + l + 32] = d * sc[S + i + 2] * q2
            y[o + l + 64] = d * sc[S + i + 4] * q3
            y[o + l + 96] = d * sc[S + i + 6] * q4
    return y


def test_kquants_against_literal_loops():
    rng = np.random.default_rng(7)
    for t, literal in ((dequant.Q4_K, _q4k_literal), (dequant.Q5_K, _q5k_literal),
                       (dequant.Q6_K, _q6k_literal)):
        size = dequant.BLOCK[t][1]
        raw = bytearray(rng.integers(0, 256, size=3 * size, dtype=np.uint8).tobytes())
        # keep the fp16 scales finite and moderate
        d_at = [208] if t == dequant.Q6_K else [0, 2]
        for b in range(3):
            for off in d_at:
                raw[b * size + off:b * size + off + 2] = half_bytes(rng.uniform(-2, 2))
        want = sum((literal(raw[b * size:(b + 1) * size]) for b in range(3)), [])
        got = dequant.dequantize(t, bytes(raw), 768)
        check(np.array_equal(got, np.array(want)), "%s vectorised != literal loop" % dequant.NAMES[t])


def test_c_dequant_vs_reference():
    """The engine's dequantisation (tests/tools/dequant_rows: whole rows and
    odd spans) of random blocks against this reference, for every quantised
    type, on one block and on an odd number of blocks. The float32 result
    may differ from the float64 reference by the rounding of d * sc * q
    and of its difference with a min: 2^-24 of the value each."""
    tool = os.path.join(os.environ.get("SLUICE_BUILD", "build"), "dequant_rows")
    if not os.path.exists(tool):
        check(False, "no dequant_rows at %s (set SLUICE_BUILD)" % tool)
        return
    rng = np.random.default_rng(17)
    for t in sorted(dequant.HALF_AT):
        elems, size = dequant.BLOCK[t]
        for n_blocks in (1, 11):
            raw = bytearray(rng.integers(0, 256, size=n_blocks * size, dtype=np.uint8).tobytes())
            for b in range(n_blocks):
                for off in dequant.HALF_AT[t]:
                    raw[b * size + off:b * size + off + 2] = half_bytes(rng.uniform(-3, 3))
            n = n_blocks * elems
            r = subprocess.run([tool, str(t), str(n)], input=bytes(raw), capture_output=True)
            if r.returncode != 0:
                check(False, "dequant_rows %s: %s" % (dequant.NAMES[t], r.stderr.decode()))
                continue
            got = np.frombuffer(r.stdout, dtype="<f4").astype(np.float64)
            want = dequant.dequantize(t, bytes(raw), n)
            err = np.abs(got - want) - 2.0 ** -23 * np.abs(want)
            check(got.size == n and (err <= 1e-30).all(),
                  "C dequantisation of %s (%d blocks) off the reference by up to %g"
                  % (dequant.NAMES[t], n_blocks, float(np.max(np.abs(got - want)))))


def test_new_blocks_by_hand():
    # Q5_0: d = 2; element 17 = high nibble of qs[1] (5) + bit 17 of qh (16)
    qh = (1 << 17).to_bytes(4, "little")
    qs = bytearray(16)
    qs[1] = 0x50
    x = dequant.dequantize(dequant.Q5_0, half_bytes(2.0) + qh + bytes(qs), 32)
    check(x[17] == 2 * (21 - 16) and x[0] == -32, "q5_0 by hand: %g %g" % (x[17], x[0]))
    # Q5_1: d = 0.5, m = -1: element 17 = 0.5 * 21 - 1
    x = dequant.dequantize(dequant.Q5_1, half_bytes(0.5) + half_bytes(-1.0) + qh + bytes(qs), 32)
    check(x[17] == 9.5 and x[0] == -1, "q5_1 by hand")
    # IQ4_NL: nibble 0 -> -127, 15 -> 113
    x = dequant.dequantize(dequant.IQ4_NL, half_bytes(0.5) + bytes([0xF0] + [0x88] * 15), 32)
    check(x[0] == -63.5 and x[16] == 56.5 and x[1] == 0.5, "iq4_nl by hand")
    # Q3_K: element 33 = bits 2-3 of qs[1] (3), hmask[1] bit 1 clear -> 3 - 4;
    # its group 2 scale: low nibble of byte 2 (5), top bits 0-1 of byte 10 (2) -> 37 - 32
    blk = bytearray(110)
    blk[32 + 1] = 0b1100
    blk[96 + 2] = 5
    blk[96 + 10] = 2
    blk[108:110] = half_bytes(0.25)
    x = dequant.dequantize(dequant.Q3_K, bytes(blk), 256)
    check(x[33] == 0.25 * 5 * -1, "q3_K by hand: %g" % x[33])


def test_rope():
    rng = np.random.default_rng(3)
    for neox in (True, False):
        q = rng.normal(size=(1, 1, 16))
        k = rng.normal(size=(1, 1, 16))
        dots = []
        for m, n in ((5, 2), (9, 6), (103, 100)):
            qm = forward.rope(q, np.array([m]), 12, 10000.0, 2.0, neox)
            kn = forward.rope(k, np.array([n]), 12, 10000.0, 2.0, neox)
            dots.append(float(np.sum(qm * kn)))
            check(np.allclose(qm[..., 12:], q[..., 12:]), "rope leaves dims past rope_dim alone")
            check(np.isclose(np.linalg.norm(qm), np.linalg.norm(q)), "rope keeps the norm")
        check(np.allclose(dots, dots[0]), "rope: q.k depends only on the distance (neox=%s)" % neox)
    # position 0 is the identity; position 1, pair 0 turns by exactly 1 radian / scale
    x = np.zeros((1, 1, 4))
    x[0, 0, 0] = 1.0
    check(np.allclose(forward.rope(x, np.array([0]), 4, 10000.0, 1.0, True), x), "rope at 0")
    y = forward.rope(x, np.array([1]), 4, 10000.0, 2.0, True)[0, 0]
    check(np.allclose(y, [np.cos(0.5), 0, np.sin(0.5), 0]), "neox pairs i with i+half: %s" % y)
    y = forward.rope(x, np.array([1]), 4, 10000.0, 1.0, False)[0, 0]
    check(np.allclose(y, [np.cos(1.0), np.sin(1.0), 0, 0]), "llama pairs 2i with 2i+1: %s" % y)
    # frequency factors (Gemma 4's proportional RoPE): 1e30 keeps a pair
    # still, 2 halves its frequency, 1 changes nothing
    q = rng.normal(size=(3, 2, 8))
    pos = np.array([0, 5, 77])
    a = forward.rope(q, pos, 8, 10000.0, 1.0, True, factors=[1.0, 2.0, 1e30, 1e30])
    b = forward.rope(q, pos, 8, 10000.0, 1.0, True)
    check(np.allclose(a[..., [0, 4]], b[..., [0, 4]]), "rope factor 1 leaves pair 0 as it was")
    check(np.allclose(a[..., [2, 3, 6, 7]], q[..., [2, 3, 6, 7]]), "rope factor 1e30 keeps pairs still")
    half = forward.rope(q, pos, 8, 10000.0, 2.0, True)
    check(np.allclose(a[..., [1, 5]], half[..., [1, 5]]), "rope factor 2 halves the frequency")


def test_reference_causal_and_windowed(tmp):
    for arch in ("gemma2", "gemma3", "llama"):
        path = os.path.join(tmp, "causal_%s.gguf" % arch)
        writer.tiny_model(path, arch, dequant.F32, seed=11, n_layer=2)
        m = forward.Model(path)
        toks = np.random.default_rng(1).integers(0, 512, size=20)
        full = m.logits(toks)
        check(np.allclose(m.logits(toks[:13]), full[:13], rtol=0, atol=1e-9),
              "%s reference: a prefix's logits do not depend on later tokens" % arch)
        other = toks.copy()
        other[0] = (other[0] + 1) % 512
        changed = np.abs(m.logits(other)[-1] - full[-1]).max()
        if arch == "gemma2":
            # layer 0 slides (window 8), layer 1 is global: token 0 still reaches position 19
            check(changed > 1e-6, "gemma2: the global layer sees the whole prompt")
    # gemma2 with every layer sliding (pattern key 1 gives none; write a
    # 1-layer model, whose only layer 0 slides): token 0 cannot reach
    # position 19 through a window of 8
    path = os.path.join(tmp, "window.gguf")
    writer.tiny_model(path, "gemma2", dequant.F32, seed=12, n_layer=1)
    m = forward.Model(path)
    check(m.cfg.layers[0].window == 8, "gemma2 layer 0 slides")
    toks = np.random.default_rng(2).integers(0, 512, size=20)
    other = toks.copy()
    other[0] = (other[0] + 1) % 512
    a, b = m.logits(toks), m.logits(other)
    check(np.array_equal(a[8:], b[8:]), "window 8: position 8+ never sees token 0")
    check(not np.array_equal(a[7], b[7]), "window 8: position 7 still sees token 0")


def test_reference_gemma4(tmp):
    """Causality through the KV-sharing layers and the per-layer path, on the
    synth test model (only when the CLI is at hand)."""
    sluice = os.environ.get("SLUICE", "")
    if not sluice:
        return
    path = os.path.join(tmp, "g4_causal.gguf")
    r = subprocess.run([sluice, "synth", "--arch", "gemma4", "--size", "test", "-o", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        check(False, "synth gemma4 test: " + r.stderr.strip()[-300:])
        return
    m = forward.Model(path)
    toks = np.random.default_rng(4).integers(0, 512, size=20)
    full = m.logits(toks)
    check(np.allclose(m.logits(toks[:11]), full[:11], rtol=0, atol=1e-9),
          "gemma4 reference: a prefix's logits do not depend on later tokens")
    # the per-layer embeddings carry the token itself into every layer: a
    # different last token changes its logits even with the main embedding
    # row copied over
    other = toks.copy()
    other[-1] = (other[-1] + 1) % 512
    emb = m.w("token_embd.weight").copy()
    emb[other[-1]] = emb[toks[-1]]
    m._cache["token_embd.weight"] = emb
    keep = np.ones(512, dtype=bool)
    keep[[toks[-1], other[-1]]] = False  # the tied head's changed rows
    changed = np.abs(m.logits(other)[-1] - m.logits(toks)[-1])[keep].max()
    check(changed > 1e-3, "gemma4 reference: per-layer embeddings reach the logits (%g)" % changed)
    os.remove(path)


def test_config():
    class G:
        path = "mem"

        def __init__(self, meta):
            self.meta = meta

        def get(self, k, d=None):
            return self.meta.get(k, d)
    base = {"general.architecture": "gemma3", "gemma3.block_count": 12,
            "gemma3.embedding_length": 256, "gemma3.feed_forward_length": 512,
            "gemma3.attention.head_count": 4, "gemma3.attention.sliding_window": 8,
            "gemma3.rope.freq_base": 1e6, "gemma3.rope.scaling.type": "linear",
            "gemma3.rope.scaling.factor": 8.0}
    c = forward.Config(G(base))
    sliding = [L.sliding for L in c.layers]
    check(sliding == [True] * 5 + [False] + [True] * 5 + [False], "gemma3 5:1 pattern: %s" % sliding)
    check(c.layers[0].rope_base == 10000.0 and c.layers[0].rope_scale == 1.0, "gemma3 local rope")
    check(c.layers[5].rope_base == 1e6 and c.layers[5].rope_scale == 8.0, "gemma3 global rope")
    c = forward.Config(G(dict(base, **{"gemma3.attention.sliding_window_pattern": 3})))
    check([L.sliding for L in c.layers][:6] == [True, True, False] * 2, "pattern key overrides")
    g4 = {"general.architecture": "gemma4", "gemma4.block_count": 10,
          "gemma4.embedding_length": 256, "gemma4.feed_forward_length": [512] * 6 + [1024] * 4,
          "gemma4.attention.head_count": 4, "gemma4.attention.head_count_kv": [2, 2, 2, 2, 1] * 2,
          "gemma4.attention.key_length": 128, "gemma4.attention.key_length_swa": 64,
          "gemma4.rope.dimension_count": 128, "gemma4.rope.dimension_count_swa": 32,
          "gemma4.rope.freq_base": 1e6, "gemma4.rope.freq_base_swa": 1e4,
          "gemma4.attention.sliding_window": 8,
          "gemma4.attention.sliding_window_pattern": [True, True, True, True, False] * 2,
          "gemma4.attention.shared_kv_layers": 4, "gemma4.embedding_length_per_layer_input": 64}
    c = forward.Config(G(g4))
    L = c.layers
    # Hugging Face's rule (the last non-shared layer of the same kind); the
    # engine follows llama.cpp's n_own-2 / n_own-1 and refuses layouts where
    # the two differ, like this one (layer 4 is global)
    check([l.kv_src for l in L] == [None] * 6 + [5, 5, 5, 4],
          "gemma4 kv sharing: sliding layers read 5, the global one 4: %s" % [l.kv_src for l in L])
    check((L[0].head_dim, L[0].n_kv_head, L[0].rope_dim, L[0].rope_base) == (64, 2, 32, 1e4) and
          (L[4].head_dim, L[4].n_kv_head, L[4].rope_dim, L[4].rope_base) == (128, 1, 128, 1e6),
          "gemma4 sliding and global layers have their own sizes")
    check(L[9].d_ff == 1024 and L[0].d_ff == 512 and all(l.attn_scale == 1.0 for l in L),
          "gemma4 per-layer d_ff, unscaled q.k")
    g2 = {k.replace("gemma3", "gemma2"): v for k, v in base.items()}
    g2["general.architecture"] = "gemma2"
    c = forward.Config(G(g2))
    check([L.sliding for L in c.layers][:4] == [True, False, True, False], "gemma2 alternates")


# ------------------------------------------------------------ engine vs ref

class Engine:
    def __init__(self, tmp):
        self.sluice = os.environ.get("SLUICE", "")
        build = os.environ.get("SLUICE_BUILD", "")
        self.dump = os.path.join(build, "dump_logits")
        self.tmp = tmp
        self.runs = 0

    def synth(self, arch, type_name, seed):
        path = os.path.join(self.tmp, "synth_%s_%s.gguf" % (arch, type_name))
        cmd = [self.sluice, "synth", "--arch", arch, "--size", "test", "--type", type_name,
               "--seed", str(seed), "-o", path]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            check(False, "%s failed: %s" % (" ".join(cmd), r.stderr.strip()[-400:]))
            return None
        return path

    def logits(self, model, n_vocab, lens, args, kernel=None, act="f32"):
        out = os.path.join(self.tmp, "logits.bin")
        cmd = [self.dump, "-m", model, "-o", out] + args
        # passive waiting: on a loaded machine spinning OpenMP workers
        # slow a tiny run down by 50x
        env = dict(os.environ, OMP_WAIT_POLICY="passive", SLUICE_ACT=act)
        desc = "SLUICE_ACT=%s %s" % (act, " ".join(cmd))
        if kernel:
            env["SLUICE_KERNEL"] = kernel
            desc = "SLUICE_KERNEL=%s %s" % (kernel, desc)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        self.runs += 1
        if r.returncode != 0:
            check(False, "%s failed: %s" % (desc, r.stderr.strip()[-400:]))
            return None
        got = np.fromfile(out, dtype="<f4").astype(np.float64)
        if got.size != sum(lens) * n_vocab:
            check(False, "%s: %d logits, expected %d" % (desc, got.size, sum(lens) * n_vocab))
            return None
        rows = got.reshape(-1, n_vocab)
        return [rows[sum(lens[:i]):sum(lens[:i + 1])] for i in range(len(lens))]


def ids(a):
    return ",".join(str(int(t)) for t in a)


def compare(label, got, want, tol):
    """Max relative error and argmax agreement of one run against the reference."""
    scale = np.abs(want).max()
    err = np.abs(got - want).max() / scale
    check(np.all(np.isfinite(got)), "%s: non-finite logits" % label)
    check(err <= tol, "%s: max |C - ref| / max|ref| = %.3g > %.3g" % (label, err, tol))
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tol * scale
    agree = np.argmax(got, axis=1) == np.argmax(want, axis=1)
    bad = np.nonzero(clear & ~agree)[0]
    check(bad.size == 0, "%s: argmax differs at positions %s" % (label, bad.tolist()))
    return err, int((~clear).sum())


def same(label, a, b):
    if a is None or b is None:
        return
    diff = np.abs(a - b).max()
    check(np.array_equal(a, b), "%s: not bit-exact (max diff %.3g)" % (label, diff))


def engine_vs_ref(eng, label, path, type_name, rng):
    model = forward.Model(path)
    n_vocab = model.g.tensors["token_embd.weight"].ne[1]
    p0, d0 = rng.integers(0, n_vocab, 22), rng.integers(0, n_vocab, 6)
    p1, d1 = rng.integers(0, n_vocab, 17), rng.integers(0, n_vocab, 8)
    seq0, seq1 = np.concatenate([p0, d0]), np.concatenate([p1, d1])
    ref0, ref1 = model.logits(seq0), model.logits(seq1)
    l0, l1 = len(seq0), len(seq1)
    a0 = ["-p0", ids(p0), "-d0", ids(d0)]
    a1 = ["-p1", ids(p1), "-d1", ids(d1)]
    solo1_args = ["-p0", ids(p1), "-d0", ids(d1)]

    runs = {
        "chunked": eng.logits(path, n_vocab, [l0], a0 + ["--chunks", "5,3,9"]),
        "solo0": eng.logits(path, n_vocab, [l0], a0),
        "solo1": eng.logits(path, n_vocab, [l1], solo1_args),
        "pair": eng.logits(path, n_vocab, [l0, l1], a0 + a1 + ["--interleave"]),
        "pairchunk": eng.logits(path, n_vocab, [l0, l1], a0 + a1 + ["--chunks", "7,4"]),
    }
    if any(v is None for v in runs.values()):
        return
    tol = TOL[type_name]
    worst, near_ties = 0.0, 0
    for name, seqs in runs.items():
        refs = [ref1] if name == "solo1" else [ref0, ref1][:len(seqs)]
        for s, (got, want) in enumerate(zip(seqs, refs)):
            e, n = compare("%s %s seq%d" % (label, name, s), got, want, tol)
            worst, near_ties = max(worst, e), near_ties + n
    solo0, solo1 = runs["solo0"][0], runs["solo1"][0]
    same(label + " pair seq0 vs solo", runs["pair"][0], solo0)
    same(label + " pair seq1 vs solo", runs["pair"][1], solo1)
    same(label + " chunked vs one-batch prefill", runs["chunked"][0], solo0)
    same(label + " pairchunk seq0 vs solo", runs["pairchunk"][0], solo0)
    same(label + " pairchunk seq1 vs solo", runs["pairchunk"][1], solo1)
    # The lower SIMD paths (the default is the best the CPU has) on the
    # batched scenario: each must match the reference on its own.
    for kernel in ("scalar", "avx2"):
        seqs = eng.logits(path, n_vocab, [l0, l1], a0 + a1 + ["--interleave"], kernel)
        for s, (got, want) in enumerate(zip(seqs or [], [ref0, ref1])):
            e, _ = compare("%s pair %s seq%d" % (label, kernel, s), got, want, tol)
            worst = max(worst, e)
    print("%-22s max rel err %.2e (tol %.0e), near-ties %d, |logit| max %.3g"
          % (label, worst, tol, near_ties, np.abs(ref0).max()), flush=True)
    if type_name in Q8_TYPES:
        q8_vs_ref(eng, label, path, n_vocab, a0 + a1, [l0, l1], [ref0, ref1], a0, l0)


def q8_vs_ref(eng, label, path, n_vocab, pair_args, lens, refs, solo_args, solo_len):
    """The default integer path (activations quantised to 8 bits) on every
    kernel path: within TOL_Q8 of the float reference, and still batch
    invariant (pair == solo bit for bit)."""
    worst = 0.0
    solo = eng.logits(path, n_vocab, [solo_len], solo_args, act="q8")
    for kernel in (None, "avx2", "scalar"):
        seqs = eng.logits(path, n_vocab, lens, pair_args + ["--interleave"], kernel, act="q8")
        for s, (got, want) in enumerate(zip(seqs or [], refs)):
            e, _ = compare("%s q8 pair %s seq%d" % (label, kernel or "best", s), got, want, TOL_Q8)
            worst = max(worst, e)
        if kernel is None and seqs and solo:
            same(label + " q8 pair seq0 vs solo", seqs[0], solo[0])
    print("%-22s q8 activations: max rel err %.2e (tol %.0e)" % (label, worst, TOL_Q8), flush=True)


def main():
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sluice_ref_") as tmp:
        test_dequant_by_hand()
        test_kquants_against_literal_loops()
        test_new_blocks_by_hand()
        test_c_dequant_vs_reference()
        test_rope()
        test_config()
        test_reference_causal_and_windowed(tmp)
        test_reference_gemma4(tmp)
        print("reference self-tests: %d failures" % len(failures), flush=True)

        eng = Engine(tmp)
        if not os.path.exists(eng.dump):
            check(False, "no dump_logits at %s (set SLUICE_BUILD)" % eng.dump)
        else:
            rng = np.random.default_rng(2024)
            for seed, (arch, t) in enumerate(SYNTH_MATRIX):
                path = eng.synth(arch, t, seed + 1)
                if path:
                    engine_vs_ref(eng, "synth %s %s" % (arch, t), path, t, rng)
                    os.remove(path)
            for seed, (arch, t) in enumerate(WRITER_MATRIX):
                path = os.path.join(tmp, "w_%s_%s.gguf" % (arch, t))
                if arch == "gemma4":
                    writer.tiny_gemma4(path, TYPE_ID[t], seed=100 + seed)
                else:
                    writer.tiny_model(path, arch, TYPE_ID[t], seed=100 + seed, n_layer=6)
                engine_vs_ref(eng, "writer %s %s" % (arch, t), path, t, rng)
                os.remove(path)
        print("%d dump_logits runs, %.1f s" % (eng.runs, time.time() - t0))
    if failures:
        print("test_ref: %d failures" % len(failures))
        return 1
    print("test_ref: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
