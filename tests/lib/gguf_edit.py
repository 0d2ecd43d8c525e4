#!/usr/bin/python3
"""Writes a copy of a GGUF file with metadata changed (tests that need a
model the shipped ones are not: one with a chat template, one whose turn
markers are another format's). The tensor data is copied as is.

  gguf_edit.py IN OUT [--set-str KEY VALUE]... [--rename-token OLD NEW]...
"""
import struct
import sys

SIZES = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
STRING, ARRAY = 8, 9


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        vals = struct.unpack_from('<' + fmt, self.data, self.at)
        self.at += struct.calcsize('<' + fmt)
        return vals[0]

    def string(self):
        n = self.take('Q')
        s = self.data[self.at:self.at + n]
        self.at += n
        return s.decode('utf-8')

    def value(self, kind):
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            elem, n = self.take('I'), self.take('Q')
            return (elem, [self.value(elem) for _ in range(n)])
        return self.take(SIZES[kind])


def put_string(out, s):
    b = s.encode('utf-8')
    out += struct.pack('<Q', len(b)) + b


def put_value(out, kind, v):
    if kind == STRING:
        put_string(out, v)
    elif kind == ARRAY:
        elem, items = v
        out += struct.pack('<IQ', elem, len(items))
        for item in items:
            put_value(out, elem, item)
    else:
        out += struct.pack('<' + SIZES[kind], v)


def main(argv):
    src, dst, args = argv[1], argv[2], argv[3:]
    data = open(src, 'rb').read()
    r = Reader(data)
    if data[:4] != b'GGUF':
        sys.exit(f'{src}: not a GGUF file')
    r.at = 4
    version, n_tensors, n_kv = r.take('I'), r.take('Q'), r.take('Q')
    kvs = []
    for _ in range(n_kv):
        key, kind = r.string(), r.take('I')
        kvs.append([key, kind, r.value(kind)])
    infos_at = r.at
    for _ in range(n_tensors):
        r.string()
        n_dims = r.take('I')
        r.at += 8 * n_dims + 4 + 8
    infos = data[infos_at:r.at]
    align = next((v for k, _, v in kvs if k == 'general.alignment'), 32)
    data_at = (r.at + align - 1) // align * align
    while args:
        if args[0] == '--set-str':
            kvs = [kv for kv in kvs if kv[0] != args[1]] + [[args[1], STRING, args[2]]]
            args = args[3:]
        elif args[0] == '--rename-token':
            tokens = next(kv for kv in kvs if kv[0] == 'tokenizer.ggml.tokens')[2][1]
            tokens[tokens.index(args[1])] = args[2]
            args = args[3:]
        else:
            sys.exit(f'unknown option {args[0]}')
    out = bytearray(b'GGUF' + struct.pack('<IQQ', version, n_tensors, len(kvs)))
    for key, kind, v in kvs:
        put_string(out, key)
        out += struct.pack('<I', kind)
        put_value(out, kind, v)
    out += infos
    out += b'\0' * ((-len(out)) % align)
    with open(dst, 'wb') as f:
        f.write(out)
        f.write(data[data_at:])


if __name__ == '__main__':
    main(sys.argv)
