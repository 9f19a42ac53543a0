"""AWS event-stream framing: the encoder the server uses for streaming responses.

The frame layout of AWS's ``application/vnd.amazon.eventstream`` encoding::

    total length T (u32) | headers length H (u32) | prelude CRC (u32)
    headers (H bytes) | payload (T - H - 16 bytes) | message CRC (u32)

Both CRCs are CRC-32 (zlib); the message CRC covers every byte before it, prelude CRC
included. Integers are big-endian. ``tests/server/test_eventstream.py`` round-trips
these frames through botocore's own decoder.
"""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bedrock_mistral.server.jsonbody import dump_json

__all__ = [
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "chunk_frame",
    "encode_message",
    "error_frame",
    "event_frame",
    "exception_frame",
    "padding",
]

MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024
_PAD_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Int8:
    value: int


@dataclass(frozen=True)
class Int16:
    value: int


@dataclass(frozen=True)
class Int32:
    value: int


@dataclass(frozen=True)
class Int64:
    value: int


HeaderValue = bool | int | str | bytes | datetime | uuid.UUID | Int8 | Int16 | Int32 | Int64

_INT_TYPES: dict[type, tuple[int, str]] = {
    Int8: (2, ">b"),
    Int16: (3, ">h"),
    Int32: (4, ">i"),
    Int64: (5, ">q"),
}


def _encode_value(value: HeaderValue) -> bytes:
    """Type byte plus value bytes for one header value (ref section 6, types 0-9)."""
    if isinstance(value, bool):
        return b"\x00" if value else b"\x01"
    if isinstance(value, Int8 | Int16 | Int32 | Int64):
        type_id, fmt = _INT_TYPES[type(value)]
        return bytes([type_id]) + struct.pack(fmt, value.value)
    if isinstance(value, int):
        # A plain int is an int32 when it fits, else an int64.
        return _encode_value(Int32(value) if -(2**31) <= value < 2**31 else Int64(value))
    if isinstance(value, bytes):
        return b"\x06" + _with_u16_length(value)
    if isinstance(value, str):
        return b"\x07" + _with_u16_length(value.encode("utf-8"))
    if isinstance(value, datetime):
        return b"\x08" + struct.pack(">q", int(value.timestamp() * 1000))
    if isinstance(value, uuid.UUID):
        return b"\x09" + value.bytes
    raise TypeError(f"unsupported event-stream header value {value!r}")


def _with_u16_length(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"event-stream header value is {len(data)} bytes; the limit is 65535")
    return struct.pack(">H", len(data)) + data


def _encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    parts = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        if not 1 <= len(raw_name) <= 255:
            raise ValueError(f"event-stream header name {name!r} must be 1 to 255 bytes")
        parts.append(bytes([len(raw_name)]) + raw_name + _encode_value(value))
    return b"".join(parts)


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One complete event-stream message (prelude, headers, payload, CRCs)."""
    header_bytes = _encode_headers(headers)
    if len(header_bytes) > MAX_HEADERS_BYTES:
        raise ValueError(
            f"event-stream headers are {len(header_bytes)} bytes; the limit is {MAX_HEADERS_BYTES}"
        )
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"event-stream payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + header_bytes + payload
    return head + struct.pack(">I", zlib.crc32(head))


def padding(size_hint: int) -> str:
    """Bedrock's ``"p"`` padding: an alphabet run whose length varies with the payload."""
    return _PAD_ALPHABET[: 1 + (size_hint * 7) % len(_PAD_ALPHABET)]


def event_frame(event_type: str, body: Mapping[str, Any], *, pad: bool = True) -> bytes:
    """A normal event (``:message-type event``) whose payload is ``body`` as JSON."""
    if pad:
        body = {**body, "p": padding(len(dump_json(body)))}
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, dump_json(body))


def chunk_frame(model_body: bytes) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event wrapping the model's JSON bytes."""
    return event_frame("chunk", {"bytes": base64.b64encode(model_body).decode("ascii")})


def exception_frame(exception_type: str, body: Mapping[str, Any]) -> bytes:
    """A modeled error frame; ``exception_type`` is the lowerCamel stream member name."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, dump_json(body))


def error_frame(code: str, message: str) -> bytes:
    """An unmodeled error frame; botocore reads Code/Message from the headers."""
    headers = {":message-type": "error", ":error-code": code, ":error-message": message}
    return encode_message(headers, b"")
