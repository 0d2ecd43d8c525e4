#!/usr/bin/python3
"""The weights ik_llama.cpp multiplies from 32-token micro-batches, as a GGUF
sluice reads: IN's K-quant matrices converted the way ik_llama.cpp's
iqk_mul_mat converts them before its batched kernels (is_dequant_better,
AVX-512 path), so `sluice perplexity` on OUT shows what that conversion
does to a model's perplexity. Per matrix it prints the relative RMS error
against REF (the f16 file IN was quantised from) of IN's own values and of
the converted ones, and their difference.

  Q2_K -> 8 bits, one fp16 scale per 256 values: the block's float values
          d*sc*q - dmin*m rounded to max|v|/127 steps (written as Q8_0,
          the same scale in each of its 8 blocks)
  Q3_K -> the integers sc*q (-128..124) kept where they fit in int8; a
          block holding 128 (scale -32 and quant -4) is scaled by 127/128
          and rounded, its d times max/127 rounded to fp16 (Q8_0)
  Q4_K, Q5_K -> per 32 values d*sc and -dmin*m rounded to fp16 (Q4_1, Q5_1)
  Q6_K -> per 32 values (two 16-value scales) the integers sc*q rounded to
          max/127 steps, the scale d*max/127 to fp16 (Q8_0); ik does this
          from 64 tokens a micro-batch
token_embd (looked up by row, not multiplied) and other types are copied,
and so are the types named in KEEP (comma-separated, e.g. KEEP=q3_K).

usage: bench/ik_requant.py IN.gguf REF_f16.gguf OUT.gguf
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from ref import dequant, gguf, writer  # noqa: E402
from ref.dequant import Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, Q4_1, Q5_1  # noqa: E402

f16 = np.float16
f32 = np.float32


def rne(x):
    """_mm256_round_ps(_MM_ROUND_NEAREST) then packs to int8 (saturating)."""
    return np.clip(np.rint(x), -128, 127).astype(np.int64)


def fp16(x):
    return np.asarray(x, dtype=f32).astype(f16)


def q2_K(buf, n):
    """-> (nb, 256) int8 quants, (nb,) fp16 scale."""
    b = dequant._blocks(buf, Q2_K, n)
    sc = b[:, 0:16].astype(np.int64)
    d, dmin = dequant._half(b[:, 80:82]).astype(f32), dequant._half(b[:, 82:84]).astype(f32)
    q = dequant._two_bit_levels(b[:, 16:80]).reshape(-1, 16, 16)
    qi = (q * (sc & 15)[:, :, None]).astype(f32)
    m = (dmin * f32(-1)) * (sc >> 4).astype(f32)  # vm * the min of each 16
    # fmadd(q*sc, d, m): one rounding; float64 of the f32 product is exact
    v = (qi.astype(np.float64) * d[:, :, None] + m[:, :, None]).astype(f32).reshape(-1, 256)
    dn = (np.abs(v).max(axis=1) / f32(127)).astype(f32)
    inv = np.where(dn != 0, f32(1) / np.where(dn != 0, dn, 1), 0).astype(f32)
    qq = rne((v * inv[:, None]).astype(f32))
    return qq, fp16(dn)


def q3_K(buf, n):
    d, sc, q = dequant.q3_K_levels(buf, n)
    d = d.astype(f32)[:, 0]
    qi = (q.reshape(-1, 16, 16) * sc[:, :, None]).reshape(-1, 256)
    dn = (np.abs(qi).max(axis=1).astype(f32) / f32(127)).astype(f32)
    scale = dn >= 1
    dn = np.where(scale, dn, f32(1)).astype(f32)
    inv = (f32(1) / dn).astype(f32)
    qq = np.where(scale[:, None], rne((qi.astype(f32) * inv[:, None]).astype(f32)), qi)
    return qq, fp16(d * dn)


def k_dm(buf, n, t):
    """Q4_K / Q5_K -> (nb*8, 32) quants, (nb*8,) fp16 d*sc, fp16 -dmin*m."""
    b = dequant._blocks(buf, t, n)
    d, dmin = dequant._half(b[:, 0:2]).astype(f32), dequant._half(b[:, 2:4]).astype(f32)
    scale, mins = dequant._k_scales_mins(b[:, 4:16])
    if t == Q4_K:
        q = dequant._nibbles_by_subblock(b[:, 16:144])
    else:
        qh = b[:, 16:48].astype(np.int64)
        fifth = (qh[:, None, :] >> np.arange(8)[None, :, None]) & 1
        q = dequant._nibbles_by_subblock(b[:, 48:176]) + 16 * fifth
    dd = fp16(d * scale.astype(f32))
    mm = fp16((f32(-1) * dmin) * mins.astype(f32))
    return q.reshape(-1, 32), dd.reshape(-1), mm.reshape(-1)


def q6_K(buf, n):
    """-> (nb*8, 32) int8 quants, (nb*8,) fp16 scales."""
    b = dequant._blocks(buf, Q6_K, n)
    ql = b[:, 0:128].astype(np.int64).reshape(-1, 2, 2, 32)
    qh = b[:, 128:192].astype(np.int64).reshape(-1, 2, 32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.int64)
    d = dequant._half(b[:, 208:210]).astype(f32)[:, 0]
    quarters = []
    for s in range(4):
        low = (ql[:, :, s % 2, :] >> (4 * (s // 2))) & 15
        high = (qh >> (2 * s)) & 3
        quarters.append((low | (high << 4)) - 32)
    q = np.stack(quarters, axis=2).reshape(-1, 16, 16)
    qi = (q * sc[:, :, None]).reshape(-1, 8, 32)
    mx = (np.abs(qi).max(axis=2).astype(f32) / f32(127)).astype(f32)
    inv = np.where(mx > f32(1e-9), f32(1) / np.where(mx > 0, mx, 1), 0).astype(f32)
    qq = np.where((mx > f32(1e-9))[:, :, None], rne((qi.astype(f32) * inv[:, :, None]).astype(f32)), 0)
    return qq.reshape(-1, 32), fp16(d[:, None] * mx).reshape(-1)


def enc_q8_0(q32, d):
    """(nb, 32) int8 quants, (nb,) fp16 -> Q8_0 bytes."""
    out = np.zeros((len(d), 34), np.uint8)
    out[:, 0:2] = d.astype(f16).view(np.uint8).reshape(-1, 2)
    out[:, 2:34] = q32.astype(np.int8).view(np.uint8)
    return out.tobytes()


def enc_x_1(q32, d, m, five):
    """Q4_1 / Q5_1 bytes: d, m, [qh u32], nibbles (element i low, i+16 high)."""
    q32 = q32.astype(np.int64)
    qs = ((q32[:, 0:16] & 15) | ((q32[:, 16:32] & 15) << 4)).astype(np.uint8)
    dm = np.stack([d.astype(f16), m.astype(f16)], axis=1).view(np.uint8).reshape(-1, 4)
    if not five:
        return np.concatenate([dm, qs], axis=1).tobytes()
    bits = (q32 >> 4) & 1
    word = (bits << np.arange(32)[None, :]).sum(axis=1).astype(np.uint32)
    return np.concatenate([dm, word.view(np.uint8).reshape(-1, 4), qs], axis=1).tobytes()


def convert(t):
    """-> (type, raw bytes, float64 values) of ik's form of tensor t."""
    n = int(np.prod(t.ne))
    if t.type in (Q2_K, Q3_K):
        qq, dn = (q2_K if t.type == Q2_K else q3_K)(t.data, n)
        d8 = np.repeat(dn, 8)
        q32 = qq.reshape(-1, 32)
        return Q8_0, enc_q8_0(q32, d8), (q32 * d8.astype(np.float64)[:, None]).reshape(-1)
    if t.type in (Q4_K, Q5_K):
        q, d, m = k_dm(t.data, n, t.type)
        vals = q * d.astype(np.float64)[:, None] + m.astype(np.float64)[:, None]
        return (Q4_1 if t.type == Q4_K else Q5_1), enc_x_1(q, d, m, t.type == Q5_K), vals.reshape(-1)
    if t.type == Q6_K:
        q32, d = q6_K(t.data, n)
        return Q8_0, enc_q8_0(q32, d), (q32 * d.astype(np.float64)[:, None]).reshape(-1)
    return None


KEEP = set(filter(None, os.environ.get("KEEP", "").split(",")))


def rel(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b ** 2)), 1e-30))


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    g, ref = gguf.GGUF(argv[1]), gguf.GGUF(argv[2])
    out = []
    print("%-28s %-6s %10s %10s %10s" % ("tensor", "type", "file/f16", "ik/f16", "ik/file"))
    sums = {}
    for name, t in g.tensors.items():
        keep = name == "token_embd.weight" or dequant.NAMES.get(t.type) in KEEP
        conv = None if keep else convert(t)
        if conv is None:
            out.append((name, t.type, t.ne, bytes(t.data)))
            continue
        typ, raw, vals = conv
        own = dequant.dequantize(t.type, t.data, int(np.prod(t.ne)))
        r = ref.tensor(name).reshape(-1)
        a, b, c = rel(own, r), rel(vals, r), rel(vals, own)
        k = dequant.NAMES[t.type]
        s = sums.setdefault(k, [0, 0.0, 0.0, 0.0])
        s[0] += 1
        s[1] += a
        s[2] += b
        s[3] += c
        print("%-28s %-6s %10.5f %10.5f %10.5f" % (name, k, a, b, c))
        out.append((name, typ, t.ne, raw))
    print("mean per type:")
    for k, (cnt, a, b, c) in sums.items():
        print("  %-6s %3d tensors %10.5f %10.5f %10.5f" % (k, cnt, a / cnt, b / cnt, c / cnt))
    meta = {k: v for k, v in g.meta.items()}
    meta["general.alignment"] = writer.ALIGN
    writer.write_gguf(argv[3], meta, out)


if __name__ == "__main__":
    main(sys.argv)
