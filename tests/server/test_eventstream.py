"""The event-stream encoder, decoded by botocore's own EventStreamBuffer."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from datetime import datetime, timezone

import pytest
from botocore.eventstream import EventStreamBuffer

from bedrock_mistral.server.eventstream import (
    Int8,
    Int16,
    Int32,
    Int64,
    chunk_frame,
    encode_message,
    error_frame,
    event_frame,
    exception_frame,
)


def decode(data: bytes, step: int) -> list[object]:
    """Feed ``data`` to botocore's decoder ``step`` bytes at a time."""
    buffer = EventStreamBuffer()
    messages = []
    for start in range(0, len(data), step):
        buffer.add_data(data[start : start + step])
        messages.extend(buffer)
    return messages


@pytest.mark.parametrize("step", [1, 7, 64, 100_000], ids=lambda s: f"step{s}")
def test_frames_round_trip_through_botocore_in_small_pieces(step: int) -> None:
    model_chunks = [
        json.dumps({"outputs": [{"text": " Hel", "stop_reason": None}]}).encode(),
        json.dumps({"outputs": [{"text": "", "stop_reason": "stop"}]}).encode(),
    ]
    wire = b"".join(chunk_frame(c) for c in model_chunks) + exception_frame(
        "modelStreamErrorException", {"message": "boom", "originalStatusCode": 500}
    )
    messages = decode(wire, step)
    assert len(messages) == 3
    for message, expected in zip(messages[:2], model_chunks, strict=True):
        assert message.headers == {
            ":event-type": "chunk",
            ":content-type": "application/json",
            ":message-type": "event",
        }
        payload = json.loads(message.payload)
        assert base64.b64decode(payload["bytes"]) == expected
        assert payload["p"] and payload["p"].isalnum()
        assert message.to_response_dict()["status_code"] == 200
    error = messages[2]
    assert error.headers[":exception-type"] == "modelStreamErrorException"
    assert error.to_response_dict()["status_code"] == 400
    assert json.loads(error.payload) == {"message": "boom", "originalStatusCode": 500}


def test_every_header_type_decodes_to_the_same_value() -> None:
    when = datetime(2024, 5, 17, 12, 30, 1, 250000, tzinfo=timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {
        "t": True,
        "f": False,
        "i8": Int8(-7),
        "i16": Int16(-300),
        "i32": Int32(70000),
        "i64": Int64(2**40),
        "bytes": b"\x00\x01\xff",
        "str": "h\u00e9llo",
        "ts": when,
        "uuid": ident,
    }
    [message] = decode(encode_message(headers, b"payload"), 3)
    assert message.payload == b"payload"
    assert message.headers["t"] is True and message.headers["f"] is False
    assert message.headers["i8"] == -7 and message.headers["i16"] == -300
    assert message.headers["i32"] == 70000 and message.headers["i64"] == 2**40
    assert message.headers["bytes"] == b"\x00\x01\xff"
    assert message.headers["str"] == "h\u00e9llo"
    assert message.headers["ts"] == int(when.timestamp() * 1000)
    assert message.headers["uuid"] == ident.bytes


def test_prelude_and_message_crcs_follow_the_spec() -> None:
    frame = event_frame("messageStart", {"role": "assistant"})
    total, headers_len, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame)
    assert prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])
    assert frame[12 : 12 + headers_len].startswith(b"\x0b:event-type\x07\x00\x0cmessageStart")


def test_unmodeled_error_frame_carries_code_and_message_headers() -> None:
    [message] = decode(error_frame("AccessDeniedException", "no"), 5)
    assert message.headers == {
        ":message-type": "error",
        ":error-code": "AccessDeniedException",
        ":error-message": "no",
    }
    assert message.to_response_dict()["status_code"] == 400


@pytest.mark.parametrize(
    ("headers", "payload"),
    [
        ({"": "x"}, b""),
        ({"n" * 256: "x"}, b""),
        ({"v": "x" * 70_000}, b""),
        ({}, b"x" * (24 * 1024 * 1024 + 1)),
    ],
    ids=["empty-name", "long-name", "long-value", "huge-payload"],
)
def test_encoder_refuses_what_decoders_reject(headers: dict[str, str], payload: bytes) -> None:
    with pytest.raises(ValueError):
        encode_message(headers, payload)
