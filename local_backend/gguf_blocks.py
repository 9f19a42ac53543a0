"""GGML block formats: what a GGUF tensor's bytes mean, decoded over whole tensors with numpy.

Every format stores a row (``ne[0]`` values, the fastest-varying GGML dimension) as a run of
fixed-size blocks; rows never share a block, so a tensor's bytes are an array
``[rows, row_bytes]`` and rows can be decoded (or permuted) independently. The layouts follow
llama.cpp's ``ggml-common.h`` (block structs) and ``ggml-quants.c`` (``dequantize_row_*``):

======  ======  =====  ===========================================================
type    values  bytes  layout (little-endian; ``d``/``dmin``/``m`` are float16)
======  ======  =====  ===========================================================
Q8_0    32      34     d, int8 qs[32]                      w = d q
Q4_0    32      18     d, qs[16] (value j low nibble,      w = d (q - 8)
                       value j+16 high nibble)
Q4_1    32      20     d, m, qs[16] as Q4_0                w = d q + m
Q4_K    256     144    d, dmin, scales[12] (8 6-bit sc     w = d sc_j q - dmin m_j
                       and m), qs[128]: 4 runs of 32 bytes, in sub-block j of 32
                       low nibbles = sub-block 2c, high = 2c+1
Q5_K    256     176    d, dmin, scales[12], qh[32], qs[128] as Q4_K plus bit j of
                       qh[l] as the fifth bit (16) of value l of sub-block j
Q6_K    256     210    ql[128], qh[64], int8 scales[16], d  w = d sc_(i//16) (q - 32)
======  ======  =====  ===========================================================

:func:`decode` gives float32 values; :func:`int4_codes` gives the 4-bit formats' own codes
with a scale and zero per 32 values, which is exactly our int4 form with group size 32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["BLOCK_TYPES", "INT4_TYPES", "BlockType", "decode", "int4_codes", "int4_packed"]

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]


@dataclass(frozen=True)
class BlockType:
    """One GGML type: its id in a GGUF file, values per block and bytes per block."""

    name: str
    type_id: int
    block_values: int
    block_bytes: int

    def row_bytes(self, values: int) -> int:
        return values // self.block_values * self.block_bytes


BLOCK_TYPES: dict[int, BlockType] = {
    t.type_id: t
    for t in (
        BlockType("F32", 0, 1, 4),
        BlockType("F16", 1, 1, 2),
        BlockType("Q4_0", 2, 32, 18),
        BlockType("Q4_1", 3, 32, 20),
        BlockType("Q8_0", 8, 32, 34),
        BlockType("Q4_K", 12, 256, 144),
        BlockType("Q5_K", 13, 256, 176),
        BlockType("Q6_K", 14, 256, 210),
        BlockType("BF16", 30, 1, 2),
    )
}
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})
INT4_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K"})  # kept as their own 4-bit codes

# Names of the GGML types we do not decode, for error messages (gguf-py's constants.py).
OTHER_TYPE_NAMES = {
    6: "Q5_0",
    7: "Q5_1",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}


def type_name(type_id: int) -> str:
    known = BLOCK_TYPES.get(type_id)
    return known.name if known else OTHER_TYPE_NAMES.get(type_id, f"type {type_id}")


def _blocks(raw: U8, t: BlockType) -> U8:
    """[R, row_bytes] -> [R, blocks, block_bytes]."""
    return raw.reshape(raw.shape[0], -1, t.block_bytes)


def _f16(b: U8) -> F32:
    """Two bytes per value at the end of ``b`` ([..., 2]) -> float32 [...]."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def _unpack_runs(qs: U8, run: int) -> U8:
    """Runs of ``run`` bytes [..., n run] -> codes [..., 2 n run]: each run's low nibbles, then
    its high ones (Q4_0/Q4_1: one run of 16 per block; Q4_K/Q5_K: four runs of 32)."""
    runs = qs.reshape(*qs.shape[:-1], -1, run)
    out: U8 = np.stack([runs & 0x0F, runs >> 4], axis=-2).reshape(*qs.shape[:-1], -1)
    return out


def _k_scales(s: U8) -> tuple[F32, F32]:
    """Q4_K/Q5_K's 12 scale bytes [..., 12] -> sc, m [..., 8] (6 bits each)."""
    a, b, c = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([a & 63, (c & 0x0F) | ((a >> 6) << 4)], axis=-1)
    m = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=-1)
    return sc.astype(np.float32), m.astype(np.float32)


def _k_low_codes(qs: U8) -> U8:
    """Q4_K/Q5_K qs [..., 128] -> 4-bit codes [..., 8, 32] by sub-block."""
    return _unpack_runs(qs, 32).reshape(*qs.shape[:-1], 8, 32)


def int4_codes(raw: U8, t: BlockType) -> tuple[U8, F32, F32]:
    """Codes [R, K] (0..15), scale and zero [R, K/32] with ``w = (code - 8) scale + zero``,
    for the 4-bit types (:data:`INT4_TYPES`): no value is re-rounded."""
    return _int4(raw, t, _unpack_runs)


def _pair_nibbles(qs: U8, run: int) -> U8:
    """Runs of ``run`` bytes whose low nibbles are values 0..run-1 and high nibbles values
    run..2run-1 (Q4_0/Q4_1: one run of 16 per block; Q4_K: four runs of 32, one sub-block pair
    each) -> our packing, two consecutive values a byte (value 2j low, 2j+1 high), byte-wise
    on half as many bytes as unpacked codes would take."""
    runs = qs.reshape(*qs.shape[:-1], -1, run)
    lo, hi = runs[..., 0::2], runs[..., 1::2]
    first = (lo & 0x0F) | (hi << 4)  # values 2j, 2j+1 of the low nibbles
    second = (lo >> 4) | (hi & 0xF0)  # the same of the high nibbles
    out: U8 = np.concatenate([first, second], axis=-1).reshape(qs.shape)
    return out


def int4_packed(raw: U8, t: BlockType) -> tuple[U8, F32, F32]:
    """:func:`int4_codes` with the codes already packed two a byte as our int4 form stores
    them ([R, K/2]: value 2j in the low nibble of byte j): the loader's path, which never
    holds one byte per value."""
    return _int4(raw, t, _pair_nibbles)


def _int4(raw: U8, t: BlockType, nibbles: Callable[[U8, int], U8]) -> tuple[U8, F32, F32]:
    """The 4-bit types' codes (as ``nibbles`` lays out runs of packed bytes), scale and zero."""
    b = _blocks(raw, t)
    rows = raw.shape[0]
    if t.name in ("Q4_0", "Q4_1"):
        d = _f16(b[..., 0:2])
        if t.name == "Q4_0":
            codes, zero = nibbles(b[..., 2:18], 16), np.zeros_like(d)
        else:
            codes, zero = nibbles(b[..., 4:20], 16), _f16(b[..., 2:4]) + 8 * d
        return codes.reshape(rows, -1), d, zero
    if t.name != "Q4_K":
        raise ValueError(f"{t.name} has no 4-bit codes")
    d, dmin = _f16(b[..., 0:2])[..., None], _f16(b[..., 2:4])[..., None]
    sc, m = _k_scales(b[..., 4:16])
    scale = d * sc
    zero = 8 * scale - dmin * m
    return (
        nibbles(b[..., 16:144], 32).reshape(rows, -1),
        scale.reshape(rows, -1),
        zero.reshape(rows, -1),
    )


def decode(raw: U8, t: BlockType) -> F32:
    """Rows of blocks [R, row_bytes] -> float32 values [R, K]."""
    rows = raw.shape[0]
    if t.name == "F32":
        return np.ascontiguousarray(raw).view(np.float32).copy()  # owned: the map is read-only
    if t.name == "F16":
        return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)
    if t.name == "BF16":
        bits = np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if t.name in INT4_TYPES:
        codes, scale, zero = int4_codes(raw, t)
        grouped = codes.reshape(rows, -1, 32).astype(np.float32)
        w = (grouped - 8) * scale[..., None] + zero[..., None]
        return w.reshape(rows, -1)
    b = _blocks(raw, t)
    if t.name == "Q8_0":
        d = _f16(b[..., 0:2])
        q = np.ascontiguousarray(b[..., 2:34]).view(np.int8).astype(np.float32)
        return (q * d[..., None]).reshape(rows, -1)
    if t.name == "Q5_K":
        d, dmin = _f16(b[..., 0:2])[..., None], _f16(b[..., 2:4])[..., None]
        sc, m = _k_scales(b[..., 4:16])
        qh = b[..., 16:48]
        high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # [.., 8, 32]
        codes = (_k_low_codes(b[..., 48:176]) | (high << 4)).astype(np.float32)
        w = (d * sc)[..., None] * codes - (dmin * m)[..., None]
        return w.reshape(rows, -1)
    if t.name == "Q6_K":
        ql = b[..., 0:128].reshape(*b.shape[:-1], 2, 2, 32)  # [.., half, run, 32]
        qh = b[..., 128:192].reshape(*b.shape[:-1], 2, 1, 32)
        low = np.concatenate([ql & 0x0F, ql >> 4], axis=-2)  # [.., half, 4, 32]
        shifts = (2 * np.arange(4, dtype=np.uint8))[:, None]
        codes = (low | (((qh >> shifts) & 3) << 4)).astype(np.float32) - 32
        sc = np.ascontiguousarray(b[..., 192:208]).view(np.int8).astype(np.float32)
        d = _f16(b[..., 208:210])[..., None]
        w6: F32 = codes.reshape(*b.shape[:-1], 16, 16) * (d * sc)[..., None]
        return w6.reshape(rows, -1)
    raise ValueError(f"no decoder for {t.name}")
