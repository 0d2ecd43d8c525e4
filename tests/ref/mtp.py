"""The Gemma 4 assistant (MTP drafter) in float64 numpy, written from the
facts in docs/gemma4-assistant.md, not from model/mtp.c.

One step: x = pre_projection([target_embedding(token) * sqrt(d_backbone) ;
h]); each layer attends with queries only over the target's keys/values of
its source layer (the target's last own-cache layer of the same kind), at
the draft position, seeing target positions [pos - window + 1, pos) or
[0, pos); then output_norm, logits from the tied token_embd (only the tokens
of the centroid_top_k best centroids when the file has a centroid head), and
the next step's hidden state post_projection(normed output).
"""
import math

import numpy as np

from .forward import gelu_tanh, rms_norm, rope
from .gguf import GGUF

ARCHES = ("gemma4-assistant", "gemma4_mtp")


class Assistant:
    def __init__(self, path):
        self.g = GGUF(path)
        arch = self.g.get("general.architecture")
        if arch not in ARCHES:
            raise ValueError("%s: %r is not a Gemma 4 assistant" % (path, arch))

        def key(suffix, default=None):
            return self.g.get("%s.%s" % (arch, suffix), default)

        def per_layer(v, n):
            return [int(e) for e in v] if isinstance(v, (list, tuple)) else [int(v)] * n

        self.n_layer = int(key("block_count"))
        self.d_model = int(key("embedding_length"))
        self.d_backbone = int(key("embedding_length_out", key("backbone_embedding_length", 0)))
        self.eps = float(key("attention.layer_norm_rms_epsilon", 1e-6))
        self.n_head = per_layer(key("attention.head_count"), self.n_layer)
        self.n_kv_head = per_layer(key("attention.head_count_kv"), self.n_layer)
        flags = key("attention.sliding_window_pattern")
        self.sliding = [bool(f) for f in flags]
        self.head_dim = [int(key("attention.key_length_swa")) if s else int(key("attention.key_length"))
                         for s in self.sliding]
        self.rope_dim = [int(key("rope.dimension_count_swa")) if s else int(key("rope.dimension_count"))
                         for s in self.sliding]
        self.rope_base = [float(key("rope.freq_base_swa")) if s else float(key("rope.freq_base"))
                          for s in self.sliding]
        self.n_centroids = int(key("n_centroids", key("centroid_count", 0)))
        self.top_k = int(key("centroid_top_k", 0))
        self.clusters = None
        for cname, oname in (("mtp.centroids.weight", "mtp.token_ordering.weight"),
                             ("mtp_centroids.weight", "mtp_token_ordering.weight")):
            if self.g.has(cname):
                self.centroids = self.g.tensor(cname)
                self.clusters = self._clusters(self.g.tensor(oname).reshape(-1).astype(np.int64))

    def _clusters(self, order):
        """(n_centroids, per) token ids: Hugging Face's ordering viewed as
        clusters, or (values < n_centroids) ik_llama.cpp's token -> cluster."""
        nc = self.n_centroids
        per = len(order) // nc
        if order.max() >= nc:
            return order.reshape(nc, per)
        return np.stack([np.nonzero(order == c)[0] for c in range(nc)])

    def w(self, name):
        return self.g.tensor(name)

    def lw(self, il, name):
        full = "blk.%d.%s.weight" % (il, name)
        return self.g.tensor(full) if self.g.has(full) else None

    def step(self, target, h, token, pos, kv, src):
        """target: forward.Model of the target. kv[s] = (k, v) as (positions,
        kv heads, head_dim) arrays of positions 0 .. pos-1 of the target's
        source layer src[s] (s = 0 sliding, 1 global). Returns (logits,
        candidate ids or None, h_next)."""
        tc = target.cfg
        emb = target.w("token_embd.weight")[token] * math.sqrt(self.d_backbone)
        x = np.concatenate([emb, h]) @ self.w(self.g_name("pre")).T
        for il in range(self.n_layer):
            kind = 0 if self.sliding[il] else 1
            a = self.attend(il, rms_norm(x, self.lw(il, "attn_norm"), self.eps), pos, kv[kind],
                            tc.layers[src[kind]], target)
            x = x + rms_norm(a, self.lw(il, "post_attention_norm"), self.eps)
            f = rms_norm(x, self.lw(il, "ffn_norm"), self.eps)
            f = (gelu_tanh(f @ self.lw(il, "ffn_gate").T) * (f @ self.lw(il, "ffn_up").T)) \
                @ self.lw(il, "ffn_down").T
            x = x + rms_norm(f, self.lw(il, "post_ffw_norm"), self.eps)
            scale = self.lw(il, "layer_output_scale")
            if scale is not None:
                x = x * scale.reshape(-1)[0]
        out = rms_norm(x, self.w("output_norm.weight"), self.eps)
        h_next = out @ self.w(self.g_name("post")).T
        head = self.w("token_embd.weight")
        if self.clusters is None:
            return out @ head.T, None, h_next
        best = np.argsort(-(out @ self.centroids.T), kind="stable")[:self.top_k]
        ids = self.clusters[best].reshape(-1)
        return head[ids] @ out, ids, h_next

    def g_name(self, which):
        a, b = {"pre": ("nextn.pre_projection.weight", "mtp_pre_proj.weight"),
                "post": ("nextn.post_projection.weight", "mtp_post_proj.weight")}[which]
        return a if self.g.has(a) else b

    def attend(self, il, xn, pos, kv, S, target):
        hd, nh, nkv = self.head_dim[il], self.n_head[il], self.n_kv_head[il]
        q = (xn @ self.lw(il, "attn_q").T).reshape(1, nh, hd)
        q = rms_norm(q, self.lw(il, "attn_q_norm"), self.eps)
        factors = None
        if not self.sliding[il]:
            name = "rope_freqs.weight"
            factors = self.w(name) if self.g.has(name) else target.w(name)
        q = rope(q, np.array([pos]), self.rope_dim[il], self.rope_base[il], 1.0, True, factors)[0]
        k, v = kv
        lo = max(0, pos - S.window + 1) if S.window else 0
        k, v = k[lo:pos], v[lo:pos]
        group = nh // nkv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = np.einsum("hd,jhd->hj", q, k)  # Gemma 4: q.k unscaled
        s = s - s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        return np.einsum("hj,jhd->hd", p, v).reshape(nh * hd) @ self.lw(il, "attn_output").T

    def draft(self, target, h, token, pos, kv, src, k):
        """k greedy tokens, all at position pos, each step's h_next fed on."""
        out = []
        for _ in range(k):
            logits, ids, h = self.step(target, h, token, pos, kv, src)
            best = int(np.argmax(logits))
            token = int(ids[best]) if ids is not None else best
            out.append(token)
        return out
