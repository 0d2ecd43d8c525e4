"""A minimal GGUF v3 writer and tiny-model generator, so the reference can
be tested without `sluice synth` and can hand the engine models whose
quantised blocks hold arbitrary bit patterns (every scale bit, every quant
value) rather than what a quantiser would produce.
"""
import math
import struct

import numpy as np

from . import dequant
from .dequant import BF16, F16, F32, Q4_0, Q4_K, Q5_K, Q6_K, Q8_0

ALIGN = 32


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key, value):
    """Python value -> GGUF metadata entry: int -> u32 (i32 if negative),
    float -> f32, bool -> bool, str -> string, list of str -> string array,
    list of float -> f32 array, list of int -> i32 array."""
    out = _str(key)
    if isinstance(value, bool):
        return out + struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return out + (struct.pack("<Ii", 5, value) if value < 0 else struct.pack("<II", 4, value))
    if isinstance(value, float):
        return out + struct.pack("<If", 6, value)
    if isinstance(value, str):
        return out + struct.pack("<I", 8) + _str(value)
    if isinstance(value, list):
        if value and isinstance(value[0], str):
            return out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_str(v) for v in value)
        if value and isinstance(value[0], float):
            return out + struct.pack("<IIQ", 9, 6, len(value)) + struct.pack("<%df" % len(value), *value)
        return out + struct.pack("<IIQ", 9, 5, len(value)) + struct.pack("<%di" % len(value), *value)
    raise TypeError("cannot write %r" % (value,))


def write_gguf(path, meta, tensors):
    """tensors: list of (name, ggml_type, ne list, raw bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    head += b"".join(_kv(k, v) for k, v in meta.items())
    offset = 0
    infos, blobs = b"", []
    for name, ggml_type, ne, raw in tensors:
        assert len(raw) == dequant.nbytes(ggml_type, int(np.prod(ne))), name
        infos += _str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        infos += struct.pack("<IQ", ggml_type, offset)
        pad = -len(raw) % ALIGN
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    head += infos
    head += b"\0" * (-len(head) % ALIGN)
    with open(path, "wb") as fh:
        fh.write(head)
        for b in blobs:
            fh.write(b)


# ---- encoders: float values -> bytes of a type ----

def _round_f16(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16)


def encode(ggml_type, values, rng):
    """Bytes of the flat float array values in ggml_type. Q8_0 and Q4_0 are
    quantised (absmax scale); the K types get random blocks whose scales are
    sized from the values' magnitude, because the reference only needs valid
    bytes, not a faithful quantisation."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if ggml_type == F32:
        return x.astype("<f4").tobytes()
    if ggml_type == F16:
        return x.astype("<f2").tobytes()
    if ggml_type == BF16:
        bits = x.astype(np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # nearest even
        return rounded.astype("<u2").tobytes()
    if ggml_type == Q8_0:
        b = x.reshape(-1, 32)
        d = _round_f16(np.abs(b).max(axis=1) / 127.0)
        inv = np.where(d.astype(np.float64) > 0, 1.0 / np.maximum(d.astype(np.float64), 1e-30), 0.0)
        q = np.clip(np.round(b * inv[:, None]), -127, 127).astype(np.int8)
        return b"".join(d[i].tobytes() + q[i].tobytes() for i in range(len(b)))
    if ggml_type == Q4_0:
        b = x.reshape(-1, 32)
        idx = np.argmax(np.abs(b), axis=1)
        m = b[np.arange(len(b)), idx]
        d = _round_f16(m / -8.0)
        df = d.astype(np.float64)
        inv = np.where(df != 0, 1.0 / np.where(df != 0, df, 1.0), 0.0)
        q = np.clip(np.round(b * inv[:, None]) + 8, 0, 15).astype(np.uint8)
        packed = q[:, :16] | (q[:, 16:] << 4)
        return b"".join(d[i].tobytes() + packed[i].tobytes() for i in range(len(b)))
    if ggml_type in (Q4_K, Q5_K, Q6_K):
        return _random_k_blocks(ggml_type, x, rng)
    raise ValueError("type %d" % ggml_type)


def _random_k_blocks(ggml_type, x, rng):
    nb = x.size // 256
    amp = float(np.abs(x).max()) if x.size else 1.0
    elems, size = dequant.BLOCK[ggml_type]
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    if ggml_type == Q6_K:
        # |q| <= 32, scales up to 127 -> d ~ amp / (32 * 127)
        d = _round_f16(np.full(nb, amp / (32 * 127.0)))
        raw[:, 208:210] = d.view(np.uint8).reshape(nb, 2)
    else:
        # q up to 15 (31) times a 6-bit scale up to 63, minus a 6-bit min
        top = 15 if ggml_type == Q4_K else 31
        d = _round_f16(np.full(nb, amp / (top * 63.0)))
        dmin = _round_f16(np.full(nb, amp / (2 * 63.0)))
        raw[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
        raw[:, 2:4] = dmin.view(np.uint8).reshape(nb, 2)
    return raw.tobytes()


# ---- a tiny model ----

def tiny_gemma4(path, ggml_type, seed=0, d_model=256, n_head=8, n_kv_head=2, head_dim=64,
                head_dim_swa=32, d_ff=512, n_vocab=512, window=8, n_embd_per_layer=32,
                weight_scale=0.05):
    """A gemma4 file laid out unlike `sluice synth`'s: 6 layers alternating
    sliding and global, the last 2 reading layers 2 and 3's caches, V = K on
    sliding layer 2, scalar head_count_kv and d_ff, every rotary dimension
    turning (no rope_freqs, no rope.dimension_count_swa), no
    layer_output_scale, an untied output. Matrices whose rows cannot hold
    ggml_type's blocks are written in Q8_0 (or F16 for the per-layer token
    table, gathered 32 columns at a time)."""
    rng = np.random.default_rng(seed)
    n_layer, arch = 6, "gemma4"
    swa = [True, False] * 3
    meta = {
        "general.architecture": arch, "general.alignment": ALIGN,
        arch + ".block_count": n_layer, arch + ".embedding_length": d_model,
        arch + ".feed_forward_length": d_ff, arch + ".context_length": 4096,
        arch + ".attention.head_count": n_head, arch + ".attention.head_count_kv": n_kv_head,
        arch + ".attention.key_length": head_dim, arch + ".attention.value_length": head_dim,
        arch + ".attention.key_length_swa": head_dim_swa,
        arch + ".attention.value_length_swa": head_dim_swa,
        arch + ".attention.layer_norm_rms_epsilon": 1e-6,
        arch + ".rope.freq_base": 1000000.0, arch + ".rope.freq_base_swa": 10000.0,
        arch + ".attention.sliding_window": window,
        arch + ".attention.sliding_window_pattern": swa,
        arch + ".attention.shared_kv_layers": 2,
        arch + ".embedding_length_per_layer_input": n_embd_per_layer,
        arch + ".final_logit_softcapping": 30.0,
    }
    tensors = []
    block = dequant.BLOCK[ggml_type][0]

    def mat(name, n_out, n_in, scale=weight_scale, fallback=Q8_0):
        t = ggml_type if n_in % block == 0 else fallback
        vals = rng.normal(0.0, scale, size=(n_out, n_in))
        tensors.append((name, t, [n_in, n_out], encode(t, vals, rng)))

    def norm(name, n, mean=1.0):
        vals = mean * (1.0 + rng.normal(0.0, 0.1, size=n))
        tensors.append((name, F32, [n], vals.astype("<f4").tobytes()))

    pl, d = n_embd_per_layer, d_model
    for il in range(n_layer):
        p = "blk.%d." % il
        hd = head_dim_swa if swa[il] else head_dim
        own = il < n_layer - 2
        norm(p + "attn_norm.weight", d)
        mat(p + "attn_q.weight", n_head * hd, d)
        # no q.k scale in Gemma 4: the q/k norms carry head_dim^-1/4 each
        norm(p + "attn_q_norm.weight", hd, hd ** -0.25)
        if own:
            mat(p + "attn_k.weight", n_kv_head * hd, d)
            norm(p + "attn_k_norm.weight", hd, hd ** -0.25)
            if il != 2:
                mat(p + "attn_v.weight", n_kv_head * hd, d)
        mat(p + "attn_output.weight", d, n_head * hd)
        norm(p + "post_attention_norm.weight", d)
        norm(p + "ffn_norm.weight", d)
        mat(p + "ffn_gate.weight", d_ff, d)
        mat(p + "ffn_up.weight", d_ff, d)
        mat(p + "ffn_down.weight", d, d_ff)
        norm(p + "post_ffw_norm.weight", d)
        mat(p + "inp_gate.weight", pl, d)
        mat(p + "proj.weight", d, pl)
        norm(p + "post_norm.weight", d)
    mat("token_embd.weight", n_vocab, d, scale=1.0 / math.sqrt(d))
    assert pl % block == 0 or n_layer * pl % block != 0  # whole blocks per slice, or F16
    mat("per_layer_token_embd.weight", n_vocab, n_layer * pl, scale=1.0 / math.sqrt(pl),
        fallback=F16)
    mat("per_layer_model_proj.weight", n_layer * pl, d)
    norm("per_layer_proj_norm.weight", pl)
    norm("output_norm.weight", d)
    mat("output.weight", n_vocab, d, scale=1.0 / math.sqrt(d))
    write_gguf(path, meta, tensors)


def tiny_model(path, arch, ggml_type, seed=0, d_model=256, n_layer=3, n_head=4, n_kv_head=2,
               head_dim=64, d_ff=512, n_vocab=512, window=8, weight_scale=0.05, tied=False):
    """Writes a random model of arch; matrices in ggml_type, norms in f32.
    Untied by default: with a tied head, random models mostly predict their
    input token, which makes argmax comparisons weak."""
    rng = np.random.default_rng(seed)
    meta = {
        "general.architecture": arch,
        "general.alignment": ALIGN,
        arch + ".block_count": n_layer,
        arch + ".embedding_length": d_model,
        arch + ".feed_forward_length": d_ff,
        arch + ".context_length": 4096,
        arch + ".attention.head_count": n_head,
        arch + ".attention.head_count_kv": n_kv_head,
        arch + ".attention.key_length": head_dim,
        arch + ".attention.value_length": head_dim,
        arch + ".attention.layer_norm_rms_epsilon": 1e-6,
        arch + ".rope.freq_base": 10000.0,
        arch + ".rope.dimension_count": head_dim,
    }
    if arch in ("gemma2", "gemma3"):
        meta[arch + ".attention.sliding_window"] = window
    if arch == "gemma2":
        meta["gemma2.attn_logit_softcapping"] = 50.0
        meta["gemma2.final_logit_softcapping"] = 30.0
    if arch == "gemma3":
        meta["gemma3.rope.freq_base"] = 1000000.0
        meta["gemma3.rope.scaling.type"] = "linear"
        meta["gemma3.rope.scaling.factor"] = 8.0
    tensors = []

    def mat(name, n_out, n_in, t=ggml_type, scale=weight_scale):
        vals = rng.normal(0.0, scale, size=(n_out, n_in))
        tensors.append((name, t, [n_in, n_out], encode(t, vals, rng)))

    def norm(name, n):
        vals = 1.0 + rng.normal(0.0, 0.1, size=n)
        tensors.append((name, F32, [n], vals.astype("<f4").tobytes()))

    mat("token_embd.weight", n_vocab, d_model, scale=1.0 / math.sqrt(d_model) if arch != "llama" else 1.0)
    norm("output_norm.weight", d_model)
    if not tied:
        mat("output.weight", n_vocab, d_model, scale=1.0 / math.sqrt(d_model))
    for il in range(n_layer):
        p = "blk.%d." % il
        norm(p + "attn_norm.weight", d_model)
        mat(p + "attn_q.weight", n_head * head_dim, d_model)
        mat(p + "attn_k.weight", n_kv_head * head_dim, d_model)
        mat(p + "attn_v.weight", n_kv_head * head_dim, d_model)
        mat(p + "attn_output.weight", d_model, n_head * head_dim)
        if arch == "gemma3":
            norm(p + "attn_q_norm.weight", head_dim)
            norm(p + "attn_k_norm.weight", head_dim)
        if arch in ("gemma2", "gemma3"):
            norm(p + "post_attention_norm.weight", d_model)
            norm(p + "post_ffw_norm.weight", d_model)
        norm(p + "ffn_norm.weight", d_model)
        mat(p + "ffn_gate.weight", d_ff, d_model)
        mat(p + "ffn_up.weight", d_ff, d_model)
        mat(p + "ffn_down.weight", d_model, d_ff)
    write_gguf(path, meta, tensors)
