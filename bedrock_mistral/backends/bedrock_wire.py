"""Pure translation between our types and Bedrock's Mistral JSON (no I/O, no boto3).

Two body dialects exist (Bedrock's "Mistral AI models" inference-parameter pages):

- text: ``{"prompt", "max_tokens", ...}`` -> ``{"outputs": [{"text", "stop_reason"}]}``
- chat: ``{"messages", "max_tokens", ...}`` -> ``{"choices": [{"message": {...}, "stop_reason"}]}``
  (Mistral-native spelling ``finish_reason`` accepted too)

Responses are recognised by their keys, not by the dialect we sent, so a server that
answers in the other shape still parses. Anything else is an error, never a guess.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from bedrock_mistral.errors import APIError
from bedrock_mistral.models import Dialect
from bedrock_mistral.types import CompletionRequest, StopReason, StreamEnd, TextDelta, Usage

__all__ = [
    "METRICS_KEY",
    "ParsedChunk",
    "ParsedResponse",
    "StreamTally",
    "chat_body",
    "parse_chunk",
    "parse_response",
    "request_body",
    "stop_reason",
    "usage_from_headers",
]

METRICS_KEY = "amazon-bedrock-invocationMetrics"
_LENGTH_REASONS = frozenset(
    {"length", "model_length", "max_tokens", "model_context_window_exceeded"}
)
_INPUT_TOKENS = "x-amzn-bedrock-input-token-count"
_OUTPUT_TOKENS = "x-amzn-bedrock-output-token-count"
_LATENCY = "x-amzn-bedrock-invocation-latency"


@dataclass(frozen=True)
class ParsedResponse:
    text: str
    stop_reason: StopReason
    usage: Usage | None


class ParsedChunk(NamedTuple):  # a tuple: built once per streamed token, so kept cheap
    text: str
    stop_reason: StopReason | None
    usage: Usage | None
    latency_ms: float | None
    first_byte_latency_ms: float | None


def chat_body(request: CompletionRequest) -> dict[str, object]:
    """The ``messages`` body. Without messages, the raw prompt becomes one user turn."""
    if request.messages is not None:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
    else:
        messages = [{"role": "user", "content": request.prompt}]
    body: dict[str, object] = {"messages": messages, "max_tokens": request.max_tokens}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    return body


def request_body(request: CompletionRequest, dialect: Dialect) -> bytes:
    body = request.text_body() if dialect == "text" else chat_body(request)
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def stop_reason(value: object) -> StopReason | None:
    """Bedrock/Mistral stop reasons folded onto ours; None while generation goes on."""
    if value is None or value == "":
        return None
    return "length" if value in _LENGTH_REASONS else "stop"


def _malformed(what: str, payload: object) -> APIError:
    shown = json.dumps(payload)[:200] if not isinstance(payload, bytes) else repr(payload[:200])
    return APIError(
        f"Bedrock returned {what} this SDK cannot read: {shown}. "
        "Check that the model id is a Mistral model and endpoint_url points at Bedrock."
    )


def _load(raw: bytes | str) -> Mapping[str, Any]:
    try:
        # Decoding first spares json.loads its encoding detection: Bedrock sends UTF-8.
        payload = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _malformed(
            "a body that is not JSON", raw if isinstance(raw, bytes) else raw.encode()
        ) from err
    if not isinstance(payload, dict):
        raise _malformed("a JSON body that is not an object", payload)
    return payload


def _first(payload: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    items = payload.get(key)
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return items[0]
    return None


def _choice_text(choice: Mapping[str, Any]) -> str:
    message = choice.get("message") or choice.get("delta") or {}
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _split(payload: Mapping[str, Any], what: str) -> tuple[str, object]:
    """(text, raw stop reason) of either dialect."""
    output = _first(payload, "outputs")
    if output is not None and isinstance(output.get("text", ""), str):
        return output.get("text", ""), output.get("stop_reason")
    choice = _first(payload, "choices")
    if choice is not None:
        return _choice_text(choice), choice.get("stop_reason", choice.get("finish_reason"))
    raise _malformed(what, payload)


def _chat_usage(payload: Mapping[str, Any]) -> Usage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=int(usage.get("prompt_tokens", 0) or 0),
        output_tokens=int(usage.get("completion_tokens", 0) or 0),
    )


def parse_response(raw: bytes) -> ParsedResponse:
    """An InvokeModel body of either dialect."""
    payload = _load(raw)
    text, reason = _split(payload, "a response")
    # A finished non-streaming reply without a reason is treated as a natural stop.
    return ParsedResponse(
        text=text, stop_reason=stop_reason(reason) or "stop", usage=_chat_usage(payload)
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_chunk(raw: bytes) -> ParsedChunk:
    """One decoded ``chunk.bytes`` payload of InvokeModelWithResponseStream."""
    payload = _load(raw)
    if len(payload) == 1:  # the common chunk: {"outputs": [{"text": ..., "stop_reason": null}]}
        outputs = payload.get("outputs")
        if type(outputs) is list and len(outputs) == 1 and type(outputs[0]) is dict:
            text = outputs[0].get("text", "")
            if type(text) is str and outputs[0].get("stop_reason") is None:
                return ParsedChunk(text, None, None, None, None)
    text, reason = _split(payload, "a stream chunk")
    metrics = payload.get(METRICS_KEY)
    usage = None
    latency = first_byte = None
    if isinstance(metrics, dict):
        usage = Usage(
            input_tokens=int(metrics.get("inputTokenCount", 0) or 0),
            output_tokens=int(metrics.get("outputTokenCount", 0) or 0),
        )
        latency = _number(metrics.get("invocationLatency"))
        first_byte = _number(metrics.get("firstByteLatency"))
    return ParsedChunk(
        text=text or "",
        stop_reason=stop_reason(reason),
        usage=usage or _chat_usage(payload),
        latency_ms=latency,
        first_byte_latency_ms=first_byte,
    )


def _int_header(headers: Mapping[str, Any], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def usage_from_headers(headers: Mapping[str, Any]) -> tuple[Usage | None, float | None]:
    """Token counts and invocation latency (ms) from InvokeModel's ``X-Amzn-Bedrock-*`` headers.

    boto3 exposes them lower-cased in ``ResponseMetadata.HTTPHeaders``.
    """
    input_tokens = _int_header(headers, _INPUT_TOKENS)
    output_tokens = _int_header(headers, _OUTPUT_TOKENS)
    usage = None
    if input_tokens is not None or output_tokens is not None:
        usage = Usage(input_tokens=input_tokens or 0, output_tokens=output_tokens or 0)
    latency = _int_header(headers, _LATENCY)
    return usage, float(latency) if latency is not None else None


class StreamTally:
    """Reads a stream's chunks into deltas and keeps what its end reports (both transports).

    ``reason`` stays None until a chunk carries a stop reason: a stream cut before that
    was interrupted, one cut after it was complete.
    """

    __slots__ = ("first_byte_ms", "latency_ms", "reason", "started", "usage")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.reason: StopReason | None = None
        self.usage: Usage | None = None
        self.latency_ms: float | None = None
        self.first_byte_ms: float | None = None

    def feed(self, raw: bytes) -> TextDelta | None:
        """One ``chunk.bytes`` payload; the text it carries, if any."""
        parsed = parse_chunk(raw)
        if parsed.stop_reason is not None or parsed.usage is not None:
            self.reason = parsed.stop_reason or self.reason
            self.usage = parsed.usage or self.usage
        if parsed.latency_ms is not None:
            self.latency_ms = parsed.latency_ms
        if parsed.first_byte_latency_ms is not None:
            self.first_byte_ms = parsed.first_byte_latency_ms
        return TextDelta(text=parsed.text) if parsed.text else None

    def end(self) -> StreamEnd | None:
        """The stream's StreamEnd, or None when no stop reason arrived."""
        if self.reason is None:
            return None
        latency = self.latency_ms
        return StreamEnd(
            stop_reason=self.reason,
            usage=self.usage or Usage(),
            latency_ms=latency
            if latency is not None
            else (time.perf_counter() - self.started) * 1000.0,
            first_byte_latency_ms=self.first_byte_ms,
        )
