"""Sentencepiece helpers that need neither the `sentencepiece` nor the `protobuf` Python module.

Debian ships the sentencepiece command-line tools but (in bookworm) no Python binding, so:
  - the vocabulary is read straight from the .model file (a serialized ModelProto; only the
    `pieces` field is decoded here, from its public field numbers);
  - encoding runs `spm_encode`, which works one line at a time: the text is split at "\n" and
    the lines' ids are joined with the id of the "\n" piece. That equals what the library gives
    for the whole text, because "\n" is a user-defined piece (always a token of its own) and no
    learnt piece can contain it (spm_train never sees a newline inside a sentence);
  - decoding is done here: "▁" becomes a space, <0xNN> pieces are bytes, control pieces vanish.
"""

import subprocess
import struct

# SentencePiece.Type values from sentencepiece_model.proto.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

WS = "\u2581"  # "▁", sentencepiece's visible space


def _varint(buf, pos):
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf):
    """Yield (field_number, wire_type, value) for one protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def load_pieces(model_path):
    """Return [(piece, score, type)] in id order from a sentencepiece .model file."""
    with open(model_path, "rb") as f:
        buf = f.read()
    pieces = []
    for field, _, value in _fields(buf):
        if field != 1:  # ModelProto.pieces; trainer/normalizer specs are not needed here
            continue
        piece, score, ptype = "", 0.0, NORMAL
        for sub, _, v in _fields(value):
            if sub == 1:
                piece = bytes(v).decode("utf-8")
            elif sub == 2:
                score = struct.unpack("<f", v)[0]
            elif sub == 3:
                ptype = v
        pieces.append((piece, score, ptype))
    return pieces


class Tokenizer:
    def __init__(self, model_path):
        self.model_path = model_path
        self.pieces = load_pieces(model_path)
        self.piece_to_id = {p: i for i, (p, _, _) in enumerate(self.pieces)}
        self.newline_id = self.piece_to_id["\n"]
        self.bos_id = self.piece_to_id["<bos>"]
        self.eos_id = self.piece_to_id["<eos>"]
        self.pad_id = self.piece_to_id["<pad>"]

    def __len__(self):
        return len(self.pieces)

    def encode_many(self, texts):
        """Encode several texts with one spm_encode run; returns a list of id lists."""
        lines_per_text = [t.split("\n") for t in texts]
        flat = [line for lines in lines_per_text for line in lines]
        # spm_encode reads lines, so a line must not contain "\r" either.
        if any("\r" in line for line in flat):
            raise ValueError("text contains a carriage return; spm_encode would split on it")
        proc = subprocess.run(
            ["spm_encode", f"--model={self.model_path}", "--output_format=id"],
            input=("\n".join(flat) + "\n").encode("utf-8"),
            stdout=subprocess.PIPE, check=True)
        out_lines = proc.stdout.decode("ascii").split("\n")
        if len(out_lines) != len(flat) + 1 or out_lines[-1] != "":
            raise RuntimeError(f"spm_encode returned {len(out_lines) - 1} lines for {len(flat)}")
        result, k = [], 0
        for lines in lines_per_text:
            ids = []
            for j in range(len(lines)):
                if j:
                    ids.append(self.newline_id)
                ids.extend(int(x) for x in out_lines[k].split())
                k += 1
            result.append(ids)
        return result

    def encode(self, text):
        return self.encode_many([text])[0]

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            piece, _, ptype = self.pieces[i]
            if ptype == BYTE:
                out.append(int(piece[3:5], 16))  # "<0xNN>"
            elif ptype in (CONTROL, UNUSED):
                continue
            elif ptype == UNKNOWN:
                out.extend(" \u2047 ".encode("utf-8"))  # spm's default unk surface
            else:
                out.extend(piece.replace(WS, " ").encode("utf-8"))
        return out.decode("utf-8", errors="replace")
