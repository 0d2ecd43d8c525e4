"""A small Gemma 3 text model in PyTorch, written to follow the arithmetic of Hugging Face's
Gemma3ForCausalLM, so that a checkpoint saved from it converts and runs like a real Gemma 3.

The parts a re-implementation (the C engine, llama.cpp) must match:
  - token embeddings are multiplied by sqrt(hidden_size), the scale first rounded to the
    weights' dtype, before layer 0;
  - RMSNorm is Gemma's: x * rsqrt(mean(x^2) + eps) * (1 + w), in float32, w initialised to 0
    and stored raw (without the +1);
  - each layer: input_layernorm -> attention -> post_attention_layernorm -> residual add,
    then pre_feedforward_layernorm -> GeGLU MLP -> post_feedforward_layernorm -> residual add;
  - attention: grouped-query, q_norm/k_norm (Gemma RMSNorm over head_dim) before RoPE, RoPE in
    the half-rotation (NeoX) layout, scores scaled by query_pre_attn_scalar**-0.5, no softcap,
    softmax in float32;
  - layer i is global ("full_attention", rope_theta) iff (i + 1) % sliding_window_pattern == 0,
    otherwise local ("sliding_attention", rope_local_base_freq) where query i sees key j iff
    i - sliding_window < j <= i;
  - final norm, then logits against the (tied) embedding matrix; no final softcap.
"""

import json
import math
from dataclasses import dataclass, field, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Gemma3Config:
    vocab_size: int = 1536
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    sliding_window: int = 128
    sliding_window_pattern: int = 6
    query_pre_attn_scalar: float = 64
    max_position_embeddings: int = 4096
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    initializer_range: float = 0.02
    layer_types: list = field(default=None)

    def __post_init__(self):
        if self.layer_types is None:
            self.layer_types = [
                "full_attention" if (i + 1) % self.sliding_window_pattern == 0
                else "sliding_attention"
                for i in range(self.num_hidden_layers)]

    def to_hf_dict(self):
        """config.json contents in the form transformers writes for Gemma3ForCausalLM."""
        d = asdict(self)
        d.update({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
            "rope_scaling": None,
            "tie_word_embeddings": True,
            "use_cache": True,
            "torch_dtype": "float32",
        })
        return dict(sorted(d.items()))

    @classmethod
    def from_hf_dict(cls, d):
        for key, want in (("attn_logit_softcapping", None), ("final_logit_softcapping", None),
                          ("rope_scaling", None), ("tie_word_embeddings", True),
                          ("hidden_activation", "gelu_pytorch_tanh")):
            if d.get(key, want) != want:
                raise ValueError(f"config {key}={d[key]!r} is not supported here")
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_hf_dict(json.load(f))


class GemmaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        # Zero init: the effective gain (1 + w) starts at 1.
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        # Computed in float32 whatever the activation dtype, as HF does, then cast back.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).type_as(x)


def rope_cos_sin(positions, head_dim, base):
    """cos/sin tables [n, head_dim] for the half-rotation layout: frequency k is applied to
    dimensions k and k + head_dim/2."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def attention_mask(n, sliding_window):
    """Boolean [n, n], True where query i may attend to key j: causal, and for local layers
    also i - j < sliding_window."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = j <= i
    if sliding_window is not None:
        allowed = allowed & (j > i - sliding_window)
    return allowed


class Attention(nn.Module):
    def __init__(self, cfg: Gemma3Config, layer_idx: int):
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.is_sliding = cfg.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = cfg.sliding_window if self.is_sliding else None
        self.rope_base = cfg.rope_local_base_freq if self.is_sliding else cfg.rope_theta
        self.scaling = cfg.query_pre_attn_scalar ** -0.5
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=False)
        self.q_norm = GemmaRMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, positions):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        q = self.q_norm(q)
        k = self.k_norm(k)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_base)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Grouped-query attention: query head h reads kv head h // (n_heads / n_kv).
        group = self.n_heads // self.n_kv
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
        allowed = attention_mask(n, self.sliding_window).to(x.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg: Gemma3Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Gemma3Config, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        eps = cfg.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)

    def forward(self, x, positions):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), positions))
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x


class Gemma3Model(nn.Module):
    """Holds the parameters under HF's names (minus the "model." prefix)."""

    def __init__(self, cfg: Gemma3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # HF keeps the scale as a float32 tensor and casts it to the weights' dtype at use, so
        # in bf16 the scale itself is rounded (sqrt(256) = 16 is exact either way).
        self.register_buffer("embed_scale", torch.tensor(cfg.hidden_size ** 0.5),
                             persistent=False)


class Gemma3ForCausalLM(nn.Module):
    def __init__(self, cfg: Gemma3Config):
        super().__init__()
        self.config = cfg
        self.model = Gemma3Model(cfg)
        self._init_weights()

    def _init_weights(self):
        # As HF's Gemma3 _init_weights: N(0, initializer_range) for matrices, norms stay 0.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=self.config.initializer_range)

    def forward(self, input_ids, positions=None):
        """input_ids [batch, n] -> logits [batch, n, vocab] (float32 weights -> float32)."""
        n = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(n)
        m = self.model
        x = m.embed_tokens(input_ids) * m.embed_scale.to(m.embed_tokens.weight.dtype)
        for layer in m.layers:
            x = layer(x, positions)
        x = m.norm(x)
        # Tied head: the embedding matrix, unscaled.
        return F.linear(x, m.embed_tokens.weight)

    def hf_state_dict(self):
        """Tensors under Hugging Face's names; Linear weights are [out_features, in_features]
        already, norm weights are the raw w. The tied lm_head is not stored (as in HF)."""
        return {f"model.{k}": v.detach() for k, v in self.model.state_dict().items()}

    def load_hf_state_dict(self, tensors):
        own = self.model.state_dict()
        want = {f"model.{k}" for k in own}
        extra = set(tensors) - want - {"lm_head.weight"}
        missing = want - set(tensors)
        if extra or missing:
            raise ValueError(f"checkpoint mismatch: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        self.model.load_state_dict({k[len("model."):]: tensors[k].float() for k in want})

    def n_params(self):
        return sum(p.numel() for p in self.parameters())


def count_params(cfg: Gemma3Config):
    h, d, L = cfg.hidden_size, cfg.head_dim, cfg.num_hidden_layers
    attn = h * d * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 2 * d
    mlp = 3 * h * cfg.intermediate_size
    return cfg.vocab_size * h + L * (attn + mlp + 4 * h) + h


def causal_lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


if __name__ == "__main__":
    # Quick self-check of shapes and parameter counting.
    cfg = Gemma3Config()
    model = Gemma3ForCausalLM(cfg)
    assert model.n_params() == count_params(cfg), (model.n_params(), count_params(cfg))
    ids = torch.randint(0, cfg.vocab_size, (2, 300))
    print(model(ids).shape, model.n_params(), cfg.layer_types, math.isfinite(1.0))
