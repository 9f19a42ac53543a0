"""The OpenAI API face of the server: chat completions, completions and models, on any backend.

``POST /v1/chat/completions`` and ``POST /v1/completions`` go through the same steps as a
Bedrock request (:meth:`BedrockApp.admitted`: body limit, fault draw, concurrency gate;
then the model, the fault's effect and ``latency_ms``), and then through the SDK's own
client: :meth:`MistralClient.prepare` checks the parameters against the model's limits,
formats the conversation with :func:`~bedrock_mistral.prompt.format_prompt` and checks
the context window, and the backend is called under the SDK's retry policy by the same
functions :meth:`MistralClient.invoke` / ``invoke_stream`` use (``call_with_retry``,
``open_stream``). So an OpenAI client gets exactly the prompt, the limits and
the retries a ``MistralClient`` would. ``GET /v1/models`` (and ``/v1/models/{id}``) list
what the server answers; they are not model requests, so no fault and no gate applies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from bedrock_mistral.client import MistralClient
from bedrock_mistral.errors import BedrockMistralError, ValidationError
from bedrock_mistral.models import ModelSpec
from bedrock_mistral.retry import call_with_retry
from bedrock_mistral.server.errors import BedrockError
from bedrock_mistral.server.handlers import Call, Outcome, StreamShape, stream_answer
from bedrock_mistral.server.jsonbody import dump_json
from bedrock_mistral.server.openai_errors import (
    OpenAIError,
    model_not_found,
    openai_error,
    unknown_url,
)
from bedrock_mistral.server.openai_schema import (
    ChunkWriter,
    Kind,
    OpenAIRequest,
    completion_body,
    models_body,
    parse_request,
)
from bedrock_mistral.server.schema import parse_json
from bedrock_mistral.streaming import open_stream
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta

if TYPE_CHECKING:
    from bedrock_mistral.server.app import BedrockApp, _Request

__all__ = ["OpenAIFace", "is_openai_path"]

_ROUTES: dict[tuple[str, str], Kind] = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "text",
}
_OPERATIONS: dict[Kind, str] = {"chat": "chat.completions", "text": "completions"}
_MODELS = "/v1/models"
# Conversations this short are checked and formatted on the event loop: the token count
# behind the context-window check is a few microseconds. Longer ones go to the pool.
_INLINE_CHARS = 4096
_DONE = b"data: [DONE]\n\n"
_CREATED = int(time.time())


def is_openai_path(raw_path: bytes) -> bool:
    """Whether a request is for the OpenAI face (everything under ``/v1``)."""
    return raw_path == b"/v1" or raw_path.startswith((b"/v1/", b"/v1?"))


def _sse(chunk: Any) -> bytes:
    return b"data: " + dump_json(chunk) + b"\n\n"


def _unauthorized() -> OpenAIError:
    return OpenAIError(
        401,
        "Missing or wrong API key: send it as 'Authorization: Bearer <key>' (the openai "
        "client's api_key). The server's key is the one given to --api-key.",
        type="authentication_error",
        code="invalid_api_key",
    )


def _stream_events(
    client: MistralClient, request: CompletionRequest
) -> Iterator[TextDelta | StreamEnd]:
    """The backend's events, its opening retried under the client's policy (as the SDK's
    :class:`~bedrock_mistral.streaming.Stream` does) until the first text arrives."""
    iterator, primed = open_stream(client.backend, request, client.retry)
    try:
        yield from primed
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _complete(client: MistralClient, request: CompletionRequest) -> Completion:
    """The backend's answer under the client's retry policy, as :meth:`MistralClient.invoke`
    calls it, without the copy ``invoke`` makes to stamp the model id and the Bedrock cost
    on it: the answer's body names the model itself and carries no cost."""
    backend = client.backend
    return call_with_retry(
        client.retry, partial(backend.complete, request), operation=f"{backend.name} complete"
    )


class OpenAIFace:
    """Serves the OpenAI routes of a :class:`~bedrock_mistral.server.app.BedrockApp`."""

    def __init__(self, app: BedrockApp) -> None:
        self.app = app
        self._clients: dict[str, MistralClient] = {}
        self._lock = threading.Lock()

    async def serve(self, request: _Request) -> None:
        exchange = request.exchange
        path = exchange.raw_path.split(b"?", 1)[0].decode("latin-1").rstrip("/")
        if not self.app.authorized(exchange):
            raise _unauthorized()
        kind = _ROUTES.get((exchange.method, path))
        if kind is not None:
            request.operation = _OPERATIONS[kind]
            await self._generate(request, kind)
        elif exchange.method == "GET" and (path == _MODELS or path.startswith(_MODELS + "/")):
            request.operation = "models"
            await self._models(request, unquote(path[len(_MODELS) + 1 :]))
        else:
            raise unknown_url(exchange.method, path)

    # -- models ------------------------------------------------------------------------------

    async def _models(self, request: _Request, wanted: str) -> None:
        entries = self.app.catalog.aliases()
        if wanted:
            spec = self.app.catalog.find(wanted)
            if spec is None:
                raise model_not_found(wanted, self.app.catalog.model_ids)
            entries = [entry for entry in entries if entry[0] == spec.canonical_id]
        body = models_body(entries, created=_CREATED)
        payload = body["data"][0] if wanted else body
        request.finish(Outcome(status=200))
        await request.exchange.respond(
            200, self._headers(request, b"application/json"), dump_json(payload)
        )

    # -- completions -----------------------------------------------------------------------

    async def _generate(self, request: _Request, kind: Kind) -> None:
        async with self.app.admitted(request) as raw:
            try:
                body = parse_json(raw)
            except BedrockError as err:
                raise OpenAIError(
                    400,
                    "The request body is not valid JSON.",
                    type="invalid_request_error",
                ) from err
            parsed = parse_request(kind, body)
            request.model_id = parsed.model
            spec = self.app.catalog.find(parsed.model)
            if spec is None:
                raise model_not_found(parsed.model, self.app.catalog.model_ids)
            await self.app.before_generation(
                request.exchange, request.fault, spec.canonical_id, streaming=parsed.stream
            )
            client = await self._client(spec)
            prepared = await self._prepare(client, parsed, len(raw))
            call = Call(
                exchange=request.exchange,
                operation=_OPERATIONS[kind],
                model_id=parsed.model,
                spec=spec,
                body=raw,
                fault=request.fault,
                runner=self.app.runner,
                config=self.app.config,
                finish=request.finish,
            )
            ident = ("chatcmpl-" if kind == "chat" else "cmpl-") + request.exchange.request_id
            if parsed.stream:
                await self._stream(call, client, prepared, parsed, ident)
            else:
                await self._complete(call, client, prepared, parsed, ident)

    async def _client(self, spec: ModelSpec) -> MistralClient:
        """One SDK client per model on the server's backend, made (and its limits read) once."""
        client = self._clients.get(spec.model_id)
        if client is None:
            client = await self.app.runner.call(self._new_client, spec)
        return client

    def _new_client(self, spec: ModelSpec) -> MistralClient:
        with self._lock:
            client = self._clients.get(spec.model_id)
            if client is None:
                client = MistralClient(
                    model=spec, backend=self.app.backend, retry=self.app.config.retry
                )
                client.counter.context_window  # noqa: B018 - may load a model: do it here, once
                self._clients[spec.model_id] = client
            return client

    async def _prepare(
        self, client: MistralClient, parsed: OpenAIRequest, body_bytes: int
    ) -> CompletionRequest:
        """Our validation and prompt, by the SDK's own code; errors say the request's names.

        A JSON body holds at least one byte per character of text, so a short body is a
        short conversation without counting its messages.
        """

        def prepare() -> CompletionRequest:
            if parsed.kind == "chat":
                return client.prepare(
                    parsed.messages, continue_final=parsed.continue_final, **parsed.params
                )
            return client.prepare_prompt(parsed.prompt, **parsed.params)

        size = body_bytes
        if size > _INLINE_CHARS:
            size = len(parsed.prompt) + sum(
                len(str(message.get("content", ""))) if isinstance(message, dict) else 0
                for message in parsed.messages
            )
        try:
            return prepare() if size <= _INLINE_CHARS else await self.app.runner.call(prepare)
        except ValidationError as err:
            raise openai_error(err, params=parsed.renamed) from err

    def _headers(self, request: _Request | Call, content_type: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", content_type),
            (b"x-request-id", request.exchange.request_id.encode()),
        ]

    async def _complete(
        self,
        call: Call,
        client: MistralClient,
        prepared: CompletionRequest,
        parsed: OpenAIRequest,
        ident: str,
    ) -> None:
        try:
            completion = await self.app.runner.call(_complete, client, prepared)
        except BedrockMistralError as err:
            raise openai_error(err, params=parsed.renamed) from err
        body = completion_body(parsed.kind, ident, client.model_id, completion)
        call.done(200, completion.usage)
        await call.exchange.respond(200, self._headers(call, b"application/json"), dump_json(body))

    async def _stream(
        self,
        call: Call,
        client: MistralClient,
        prepared: CompletionRequest,
        parsed: OpenAIRequest,
        ident: str,
    ) -> None:
        writer = ChunkWriter(
            parsed.kind, ident, client.model_id, include_usage=parsed.include_usage
        )
        shape = StreamShape(
            headers=lambda call: [
                *self._headers(call, b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
            ],
            opening=lambda: [_sse(chunk) for chunk in writer.opening()],
            delta=lambda text: _sse(writer.delta(text)),
            closing=lambda call, end, first_byte_ms: [
                *(_sse(chunk) for chunk in writer.closing(end.stop_reason, end.usage)),
                _DONE,
            ],
            error=lambda error: openai_error(error).event(),
        )
        events = self.app.runner.events(lambda: _stream_events(client, prepared))
        await stream_answer(call, events, shape)
