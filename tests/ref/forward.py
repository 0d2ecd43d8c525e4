"""The reference forward pass in float64 numpy for gemma, gemma2, gemma3,
gemma4 and llama GGUF files (llama.cpp's keys and tensor names).

Gemma 4 as llama.cpp's gemma4 graph (src/models/gemma4-iswa.cpp) and loader
compute it: per-layer embeddings, the last attention.shared_kv_layers layers
attending over the K/V of the last earlier layer of their kind, V = K where a
layer has no attn_v, weight-free RMSNorm of V, unscaled q.k, RoPE frequency
factors (rope_freqs.weight) on the global layers, layer_output_scale.

It runs one whole sequence at a time (every position attends to the
positions before it), so it shares no KV-cache, batching or chunking logic
with the engine under test: logits of a chunked, batched or incremental run
must come out the same as these.
"""
import math

import numpy as np

from .gguf import GGUF

GEMMA_FAMILY = ("gemma", "gemma2", "gemma3", "gemma4")
# llama.cpp hard-codes these sliding-window patterns: layer il is local iff
# il % pattern < pattern - 1
SWA_PATTERN = {"gemma2": 2, "gemma3": 6}
GEMMA3_LOCAL_ROPE_BASE = 10000.0


class Layer:
    pass


class Config:
    def __init__(self, g):
        arch = g.get("general.architecture")
        if arch not in ("gemma", "gemma2", "gemma3", "gemma4", "llama"):
            raise ValueError("%s: architecture %r not supported by the reference" % (g.path, arch))
        self.arch = arch

        def key(suffix, default=None):
            return g.get("%s.%s" % (arch, suffix), default)

        def per_layer(v):
            return [int(e) for e in v] if isinstance(v, (list, tuple)) else [int(v)] * self.n_layer

        def has_tensor(name):
            return g.has(name) if hasattr(g, "has") else False

        self.n_layer = int(key("block_count"))
        self.d_model = int(key("embedding_length"))
        heads = per_layer(key("attention.head_count"))
        kv_heads = per_layer(key("attention.head_count_kv", heads))
        d_ffs = per_layer(key("feed_forward_length"))
        self.n_head, self.n_kv_head, self.d_ff = heads[0], kv_heads[0], d_ffs[0]
        self.head_dim = int(key("attention.key_length", self.d_model // self.n_head))
        value_dim = int(key("attention.value_length", self.head_dim))
        assert value_dim == self.head_dim, "value_length != key_length"
        self.eps = float(key("attention.layer_norm_rms_epsilon", 1e-6))
        self.rope_dim = int(key("rope.dimension_count", self.head_dim))
        # sliding layers' sizes (Gemma 4's _swa keys; otherwise the same)
        head_dim_swa = int(key("attention.key_length_swa", self.head_dim))
        assert int(key("attention.value_length_swa", head_dim_swa)) == head_dim_swa
        rope_dim_swa = int(key("rope.dimension_count_swa",
                               self.rope_dim if head_dim_swa == self.head_dim else head_dim_swa))
        self.rope_base = float(key("rope.freq_base", 10000.0))
        self.rope_scale = 1.0
        if key("rope.scaling.type", "none") == "linear":
            self.rope_scale = float(key("rope.scaling.factor", 1.0)) or 1.0
        self.window = int(key("attention.sliding_window", 0))
        # The pattern key is either a period or one flag per layer (True =
        # sliding), as llama.cpp writes it for newer Gemmas.
        pattern = key("attention.sliding_window_pattern", SWA_PATTERN.get(arch, 0))
        self.swa_flags = [bool(v) for v in pattern] if isinstance(pattern, (list, tuple)) else None
        self.swa_pattern = 0 if self.swa_flags is not None else int(pattern)
        self.attn_softcap = float(key("attn_logit_softcapping", 0.0) or 0.0)
        self.final_softcap = float(key("final_logit_softcapping", 0.0) or 0.0)
        scale = key("attention.scale")
        self.gemma4 = arch == "gemma4"
        self.v_norm = self.gemma4
        self.n_embd_per_layer = int(key("embedding_length_per_layer_input", 0)) if self.gemma4 else 0
        n_shared = int(key("attention.shared_kv_layers", 0)) if self.gemma4 else 0
        freq_factors = self.gemma4 and has_tensor("rope_freqs.weight")
        self.gemma = arch in GEMMA_FAMILY
        self.neox = self.gemma
        local_base = GEMMA3_LOCAL_ROPE_BASE if arch == "gemma3" else None
        local_base = key("rope.freq_base_swa", local_base)

        self.layers = []
        for il in range(self.n_layer):
            L = Layer()
            p = self.swa_pattern
            if self.swa_flags is not None:
                L.sliding = self.window > 0 and self.swa_flags[il]
            else:
                L.sliding = self.window > 0 and p > 0 and il % p < p - 1
            L.window = self.window if L.sliding else 0
            L.n_head, L.n_kv_head, L.d_ff = heads[il], kv_heads[il], d_ffs[il]
            L.head_dim = head_dim_swa if L.sliding else self.head_dim
            L.rope_dim = rope_dim_swa if L.sliding else self.rope_dim
            L.freq_factors = freq_factors and not L.sliding
            if scale:
                L.attn_scale = float(scale)
            elif self.gemma4:
                L.attn_scale = 1.0  # llama.cpp: f_attention_scale = 1 for gemma4
            else:
                L.attn_scale = 1.0 / math.sqrt(L.head_dim)
            if L.sliding and local_base is not None:
                L.rope_base, L.rope_scale = float(local_base), 1.0
            else:
                L.rope_base, L.rope_scale = self.rope_base, self.rope_scale
            self.layers.append(L)
        # KV sharing: a layer of the last n_shared reads the K/V of the last
        # earlier layer (before them) of the same kind
        n_own = self.n_layer - n_shared
        for il, L in enumerate(self.layers):
            L.kv_src = None
            if il >= n_own:
                L.kv_src = max(j for j in range(n_own) if self.layers[j].sliding == L.sliding)
            L.v_is_k = self.gemma4 and L.kv_src is None and not has_tensor("blk.%d.attn_v.weight" % il)
        self.attn_scale = self.layers[0].attn_scale if self.layers else 1.0


def rms_norm(x, w, eps):
    """RMSNorm over the last axis with the weight as stored in the GGUF (the
    converter already folded Gemma's 1 + w into it)."""
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope(x, pos, rot_dim, base, scale, neox, factors=None):
    """Rotates x (T, heads, head_dim) by position; only the first rot_dim
    dimensions of each head turn. NeoX pairs dimension i with i + rot_dim/2,
    the original layout pairs 2i with 2i+1. factors (rot_dim/2) divide the
    frequencies, as ggml's freq_factors do."""
    half = rot_dim // 2
    inv_freq = base ** (-2.0 * np.arange(half) / rot_dim)
    if factors is not None:
        inv_freq = inv_freq / np.asarray(factors, dtype=np.float64)
    angle = (pos.astype(np.float64)[:, None] / scale) * inv_freq[None, :]  # (T, half)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    out = x.copy()
    if neox:
        a, b = x[..., :half], x[..., half:rot_dim]
        out[..., :half] = a * cos - b * sin
        out[..., half:rot_dim] = a * sin + b * cos
    else:
        a, b = x[..., 0:rot_dim:2], x[..., 1:rot_dim:2]
        out[..., 0:rot_dim:2] = a * cos - b * sin
        out[..., 1:rot_dim:2] = a * sin + b * cos
    return out


def softcap(x, cap):
    return cap * np.tanh(x / cap) if cap > 0 else x


class Model:
    def __init__(self, path):
        self.g = GGUF(path)
        self.cfg = Config(self.g)
        self._cache = {}

    def w(self, name):
        if name not in self._cache:
            self._cache[name] = self.g.tensor(name)
        return self._cache[name]

    def lw(self, il, name):
        full = "blk.%d.%s.weight" % (il, name)
        return self.w(full) if self.g.has(full) else None

    def attention(self, il, h, pos, kv_store=None):
        c, L = self.cfg, self.cfg.layers[il]
        T, hd = h.shape[0], L.head_dim
        factors = self.w("rope_freqs.weight") if L.freq_factors else None
        q = (h @ self.lw(il, "attn_q").T).reshape(T, L.n_head, hd)
        q_norm, k_norm = self.lw(il, "attn_q_norm"), self.lw(il, "attn_k_norm")
        if q_norm is not None:
            q = rms_norm(q, q_norm, c.eps)
        q = rope(q, pos, L.rope_dim, L.rope_base, L.rope_scale, c.neox, factors)
        if L.kv_src is not None:
            k, v = kv_store[L.kv_src]
        else:
            k = (h @ self.lw(il, "attn_k").T).reshape(T, L.n_kv_head, hd)
            v = k if L.v_is_k else (h @ self.lw(il, "attn_v").T).reshape(T, L.n_kv_head, hd)
            if k_norm is not None:
                k = rms_norm(k, k_norm, c.eps)
            if c.v_norm:
                v = rms_norm(v, 1.0, c.eps)
            k = rope(k, pos, L.rope_dim, L.rope_base, L.rope_scale, c.neox, factors)
            if kv_store is not None:
                kv_store[il] = (k, v)
        group = L.n_head // L.n_kv_head
        k = np.repeat(k, group, axis=1)  # query head h reads kv head h // group
        v = np.repeat(v, group, axis=1)
        s = np.einsum("ihd,jhd->hij", q, k) * L.attn_scale
        s = softcap(s, c.attn_softcap)
        i, j = pos[:, None], pos[None, :]
        visible = j <= i
        if L.window:
            visible &= j > i - L.window
        s = np.where(visible[None], s, -np.inf)
        s = s - s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        o = np.einsum("hij,jhd->ihd", p, v).reshape(T, L.n_head * hd)
        return o @ self.lw(il, "attn_output").T

    def per_layer_inputs(self, tokens, x0):
        """Gemma 4: (T, n_layer, n_embd_per_layer) inputs of the per-layer path."""
        c = self.cfg
        T, pl = len(tokens), c.n_embd_per_layer
        tok = self.w("per_layer_token_embd.weight")[tokens].reshape(T, c.n_layer, pl)
        tok = tok * math.sqrt(pl)
        proj = (x0 @ self.w("per_layer_model_proj.weight").T) / math.sqrt(c.d_model)
        proj = rms_norm(proj.reshape(T, c.n_layer, pl), self.w("per_layer_proj_norm.weight"), c.eps)
        return (proj + tok) / math.sqrt(2.0)

    def ffn(self, il, h):
        act = gelu_tanh if self.cfg.gemma else silu
        gate = h @ self.lw(il, "ffn_gate").T
        up = h @ self.lw(il, "ffn_up").T
        return (act(gate) * up) @ self.lw(il, "ffn_down").T

    def hidden(self, tokens):
        """Final-layer activations (T, d_model) of one sequence at positions 0..T-1."""
        c = self.cfg
        tokens = np.asarray(tokens, dtype=np.int64)
        pos = np.arange(len(tokens))
        x = self.w("token_embd.weight")[tokens]
        if c.gemma:
            x = x * math.sqrt(c.d_model)
        ple = self.per_layer_inputs(tokens, x) if c.n_embd_per_layer else None
        kv_store = {}
        for il in range(c.n_layer):
            a = self.attention(il, rms_norm(x, self.lw(il, "attn_norm"), c.eps), pos, kv_store)
            post = self.lw(il, "post_attention_norm")
            if post is not None:
                a = rms_norm(a, post, c.eps)
            x = x + a
            f = self.ffn(il, rms_norm(x, self.lw(il, "ffn_norm"), c.eps))
            post = self.lw(il, "post_ffw_norm")
            if post is not None:
                f = rms_norm(f, post, c.eps)
            x = x + f
            if ple is not None:
                g = gelu_tanh(x @ self.lw(il, "inp_gate").T) * ple[:, il]
                x = x + rms_norm(g @ self.lw(il, "proj").T, self.lw(il, "post_norm"), c.eps)
            out_scale = self.lw(il, "layer_output_scale")
            if out_scale is not None:
                x = x * out_scale.reshape(-1)[0]
        return x

    def logits(self, tokens):
        """Logits (T, n_vocab) of one sequence."""
        x = rms_norm(self.hidden(tokens), self.w("output_norm.weight"), self.cfg.eps)
        head = "output.weight" if self.g.has("output.weight") else "token_embd.weight"
        return softcap(x @ self.w(head).T, self.cfg.final_softcap)
