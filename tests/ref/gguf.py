"""A GGUF v2/v3 reader for the numpy reference, written apart from the C
reader so that the two can disagree when one of them is wrong.

Only what the reference needs: metadata as Python values, tensor infos, and
tensors dequantised to float64 numpy arrays of shape (ne[n-1], ..., ne[0]).
"""
import struct

import numpy as np

from . import dequant

MAGIC = b"GGUF"

# GGUF metadata value types -> struct format of a scalar
_SCALAR = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}
_STRING = 8
_ARRAY = 9


class GGUFError(Exception):
    pass


class Tensor:
    def __init__(self, name, ne, ggml_type, offset):
        self.name = name
        self.ne = ne            # ne[0] innermost
        self.type = ggml_type
        self.offset = offset    # relative to the data section
        self.data = None        # memoryview of the tensor's bytes

    @property
    def shape(self):
        """numpy shape: outermost dimension first."""
        return tuple(reversed(self.ne))


class _Cursor:
    def __init__(self, buf, path):
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise GGUFError("%s: truncated at byte %d (wanted %d more)" % (self.path, self.pos, n))
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.scalar("<Q")
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def value(self, vtype):
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            elem = self.scalar("<I")
            n = self.scalar("<Q")
            if elem in _SCALAR:
                fmt = _SCALAR[elem]
                size = struct.calcsize(fmt)
                raw = self.take(size * n)
                return list(struct.unpack("<%d%s" % (n, fmt[1]), raw))
            return [self.value(elem) for _ in range(n)]
        raise GGUFError("%s: unknown metadata value type %d" % (self.path, vtype))


class GGUF:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as fh:
            self.buf = memoryview(fh.read())
        cur = _Cursor(self.buf, path)
        if bytes(cur.take(4)) != MAGIC:
            raise GGUFError("%s: not a GGUF file" % path)
        self.version = cur.scalar("<I")
        if self.version not in (2, 3):
            raise GGUFError("%s: GGUF version %d not supported" % (path, self.version))
        n_tensors = cur.scalar("<Q")
        n_kv = cur.scalar("<Q")
        self.meta = {}
        for _ in range(n_kv):
            key = cur.string()
            self.meta[key] = cur.value(cur.scalar("<I"))
        self.tensors = {}
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I")
            ne = [cur.scalar("<Q") for _ in range(n_dims)]
            ggml_type = cur.scalar("<I")
            offset = cur.scalar("<Q")
            self.tensors[name] = Tensor(name, ne, ggml_type, offset)
        align = int(self.meta.get("general.alignment", 32))
        data_start = (cur.pos + align - 1) // align * align
        for t in self.tensors.values():
            nbytes = dequant.nbytes(t.type, int(np.prod(t.ne)))
            lo = data_start + t.offset
            if lo + nbytes > len(self.buf):
                raise GGUFError("%s: tensor %s runs past the end" % (path, t.name))
            t.data = self.buf[lo:lo + nbytes]
            t.file_offset = lo  # where its bytes start in the file

    def get(self, key, default=None):
        return self.meta.get(key, default)

    def has(self, name):
        return name in self.tensors

    def tensor(self, name):
        """The tensor dequantised to float64, numpy shape (ne[-1], ..., ne[0])."""
        t = self.tensors[name]
        flat = dequant.dequantize(t.type, t.data, int(np.prod(t.ne)))
        return flat.reshape(t.shape)
