#!/usr/bin/env python3
"""The shipped tiny Gemma 3 models (models/README.md), end to end.

1. Verbatim recall through `sluice run`: greedy continuations of licence
   passages equal the licence text, read at test time from
   /usr/share/common-licenses (never pasted here): at least 40 tokens for the
   target model, at least 24 for the draft.
2. The training script's PyTorch model and sluice agree: logits that
   tools/train_tiny/reference_logits.py computed once from the Hugging Face
   checkpoint (tests/fixtures/*.logits.npy, with the token ids used) must
   match sluice's on a GGUF converted from that checkpoint here, in f32,
   within 1e-4 of the logit range; and the shipped GGUF (bf16 weights) within
   the bf16 rounding budget stated below. When python3-torch is installed the
   logits are also recomputed live from the checkpoint.
3. `sluice convert` of the committed checkpoints reproduces the shipped
   GGUFs byte for byte (the shipped files are what the documented command
   makes).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

SRC = os.environ.get("SLUICE_SRC", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SLUICE = os.environ.get("SLUICE", os.path.join(SRC, "build", "sluice"))
BUILD = os.environ.get("SLUICE_BUILD", os.path.join(SRC, "build"))
DUMP = os.path.join(BUILD, "dump_logits")
LICENSES = "/usr/share/common-licenses"
MODELS = os.path.join(SRC, "models")
FAILS = []

# (licence file, prompt): prompts of about eight words whose continuation the
# model must recite. Chosen after training from passages the models recite;
# the expected text always comes from the licence file itself.
TARGET_PASSAGES = [
    ("GPL-2", "This program is free software; you can"),
    ("Apache-2.0", "You may reproduce and distribute copies of the"),
    ("Artistic", "You may distribute the programs of this Package"),
    ("BSD", "Redistribution and use in source and binary forms,"),
    ("CC0-1.0", "No trademark or patent rights held by Affirmer"),
    ("GFDL-1.3", "If a section in the Document is Entitled"),
    ("GPL-3", "An \"entity transaction\" is a transaction transferring control"),
    ("LGPL-3", "This version of the GNU Lesser General Public"),
    ("MPL-2.0", "This License does not grant any rights in"),
]
DRAFT_PASSAGES = [
    ("BSD", "Redistributions in binary form must reproduce the above"),
    ("GPL-2", "This program is distributed in the hope that"),
    ("LGPL-2.1", "The \"Library\", below, refers to any such software"),
    ("LGPL-3", "Defining a subclass of a class defined by"),
]
TARGET_MIN_TOKENS = 40
DRAFT_MIN_TOKENS = 24

# bf16 keeps 8 bits of mantissa: each weight moves by up to 2^-9 relative, and
# through 6 layers the logits of these models move by a few tenths of a
# percent of their range (measured 0.2%); 1e-2 of the range still catches any
# real mismatch (a wrong norm, rope or window moves them by tens of percent).
BF16_TOL = 1e-2
F32_TOL = 1e-4


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)
    return cond


def licence_text(name):
    with open(os.path.join(LICENSES, name), encoding="utf-8") as fh:
        return fh.read()


def recite(model, prompt, n):
    p = subprocess.run([SLUICE, "run", "-m", model, "-p", prompt, "-n", str(n), "--print-ids"],
                       capture_output=True)
    if p.returncode != 0:
        return None, [], p.stderr.decode(errors="replace")
    ids = []
    for line in p.stderr.decode(errors="replace").splitlines():
        if line.startswith("ids:"):
            ids = [int(x) for x in line[4:].split()]
    out = p.stdout.decode("utf-8", errors="replace")
    return out[:-1] if out.endswith("\n") else out, ids, ""


def check_recall(model, passages, min_tokens, label):
    ok = 0
    for name, prompt in passages:
        text = licence_text(name)
        at = text.find(prompt)
        if not check(at >= 0, "%s: prompt %r is not in %s" % (label, prompt, name)):
            continue
        expected = text[at + len(prompt):]
        out, ids, err = recite(model, prompt, min_tokens + 8)
        if not check(out is not None, "%s: sluice run failed: %s" % (label, err)):
            continue
        good = len(ids) >= min_tokens and expected.startswith(out)
        ok += good
        check(good, "%s: %r continued with %d tokens %r, the licence says %r" %
              (label, prompt, len(ids), out[:120], expected[:120]))
    print("%s: %d/%d passages recited verbatim" % (label, ok, len(passages)))


def fixture(name):
    path = os.path.join(SRC, "tests", "fixtures", name)
    data = np.load(path + ".logits.npy")
    with open(path + ".ids") as fh:
        ids = [int(x) for x in fh.read().split()]
    return ids, data


def logits_of(model, ids, tmp):
    out = os.path.join(tmp, "logits.f32")
    p = subprocess.run([DUMP, "-m", model, "-o", out, "-p0", ",".join(map(str, ids))],
                       capture_output=True, text=True, check=True)
    n_vocab = int(p.stdout.split()[1])
    return np.fromfile(out, dtype=np.float32).reshape(-1, n_vocab)


def rel_err(got, ref):
    return float(np.max(np.abs(got - ref)) / (np.max(ref) - np.min(ref)))


def check_logits(name, hf_dir, shipped, tmp):
    ids, ref = fixture(name)
    conv = os.path.join(tmp, name + "-f32.gguf")
    subprocess.run([SLUICE, "convert", hf_dir, "-o", conv, "-q"], check=True)
    e = rel_err(logits_of(conv, ids, tmp), ref)
    check(e <= F32_TOL, "%s: f32 conversion differs from the PyTorch logits by %.3g of the range" % (name, e))
    e2 = rel_err(logits_of(shipped, ids, tmp), ref)
    check(e2 <= BF16_TOL, "%s: shipped bf16 GGUF differs from the PyTorch logits by %.3g" % (name, e2))
    print("%s: PyTorch vs sluice logits: f32 %.2g, shipped bf16 %.2g of the logit range" % (name, e, e2))
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    live = os.path.join(tmp, name + ".live.npy")
    subprocess.run([sys.executable, os.path.join(SRC, "tools", "train_tiny", "reference_logits.py"),
                    "--model", hf_dir, "--prompt-ids", ",".join(map(str, ids)), "--out", live],
                   check=True, capture_output=True)
    e3 = rel_err(np.load(live), ref)
    check(e3 <= 1e-5, "%s: live PyTorch logits differ from the fixture by %.3g" % (name, e3))


def check_reproducible(hf_dir, shipped, tmp):
    out = os.path.join(tmp, os.path.basename(hf_dir) + "-again.gguf")
    subprocess.run([SLUICE, "convert", hf_dir, "-o", out, "-q", "--type", "bf16"], check=True)
    with open(out, "rb") as a, open(shipped, "rb") as b:
        check(a.read() == b.read(), "sluice convert %s --type bf16 does not reproduce %s" % (hf_dir, shipped))


def main():
    target = os.path.join(MODELS, "tiny-gemma3.gguf")
    draft = os.path.join(MODELS, "tiny-gemma3-draft.gguf")
    check_recall(target, TARGET_PASSAGES, TARGET_MIN_TOKENS, "target")
    check_recall(draft, DRAFT_PASSAGES, DRAFT_MIN_TOKENS, "draft")
    check(len(TARGET_PASSAGES) >= 5 and len(DRAFT_PASSAGES) >= 3, "enough passages are checked")
    with tempfile.TemporaryDirectory(prefix="sluice-tiny-") as tmp:
        check_logits("tiny-gemma3", os.path.join(MODELS, "hf", "tiny-gemma3"), target, tmp)
        check_logits("tiny-gemma3-draft", os.path.join(MODELS, "hf", "tiny-gemma3-draft"), draft, tmp)
        check_reproducible(os.path.join(MODELS, "hf", "tiny-gemma3"), target, tmp)
        check_reproducible(os.path.join(MODELS, "hf", "tiny-gemma3-draft"), draft, tmp)
    if FAILS:
        print("0 passed, %d failed" % len(FAILS))
        return 1
    print("test_tiny_models: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
