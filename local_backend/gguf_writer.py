"""GGUF files written by us: the container (version 3) and the F32, F16, Q8_0 and Q4_0 blocks.

The layout is the one :mod:`local_backend.gguf_file` reads: header, typed metadata, tensor
infos (``ne`` in GGML order, offsets relative to the aligned data section), then each tensor's
bytes at its offset, padded to ``general.alignment``. The tensor infos are fixed before any
data is written, so tensors are encoded and written one at a time, in any order, straight to
their place in the file (no copy of the model is ever assembled in memory).

The quantised blocks follow ggml's reference encoders (``quantize_row_q8_0_ref`` and
``quantize_row_q4_0_ref``), vectorised over whole tensors in float32:

* Q8_0: ``d = max|x| / 127``, ``q = round(x / d)`` (half away from zero), 32 values a block.
* Q4_0: ``d = m / -8`` where ``m`` is the value of largest magnitude (sign kept), codes
  ``min(15, trunc(x / d + 8.5))``; value j in the low nibble of byte j, value j+16 in its high.

A file is written to a temporary name in the destination folder and renamed into place only
when complete, so an error or Ctrl-C never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from local_backend.errors import CheckpointError
from local_backend.gguf_blocks import BLOCK_TYPES, U8, BlockType
from local_backend.gguf_file import DEFAULT_ALIGNMENT, MAGIC

__all__ = ["ENCODED_TYPES", "TensorSpec", "encode", "write_gguf"]

VERSION = 3
ENCODED_TYPES: dict[str, BlockType] = {
    t.name: t for t in BLOCK_TYPES.values() if t.name in ("F32", "F16", "Q8_0", "Q4_0")
}
_ROWS = 8192  # rows converted to float32 and encoded at a time

# GGUF metadata value types (the ids gguf_file.py reads)
_U32, _I32, _F32, _BOOL, _STRING, _ARRAY = 4, 5, 6, 7, 8, 9
_ARRAY_TYPES = {np.dtype("u1"): 0, np.dtype("<f4"): _F32, np.dtype("<i4"): _I32}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the file: ``shape`` in numpy order (``[out, in]`` for a matrix)."""

    name: str
    shape: tuple[int, ...]
    type: BlockType

    @property
    def nbytes(self) -> int:
        rows = int(np.prod(self.shape[:-1], dtype=np.int64))
        return rows * self.type.row_bytes(self.shape[-1])


# -- block encoders ---------------------------------------------------------------------------


def _round_away(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """C's ``roundf``: halves away from zero (numpy's ``round`` goes to even). ``floor(|x| +
    0.5)`` would be wrong: the sum itself rounds up just below a half."""
    a = np.abs(x)
    whole = np.floor(a)
    out: NDArray[np.float32] = np.copysign(whole + (a - whole >= np.float32(0.5)), x)
    return out


def _q8_0(blocks: NDArray[np.float32]) -> U8:
    d = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = _round_away(blocks * inv).astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=-1)


def _q4_0(blocks: NDArray[np.float32]) -> U8:
    at = np.abs(blocks).argmax(axis=-1)[..., None]  # first of the largest magnitudes
    d = np.take_along_axis(blocks, at, axis=-1) / np.float32(-8)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    codes = np.minimum(np.trunc(blocks * inv + np.float32(8.5)), 15).astype(np.uint8)
    packed = codes[..., :16] | (codes[..., 16:] << 4)
    return np.concatenate([d.astype("<f2").view(np.uint8), packed], axis=-1)


def encode(rows: NDArray[np.float32], t: BlockType) -> U8:
    """Rows ``[R, K]`` of float32 values -> their bytes ``[R, row_bytes]`` in type ``t``."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if t.name == "F32":
        return rows.astype("<f4").view(np.uint8)
    if t.name == "F16":
        return rows.astype("<f2").view(np.uint8)
    blocks = rows.reshape(rows.shape[0], -1, t.block_values)
    out = _q8_0(blocks) if t.name == "Q8_0" else _q4_0(blocks)
    return out.reshape(rows.shape[0], -1)


# -- the container ----------------------------------------------------------------------------


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any) -> bytes:
    """Type id and bytes of a metadata value: bool, int (u32), float (f32), str, a list of
    str, or a uint8/float32/int32 numpy array."""
    if isinstance(value, bool):
        return struct.pack("<I?", _BOOL, value)
    if isinstance(value, int):
        return struct.pack("<II", _U32, value)
    if isinstance(value, float):
        return struct.pack("<If", _F32, value)
    if isinstance(value, str):
        return struct.pack("<I", _STRING) + _string(value)
    if isinstance(value, list):
        head = struct.pack("<IIQ", _ARRAY, _STRING, len(value))
        return head + b"".join(_string(s) for s in value)
    if isinstance(value, np.ndarray) and value.dtype in _ARRAY_TYPES:
        head = struct.pack("<IIQ", _ARRAY, _ARRAY_TYPES[value.dtype], len(value))
        return head + value.tobytes()
    raise TypeError(f"no GGUF metadata type for {type(value).__name__}")


def _header(metadata: dict[str, Any], specs: list[TensorSpec], alignment: int) -> bytes:
    out = bytearray(MAGIC + struct.pack("<IQQ", VERSION, len(specs), len(metadata)))
    for key, value in metadata.items():
        out += _string(key) + _value(value)
    offset = 0
    for spec in specs:
        ne = tuple(reversed(spec.shape))
        out += _string(spec.name) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne)
        out += struct.pack("<IQ", spec.type.type_id, offset)
        offset += -(-spec.nbytes // alignment) * alignment
    return bytes(out)


def _write_tensor(f: BinaryIO, at: int, spec: TensorSpec, tensor: Tensor) -> None:
    if tuple(tensor.shape) != spec.shape:
        raise CheckpointError(
            f"tensor {spec.name} has shape {list(tensor.shape)}, expected {list(spec.shape)}"
        )
    rows = tensor.detach().reshape(-1, spec.shape[-1])
    f.seek(at)
    for s in range(0, rows.shape[0], _ROWS):
        chunk = rows[s : s + _ROWS].to(device="cpu", dtype=torch.float32).numpy()
        f.write(encode(chunk, spec.type).tobytes())


def write_gguf(
    path: str | Path,
    metadata: dict[str, Any],
    specs: list[TensorSpec],
    tensors: Iterable[tuple[str, Tensor]],
    *,
    force: bool = False,
) -> Path:
    """Write a GGUF file: ``specs`` fix the tensor table, ``tensors`` (name, values) deliver
    each tensor once, in any order. Refuses an existing ``path`` unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists: choose another name, or overwrite it with --force")
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    header = _header(metadata, specs, alignment)
    data_start = -(-len(header) // alignment) * alignment
    places, offset = {}, data_start
    for spec in specs:
        places[spec.name] = (offset, spec)
        offset += -(-spec.nbytes // alignment) * alignment
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with tmp.open("wb") as f:
            f.write(header)
            f.truncate(offset)  # padding and gaps read as zeros
            for name, tensor in tensors:
                if name not in places:
                    raise CheckpointError(f"tensor {name} is not in the file's tensor table")
                _write_tensor(f, *places.pop(name), tensor)
            if places:
                raise CheckpointError(f"tensor {next(iter(places))} was never written")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
