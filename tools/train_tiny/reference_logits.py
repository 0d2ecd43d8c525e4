#!/usr/bin/python3
"""Dump the float32 logits of a Hugging Face-style Gemma 3 directory for a token sequence:
the fixture that the C engine's forward pass is checked against.

    reference_logits.py --model DIR --prompt-ids 2,651,1020 --out logits.npy
    reference_logits.py --model DIR --text "This program is free software" --out logits.npy

--text tokenizes with the directory's tokenizer.model through the `spm_encode` tool (Debian's
python has no sentencepiece module) and puts <bos> first unless --no-bos is given; the ids
used are printed. The output holds logits for every position, shape [n_tokens, vocab_size]:
a .npy file, or raw little-endian float32 in row-major order for any other suffix.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gemma3 import Gemma3Config, Gemma3ForCausalLM  # noqa: E402
from safetensors_io import load_file  # noqa: E402
from spm import Tokenizer  # noqa: E402


def load_model(model_dir):
    cfg = Gemma3Config.load(os.path.join(model_dir, "config.json"))
    model = Gemma3ForCausalLM(cfg)
    model.load_hf_state_dict(load_file(os.path.join(model_dir, "model.safetensors")))
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description="dump reference logits of a tiny Gemma 3")
    ap.add_argument("--model", required=True, help="directory with config.json, "
                    "model.safetensors, tokenizer.model")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt-ids", help="comma- or space-separated token ids, used as given")
    src.add_argument("--text", help="text to tokenize (with <bos> first)")
    ap.add_argument("--no-bos", action="store_true", help="with --text: no <bos> in front")
    ap.add_argument("--out", required=True, help=".npy, or raw float32 for other suffixes")
    args = ap.parse_args()

    torch.set_num_threads(2)
    model = load_model(args.model)
    if args.text is not None:
        tok = Tokenizer(os.path.join(args.model, "tokenizer.model"))
        ids = tok.encode(args.text)
        if not args.no_bos:
            ids = [tok.bos_id] + ids
    else:
        ids = [int(x) for x in args.prompt_ids.replace(",", " ").split()]
    vocab = model.config.vocab_size
    if not ids or min(ids) < 0 or max(ids) >= vocab:
        sys.exit(f"token ids must be non-empty and in [0, {vocab})")

    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0].to(torch.float32).numpy()
    logits = np.ascontiguousarray(logits, dtype="<f4")
    if args.out.endswith(".npy"):
        np.save(args.out, logits)
    else:
        with open(args.out, "wb") as f:
            f.write(logits.tobytes())
    print("ids:", " ".join(map(str, ids)))
    print(f"logits: {logits.shape[0]} x {logits.shape[1]} float32 -> {args.out}")
    print("argmax:", " ".join(str(int(i)) for i in logits.argmax(-1)))


if __name__ == "__main__":
    main()
