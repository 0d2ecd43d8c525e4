#!/usr/bin/env python3
"""`sluice convert` of a Hugging Face Gemma 4 assistant checkpoint
(Gemma4AssistantForCausalLM): the synth test assistant is written out as
the checkpoint Hugging Face would hold (config.json with text_config,
model.* / pre_projection / post_projection / masked_embedding.* tensors, the
token ordering as an I64 buffer), converted back, and must come out with the
same tensors (bit for bit in f32) and metadata the drafter reads; the
converted file must draft exactly as the synth one (dump_mtp outputs equal).
Malformed checkpoints fail naming the field or tensor.

Environment (set by ctest): SLUICE, SLUICE_BUILD.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref.gguf import GGUF  # noqa: E402

FAILS = []
ARCH = "gemma4-assistant"


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def write_safetensors(path, tensors):
    """tensors: name -> numpy array (float32 or int64)."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        dtype = "I64" if a.dtype == np.int64 else "F32"
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


LAYER_NAMES = {  # Hugging Face suffix -> GGUF suffix
    "input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "attn_q",
    "self_attn.q_norm.weight": "attn_q_norm", "self_attn.o_proj.weight": "attn_output",
    "post_attention_layernorm.weight": "post_attention_norm",
    "pre_feedforward_layernorm.weight": "ffn_norm", "mlp.gate_proj.weight": "ffn_gate",
    "mlp.up_proj.weight": "ffn_up", "mlp.down_proj.weight": "ffn_down",
    "post_feedforward_layernorm.weight": "post_ffw_norm", "layer_scalar": "layer_output_scale",
}


def checkpoint_from(g, out_dir):
    """The Hugging Face checkpoint whose conversion should give g back."""
    def key(s):
        return g.get("%s.%s" % (ARCH, s))
    n_layer = key("block_count")
    kinds = ["sliding_attention" if f else "full_attention" for f in key("attention.sliding_window_pattern")]
    kv = key("attention.head_count_kv")
    swa_kv = [k for k, t in zip(kv, kinds) if t == "sliding_attention"][0]
    full_kv = [k for k, t in zip(kv, kinds) if t == "full_attention"][0]
    rope = g.tensor("rope_freqs.weight")
    config = {
        "architectures": ["Gemma4AssistantForCausalLM"], "model_type": "gemma4_assistant",
        "backbone_hidden_size": key("embedding_length_out"), "use_ordered_embeddings": True,
        "num_centroids": key("n_centroids"), "centroid_intermediate_top_k": key("centroid_top_k"),
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "gemma4_text", "hidden_size": key("embedding_length"),
            "num_hidden_layers": n_layer, "intermediate_size": key("feed_forward_length"),
            "num_attention_heads": key("attention.head_count"), "num_key_value_heads": swa_kv,
            "num_global_key_value_heads": full_kv, "head_dim": key("attention.key_length_swa"),
            "global_head_dim": key("attention.key_length"), "vocab_size": 512,
            "num_kv_shared_layers": n_layer, "sliding_window": key("attention.sliding_window"),
            "max_position_embeddings": key("context_length"), "rms_norm_eps": 1e-6,
            "layer_types": kinds,
            "rope_parameters": {
                "full_attention": {"rope_theta": key("rope.freq_base"), "rope_type": "proportional",
                                   "partial_rotary_factor": float(np.sum(rope == 1.0)) / len(rope)},
                "sliding_attention": {"rope_theta": key("rope.freq_base_swa"),
                                      "partial_rotary_factor": key("rope.dimension_count_swa")
                                      / key("attention.key_length_swa")}}}}
    t = {"model.embed_tokens.weight": g.tensor("token_embd.weight"),
         "model.norm.weight": g.tensor("output_norm.weight"),
         "pre_projection.weight": g.tensor("nextn.pre_projection.weight"),
         "post_projection.weight": g.tensor("nextn.post_projection.weight"),
         "masked_embedding.centroids.weight": g.tensor("mtp.centroids.weight"),
         "masked_embedding.token_ordering": g.tensor("mtp.token_ordering.weight").astype(np.int64)}
    for il in range(n_layer):
        for hf, gg in LAYER_NAMES.items():
            t["model.layers.%d.%s" % (il, hf)] = g.tensor("blk.%d.%s.weight" % (il, gg))
    t = {k: (v if v.dtype == np.int64 else v.astype(np.float32)) for k, v in t.items()}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(config, fh)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), t)
    return config, t


def convert(sluice, src, dst):
    return subprocess.run([sluice, "convert", src, "-o", dst, "--quiet"], capture_output=True, text=True)


def main():
    sluice, build = os.environ["SLUICE"], os.environ["SLUICE_BUILD"]
    with tempfile.TemporaryDirectory() as tmp:
        synth_a, target = os.path.join(tmp, "a.gguf"), os.path.join(tmp, "t.gguf")
        for arch, path in (("gemma4-assistant", synth_a), ("gemma4", target)):
            subprocess.run([sluice, "synth", "--arch", arch, "--size", "test", "-o", path],
                           check=True, stderr=subprocess.DEVNULL)
        g = GGUF(synth_a)
        hf = os.path.join(tmp, "hf")
        config, tensors = checkpoint_from(g, hf)
        out = os.path.join(tmp, "conv.gguf")
        p = convert(sluice, hf, out)
        check(p.returncode == 0, "convert failed: %s" % p.stderr)
        if p.returncode == 0:
            c = GGUF(out)
            check(c.get("general.architecture") == ARCH, "architecture %r" % c.get("general.architecture"))
            for name in g.tensors:
                same = c.has(name) and np.array_equal(c.tensor(name), g.tensor(name))
                check(same, "tensor %s differs after conversion" % name)
            for k, v in g.meta.items():
                if k.startswith(ARCH + ".") and k != ARCH + ".context_length":
                    check(c.get(k) == v or (isinstance(v, list) and list(map(int, c.get(k) or [])) == list(map(int, v))),
                          "metadata %s: %r, synth %r" % (k, c.get(k), v))
            dumps = []
            for a in (synth_a, out):
                d = os.path.join(tmp, "dump%d.txt" % len(dumps))
                subprocess.run([os.path.join(build, "dump_mtp"), "-m", target, "-a", a, "-p",
                                "2,9,40,77,300,12,5,8,100", "-k", "4", "-o", d], check=True)
                dumps.append(open(d).read())
            check(dumps[0] == dumps[1], "the converted assistant drafts differently")
        # malformed checkpoints (each to a new path: convert refuses to overwrite)
        del config["backbone_hidden_size"]
        with open(os.path.join(hf, "config.json"), "w") as fh:
            json.dump(config, fh)
        p = convert(sluice, hf, os.path.join(tmp, "bad1.gguf"))
        check(p.returncode != 0 and "backbone_hidden_size" in p.stderr,
              "no backbone_hidden_size: %r" % p.stderr)
        config["backbone_hidden_size"] = 256
        with open(os.path.join(hf, "config.json"), "w") as fh:
            json.dump(config, fh)
        del tensors["post_projection.weight"]
        write_safetensors(os.path.join(hf, "model.safetensors"), tensors)
        p = convert(sluice, hf, os.path.join(tmp, "bad2.gguf"))
        check(p.returncode != 0 and "missing tensor post_projection.weight" in p.stderr,
              "no post_projection: %r" % p.stderr)
        tensors["post_projection.weight"] = np.zeros((256, 64), np.float32)
        write_safetensors(os.path.join(hf, "model.safetensors"), tensors)
        p = convert(sluice, hf, os.path.join(tmp, "bad3.gguf"))
        check(p.returncode != 0 and "post_projection.weight has shape [256, 64], expected [256, 128]"
              in p.stderr, "misshapen post_projection: %r" % p.stderr)
    if FAILS:
        print("%d failures" % len(FAILS), file=sys.stderr)
        return 1
    print("test_convert_mtp: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
