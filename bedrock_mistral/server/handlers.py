"""The five operations: parse into the SDK's types, call the backend, serialise.

Each handler gets a :class:`Call` (the exchange, the resolved model, the body, the
fault drawn for this request) and answers it. Anything raised before the response has
started becomes an HTTP error in Bedrock's shape (see ``app.py``); inside a stream it
becomes an exception frame.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bedrock_mistral.errors import (
    AccessDeniedError,
    APIError,
    BedrockMistralError,
    ContextWindowError,
    InternalServerError,
    ModelError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelStreamError,
    ModelTimeoutError,
    ServiceQuotaExceededError,
    ServiceUnavailableError,
    ThrottledError,
    ValidationError,
)
from bedrock_mistral.models import ModelSpec
from bedrock_mistral.server import converse as cv
from bedrock_mistral.server.bodies import completion_body, parse_native, text_chunk
from bedrock_mistral.server.config import ServerConfig
from bedrock_mistral.server.errors import BedrockError, ErrorCode
from bedrock_mistral.server.eventstream import chunk_frame
from bedrock_mistral.server.exchange import DropRequested, Exchange
from bedrock_mistral.server.faults import FaultKind, midstream_error
from bedrock_mistral.server.jsonbody import dump_json
from bedrock_mistral.server.routing import Operation
from bedrock_mistral.server.schema import parse_json
from bedrock_mistral.server.worker import BackendRunner
from bedrock_mistral.types import CompletionRequest, StreamEnd, TextDelta, Usage

__all__ = ["HANDLERS", "Call", "Outcome", "StreamShape", "stream_answer", "to_bedrock_error"]

logger = logging.getLogger("bedrock_mistral.server")

INVOKE_STREAM_MEMBERS = frozenset(
    (
        "internalServerException",
        "modelStreamErrorException",
        "validationException",
        "throttlingException",
        "modelTimeoutException",
        "serviceUnavailableException",
    )
)
CONVERSE_STREAM_MEMBERS = INVOKE_STREAM_MEMBERS - {"modelTimeoutException"}
_TOO_LONG = "Input is too long for requested model."


@dataclass
class Outcome:
    """What happened, filled in as the request goes (for the stats record and log line)."""

    status: int = 0
    usage: Usage = field(default_factory=Usage)
    error: str | None = None


@dataclass
class Call:
    exchange: Exchange
    operation: Operation | str  # a Bedrock operation, or an OpenAI route
    model_id: str
    spec: ModelSpec
    body: bytes
    fault: FaultKind | None
    runner: BackendRunner
    config: ServerConfig
    finish: Callable[[Outcome], None]

    def done(self, status: int, usage: Usage | None = None, *, error: str | None = None) -> None:
        """Record the outcome now, before the last bytes go out, so a client sees it."""
        self.finish(Outcome(status=status, usage=usage or Usage(), error=error))


_SDK_CODES: tuple[tuple[type[BedrockMistralError], ErrorCode], ...] = (
    (ThrottledError, "ThrottlingException"),
    (ModelNotReadyError, "ModelNotReadyException"),
    (ModelTimeoutError, "ModelTimeoutException"),
    (ServiceUnavailableError, "ServiceUnavailableException"),
    (AccessDeniedError, "AccessDeniedException"),
    (ModelNotFoundError, "ResourceNotFoundException"),
    (ServiceQuotaExceededError, "ServiceQuotaExceededException"),
    (ModelStreamError, "ModelStreamErrorException"),
    (ModelError, "ModelErrorException"),
    (InternalServerError, "InternalServerException"),
)


def to_bedrock_error(err: BaseException) -> BedrockError:
    """Any error out of a backend, as the Bedrock error a client should see."""
    if isinstance(err, BedrockError):
        return err
    if isinstance(err, ContextWindowError):
        return BedrockError("ValidationException", _TOO_LONG)
    if isinstance(err, ValidationError):
        return BedrockError("ValidationException", str(err))
    for kind, code in _SDK_CODES:
        if isinstance(err, kind):
            return BedrockError(code, str(err))
    if isinstance(err, APIError | BedrockMistralError):
        return BedrockError("ServiceUnavailableException", str(err))
    logger.error("unexpected error while serving a request", exc_info=err)
    return BedrockError(
        "InternalServerException",
        "The system encountered an unexpected error during processing. Try your request again.",
    )


def _base_headers(call: Call, content_type: bytes) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", content_type),
        (b"x-amzn-requestid", call.exchange.request_id.encode()),
    ]
    for name in ("x-amzn-bedrock-performanceconfig-latency", "x-amzn-bedrock-service-tier"):
        value = call.exchange.headers.get(name)
        if value is not None:
            headers.append((name.encode(), value.encode("latin-1")))
    return headers


async def _check_context(call: Call, request: CompletionRequest) -> None:
    """Bedrock refuses a prompt longer than the model's context window, whatever the backend.

    A character costs at most five tokens (four UTF-8 bytes, plus a word-prefix piece),
    so short prompts need no count; longer ones are counted by the backend, off the loop.
    """
    window = call.spec.context_window
    if len(request.prompt) * 5 <= window:
        return
    try:
        tokens = await call.runner.count_tokens(request.prompt)
    except Exception as err:
        raise to_bedrock_error(err) from err
    if tokens > window:
        raise BedrockError("ValidationException", _TOO_LONG)


async def _complete(call: Call, request: CompletionRequest) -> Any:
    await _check_context(call, request)
    try:
        return await call.runner.complete(request)
    except Exception as err:
        raise to_bedrock_error(err) from err


async def invoke(call: Call) -> None:
    request = parse_native(call.spec, parse_json(call.body))
    completion = await _complete(call, request)
    latency = round(call.exchange.elapsed_ms())
    headers = [
        *_base_headers(call, b"application/json"),
        (b"x-amzn-bedrock-invocation-latency", str(latency).encode()),
        (b"x-amzn-bedrock-output-token-count", str(completion.usage.output_tokens).encode()),
        (b"x-amzn-bedrock-input-token-count", str(completion.usage.input_tokens).encode()),
    ]
    body = dump_json(completion_body(call.spec, completion, request_id=call.exchange.request_id))
    call.done(200, completion.usage)
    await call.exchange.respond(200, headers, body)


async def converse(call: Call) -> None:
    request = cv.parse_converse(call.spec, parse_json(call.body), streaming=False)
    completion = await _complete(call, request)
    body = dump_json(cv.converse_body(completion, latency_ms=call.exchange.elapsed_ms()))
    call.done(200, completion.usage)
    await call.exchange.respond(200, _base_headers(call, b"application/json"), body)


async def count_tokens(call: Call) -> None:
    body = parse_json(call.body)
    given = body.get("input") if isinstance(body, dict) else None
    if (
        not isinstance(given, dict)
        or len(given) != 1
        or not given.keys() <= {"invokeModel", "converse"}
    ):
        raise BedrockError(
            "ValidationException",
            "The input field must hold exactly one of invokeModel or converse.",
        )
    if "invokeModel" in given:
        blob = given["invokeModel"].get("body") if isinstance(given["invokeModel"], dict) else None
        try:
            native = base64.b64decode(blob if isinstance(blob, str) else "", validate=True)
        except (binascii.Error, ValueError) as err:
            raise BedrockError(
                "ValidationException", "The invokeModel body is not valid base64."
            ) from err
        request = parse_native(call.spec, parse_json(native))
    else:
        request = cv.parse_converse(call.spec, given["converse"], streaming=False)
    try:
        tokens = await call.runner.count_tokens(request.prompt)
    except Exception as err:
        raise to_bedrock_error(err) from err
    call.done(200, Usage(input_tokens=tokens))
    await call.exchange.respond(
        200, _base_headers(call, b"application/json"), dump_json({"inputTokens": tokens})
    )


def _stream_headers(call: Call) -> list[tuple[bytes, bytes]]:
    return [
        *_base_headers(call, b"application/vnd.amazon.eventstream"),
        (b"x-amzn-bedrock-content-type", b"application/json"),
    ]


@dataclass(frozen=True)
class StreamShape:
    """How one streaming operation spells its answer: the frames, and an error inside it.

    The fault handling and bookkeeping of :func:`stream_answer` are the same for every
    operation, the Bedrock ones and the OpenAI face's server-sent events alike.
    """

    headers: Callable[[Call], list[tuple[bytes, bytes]]]
    opening: Callable[[], list[bytes]]
    delta: Callable[[str], bytes]
    closing: Callable[[Call, StreamEnd, float | None], list[bytes]]
    error: Callable[[BedrockError], bytes]


def _invoke_closing(call: Call, end: StreamEnd, first_byte_ms: float | None) -> list[bytes]:
    final = text_chunk(call.spec, "", end.stop_reason)
    final["amazon-bedrock-invocationMetrics"] = {
        "inputTokenCount": end.usage.input_tokens,
        "outputTokenCount": end.usage.output_tokens,
        "invocationLatency": round(call.exchange.elapsed_ms()),
        "firstByteLatency": round(
            first_byte_ms if first_byte_ms is not None else call.exchange.elapsed_ms()
        ),
    }
    return [chunk_frame(dump_json(final))]


def _converse_closing(call: Call, end: StreamEnd, first_byte_ms: float | None) -> list[bytes]:
    return cv.end_frames(end.stop_reason, end.usage, latency_ms=call.exchange.elapsed_ms())


async def _frames(
    call: Call,
    shape: StreamShape,
    first: TextDelta | StreamEnd | None,
    events: AsyncIterator[TextDelta | StreamEnd],
) -> AsyncIterator[bytes]:
    """The event-stream frames of one answer, with this request's stream fault applied."""
    for frame in shape.opening():
        yield frame
    sent, first_byte_ms = 0, None
    cut = call.fault in ("midstream", "drop")

    async def chained() -> AsyncIterator[TextDelta | StreamEnd]:
        if first is not None:
            yield first
        async for event in events:
            yield event

    async for event in chained():
        if cut and sent >= call.config.midstream_after:
            break
        if isinstance(event, StreamEnd):
            if cut:
                break
            call.done(200, event.usage)
            for frame in shape.closing(call, event, first_byte_ms):
                yield frame
            return
        if not event.text:
            continue
        yield shape.delta(event.text)
        sent += 1
        if first_byte_ms is None:
            first_byte_ms = call.exchange.elapsed_ms()
        if call.fault == "stall" and sent == 1:
            await asyncio.sleep(call.config.stall_seconds)
    if call.fault == "drop":
        call.done(200, error="dropped")
        raise DropRequested
    # A midstream fault, or a backend stream that stopped without its end event.
    error = (
        midstream_error()
        if cut
        else BedrockError(
            "ModelStreamErrorException",
            "The model stopped before finishing its response. Retry your request.",
            extra={
                "originalStatusCode": 500,
                "originalMessage": "stream ended without a stop reason",
            },
        )
    )
    call.done(200, error=error.stream_member)
    yield shape.error(error)


async def _guarded(
    call: Call, shape: StreamShape, frames: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """Errors raised once the stream is open become exception frames, then the stream ends."""
    try:
        async for frame in frames:
            yield frame
    except (DropRequested, asyncio.CancelledError):
        raise
    except Exception as err:
        error = to_bedrock_error(err)
        call.done(200, error=error.stream_member)
        yield shape.error(error)


async def _stream(call: Call, request: CompletionRequest, shape: StreamShape) -> None:
    await _check_context(call, request)
    await stream_answer(call, call.runner.stream(request), shape)


async def stream_answer(
    call: Call,
    opened: contextlib.AbstractAsyncContextManager[AsyncIterator[TextDelta | StreamEnd]],
    shape: StreamShape,
) -> None:
    """Answer with the events ``opened`` yields, spelt by ``shape``, faults applied.

    An error before the first event is raised (the caller answers it with a status);
    after that, it becomes the shape's error frame and the stream ends.
    """
    async with opened as events:
        try:
            first = await anext(events, None)
        except Exception as err:
            raise to_bedrock_error(err) from err
        frames = _guarded(call, shape, _frames(call, shape, first, events))
        finished = await call.exchange.stream(shape.headers(call), frames)
        if not finished:
            call.done(200, error="client disconnected")


async def invoke_stream(call: Call) -> None:
    request = parse_native(call.spec, parse_json(call.body))
    spec = call.spec
    shape = StreamShape(
        headers=_stream_headers,
        opening=lambda: [],
        delta=lambda text: chunk_frame(dump_json(text_chunk(spec, text, None))),
        closing=_invoke_closing,
        error=lambda error: error.frame(INVOKE_STREAM_MEMBERS),
    )
    await _stream(call, request, shape)


_CONVERSE_SHAPE = StreamShape(
    headers=_stream_headers,
    opening=lambda: [cv.start_frame()],
    delta=cv.delta_frame,
    closing=_converse_closing,
    error=lambda error: error.frame(CONVERSE_STREAM_MEMBERS),
)


async def converse_stream(call: Call) -> None:
    request = cv.parse_converse(call.spec, parse_json(call.body), streaming=True)
    await _stream(call, request, _CONVERSE_SHAPE)


HANDLERS: dict[str, Callable[[Call], Awaitable[None]]] = {
    "invoke": invoke,
    "invoke-with-response-stream": invoke_stream,
    "converse": converse,
    "converse-stream": converse_stream,
    "count-tokens": count_tokens,
}
