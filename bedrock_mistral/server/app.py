"""The ASGI application: routing table, admission, faults, and the never-500 guard.

Per request: match ``/model/{modelId}/{operation}`` on the raw path, refuse an
oversized body from its Content-Length, draw this request's fault, admit it under
``max_concurrency`` (or answer ThrottlingException at once), read the capped body,
resolve the model, wait ``latency_ms``, and hand over to the operation's handler.
Whatever escapes becomes a Bedrock-shaped error; nothing ever answers with a traceback.

Paths under ``/v1/`` go to the OpenAI face (``openai_face.py``) instead, which uses the
same admission, faults, stats and backend runner, and words its errors as OpenAI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.server.auth import key_matches
from bedrock_mistral.server.config import DEFAULT_WORKERS, ServerConfig
from bedrock_mistral.server.errors import BedrockError
from bedrock_mistral.server.exchange import (
    BodyTooLarge,
    ClientDisconnected,
    ConnectionDropped,
    DropRequested,
    ErrorReply,
    Exchange,
    Receive,
    Send,
)
from bedrock_mistral.server.faults import HTTP_FAULTS, FaultKind, FaultPlan, fault_error
from bedrock_mistral.server.handlers import HANDLERS, Call, Outcome, to_bedrock_error
from bedrock_mistral.server.openai_errors import openai_error, too_large
from bedrock_mistral.server.openai_face import OpenAIFace, is_openai_path
from bedrock_mistral.server.routing import ModelCatalog, match_route
from bedrock_mistral.server.stats import (
    ConcurrencyGate,
    RequestRecord,
    ServerStats,
    request_attempt,
)
from bedrock_mistral.server.worker import BackendRunner

__all__ = ["BedrockApp", "create_app"]

logger = logging.getLogger("bedrock_mistral.server")

_THROTTLED = "Too many requests, please wait before trying again."
_UNAUTHORIZED = (
    "Missing or wrong API key: this server was started with --api-key. A Bedrock client "
    "sends the key as its access key id (AWS_ACCESS_KEY_ID=KEY, any secret)."
)


class _Request:
    """Bookkeeping for one request: its concurrency slot, one stats record, one log line.

    :meth:`finish` runs before the response's last bytes go out, and gives the slot back
    there too: a client that has read its whole answer must never see its own request
    still counted in flight (tests read ``stats.in_flight`` right after a call).
    """

    def __init__(self, app: BedrockApp, exchange: Exchange) -> None:
        self.app = app
        self.exchange = exchange
        self.operation: str | None = None
        self.model_id: str | None = None
        self.fault: FaultKind | None = None
        self.recorded = False
        self.admitted = False

    def admit(self) -> bool:
        """Take a concurrency slot; False when the server is at its limit."""
        self.admitted = self.app.gate.try_enter()
        return self.admitted

    def release(self) -> None:
        """Give the slot back (once, whichever path gets here first)."""
        if self.admitted:
            self.admitted = False
            self.app.gate.leave()

    def finish(self, outcome: Outcome) -> None:
        self.release()
        if self.recorded:
            return
        self.recorded = True
        latency = self.exchange.elapsed_ms()
        record = RequestRecord(
            method=self.exchange.method,
            path=self.exchange.raw_path.decode("latin-1"),
            operation=self.operation,
            model_id=self.model_id,
            status=outcome.status,
            attempt=request_attempt(self.exchange.headers),
            input_tokens=outcome.usage.input_tokens,
            output_tokens=outcome.usage.output_tokens,
            latency_ms=latency,
            error=outcome.error,
            fault=self.fault,
            request_id=self.exchange.request_id,
        )
        self.app.stats.record(record)
        logger.info(
            "%s %s %s %s in=%d out=%d %.1fms%s",
            record.method,
            record.operation or record.path,
            record.model_id or "-",
            record.status or "dropped",
            record.input_tokens,
            record.output_tokens,
            latency,
            f" error={record.error}" if record.error else "",
        )


@dataclass(frozen=True)
class Face:
    """One API the server speaks: how it serves a request, and how it words an error."""

    serve: Callable[[_Request], Awaitable[None]]
    error: Callable[[BaseException], ErrorReply]
    too_large: Callable[[int], ErrorReply]


class BedrockApp:
    """Serves any :class:`Backend` over the Bedrock runtime protocol and the OpenAI API."""

    def __init__(
        self,
        backend: Backend,
        config: ServerConfig | None = None,
        *,
        stats: ServerStats | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self.stats = stats or ServerStats()
        self.catalog = ModelCatalog(self.config.model_ids)
        self.faults = FaultPlan(
            script=self.config.fault_script, rates=self.config.faults, seed=self.config.seed
        )
        self.gate = ConcurrencyGate(self.config.max_concurrency, self.stats)
        workers = self.config.workers or getattr(backend, "max_parallel", None) or DEFAULT_WORKERS
        self.runner = BackendRunner(backend, workers=workers)
        self.openai = OpenAIFace(self)
        self._bedrock_face = Face(self._serve, to_bedrock_error, _too_large)
        self._openai_face = Face(self.openai.serve, openai_error, too_large)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(Exchange(scope, receive, send))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.runner.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, exchange: Exchange) -> None:
        request = _Request(self, exchange)
        openai = is_openai_path(exchange.raw_path)
        face = self._openai_face if openai else self._bedrock_face
        try:
            await face.serve(request)
        except DropRequested:
            request.finish(Outcome(status=0, error="dropped"))
            await exchange.abort()
        except BodyTooLarge:
            error = face.too_large(self.config.max_body_bytes)
            request.finish(Outcome(status=error.status, error=error.name))
            await exchange.refuse(error)
        except ClientDisconnected:
            request.finish(Outcome(status=0, error="client disconnected"))
        except (ConnectionDropped, asyncio.CancelledError):
            request.finish(Outcome(status=0, error="client disconnected"))
            raise
        except Exception as err:
            await self._fail(request, err, face)

    async def _fail(self, request: _Request, err: Exception, face: Face) -> None:
        error = face.error(err)
        request.finish(Outcome(status=error.status, error=error.name))
        if request.exchange.response_started:
            # Too late for a status line: cut the connection so the client sees a broken
            # response rather than a clean-looking truncated one.
            logger.error("error after the response started", exc_info=err)
            await request.exchange.abort()
            return
        await request.exchange.respond_error(error)

    def authorized(self, exchange: Exchange) -> bool:
        """Whether the request carries the API key, when the server has one."""
        key = self.config.api_key
        return not key or key_matches(exchange.headers, key)

    @contextlib.asynccontextmanager
    async def admitted(self, request: _Request) -> AsyncIterator[bytes]:
        """The steps every model request takes, on either face, yielding its body.

        Refuse an oversized body from its Content-Length, draw the request's fault, take
        a concurrency slot (or raise ThrottlingException at once), read the capped body;
        the slot is given back when the block ends.
        """
        length = request.exchange.content_length()
        if length is not None and length > self.config.max_body_bytes:
            raise BodyTooLarge
        request.fault = self.faults.next()
        if not request.admit():
            raise BedrockError("ThrottlingException", _THROTTLED)
        try:
            yield await request.exchange.read_body(self.config.max_body_bytes)
        finally:
            request.release()

    async def _serve(self, request: _Request) -> None:
        exchange = request.exchange
        route = match_route(exchange.raw_path)
        if route is None or exchange.method != "POST":
            raise BedrockError(
                "UnknownOperationException",
                "The requested operation is not recognized by the service.",
            )
        request.model_id, operation = route
        request.operation = operation
        if not self.authorized(exchange):
            raise BedrockError("AccessDeniedException", _UNAUTHORIZED)
        async with self.admitted(request) as body:
            spec = self.catalog.lookup(request.model_id)
            await self.before_generation(
                exchange, request.fault, spec.canonical_id, streaming=operation.endswith("stream")
            )
            call = Call(
                exchange=exchange,
                operation=operation,
                model_id=request.model_id,
                spec=spec,
                body=body,
                fault=request.fault,
                runner=self.runner,
                config=self.config,
                finish=request.finish,
            )
            await HANDLERS[operation](call)

    async def before_generation(
        self, exchange: Exchange, fault: FaultKind | None, model_id: str, *, streaming: bool
    ) -> None:
        """Faults that strike before any generation, then the simulated latency."""
        if fault is not None and fault in HTTP_FAULTS:
            raise fault_error(fault, model_id)
        if fault == "drop" and not streaming:
            raise DropRequested
        if fault == "stall" and not streaming:
            await exchange.pause(self.config.stall_seconds)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000.0)


def _too_large(limit: int) -> BedrockError:
    return BedrockError(
        "ValidationException",
        "1 validation error detected: Value at 'body' failed to satisfy constraint: Member must "
        f"have length less than or equal to {limit}",
    )


def create_app(backend: Backend, config: ServerConfig | None = None) -> BedrockApp:
    """The ASGI app for ``backend``; run it with any ASGI server, or call it in-process.

    The ``drop`` fault needs the connection handle that :func:`serve_in_background` and
    ``bedrock-mistral serve`` provide; under another ASGI server it raises instead, and that
    server closes the connection its own way.
    """
    return BedrockApp(backend, config)
