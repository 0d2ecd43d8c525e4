#!/usr/bin/python3
"""Check the tiny-gemma3 tokenizer: special-token ids, and an exact round trip of every document
(newlines, tabs, form feeds and indentation included), decoded both by spm.py and by the
sentencepiece library itself (spm_decode).

    check_tokenizer.py --model tokenizer.model DOC...
"""

import argparse
import subprocess
import sys

from spm import Tokenizer, CONTROL, USER_DEFINED, UNKNOWN

EXPECTED = {0: ("<pad>", CONTROL), 1: ("<eos>", CONTROL), 2: ("<bos>", CONTROL),
            3: ("<unk>", UNKNOWN), 4: ("<start_of_turn>", USER_DEFINED),
            5: ("<end_of_turn>", USER_DEFINED), 6: ("\n", USER_DEFINED)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("docs", nargs="+")
    args = ap.parse_args()

    tok = Tokenizer(args.model)
    ok = True
    for i, (piece, ptype) in EXPECTED.items():
        got = tok.pieces[i]
        if (got[0], got[2]) != (piece, ptype):
            print(f"id {i}: expected {piece!r} type {ptype}, got {got[0]!r} type {got[2]}")
            ok = False

    texts = []
    for path in args.docs:
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    all_ids = tok.encode_many(texts)
    n_tokens = 0
    for path, text, ids in zip(args.docs, texts, all_ids):
        n_tokens += len(ids)
        if tok.decode(ids) != text:
            print(f"{path}: spm.py decode does not give the text back")
            ok = False
        if 3 in ids:
            print(f"{path}: contains <unk>")
            ok = False
        # The library's own decoder, fed all ids of the document as one line: checks that the
        # "\n" piece decodes to a newline and that spm.py agrees with sentencepiece.
        line = " ".join(map(str, ids)) + "\n"
        proc = subprocess.run(["spm_decode", f"--model={args.model}", "--input_format=id"],
                              input=line.encode(), stdout=subprocess.PIPE, check=True)
        if proc.stdout.decode("utf-8") != text + "\n":
            print(f"{path}: spm_decode does not give the text back")
            ok = False
    print(f"tokenizer check: vocab {len(tok)}, {len(texts)} documents, {n_tokens} tokens, "
          f"{sum(map(len, texts)) / n_tokens:.2f} chars/token: {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
