#!/usr/bin/python3
"""Measure the shipped GGUF models through the C engine (not PyTorch):

  verbatim rate   prompts of PROMPT_WORDS words taken at sentence starts of
                  every licence in the corpus, greedy continuation with
                  `sluice run`; a passage counts when the first N tokens equal
                  the licence text that follows the prompt;
  agreement       teacher-forced over windows of the corpus: the share of
                  positions where the draft's and the target's greedy next
                  token (argmax of sluice's logits, tests/tools dump_logits) agree.

    evaluate_gguf.py --sluice build/sluice --dump build/dump_logits \
        --target models/tiny-gemma3.gguf --draft models/tiny-gemma3-draft.gguf \
        [--data build/train_tiny] [--per-doc 6] [--list PASSAGES_OUT]
"""
import argparse
import glob
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spm import Tokenizer  # noqa: E402

PROMPT_WORDS = 8


def candidates(text, per_doc):
    """Prompts of PROMPT_WORDS words starting at evenly spread sentence starts."""
    starts = [m.end() for m in re.finditer(r"(?:^|[.;:]\s+)(?=[A-Z])", text)]
    out = []
    if not starts:
        return out
    step = max(1, len(starts) // per_doc)
    for s in starts[::step][:per_doc]:
        words = re.match(r"\S+(?:[ ]+\S+){%d}" % (PROMPT_WORDS - 1), text[s:])
        if words and "\n" not in words.group(0):
            out.append(words.group(0))
    return out


def recite(sluice, model, prompt, n):
    p = subprocess.run([sluice, "run", "-m", model, "-p", prompt, "-n", str(n), "--print-ids", "-t", "1"],
                       capture_output=True)
    ids = []
    for line in p.stderr.decode(errors="replace").splitlines():
        if line.startswith("ids:"):
            ids = [int(x) for x in line[4:].split()]
    out = p.stdout.decode("utf-8", errors="replace")
    return (out[:-1] if out.endswith("\n") else out), ids


def verbatim(args, model, n_tokens, docs, label, listing):
    tried = ok = 0
    for path, text in docs:
        for prompt in candidates(text, args.per_doc):
            at = text.find(prompt)
            expected = text[at + len(prompt):]
            out, ids = recite(args.sluice, model, prompt, n_tokens)
            tried += 1
            good = len(ids) >= n_tokens and expected.startswith(out)
            ok += good
            if good and listing is not None:
                listing.append((label, os.path.basename(path).split("-", 1)[1], prompt))
    print(f"{label}: {ok}/{tried} passages continued {n_tokens} tokens verbatim ({ok / max(tried, 1):.1%})")


def agreement(args, docs):
    tok = Tokenizer(os.path.join(args.data, "tokenizer.model"))
    same = total = 0
    for path, text in docs:
        ids = tok.encode(text)
        for start in range(0, max(1, len(ids) - 128), max(1, len(ids) // 4)):
            window = [tok.bos_id] + ids[start:start + 127]
            picks = []
            for model in (args.target, args.draft):
                out = "/tmp/sluice-eval-logits.f32"
                p = subprocess.run([args.dump, "-m", model, "-o", out, "-p0", ",".join(map(str, window))],
                                   capture_output=True, text=True, check=True)
                n_vocab = int(p.stdout.split()[1])
                picks.append(np.fromfile(out, dtype=np.float32).reshape(-1, n_vocab).argmax(axis=1))
            same += int((picks[0] == picks[1]).sum())
            total += len(window)
    print(f"draft/target greedy agreement, teacher-forced over the corpus: {same}/{total} = {same / total:.1%}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--data", default="build/train_tiny")
    ap.add_argument("--per-doc", type=int, default=6)
    ap.add_argument("--list", help="write the passages recited verbatim here")
    args = ap.parse_args()
    docs = []
    for p in sorted(glob.glob(os.path.join(args.data, "docs", "*"))):
        with open(p, encoding="utf-8") as fh:
            docs.append((p, fh.read()))
    listing = [] if args.list else None
    verbatim(args, args.target, 40, docs, "target", listing)
    verbatim(args, args.draft, 24, docs, "draft", listing)
    agreement(args, docs)
    if args.list:
        with open(args.list, "w") as fh:
            for label, name, prompt in listing:
                fh.write(f"{label}\t{name}\t{prompt}\n")


if __name__ == "__main__":
    main()
