"""The protobuf wire format, read and written by hand: SentencePiece's ``ModelProto`` is the
only protobuf we touch, and a few fields of it do not justify the ``protobuf`` package.

A message is a run of fields, each a varint key (``number << 3 | wire type``) and a payload:
wire type 0 a varint, 1 eight bytes, 2 a varint length and that many bytes, 5 four bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

__all__ = ["bytes_field", "fields", "float_field", "int_field", "varint"]


def varint(n: int) -> bytes:
    """``n`` as a varint; a negative int32 is written as its ten-byte two's complement."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def float_field(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<f", value)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int, bytes]]:
    """A message's top-level fields as (number, wire type, payload or varint, the field's own
    bytes), in order: the last lets a caller copy the fields it keeps unchanged."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        payload: bytes | int
        if wire == 0:
            payload, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            payload, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            payload, pos = buf[pos : pos + size], pos + size
        else:  # groups (3, 4) never occur in a SentencePiece model
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, payload, buf[start:pos]
