#!/usr/bin/env python3
"""`sluice convert`: Hugging Face checkpoints to GGUF.

A synthetic GGUF (`sluice synth --size test`, f32) is exported here into a
Hugging Face directory following Hugging Face's conventions, written from
their definitions rather than from the converter: Gemma norms stored as w
(the model scales by 1 + w), Llama q/k rows in rotate-half order (heads
split in halves, not interleaved pairs), names model.layers.N.*, a
tokenizer.model trained with spm_train. Converting it back must give the
original tensors, and the engine's logits on the converted file must match
the numpy reference (tests/ref) on the original within 1e-5.

Malformed checkpoints (missing tensor, wrong shape, truncated shard, bad
JSON, missing tokenizer, unsupported model type) must fail with an error
naming the problem. The trained tiny models' own check (PyTorch logits vs
the converted GGUF) is tests/test_tiny_models.py.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref import forward  # noqa: E402
from ref.gguf import GGUF  # noqa: E402

SLUICE = os.environ.get("SLUICE", "build/sluice")
BUILD = os.environ.get("SLUICE_BUILD", "build")
DUMP = os.path.join(BUILD, "dump_logits")
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(args, ok=True):
    p = subprocess.run(args, capture_output=True, text=True)
    if ok and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def write_safetensors(path, tensors, dtype="F32"):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype=np.float32)
        if dtype == "BF16":
            raw = (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            raw = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for b in blobs:
            fh.write(b)


def hf_split_halves(w, n_heads):
    """Rows of each head from interleaved pairs (2i, 2i+1) back to Hugging
    Face's rotate-half order (i, i + d/2)."""
    rows, cols = w.shape
    hd = rows // n_heads
    out = np.empty_like(w)
    for h in range(n_heads):
        block = w[h * hd:(h + 1) * hd]
        out[h * hd:(h + 1) * hd] = np.concatenate([block[0::2], block[1::2]])
    return out


def export_hf(g, outdir, arch, tok_model, shards=1, layer_types=True):
    """Writes g (a GGUF read by the reference) as a Hugging Face checkpoint."""
    cfg = forward.Config(g)
    gemma = arch != "llama"
    shift = 1.0 if gemma else 0.0   # HF Gemma norms scale by (1 + w)
    T = {}

    def W(name):
        return np.asarray(g.tensor(name), dtype=np.float64)

    T["model.embed_tokens.weight"] = W("token_embd.weight")
    T["model.norm.weight"] = W("output_norm.weight") - shift
    if g.has("output.weight"):
        T["lm_head.weight"] = W("output.weight")
    for il in range(cfg.n_layer):
        p, b = "model.layers.%d." % il, "blk.%d." % il
        q, k = W(b + "attn_q.weight"), W(b + "attn_k.weight")
        if not gemma:
            q, k = hf_split_halves(q, cfg.n_head), hf_split_halves(k, cfg.n_kv_head)
        T[p + "self_attn.q_proj.weight"] = q
        T[p + "self_attn.k_proj.weight"] = k
        T[p + "self_attn.v_proj.weight"] = W(b + "attn_v.weight")
        T[p + "self_attn.o_proj.weight"] = W(b + "attn_output.weight")
        T[p + "mlp.gate_proj.weight"] = W(b + "ffn_gate.weight")
        T[p + "mlp.up_proj.weight"] = W(b + "ffn_up.weight")
        T[p + "mlp.down_proj.weight"] = W(b + "ffn_down.weight")
        T[p + "input_layernorm.weight"] = W(b + "attn_norm.weight") - shift
        if arch in ("gemma2", "gemma3"):
            T[p + "post_attention_layernorm.weight"] = W(b + "post_attention_norm.weight") - shift
            T[p + "pre_feedforward_layernorm.weight"] = W(b + "ffn_norm.weight") - shift
            T[p + "post_feedforward_layernorm.weight"] = W(b + "post_ffw_norm.weight") - shift
        else:
            T[p + "post_attention_layernorm.weight"] = W(b + "ffn_norm.weight") - shift
        if arch == "gemma3":
            T[p + "self_attn.q_norm.weight"] = W(b + "attn_q_norm.weight") - shift
            T[p + "self_attn.k_norm.weight"] = W(b + "attn_k_norm.weight") - shift
    model_type = {"llama": "llama", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text"}[arch]
    conf = {
        "architectures": ["X"], "model_type": model_type,
        "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
        "vocab_size": int(T["model.embed_tokens.weight"].shape[0]),
        "max_position_embeddings": 512, "rms_norm_eps": cfg.eps,
        "rope_theta": cfg.rope_base, "tie_word_embeddings": "lm_head.weight" not in T,
    }
    if arch in ("gemma2", "gemma3"):
        conf["sliding_window"] = cfg.window
        conf["query_pre_attn_scalar"] = cfg.head_dim
        if layer_types:
            conf["layer_types"] = ["sliding_attention" if l.sliding else "full_attention" for l in cfg.layers]
    if arch == "gemma2":
        conf["attn_logit_softcapping"] = cfg.attn_softcap
        conf["final_logit_softcapping"] = cfg.final_softcap
    if arch == "gemma3":
        conf["rope_local_base_freq"] = 10000.0
        glob = [l for l in cfg.layers if not l.sliding][0]
        if glob.rope_scale != 1.0:
            conf["rope_scaling"] = {"rope_type": "linear", "factor": glob.rope_scale}
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "config.json"), "w") as fh:
        json.dump(conf, fh, indent=1)
    names = sorted(T)
    per = (len(names) + shards - 1) // shards
    for s in range(shards):
        part = {n: T[n] for n in names[s * per:(s + 1) * per]}
        fname = "model.safetensors" if shards == 1 else "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        write_safetensors(os.path.join(outdir, fname), part)
    shutil.copy(tok_model, os.path.join(outdir, "tokenizer.model"))
    return T


def train_tokenizer(tmp):
    prefix = os.path.join(tmp, "tok")
    run(["spm_train", "--input=/usr/share/common-licenses/GPL-3", "--model_prefix=" + prefix,
         "--vocab_size=400", "--model_type=bpe", "--byte_fallback=true", "--character_coverage=1.0",
         "--pad_id=0", "--eos_id=1", "--bos_id=2", "--unk_id=3",
         "--user_defined_symbols=<start_of_turn>,<end_of_turn>",
         "--add_dummy_prefix=false", "--normalization_rule_name=identity",
         "--remove_extra_whitespaces=false", "--minloglevel=2"])
    return prefix + ".model"


def logits_of(model, ids, tmp):
    out = os.path.join(tmp, "logits.f32")
    p = run([DUMP, "-m", model, "-o", out, "-p0", ",".join(map(str, ids))])
    n_vocab = int(p.stdout.split()[1])
    return np.fromfile(out, dtype=np.float32).reshape(-1, n_vocab)


def check_round_trip(arch, tmp, tok_model, shards, layer_types):
    src = os.path.join(tmp, arch + "-src.gguf")
    run([SLUICE, "synth", "--arch", arch, "--size", "test", "--type", "f32", "--seed", "7",
         "--weight-scale", "2", "-o", src])
    g = GGUF(src)
    hf = os.path.join(tmp, arch + "-hf")
    export_hf(g, hf, arch, tok_model, shards=shards, layer_types=layer_types)
    dst = os.path.join(tmp, arch + "-conv.gguf")
    run([SLUICE, "convert", hf, "-o", dst, "--quiet"])
    c = GGUF(dst)
    check(c.get("general.architecture") == arch, "%s: architecture key" % arch)
    for name in g.tensors:
        if not c.has(name):
            check(False, "%s: converted file lacks %s" % (arch, name))
            continue
        a, b = np.asarray(g.tensor(name)), np.asarray(c.tensor(name))
        check(a.shape == b.shape and np.array_equal(a, b),
              "%s: tensor %s differs after the round trip (max diff %s)" %
              (arch, name, np.max(np.abs(a - b)) if a.shape == b.shape else a.shape))
    check(len(c.get("tokenizer.ggml.tokens")) == g.get("%s.vocab_size" % arch, 512) or
          len(c.get("tokenizer.ggml.tokens")) == 512, "%s: vocabulary padded to the embedding rows" % arch)
    ids = [2, 17, 80, 33, 261, 5, 99, 150, 42, 7, 300, 11, 64, 128, 9, 270, 18, 3, 77, 401, 88, 1]
    got = logits_of(dst, ids, tmp)
    ref = forward.Model(src).logits(ids)
    err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    check(err <= 1e-5, "%s: converted model's logits differ from the reference by %.3g (relative)" % (arch, err))
    print("%s: %d tensors equal after the round trip, logits within %.2g of the reference" %
          (arch, len(g.tensors), err))
    return hf


def export_hf_gemma4(g, outdir, tok_model, multimodal):
    """Writes a gemma4 GGUF as a Hugging Face Gemma 4 checkpoint: the names
    llama.cpp's converter maps (model.language_model.* in a
    Gemma4ForConditionalGeneration, model.* in a Gemma4ForCausalLM), norms
    stored as they scale, no K/V in the KV-sharing layers, no v_proj where
    V = K, "proportional" RoPE as a partial_rotary_factor."""
    a = "gemma4."
    n_layer = g.get(a + "block_count")
    swa = list(g.get(a + "attention.sliding_window_pattern"))
    kvh = list(g.get(a + "attention.head_count_kv"))
    d_ff = list(g.get(a + "feed_forward_length"))
    n_shared = g.get(a + "attention.shared_kv_layers")
    hd, hd_swa = g.get(a + "attention.key_length"), g.get(a + "attention.key_length_swa")
    pre = "model.language_model." if multimodal else "model."
    T = {}

    def W(name):
        return np.asarray(g.tensor(name), dtype=np.float64)

    T[pre + "embed_tokens.weight"] = W("token_embd.weight")
    T[pre + "norm.weight"] = W("output_norm.weight")
    T[pre + "embed_tokens_per_layer.weight"] = W("per_layer_token_embd.weight")
    T[pre + "per_layer_model_projection.weight"] = W("per_layer_model_proj.weight")
    T[pre + "per_layer_projection_norm.weight"] = W("per_layer_proj_norm.weight")
    names = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_q_norm": "self_attn.q_norm",
             "attn_k_norm": "self_attn.k_norm", "attn_output": "self_attn.o_proj",
             "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "post_ffw_norm": "post_feedforward_layernorm", "inp_gate": "per_layer_input_gate",
             "proj": "per_layer_projection", "post_norm": "post_per_layer_input_norm"}
    for il in range(n_layer):
        for gg, hf in names.items():
            b = "blk.%d.%s.weight" % (il, gg)
            if g.has(b):
                T["%slayers.%d.%s.weight" % (pre, il, hf)] = W(b)
        # a 0-d scalar, as the checkpoints store it
        T["%slayers.%d.layer_scalar" % (pre, il)] = W("blk.%d.layer_output_scale.weight" % il).reshape(())
    ff = np.asarray(g.tensor("rope_freqs.weight"))
    n_rot = int(np.sum(ff == 1.0))
    text = {
        "model_type": "gemma4_text", "hidden_size": g.get(a + "embedding_length"),
        "intermediate_size": int(min(d_ff)), "use_double_wide_mlp": bool(max(d_ff) == 2 * min(d_ff)),
        "num_hidden_layers": n_layer, "num_attention_heads": g.get(a + "attention.head_count"),
        "num_key_value_heads": int([k for k, s in zip(kvh, swa) if s][0]),
        "num_global_key_value_heads": int([k for k, s in zip(kvh, swa) if not s][0]),
        "head_dim": hd_swa, "global_head_dim": hd,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in swa],
        "sliding_window": g.get(a + "attention.sliding_window"),
        "num_kv_shared_layers": n_shared,
        "hidden_size_per_layer_input": g.get(a + "embedding_length_per_layer_input"),
        "vocab_size": int(T[pre + "embed_tokens.weight"].shape[0]),
        "max_position_embeddings": g.get(a + "context_length"),
        "rms_norm_eps": g.get(a + "attention.layer_norm_rms_epsilon"),
        "final_logit_softcapping": g.get(a + "final_logit_softcapping"),
        "rope_parameters": {
            "full_attention": {"rope_type": "proportional", "rope_theta": g.get(a + "rope.freq_base"),
                               "partial_rotary_factor": 2.0 * n_rot / hd},
            "sliding_attention": {"rope_type": "default", "rope_theta": g.get(a + "rope.freq_base_swa"),
                                  "partial_rotary_factor": g.get(a + "rope.dimension_count_swa") / hd_swa},
        },
        "attention_k_eq_v": not any(g.has("blk.%d.attn_v.weight" % il)
                                    for il in range(n_layer) if not swa[il]),
        "tie_word_embeddings": True,
    }
    conf = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
            "text_config": text} if multimodal else dict(text, architectures=["Gemma4ForCausalLM"])
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "config.json"), "w") as fh:
        json.dump(conf, fh, indent=1)
    write_safetensors(os.path.join(outdir, "model.safetensors"), T)
    shutil.copy(tok_model, os.path.join(outdir, "tokenizer.model"))
    return T


def check_round_trip_gemma4(tmp, tok_model, multimodal):
    what = "gemma4 (%s)" % ("Gemma4ForConditionalGeneration" if multimodal else "Gemma4ForCausalLM")
    src = os.path.join(tmp, "gemma4-src.gguf")
    run([SLUICE, "synth", "--arch", "gemma4", "--size", "test", "--type", "f32", "--seed", "7",
         "-o", src])
    g = GGUF(src)
    hf = os.path.join(tmp, "gemma4-hf-%d" % multimodal)
    T = export_hf_gemma4(g, hf, tok_model, multimodal)
    check(not any(".layers.7.self_attn.k_proj" in n or ".layers.3.self_attn.v_proj" in n for n in T),
          "%s: the export has no K/V in KV-sharing layers and no V where V = K" % what)
    dst = os.path.join(tmp, "gemma4-conv-%d.gguf" % multimodal)
    run([SLUICE, "convert", hf, "-o", dst, "--quiet"])
    c = GGUF(dst)
    check(c.get("general.architecture") == "gemma4", "%s: architecture key" % what)
    for key in ("block_count", "attention.head_count_kv", "feed_forward_length", "attention.key_length",
                "attention.key_length_swa", "rope.dimension_count", "rope.dimension_count_swa",
                "rope.freq_base", "rope.freq_base_swa", "attention.sliding_window",
                "attention.sliding_window_pattern", "attention.shared_kv_layers",
                "embedding_length_per_layer_input", "final_logit_softcapping"):
        a, b = g.get("gemma4." + key), c.get("gemma4." + key)
        same = list(a) == list(b) if isinstance(a, (list, tuple, np.ndarray)) else a == b
        check(same, "%s: gemma4.%s is %r after the round trip, was %r" % (what, key, b, a))
    for name in g.tensors:
        if not c.has(name):
            check(False, "%s: converted file lacks %s" % (what, name))
            continue
        x, y = np.asarray(g.tensor(name)), np.asarray(c.tensor(name))
        check(x.shape == y.shape and np.array_equal(x, y), "%s: tensor %s differs after the round trip" %
              (what, name))
    check(sorted(c.tensors) == sorted(g.tensors), "%s: the same tensor set (extra: %s)" %
          (what, sorted(set(c.tensors) - set(g.tensors))))
    ids = [2, 17, 80, 33, 261, 5, 99, 150, 42, 7, 300, 11, 64, 128, 9, 270, 18, 3, 77, 401, 88, 1]
    got = logits_of(dst, ids, tmp)
    ref = forward.Model(src).logits(ids)
    err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    check(err <= 1e-5, "%s: converted model's logits differ from the reference by %.3g (relative)" % (what, err))
    print("%s: %d tensors equal after the round trip, logits within %.2g of the reference" %
          (what, len(g.tensors), err))


def write_gemma4_tokenizer_json(outdir, n_vocab):
    """A Hugging Face BPE tokenizer.json as Gemma 4 ships it (no tokenizer.model):
    vocab, merges in both of the formats tokenizers writes, added tokens."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<|channel>", "<start_of_turn>"]
    tokens += ["<0x%02X>" % b for b in range(256)]
    tokens += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581", "th", "the", "\u2581the"]
    tokens += ["w%d" % i for i in range(n_vocab - len(tokens))]
    merges = ["t h", ["th", "e"], ["\u2581", "the"]]
    added = [{"id": i, "content": tokens[i], "special": i != 4} for i in range(6)]
    tj = {"version": "1.0", "added_tokens": added,
          "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges,
                    "byte_fallback": True}}
    with open(os.path.join(outdir, "tokenizer.json"), "w") as fh:
        json.dump(tj, fh)
    return tokens


def check_gemma4_tokenizer_json(tmp, tok_model):
    """Gemma 4 checkpoints without tokenizer.model: the vocabulary comes from
    tokenizer.json as a "gemma4" (merge-ranked BPE) GGUF vocabulary."""
    src = os.path.join(tmp, "gemma4-src.gguf")
    g = GGUF(src)
    hf = os.path.join(tmp, "gemma4-hf-json")
    export_hf_gemma4(g, hf, tok_model, False)
    os.remove(os.path.join(hf, "tokenizer.model"))
    tokens = write_gemma4_tokenizer_json(hf, 512)
    dst = os.path.join(tmp, "gemma4-json.gguf")
    run([SLUICE, "convert", hf, "-o", dst, "--quiet"])
    c = GGUF(dst)
    check(c.get("tokenizer.ggml.model") == "gemma4", "tokenizer.json: tokenizer.ggml.model is gemma4")
    check(list(c.get("tokenizer.ggml.tokens")) == tokens, "tokenizer.json: the tokens in id order")
    check(list(c.get("tokenizer.ggml.merges")) == ["t h", "th e", "\u2581 the"],
          "tokenizer.json: merges in rank order, \"left right\" (got %r)" % (c.get("tokenizer.ggml.merges"),))
    types = list(c.get("tokenizer.ggml.token_type"))
    check(types[2] == 3 and types[3] == 2 and types[4] == 4 and types[6] == 6 and types[262] == 1,
          "tokenizer.json: token types control, unknown, user-defined (<|channel>), byte, normal")
    check(c.get("tokenizer.ggml.bos_token_id") == 2 and c.get("tokenizer.ggml.eos_token_id") == 1,
          "tokenizer.json: bos and eos ids")
    p = run([SLUICE, "run", "-m", dst, "-p", "the the", "-n", "2"], ok=False)
    check(p.returncode == 0, "tokenizer.json: the converted model runs (%s)" % p.stderr.strip()[-300:])
    os.remove(os.path.join(hf, "tokenizer.json"))
    expect_error([SLUICE, "convert", hf, "-o", os.path.join(tmp, "x.gguf"), "-q"], "tokenizer.json",
                 "gemma4 without any tokenizer")


def expect_error(args, fragment, what):
    p = run(args, ok=False)
    check(p.returncode != 0 and fragment in p.stderr,
          "%s: expected an error containing %r, got exit %d: %s" % (what, fragment, p.returncode, p.stderr.strip()))


def check_malformed(hf, tmp):
    def copy(name):
        d = os.path.join(tmp, name)
        shutil.copytree(hf, d)
        return d

    out = os.path.join(tmp, "bad.gguf")
    st_name = [f for f in os.listdir(hf) if f.endswith(".safetensors")][0]

    # missing tensor
    d = copy("missing")
    path = os.path.join(d, st_name)
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    victim = "model.layers.1.mlp.up_proj.weight"
    header.pop(victim, None)
    h = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + data)
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], "missing tensor " + victim, "missing tensor")

    # wrong shape: claim a different shape with the same byte count
    d = copy("shape")
    path = os.path.join(d, st_name)
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    victim = "model.layers.0.self_attn.o_proj.weight"
    r, c = header[victim]["shape"]
    header[victim]["shape"] = [c, r] if r != c else [r * 2, c // 2]
    h = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + data)
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], victim + " has shape", "wrong shape")

    # truncated shard
    d = copy("trunc")
    path = os.path.join(d, st_name)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size - 1000)
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], "outside the", "truncated shard")
    with open(path, "r+b") as fh:
        fh.truncate(5)
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], "too short", "shard shorter than its header")

    # bad JSON in config.json
    d = copy("json")
    with open(os.path.join(d, "config.json"), "w") as fh:
        fh.write('{"model_type": "llama", "hidden_size": 256,,}')
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], "config.json: not a valid JSON", "bad JSON")

    # required field missing, unsupported model type
    d = copy("field")
    conf = json.load(open(os.path.join(d, "config.json")))
    conf.pop("num_hidden_layers")
    json.dump(conf, open(os.path.join(d, "config.json"), "w"))
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], '"num_hidden_layers"', "missing field")
    conf["num_hidden_layers"] = 6
    conf["model_type"] = "mistral"
    json.dump(conf, open(os.path.join(d, "config.json"), "w"))
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], 'model_type "mistral"', "model type")

    # missing tokenizer
    d = copy("notok")
    os.remove(os.path.join(d, "tokenizer.model"))
    expect_error([SLUICE, "convert", d, "-o", out, "-q"], "tokenizer.model", "missing tokenizer")
    check(not os.path.exists(out), "a failed conversion must not leave an output file")

    # usage errors
    p = run([SLUICE, "convert", hf], ok=False)
    check(p.returncode == 2 and "-o" in p.stderr, "convert without -o is a usage error")


def main():
    tmp = tempfile.mkdtemp(prefix="sluice-convert-")
    try:
        tok = train_tokenizer(tmp)
        hf = check_round_trip("llama", tmp, tok, shards=2, layer_types=True)
        check_round_trip("gemma3", tmp, tok, shards=1, layer_types=True)
        check_round_trip("gemma2", tmp, tok, shards=3, layer_types=False)
        check_round_trip("gemma", tmp, tok, shards=1, layer_types=False)
        check_round_trip_gemma4(tmp, tok, multimodal=False)
        check_round_trip_gemma4(tmp, tok, multimodal=True)
        check_gemma4_tokenizer_json(tmp, tok)
        check_malformed(hf, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d passed, %d failed" % (0, len(FAILS)))
        return 1
    print("test_convert: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
