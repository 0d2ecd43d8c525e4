"""Vectorised numpy dequantisation of llama.cpp's block formats.

Every function takes the raw bytes of n elements and returns float64 values
in storage order. Block layouts (little-endian, fp16 scales):
  Q4_0  (18 B / 32):  d, qs[16]; x[j] = d*(lo(qs[j])-8), x[j+16] = d*(hi(qs[j])-8)
  Q8_0  (34 B / 32):  d, qs[32] int8; x = d*q
  Q4_K (144 B / 256): d, dmin, scales[12] (8 six-bit scales and mins), qs[128]
  Q5_K (176 B / 256): d, dmin, scales[12], qh[32] (fifth bits), qs[128]
  Q6_K (210 B / 256): ql[128], qh[64], scales[16] int8, d
  Q4_1  (20 B / 32):  d, m, qs[16]; x = d*nibble + m (nibbles as Q4_0)
  Q5_0  (22 B / 32):  d, qh[4], qs[16]; q = nibble | bit i of u32 qh << 4; x = d*(q-16)
  Q5_1  (24 B / 32):  d, m, qh[4], qs[16]; x = d*q + m
  Q2_K  (84 B / 256): scales[16] (scale lo nibble, min hi), qs[64], d, dmin;
                      x = d*sc*q - dmin*mn per 16 elements
  Q3_K (110 B / 256): hmask[32], qs[64], scales[12] (16 six-bit, offset 32), d;
                      x = d*(sc-32)*(q2 - (hbit ? 0 : 4))
  IQ4_NL (18 B / 32): d, qs[16]; x = d*GRID[nibble]
  IQ4_XS (136 B / 256): d, scales_h u16, scales_l[4], qs[128]; per 32:
                      x = d*(ls-32)*GRID[nibble]
"""
import numpy as np

F32, F16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 8, 12, 13, 14, 30
Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, IQ4_NL, IQ4_XS = 3, 6, 7, 10, 11, 20, 23

# llama.cpp's kvalues_iq4nl: the non-linear 4-bit grid of IQ4_NL / IQ4_XS
IQ4_GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                     1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float64)

# type -> (elements per block, bytes per block)
BLOCK = {
    F32: (1, 4), F16: (1, 2), BF16: (1, 2),
    Q4_0: (32, 18), Q8_0: (32, 34),
    Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210),
    Q4_1: (32, 20), Q5_0: (32, 22), Q5_1: (32, 24), IQ4_NL: (32, 18),
    Q2_K: (256, 84), Q3_K: (256, 110), IQ4_XS: (256, 136),
}

# byte offsets of each block's fp16 fields (the tests give them finite values)
HALF_AT = {Q4_0: [0], Q8_0: [0], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208],
           Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], IQ4_NL: [0], Q2_K: [80, 82],
           Q3_K: [108], IQ4_XS: [0]}

NAMES = {F32: "f32", F16: "f16", BF16: "bf16", Q4_0: "q4_0", Q8_0: "q8_0",
         Q4_K: "q4_K", Q5_K: "q5_K", Q6_K: "q6_K", Q4_1: "q4_1", Q5_0: "q5_0",
         Q5_1: "q5_1", Q2_K: "q2_K", Q3_K: "q3_K", IQ4_NL: "iq4_nl", IQ4_XS: "iq4_xs"}


def nbytes(ggml_type, n):
    if ggml_type not in BLOCK:
        raise ValueError("ggml type %d not supported by the reference" % ggml_type)
    elems, size = BLOCK[ggml_type]
    if n % elems:
        raise ValueError("%d elements is not a whole number of %s blocks" % (n, NAMES[ggml_type]))
    return n // elems * size


def _blocks(buf, ggml_type, n):
    elems, size = BLOCK[ggml_type]
    raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes(ggml_type, n))
    return raw.reshape(n // elems, size)


def _half(cols):
    """A (nb, 2) uint8 column pair holding fp16 -> (nb, 1) float64."""
    return np.ascontiguousarray(cols).view(np.float16).astype(np.float64)


def _q4_0(buf, n):
    b = _blocks(buf, Q4_0, n)
    d = _half(b[:, 0:2])
    qs = b[:, 2:18].astype(np.int64)
    q = np.concatenate([(qs & 15) - 8, (qs >> 4) - 8], axis=1)
    return (d * q).reshape(-1)


def _q8_0(buf, n):
    b = _blocks(buf, Q8_0, n)
    d = _half(b[:, 0:2])
    q = np.ascontiguousarray(b[:, 2:34]).view(np.int8).astype(np.float64)
    return (d * q).reshape(-1)


def _k_scales_mins(s):
    """The 8 six-bit scales and 8 six-bit mins packed in 12 bytes (nb, 12).

    Sub-blocks 0-3 keep their scale and min in the low 6 bits of bytes 0-3
    and 4-7; sub-blocks 4-7 keep the low 4 bits in the nibbles of bytes 8-11
    and the top 2 bits in the spare top bits of bytes 0-3 (scales) and 4-7
    (mins)."""
    s = s.astype(np.int64)
    first, second, third = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    scale = np.concatenate([first & 63, (third & 15) | ((first >> 6) << 4)], axis=1)
    mins = np.concatenate([second & 63, (third >> 4) | ((second >> 6) << 4)], axis=1)
    return scale, mins


def _nibbles_by_subblock(qs):
    """qs (nb, 128): 4 chunks of 32 bytes; sub-block 2c is the low nibbles of
    chunk c and 2c+1 its high nibbles -> (nb, 8, 32)."""
    chunks = qs.astype(np.int64).reshape(-1, 4, 1, 32)
    both = np.concatenate([chunks & 15, chunks >> 4], axis=2)
    return both.reshape(-1, 8, 32)


def _q4_K(buf, n):
    b = _blocks(buf, Q4_K, n)
    d, dmin = _half(b[:, 0:2]), _half(b[:, 2:4])
    scale, mins = _k_scales_mins(b[:, 4:16])
    q = _nibbles_by_subblock(b[:, 16:144])
    x = (d * scale)[:, :, None] * q - (dmin * mins)[:, :, None]
    return x.reshape(-1)


def _q5_K(buf, n):
    b = _blocks(buf, Q5_K, n)
    d, dmin = _half(b[:, 0:2]), _half(b[:, 2:4])
    scale, mins = _k_scales_mins(b[:, 4:16])
    qh = b[:, 16:48].astype(np.int64)
    # bit j of qh[l] is the fifth bit of element l of sub-block j
    fifth = (qh[:, None, :] >> np.arange(8)[None, :, None]) & 1
    q = _nibbles_by_subblock(b[:, 48:176]) + 16 * fifth
    x = (d * scale)[:, :, None] * q - (dmin * mins)[:, :, None]
    return x.reshape(-1)


def _q6_K(buf, n):
    b = _blocks(buf, Q6_K, n)
    # two halves of 128 elements, each with 64 bytes of ql and 32 of qh
    ql = b[:, 0:128].astype(np.int64).reshape(-1, 2, 2, 32)
    qh = b[:, 128:192].astype(np.int64).reshape(-1, 2, 32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float64)
    d = _half(b[:, 208:210])
    quarters = []
    for s in range(4):
        # quarter s of a half: low/high nibble (s // 2) of ql row (s % 2),
        # top two bits from bits 2s, 2s+1 of qh
        low = (ql[:, :, s % 2, :] >> (4 * (s // 2))) & 15
        high = (qh >> (2 * s)) & 3
        quarters.append((low | (high << 4)) - 32)
    q = np.stack(quarters, axis=2).reshape(-1, 16, 16)  # 16 groups of 16 share a scale
    x = (d * sc)[:, :, None] * q
    return x.reshape(-1)


def _nibbles32(qs):
    """qs (nb, 16) -> the 32 codes of each block: low nibbles, then high."""
    qs = qs.astype(np.int64)
    return np.concatenate([qs & 15, qs >> 4], axis=1)


def _fifth_bits(qh):
    """qh (nb, 4) little-endian 32 bits -> (nb, 32): bit i for element i."""
    bits = qh.astype(np.int64)
    word = bits[:, 0] | (bits[:, 1] << 8) | (bits[:, 2] << 16) | (bits[:, 3] << 24)
    return (word[:, None] >> np.arange(32)[None, :]) & 1


def _q4_1(buf, n):
    b = _blocks(buf, Q4_1, n)
    d, m = _half(b[:, 0:2]), _half(b[:, 2:4])
    return (d * _nibbles32(b[:, 4:20]) + m).reshape(-1)


def _q5_0(buf, n):
    b = _blocks(buf, Q5_0, n)
    d = _half(b[:, 0:2])
    q = _nibbles32(b[:, 6:22]) + 16 * _fifth_bits(b[:, 2:6])
    return (d * (q - 16)).reshape(-1)


def _q5_1(buf, n):
    b = _blocks(buf, Q5_1, n)
    d, m = _half(b[:, 0:2]), _half(b[:, 2:4])
    q = _nibbles32(b[:, 8:24]) + 16 * _fifth_bits(b[:, 4:8])
    return (d * q + m).reshape(-1)


def _two_bit_levels(qs):
    """qs (nb, 64): element 128 h + 32 k + l holds bits 2k of byte 32 h + l
    -> (nb, 256) levels 0..3 in element order."""
    q = qs.astype(np.int64).reshape(-1, 2, 1, 32)
    levels = (q >> (2 * np.arange(4))[None, None, :, None]) & 3
    return levels.reshape(-1, 256)


def _q2_K(buf, n):
    b = _blocks(buf, Q2_K, n)
    sc = b[:, 0:16].astype(np.int64)
    d, dmin = _half(b[:, 80:82]), _half(b[:, 82:84])
    q = _two_bit_levels(b[:, 16:80]).reshape(-1, 16, 16)
    x = (d * (sc & 15))[:, :, None] * q - (dmin * (sc >> 4))[:, :, None]
    return x.reshape(-1)


def q3_K_levels(buf, n):
    """Q3_K blocks as (d [blocks, 1], signed 6-bit scales [blocks, 16],
    signed 3-bit levels [blocks, 256])."""
    b = _blocks(buf, Q3_K, n)
    hmask = b[:, 0:32].astype(np.int64)
    raw = b[:, 96:108].astype(np.int64)
    d = _half(b[:, 108:110])
    # scale j: low 4 bits from the low (j < 8) or high nibble of byte j % 8,
    # top 2 bits from bits 2 (j / 4) of byte 8 + j % 4
    j = np.arange(16)
    low = (raw[:, j % 8] >> (4 * (j // 8))) & 15
    top = (raw[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    sc = (low | (top << 4)) - 32
    # third bit of element e: bit e / 32 of hmask[e % 32]
    e = np.arange(256)
    hbit = (hmask[:, e % 32] >> (e // 32)) & 1
    q = _two_bit_levels(b[:, 32:96]) - 4 * (1 - hbit)
    return d, sc, q


def _q3_K(buf, n):
    d, sc, q = q3_K_levels(buf, n)
    x = (d * sc)[:, :, None] * q.reshape(-1, 16, 16)
    return x.reshape(-1)


def _iq4_nl(buf, n):
    b = _blocks(buf, IQ4_NL, n)
    d = _half(b[:, 0:2])
    return (d * IQ4_GRID[_nibbles32(b[:, 2:18])]).reshape(-1)


def _iq4_xs(buf, n):
    b = _blocks(buf, IQ4_XS, n)
    d = _half(b[:, 0:2])
    sh = b[:, 2].astype(np.int64) | (b[:, 3].astype(np.int64) << 8)
    sl = b[:, 4:8].astype(np.int64)
    j = np.arange(8)
    ls = ((sl[:, j // 2] >> (4 * (j % 2))) & 15) | (((sh[:, None] >> (2 * j)) & 3) << 4)
    codes = _nibbles32(b[:, 8:136].reshape(-1, 16)).reshape(-1, 8, 32)
    x = (d * (ls - 32))[:, :, None] * IQ4_GRID[codes]
    return x.reshape(-1)


def _f32(buf, n):
    return np.frombuffer(buf, dtype="<f4", count=n).astype(np.float64)


def _f16(buf, n):
    return np.frombuffer(buf, dtype="<f2", count=n).astype(np.float64)


def _bf16(buf, n):
    bits = np.frombuffer(buf, dtype="<u2", count=n).astype(np.uint32) << 16
    return bits.view(np.float32).astype(np.float64)


_DEQUANT = {F32: _f32, F16: _f16, BF16: _bf16, Q4_0: _q4_0, Q8_0: _q8_0,
            Q4_K: _q4_K, Q5_K: _q5_K, Q6_K: _q6_K, Q4_1: _q4_1, Q5_0: _q5_0,
            Q5_1: _q5_1, Q2_K: _q2_K, Q3_K: _q3_K, IQ4_NL: _iq4_nl, IQ4_XS: _iq4_xs}


def dequantize(ggml_type, buf, n):
    if ggml_type not in _DEQUANT:
        raise ValueError("ggml type %d not supported by the reference" % ggml_type)
    return _DEQUANT[ggml_type](buf, n)
