"""A minimal safetensors reader and writer (the `safetensors` package is not in Debian).

File layout: an 8-byte little-endian unsigned header length N, then N bytes of JSON mapping
each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
end of the header, tensors packed in order without gaps) plus an optional "__metadata__" of
string to string, then the raw little-endian tensor bytes in row-major order.
"""

import json
import struct

import numpy as np
import torch

# BF16 has no numpy dtype: it is moved as raw uint16 and widened to float32 by a shift.
_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}
_ALIGN = 8  # pad the header so the data starts 8-byte aligned, as the reference writer does


def _to_bytes(t, dtype):
    t = t.detach().contiguous().cpu()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.to(torch.float16).numpy().astype("<f2").tobytes()
    if dtype == "BF16":
        # Round to nearest even by torch's conversion, then take the top 16 bits.
        bits = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2")
        return bits.tobytes()
    raise ValueError(f"unsupported dtype {dtype}")


def save_file(tensors, path, dtype="F32", metadata=None):
    """Write {name: tensor} in the given dtype ("F32", "F16" or "BF16"), names sorted."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        blob = _to_bytes(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % _ALIGN)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def load_file(path):
    """Read a safetensors file into {name: float32/float16/bfloat16 torch tensor}, checking
    that the offsets tile the data area exactly."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = memoryview(buf)[8 + n:]
    header.pop("__metadata__", None)
    out, spans = {}, []
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        tdtype, size = _DTYPES[dtype]
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * size or end > len(data):
            raise ValueError(f"{path}: tensor {name} offsets {begin}..{end} do not fit its "
                             f"shape {shape} and dtype {dtype}")
        spans.append((begin, end))
        raw = bytes(data[begin:end])
        if dtype == "F32":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
        elif dtype == "F16":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f2").copy())
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
        out[name] = t.reshape(shape).to(tdtype)
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise ValueError(f"{path}: tensor data has a gap or overlap at offset {begin}")
        pos = end
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the tensor data")
    return out


def read_metadata(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n).decode("utf-8")).get("__metadata__", {})
