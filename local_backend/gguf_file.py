"""The GGUF container, read by us (not by the ``gguf`` package): header, metadata, tensor infos.

Layout (little-endian, versions 2 and 3)::

    "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x  (string key | u32 value type | value)        strings are u64 length + UTF-8
    tensor_count x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset)
    padding to ``general.alignment`` (default 32) | tensor data (offsets relative to here)

The header is parsed from a memory mapping, which is dropped as soon as it is parsed; tensor bytes
are then *read* (``readinto``), one tensor or one expert at a time, into memory the caller owns
and frees once it is converted. Not mapped: every touched page of a mapping counts in the
process's resident memory until the mapping goes, which while loading a model is the whole
file on top of the model being built. Every offset and size is checked against the file's
length while the header is parsed, so a truncated file fails before any tensor is touched.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_backend.errors import GGUFFormatError
from local_backend.gguf_blocks import BLOCK_TYPES, U8, type_name

__all__ = ["GGUFFile", "TensorInfo"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# value type id -> (struct format, numpy dtype) for the fixed-size scalars
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "<u1"),
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: ``shape`` in numpy order (GGML's ``ne`` reversed: ``[out, in]`` for a
    matrix), its GGML type id, and where its bytes are (absolute offset in the file)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        return type_name(self.type_id)


class _Cursor:
    """Reads the header from the mapping; any read past the end is a truncated file."""

    def __init__(self, buf: U8, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise GGUFFormatError(
                f"{self.path} is truncated or corrupt: {what} at byte {start} runs past the end "
                f"of the file ({len(self.buf)} bytes)"
            )
        self.pos += n
        return start

    def scalar(self, vtype: int, what: str) -> Any:
        fmt = _SCALARS[vtype][0]
        return struct.unpack_from(fmt, self.buf.data, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar(10, what)
        start = self.take(n, what)
        try:
            return bytes(self.buf[start : start + n]).decode("utf-8")
        except UnicodeDecodeError as err:
            raise GGUFFormatError(f"{self.path}: {what} is not UTF-8 text: {err}") from err

    def value(self, vtype: int, what: str) -> Any:
        if vtype in _SCALARS:
            v = self.scalar(vtype, what)
            return bool(v) if vtype == _BOOL else v
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype, count = self.scalar(4, what), self.scalar(10, what)
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype][1])
                start = self.take(count * dtype.itemsize, what)
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).copy()
                return arr.astype(bool) if etype == _BOOL else arr
            if count > len(self.buf):
                raise GGUFFormatError(f"{self.path}: {what} claims {count} elements: corrupt")
            return [self.value(etype, what) for _ in range(count)]
        raise GGUFFormatError(f"{self.path}: {what} has unknown value type {vtype}: corrupt")


class GGUFFile:
    """An open GGUF file: ``metadata``, ``tensors`` (by name) and their bytes (:meth:`raw`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._map: U8 = np.memmap(self.path, dtype=np.uint8, mode="r")
            self._file: io.FileIO | None = io.FileIO(self.path, "r")
        except (OSError, ValueError) as err:  # ValueError: an empty file cannot be mapped
            raise GGUFFormatError(f"{self.path} cannot be read as a GGUF file: {err}") from err
        try:
            self._parse()
        except BaseException:
            self.close()
            raise
        self._unmap()  # the header's pages leave the resident set with it

    def _parse(self) -> None:
        cur = _Cursor(self._map, self.path)
        magic = bytes(self._map[: cur.take(4, "the magic number") + 4])
        if magic != MAGIC:
            raise GGUFFormatError(
                f"{self.path} is not a GGUF file: it starts with {magic!r}, not {MAGIC!r}"
            )
        self.version = cur.scalar(4, "the version")
        if self.version not in VERSIONS:
            raise GGUFFormatError(
                f"{self.path} is GGUF version {self.version}; we read versions 2 and 3 "
                "(a big-endian file reads as a huge version: use a little-endian one)"
            )
        n_tensors, n_kv = cur.scalar(10, "the tensor count"), cur.scalar(10, "the metadata count")
        if n_tensors > len(self._map) or n_kv > len(self._map):
            raise GGUFFormatError(f"{self.path}: the header's counts are impossible: corrupt")
        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            self.metadata[key] = cur.value(cur.scalar(4, f"the type of {key}"), key)
        infos = [self._tensor_info(cur) for _ in range(n_tensors)]
        alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"{self.path}: general.alignment={alignment} is not a power of 2")
        self.alignment = alignment
        self.data_offset = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        self.size = len(self._map)
        for name, shape, type_id, rel in infos:
            self.tensors[name] = self._place(name, shape, type_id, rel)

    def _tensor_info(self, cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
        name = cur.string("a tensor name")
        n_dims = cur.scalar(4, f"{name}'s dimension count")
        if not 1 <= n_dims <= 4:
            raise GGUFFormatError(f"{self.path}: tensor {name} has {n_dims} dimensions: corrupt")
        ne = [cur.scalar(10, f"{name}'s shape") for _ in range(n_dims)]
        type_id = cur.scalar(4, f"{name}'s type")
        return name, tuple(reversed(ne)), type_id, cur.scalar(10, f"{name}'s offset")

    def _place(self, name: str, shape: tuple[int, ...], type_id: int, rel: int) -> TensorInfo:
        """Where the tensor's bytes are; its size is known only for a type we decode."""
        t = BLOCK_TYPES.get(type_id)
        nbytes = 0
        if t is not None:
            if shape[-1] % t.block_values:
                raise GGUFFormatError(
                    f"{self.path}: tensor {name} has rows of {shape[-1]} values, not a whole "
                    f"number of {t.name} blocks ({t.block_values} values each)"
                )
            nbytes = int(np.prod(shape[:-1], dtype=np.int64)) * t.row_bytes(shape[-1])
        start = self.data_offset + rel
        if rel % self.alignment or start + nbytes > len(self._map):
            raise GGUFFormatError(
                f"{self.path} is truncated or corrupt: tensor {name} ({nbytes} bytes at offset "
                f"{start}) lies past the end of the file ({len(self._map)} bytes)"
                if start + nbytes > len(self._map)
                else f"{self.path}: tensor {name}'s offset {rel} is not aligned to {self.alignment}"
            )
        return TensorInfo(name, shape, type_id, start, nbytes)

    def raw(self, name: str, index: int | None = None) -> U8:
        """The tensor's bytes as rows ``[*shape[:-1], row_bytes]``, or only those of its
        ``index``-th slice along the first axis (one expert of a merged [E, N, K] tensor), read
        into a new array: the caller's to free once converted (see the module doc)."""
        info = self.tensors[name]
        t = BLOCK_TYPES[info.type_id]
        shape, start, size = info.shape[:-1], info.offset, info.nbytes
        if index is not None:
            size //= info.shape[0]
            shape, start = shape[1:], start + index * size
        out = np.empty(size, dtype=np.uint8)
        self._read_into(out, start)
        return out.reshape(*shape, t.row_bytes(info.shape[-1]))

    def _read_into(self, out: U8, start: int) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.seek(start)
        view, done = memoryview(out.data), 0
        while done < len(out):
            n = self._file.readinto(view[done:])
            if not n:  # the file shrank since its header was checked
                raise GGUFFormatError(
                    f"{self.path} is truncated: the read at byte {start + done} found the end "
                    "of the file"
                )
            done += n

    def _unmap(self) -> None:
        """Drop the header's mapping (it goes with the last view of it: none is handed out)."""
        self._map = np.zeros(0, dtype=np.uint8)

    def close(self) -> None:
        """Close the file."""
        self._unmap()
        if self._file is not None:
            self._file.close()
            self._file = None
