#!/usr/bin/python3
"""Train a tiny Gemma 3 until it recites the Debian licence texts, and save it as a Hugging
Face checkpoint directory (config.json, model.safetensors, tokenizer.model).

    train.py --size target|draft --out DIR [--data build/train_tiny] [--steps N] [--minutes M]

Overfitting is the point: the shipped models are end-to-end test fixtures, and a model that
continues known passages verbatim under greedy decoding makes a wrong token anywhere in an
engine visible at once.

The run is deterministic for a given --steps (fixed seeds, fixed data order, 2 threads).
--minutes is a safety cap: the learning-rate schedule follows whichever of steps and wall time
runs out first, so a capped run still ends at the low learning rate, but then depends on the
machine's speed (the summary records which bound applied).
"""

import os

# Set before torch loads its thread pools. The machine is shared with compilers: OpenMP threads
# that spin while waiting, and OpenBLAS threads on top of them, slowed a step down 5-10x under
# load in measurements here; passive waiting and single-threaded BLAS calls avoid that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import glob
import json
import math
import random
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gemma3 import Gemma3Config, Gemma3ForCausalLM, causal_lm_loss  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402
from spm import Tokenizer  # noqa: E402

SIZES = {
    # 6 layers with sliding_window_pattern 6, as real Gemma 3: layers 0-4 local, layer 5
    # global. Both models keep the pattern at 6 because llama.cpp hard-codes 6 for gemma3.
    # Two kv heads for 4 query heads, so a wrong query-to-kv-head mapping shows up.
    "target": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    # ~4.7x fewer parameters; one kv head, as Gemma 3 1B.
    "draft": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=64),
}

DEFAULTS = {  # steps, minutes cap, peak learning rate
    "target": dict(steps=1400, minutes=30.0, lr=2e-3, batch=16),
    "draft": dict(steps=1200, minutes=15.0, lr=3e-3, batch=16),
}

# Passages every model is asked to continue (each occurs in the corpus; some in several
# licences, where any of the continuations counts as verbatim).
NAMED_PROMPTS = [
    "This program is free software; you can",
    "Everyone is permitted to copy and distribute verbatim copies",
    "Licensed under the Apache License, Version 2.0 (the",
    "Permission is granted to copy, distribute and/or modify this document",
    "The Free Software Foundation may publish revised and/or new versions",
    "THIS SOFTWARE IS PROVIDED BY THE REGENTS AND CONTRIBUTORS",
    "The precise terms and conditions for copying, distribution and",
    "This Source Code Form is subject to the terms of the Mozilla Public",
]

SEED = 1234
CONTEXT = 256     # tokens per training window, <bos> included
WARMUP = 50       # steps of linear warm-up
LR_FLOOR = 1e-4   # end of the cosine decay
EVAL_PROMPTS = 64
PROMPT_WORDS = 8
GEN_TOKENS = 48


def load_docs(data_dir):
    paths = sorted(glob.glob(os.path.join(data_dir, "docs", "*")))
    model = os.path.join(data_dir, "tokenizer.model")
    if not paths or not os.path.exists(model):
        sys.exit(f"{data_dir} has no docs/ or tokenizer.model: run tools/train_tiny/make_corpus.sh")
    texts = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            texts.append(f.read())
    return paths, texts, model


def build_stream(tok, texts):
    """All documents' tokens, each document followed by <eos>. Training windows are cut from
    anywhere in it and always get a <bos> in front, as every prompt to the engine has one."""
    stream = []
    for ids in tok.encode_many(texts):
        stream.extend(ids)
        stream.append(tok.eos_id)
    return torch.tensor(stream, dtype=torch.long)


def sample_batch(stream, gen, bos_id, batch):
    starts = torch.randint(0, len(stream) - CONTEXT + 1, (batch,), generator=gen)
    rows = torch.stack([stream[s:s + CONTEXT] for s in starts.tolist()])
    inputs = torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long), rows[:, :-1]], dim=1)
    return inputs, rows


def lr_at(progress, peak, step):
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    return LR_FLOOR + 0.5 * (peak - LR_FLOOR) * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def greedy(model, ids, n_new, stop_id):
    """Greedy continuation without a cache (the prompts are short; clarity wins)."""
    ids = list(ids)
    out = []
    for _ in range(n_new):
        logits = model(torch.tensor([ids[-CONTEXT:]]))
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        if nxt == stop_id:
            break
        ids.append(nxt)
    return out


def verbatim_tokens(tok, texts, prompt, gen, eos_id):
    """How many generated tokens continue the prompt exactly as some document does. <eos>
    counts as right only where the document ends."""
    best = 0
    for k in range(len(gen), 0, -1):
        piece = gen[:k]
        ends = piece[-1] == eos_id
        want = prompt + tok.decode([t for t in piece if t != eos_id])
        for text in texts:
            at = text.find(want)
            while at >= 0:
                if not ends or at + len(want) == len(text):
                    return k
                at = text.find(want, at + 1)
    return best


def random_prompts(texts, n, rng):
    """Prompts of PROMPT_WORDS whitespace-separated words starting at a random word of a
    random document (chosen with probability proportional to its length). A prompt starting
    mid-line keeps the one space before its first word, so it tokenizes as the corpus does."""
    sizes = [len(t) for t in texts]
    prompts = []
    while len(prompts) < n:
        d = rng.choices(range(len(texts)), weights=sizes)[0]
        text = texts[d]
        pos = rng.randrange(len(text))
        # Move to the start of a word.
        while pos < len(text) and not (text[pos].strip() and (pos == 0 or not text[pos - 1].strip())):
            pos += 1
        end, words = pos, 0
        while end < len(text) and words < PROMPT_WORDS:
            while end < len(text) and not text[end].strip():
                end += 1
            while end < len(text) and text[end].strip():
                end += 1
            words += 1
        if words < PROMPT_WORDS or end >= len(text) - 200:
            continue  # too close to the end of a document to judge 48 tokens
        start = pos - 1 if pos > 0 and text[pos - 1] == " " else pos
        prompts.append(text[start:end])
    return prompts


def evaluate(model, tok, texts, n_random, seed, log):
    model.eval()
    rng = random.Random(seed)
    prompts = random_prompts(texts, n_random, rng)
    all_ids = tok.encode_many(prompts + NAMED_PROMPTS)
    results = {"random": [], "named": []}
    for i, (prompt, ids) in enumerate(zip(prompts + NAMED_PROMPTS, all_ids)):
        gen = greedy(model, [tok.bos_id] + ids, GEN_TOKENS, tok.eos_id)
        k = verbatim_tokens(tok, texts, prompt, gen, tok.eos_id)
        full = k == len(gen)
        entry = {"prompt": prompt, "verbatim_tokens": k, "generated": len(gen), "full": full,
                 "continuation": tok.decode(gen)}
        if i < len(prompts):
            results["random"].append(entry)
        else:
            results["named"].append(entry)
            log(f"  named {'OK  ' if full else 'MISS'} {k:2d}/{len(gen)} {prompt!r} -> "
                f"{tok.decode(gen)[:90]!r}")
    rnd = results["random"]
    results["random_full_rate"] = sum(e["full"] for e in rnd) / len(rnd)
    results["random_token_rate"] = sum(e["verbatim_tokens"] / e["generated"] for e in rnd) / len(rnd)
    named = results["named"]
    results["named_full_rate"] = sum(e["full"] for e in named) / len(named)
    results["named_token_rate"] = sum(e["verbatim_tokens"] / e["generated"] for e in named) / len(named)
    log(f"  random starts: {results['random_full_rate']:.1%} of {len(rnd)} continued "
        f"{GEN_TOKENS} tokens verbatim; {results['random_token_rate']:.1%} of tokens before "
        f"the first divergence")
    log(f"  named passages: {results['named_full_rate']:.1%} verbatim, "
        f"{results['named_token_rate']:.1%} of tokens")
    return results


@torch.no_grad()
def teacher_forced(model, stream, bos_id):
    """Top-1 accuracy and mean loss of next-token prediction over the whole stream, each
    token seen with up to CONTEXT-1 tokens of left context."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    step = CONTEXT // 2
    for s in range(0, len(stream), step):
        lo = max(0, s - (CONTEXT - 1 - step))
        seg = stream[lo:s + step]
        inputs = torch.cat([torch.tensor([bos_id]), seg[:-1]])[None]
        logits = model(inputs)[0]
        scored = slice(s - lo, len(seg))  # only the tokens not scored by the previous window
        pred = logits[scored].argmax(-1)
        correct += int((pred == seg[scored]).sum())
        total += len(seg[scored])
        loss_sum += float(torch.nn.functional.cross_entropy(logits[scored], seg[scored],
                                                            reduction="sum"))
    return correct / total, loss_sum / total


def save_hf(model, cfg, tokenizer_path, out_dir, summary):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg.to_hf_dict(), f, indent=2)
        f.write("\n")
    save_file(model.hf_state_dict(), os.path.join(out_dir, "model.safetensors"),
              dtype="F32", metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path, os.path.join(out_dir, "tokenizer.model"))
    with open(os.path.join(out_dir, "training_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", required=True, help="Hugging Face-style output directory")
    ap.add_argument("--data", default="build/train_tiny", help="output of make_corpus.sh")
    ap.add_argument("--steps", type=int, help="optimizer steps (default per size)")
    ap.add_argument("--minutes", type=float, help="wall-time cap for training (default per size)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default per size)")
    ap.add_argument("--batch", type=int, help="windows per step (default per size)")
    ap.add_argument("--eval-prompts", type=int, default=EVAL_PROMPTS)
    ap.add_argument("--init", help="start from this Hugging Face-style checkpoint directory "
                    "(a second, low learning-rate pass over the same corpus)")
    args = ap.parse_args()
    d = DEFAULTS[args.size]
    steps = args.steps or d["steps"]
    minutes = args.minutes or d["minutes"]
    peak = args.lr or d["lr"]
    batch = args.batch or d["batch"]

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    random.seed(SEED)

    def log(msg):
        print(msg, flush=True)

    paths, texts, tok_path = load_docs(args.data)
    tok = Tokenizer(tok_path)
    stream = build_stream(tok, texts)
    cfg = Gemma3Config(vocab_size=len(tok), pad_token_id=tok.pad_id, eos_token_id=tok.eos_id,
                       bos_token_id=tok.bos_id, **SIZES[args.size])
    cfg.query_pre_attn_scalar = cfg.head_dim
    model = Gemma3ForCausalLM(cfg)
    if args.init:
        model.load_hf_state_dict(load_file(os.path.join(args.init, "model.safetensors")))
        log(f"starting from {args.init}")
    n_params = model.n_params()
    log(f"{args.size}: {n_params:,} parameters; corpus {len(paths)} documents, "
        f"{len(stream):,} tokens; {steps} steps of {batch}x{CONTEXT} tokens, peak lr {peak}, "
        f"cap {minutes} min")

    opt = torch.optim.AdamW(model.parameters(), lr=peak, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    ema = None
    step = 0
    bound = "steps"
    while step < steps:
        elapsed = time.time() - t0
        progress = max(step / steps, elapsed / (minutes * 60))
        if progress >= 1.0:
            bound = "minutes"
            break
        lr = lr_at(progress, peak, step)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        inputs, targets = sample_batch(stream, gen, tok.bos_id, batch)
        loss = causal_lm_loss(model(inputs), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = float(loss) if ema is None else 0.9 * ema + 0.1 * float(loss)
        if step % 25 == 0 or step == 1:
            el = time.time() - t0
            log(f"step {step:5d}  loss {float(loss):.4f} (ema {ema:.4f})  lr {lr:.2e}  "
                f"{step * batch * CONTEXT / el:,.0f} tok/s  {el / 60:.1f} min")
    train_minutes = (time.time() - t0) / 60
    log(f"trained {step} steps in {train_minutes:.1f} min (bound: {bound}); "
        f"last loss {float(loss):.4f}, ema {ema:.4f}")

    acc, tf_loss = teacher_forced(model, stream, tok.bos_id)
    log(f"teacher-forced over the corpus: top-1 accuracy {acc:.2%}, loss {tf_loss:.4f}")
    results = evaluate(model, tok, texts, args.eval_prompts, SEED + 1, log)

    summary = {
        "size": args.size, "parameters": n_params, "steps": step, "bound": bound,
        "train_minutes": round(train_minutes, 2), "batch": batch, "context": CONTEXT,
        "peak_lr": peak, "lr_floor": LR_FLOOR, "warmup": WARMUP, "seed": SEED,
        "init": args.init,
        "final_loss": float(loss), "final_loss_ema": ema,
        "teacher_forced_top1": acc, "teacher_forced_loss": tf_loss,
        "corpus_documents": [os.path.basename(p) for p in paths], "corpus_tokens": len(stream),
        "verbatim": {k: results[k] for k in ("random_full_rate", "random_token_rate",
                                              "named_full_rate", "named_token_rate")},
        "named": [{k: e[k] for k in ("prompt", "verbatim_tokens", "generated", "continuation")}
                  for e in results["named"]],
    }
    save_hf(model, cfg, tok_path, args.out, summary)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
