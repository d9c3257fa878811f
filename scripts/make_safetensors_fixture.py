#!/usr/bin/env python3
"""Writes tests/fixtures/python_layout.safetensors the way Python's `safetensors` lays a file out,
using only the format's spec (no safetensors or torch import): 8-byte little-endian header length,
compact JSON header with "__metadata__" first and tensors ordered by dtype alignment (largest
first) then name, padded with spaces to a multiple of 8, then the little-endian data."""
import json, struct, sys

tensors = {
    "model.embed.weight": ("F32", [2, 3], struct.pack("<6f", *[i * 0.5 - 1 for i in range(6)])),
    "half": ("F16", [3], struct.pack("<3e", 1.5, -2.25, 65504.0)),
    "brain": ("BF16", [3], struct.pack("<3H", 0x3F80, 0xC040, 0x3F00)),  # 1.0, -3.0, 0.5
    "ids": ("I64", [3], struct.pack("<3q", -1, 2 ** 40, 7)),
    "empty": ("F32", [0, 4], b""),
}
size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}
order = sorted(tensors, key=lambda n: (-size[tensors[n][0]], n))
header = {"__metadata__": {"format": "pt", "written_by": "spec-only fixture"}}
offset, data = 0, b""
for n in order:
    dt, shape, raw = tensors[n]
    header[n] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
    offset += len(raw)
    data += raw
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/python_layout.safetensors"
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
