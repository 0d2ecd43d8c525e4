"""Per-tensor types of a GGUF file, for bench/ppl_cross.sh (not CI).

    gguf_types.py FILE
        one line per tensor: name, type name (ggml's, or "type<N>" for one
        this list lacks, such as ik_llama.cpp's own), row length, bytes
    gguf_types.py --attn-v FTYPE F16_FILE
        --custom-q rules (one "regex=type" a line) giving every attn_v
        tensor the type mainline llama.cpp's llama_tensor_get_type chooses
        for the K-quant or IQ4 mix FTYPE, its fallback for rows that are not whole
        256-element blocks applied; nothing for other FTYPEs

Reads only the header: a file whose types nothing else here knows still
lists. ik_llama.cpp's quantizer bumps attn_v one K-type up when four or
more query heads share a KV head (Q3_K -> Q4_K, Q4_K -> Q5_K, Q5_K -> Q6_K)
for the K-quant mixes below, and writes its own IQ5_K (type 140, which
sluice does not read) for IQ4_NL's and IQ4_XS's from two; mainline does
neither (Q5_K from four, else the mix's base type), so its mix needs these
rules.
"""
import struct
import sys

# ggml type ids -> (name, block elements, block bytes)
TYPES = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 10: ("q2_K", 256, 84),
    11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144), 13: ("q5_K", 256, 176),
    14: ("q6_K", 256, 210), 20: ("iq4_nl", 32, 18), 23: ("iq4_xs", 256, 136),
    30: ("bf16", 1, 2), 133: ("q6_0", 32, 26),
}

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
          10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, fh):
        self.fh = fh

    def take(self, n):
        b = self.fh.read(n)
        if len(b) != n:
            raise SystemExit("gguf_types: truncated file")
        return b

    def scalar(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return self.take(self.scalar("<Q")).decode("utf-8", "replace")

    def value(self, vtype):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            et, n = self.scalar("<I"), self.scalar("<Q")
            return [self.value(et) for _ in range(n)]
        if vtype not in SCALAR:
            raise SystemExit("gguf_types: bad metadata type %d" % vtype)
        return self.scalar(SCALAR[vtype])


def header(path):
    """(metadata dict, [(name, type id, ne)])"""
    with open(path, "rb") as fh:
        r = Reader(fh)
        if r.take(4) != b"GGUF":
            raise SystemExit("gguf_types: %s: not a GGUF file" % path)
        r.scalar("<I")
        n_t, n_kv = r.scalar("<Q"), r.scalar("<Q")
        meta = {}
        for _ in range(n_kv):
            k = r.string()
            meta[k] = r.value(r.scalar("<I"))
        tensors = []
        for _ in range(n_t):
            name = r.string()
            ne = [r.scalar("<Q") for _ in range(r.scalar("<I"))]
            t = r.scalar("<I")
            r.scalar("<Q")
            tensors.append((name, t, ne))
    return meta, tensors


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# mainline's attn_v type per layer (i of n, gqa query heads a KV head) for
# the mixes where ik_llama.cpp differs; for IQ4_NL and IQ4_XS ik writes its
# own IQ5_K from gqa 2, mainline Q5_K from gqa 4 and the base type below
ATTN_V = {
    "Q3_K_S": lambda i, n, gqa: "q3_K",
    "Q4_K_S": lambda i, n, gqa: "q5_K" if i < 4 else "q4_K",
    "Q4_K_M": lambda i, n, gqa: "q6_K" if use_more_bits(i, n) else "q4_K",
    "Q5_K_M": lambda i, n, gqa: "q6_K" if use_more_bits(i, n) else "q5_K",
    "IQ4_NL": lambda i, n, gqa: "q5_K" if gqa >= 4 else "iq4_nl",
    "IQ4_XS": lambda i, n, gqa: "q5_K" if gqa >= 4 else "iq4_xs",
}
# mainline's fallback for rows that are not whole 256-element blocks
FALLBACK = {"q2_K": "iq4_nl", "q3_K": "iq4_nl", "iq4_xs": "iq4_nl", "q4_K": "q5_0",
            "q5_K": "q5_1", "q6_K": "q8_0"}


def attn_v_rules(ftype, path):
    rule = ATTN_V.get(ftype.upper())
    if rule is None:
        return
    meta, tensors = header(path)
    arch = meta["general.architecture"]
    n_layer = int(meta["%s.block_count" % arch])
    n_head = int(meta["%s.attention.head_count" % arch])
    gqa = n_head // int(meta.get("%s.attention.head_count_kv" % arch, n_head))
    for name, _, ne in tensors:
        if not name.endswith(".attn_v.weight"):
            continue
        il = int(name.split(".")[1])
        t = rule(il, n_layer, gqa)
        if ne[0] % 256:
            t = FALLBACK[t]
        print("^%s$=%s" % (name.replace(".", r"\."), t))


def main(argv):
    if len(argv) == 4 and argv[1] == "--attn-v":
        attn_v_rules(argv[2], argv[3])
        return
    if len(argv) != 2:
        raise SystemExit(__doc__)
    _, tensors = header(argv[1])
    for name, t, ne in tensors:
        tn, be, bb = TYPES.get(t, ("type%d" % t, 0, 0))
        n = 1
        for d in ne:
            n *= d
        print(name, tn, ne[0], n // be * bb if be else "?")


if __name__ == "__main__":
    main(sys.argv)
