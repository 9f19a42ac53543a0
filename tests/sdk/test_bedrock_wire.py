"""Bedrock JSON <-> our types: bodies, responses, stream chunks, usage headers."""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Iterator

import pytest

from bedrock_mistral.backends.bedrock import _stream_events
from bedrock_mistral.backends.bedrock_errors import CallContext
from bedrock_mistral.backends.bedrock_wire import (
    chat_body,
    parse_chunk,
    parse_response,
    request_body,
    stop_reason,
    usage_from_headers,
)
from bedrock_mistral.errors import APIError, ThrottledError
from bedrock_mistral.types import CompletionRequest, Message, StreamEnd, TextDelta, Usage

REQUEST = CompletionRequest(
    model_id="mistral.mistral-7b-instruct-v0:2",
    prompt="<s> [INST] Hi [/INST]",
    max_tokens=64,
    temperature=0.2,
    top_p=0.9,
    top_k=40,
    stop=("END",),
)


def test_text_body_is_bedrocks_text_completion_body() -> None:
    assert json.loads(request_body(REQUEST, "text")) == {
        "prompt": "<s> [INST] Hi [/INST]",
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END"],
    }


def test_chat_body_carries_messages_and_no_text_only_fields() -> None:
    request = REQUEST.model_copy(
        update={
            "messages": (Message(role="system", content="S"), Message(role="user", content="Hi")),
            "top_k": None,
            "stop": (),
        }
    )
    assert json.loads(request_body(request, "chat")) == {
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
    }
    assert chat_body(REQUEST)["messages"] == [{"role": "user", "content": REQUEST.prompt}]


def test_non_ascii_prompts_are_sent_as_utf8() -> None:
    request = REQUEST.model_copy(update={"prompt": "<s> [INST] héllo 世界 [/INST]"})
    assert "héllo 世界".encode() in request_body(request, "text")


@pytest.mark.parametrize(
    ("body", "text", "reason", "usage"),
    [
        ({"outputs": [{"text": " Hello", "stop_reason": "stop"}]}, " Hello", "stop", None),
        ({"outputs": [{"text": " cut", "stop_reason": "length"}]}, " cut", "length", None),
        (
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hi"},
                        "stop_reason": "stop",
                    }
                ]
            },
            "Hi",
            "stop",
            None,
        ),
        (
            {
                "choices": [{"message": {"content": "Hi"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            },
            "Hi",
            "length",
            Usage(input_tokens=5, output_tokens=2),
        ),
        (
            {"choices": [{"message": {"content": "x"}, "finish_reason": "model_length"}]},
            "x",
            "length",
            None,
        ),
        (
            {
                "choices": [
                    {"message": {"content": None, "tool_calls": []}, "stop_reason": "tool_calls"}
                ]
            },
            "",
            "stop",
            None,
        ),
    ],
    ids=[
        "text",
        "text-length",
        "chat-stop_reason",
        "chat-finish_reason-usage",
        "model_length",
        "tool_calls",
    ],
)
def test_parse_response(
    body: dict[str, object], text: str, reason: str, usage: Usage | None
) -> None:
    parsed = parse_response(json.dumps(body).encode())
    assert (parsed.text, parsed.stop_reason, parsed.usage) == (text, reason, usage)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"outputs": []}',
        b'{"outputs": [{"text": 5}]}',
        b'{"completion": "x"}',
        b"\xff\xfe",
    ],
)
def test_unreadable_responses_are_errors_not_guesses(raw: bytes) -> None:
    with pytest.raises(APIError) as info:
        parse_response(raw)
    assert "cannot read" in str(info.value)


def test_parse_stream_chunks_of_both_dialects() -> None:
    middle = parse_chunk(b'{"outputs":[{"text":" Hel","stop_reason":null}]}')
    assert (middle.text, middle.stop_reason, middle.usage) == (" Hel", None, None)
    final = parse_chunk(
        json.dumps(
            {
                "outputs": [{"text": "", "stop_reason": "stop"}],
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": 12,
                    "outputTokenCount": 95,
                    "invocationLatency": 1234,
                    "firstByteLatency": 210,
                },
            }
        ).encode()
    )
    assert final.stop_reason == "stop"
    assert final.usage == Usage(input_tokens=12, output_tokens=95)
    assert (final.latency_ms, final.first_byte_latency_ms) == (1234.0, 210.0)
    chat = parse_chunk(
        b'{"choices":[{"index":0,"message":{"role":"assistant","content":"tok"},"stop_reason":null}]}'
    )
    assert (chat.text, chat.stop_reason) == ("tok", None)
    delta = parse_chunk(b'{"choices":[{"delta":{"content":"d"},"finish_reason":"stop"}]}')
    assert (delta.text, delta.stop_reason) == ("d", "stop")


def test_usage_and_latency_from_invoke_headers() -> None:
    headers = {
        "x-amzn-bedrock-input-token-count": "17",
        "x-amzn-bedrock-output-token-count": "42",
        "x-amzn-bedrock-invocation-latency": "873",
        "content-type": "application/json",
    }
    assert usage_from_headers(headers) == (Usage(input_tokens=17, output_tokens=42), 873.0)
    assert usage_from_headers({}) == (None, None)
    assert usage_from_headers({"x-amzn-bedrock-input-token-count": "garbage"}) == (None, None)


@pytest.mark.parametrize(
    ("raw", "ours"),
    [
        (None, None),
        ("", None),
        ("stop", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_calls", "stop"),
    ],
)
def test_stop_reasons_fold_onto_ours(raw: str | None, ours: str | None) -> None:
    assert stop_reason(raw) == ours


# -- recorded event-stream bytes through botocore's real decoder --------------------------------


def _frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only), written from the spec."""
    head = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _chunk(body: dict[str, object]) -> bytes:
    payload = {
        "bytes": base64.b64encode(json.dumps(body).encode()).decode(),
        "p": "abcdefghijklmnop",
    }
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return _frame(headers, json.dumps(payload).encode())


def _exception(member: str, message: str) -> bytes:
    headers = {
        ":exception-type": member,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return _frame(headers, json.dumps({"message": message}).encode())


class _Body:
    """Bytes delivered a few at a time, like a chunked HTTP response."""

    def __init__(self, data: bytes, size: int = 7) -> None:
        self.data, self.size, self.closed = data, size, False

    def stream(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]

    def close(self) -> None:
        self.closed = True


def _replay(data: bytes) -> tuple[list[TextDelta | StreamEnd], _Body]:
    import botocore.session
    from botocore.eventstream import EventStream
    from botocore.parsers import EventStreamJSONParser

    operation = (
        botocore.session.get_session()
        .get_service_model("bedrock-runtime")
        .operation_model("InvokeModelWithResponseStream")
    )
    body = _Body(data)
    stream = EventStream(
        body, operation.output_shape.members["body"], EventStreamJSONParser(), operation.name
    )
    ctx = CallContext(model_id="mistral.mistral-7b-instruct-v0:2", streaming=True)
    return list(_stream_events(stream, ctx, time.perf_counter())), body


RECORDED = [
    _chunk({"outputs": [{"text": " Hel", "stop_reason": None}]}),
    _chunk({"outputs": [{"text": "lo", "stop_reason": None}]}),
    _chunk(
        {
            "outputs": [{"text": "!", "stop_reason": "stop"}],
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 12,
                "outputTokenCount": 3,
                "invocationLatency": 456,
                "firstByteLatency": 78,
            },
        }
    ),
]


def test_recorded_stream_decodes_to_deltas_and_final_metrics() -> None:
    events, body = _replay(b"".join(RECORDED))
    assert [e.text for e in events if isinstance(e, TextDelta)] == [" Hel", "lo", "!"]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.stop_reason == "stop" and end.usage == Usage(input_tokens=12, output_tokens=3)
    assert (end.latency_ms, end.first_byte_latency_ms) == (456.0, 78.0)
    assert body.closed


def test_a_stream_cut_before_its_stop_reason_has_no_end_event() -> None:
    data = b"".join(RECORDED)
    events, _ = _replay(data[: len(RECORDED[0]) + len(RECORDED[1]) + 20])  # mid-frame
    assert [type(e) for e in events] == [TextDelta, TextDelta]


def test_an_exception_frame_raises_our_error() -> None:
    data = RECORDED[0] + _exception("throttlingException", "Too many tokens, please wait.")
    with pytest.raises(ThrottledError) as info:
        _replay(data)
    assert "Too many tokens" in str(info.value)
