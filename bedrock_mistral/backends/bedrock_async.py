"""Amazon Bedrock for asyncio: aiohttp on the wire, botocore for everything AWS-specific.

Why this transport:

- not aiobotocore: it pins botocore to the few patch releases it was tested with
  (aiobotocore 3.10 needs botocore < 1.43.118), so installing it moves boto3 and
  botocore back; this SDK must install alongside the newest.
- not httpx: its connection pool (httpcore 1.0) scans every connection for every
  request, so 256 concurrent streams spent half their CPU assigning connections and
  ran at half the throughput of the sync client on 64 threads. aiohttp's connector
  does not, and has no tie to botocore either.

What makes a request AWS-correct still comes from botocore, unchanged:

- settings: the sync :class:`~bedrock_mistral.backends.bedrock.BedrockBackend` this one
  is made from resolves region, endpoint (``endpoint_url=``, the ``AWS_ENDPOINT_URL*``
  variables, botocore's endpoint rules), profile and credentials through its boto3
  session, exactly as the sync calls do, and says when a loopback endpoint goes unsigned;
- signing: ``botocore.auth.SigV4Auth`` over a ``botocore.awsrequest.AWSRequest``;
- decoding: ``botocore.eventstream.EventStreamBuffer`` splits the event stream; error
  responses and exception frames go through botocore's own response parsers into a
  ``ClientError``, so :func:`~bedrock_mistral.backends.bedrock_errors.map_error` maps
  them as it maps boto3's, and bodies and chunks go through :mod:`.bedrock_wire`;
- Converse: requests with tools, tool turns or images go to Converse / ConverseStream,
  as the sync backend sends them: the parameters of :mod:`.converse_wire`, checked by
  botocore's parameter validation and serialized by its rest-json serializer (so the
  body is byte for byte boto3's), replies and events read by botocore's parsers into
  the dicts boto3 returns, then by :mod:`.converse_wire`.

Timeouts mean what they mean for boto3: ``read_timeout`` bounds an InvokeModel answer,
``stream_idle_timeout`` the gap between two stream events. Connections: as many as there
are requests in flight (connections are reused; idle ones close after 15 s). Cancelling
the awaiting task closes the response and its connection.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bedrock_mistral.errors import BackendUnavailableError, install_extra
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta, Usage

if TYPE_CHECKING:
    import aiohttp

    from bedrock_mistral.backends.bedrock import BedrockBackend
    from bedrock_mistral.backends.converse_wire import ConverseReply

__all__ = ["AsyncBedrockBackend"]

logger = logging.getLogger(__name__)

_INVOKE = "InvokeModel"
_STREAM = "InvokeModelWithResponseStream"
_CONVERSE = "Converse"
_CONVERSE_STREAM = "ConverseStream"
# operation -> the last segment of its path, /model/{modelId}/...
_PATHS = {
    _INVOKE: "invoke",
    _STREAM: "invoke-with-response-stream",
    _CONVERSE: "converse",
    _CONVERSE_STREAM: "converse-stream",
}


@dataclass(frozen=True)
class _Wire:
    """Everything resolved once per backend: where to send, how to sign, how to parse errors."""

    clients: Any  # the sync backend's _Clients (region, endpoint, boto3 clients, session)
    credentials: Any  # botocore credentials, or None for an unsigned loopback endpoint
    signing_name: str
    service_model: Any
    user_agent: str


@dataclass(frozen=True)
class _Call:
    """One request, ready to sign: the error context, the operation, its URL and body."""

    ctx: Any  # bedrock_errors.CallContext
    operation: str
    url: str
    body: bytes


# Reads one event frame of a stream into a text delta (or nothing).
_Reader = Callable[[Any], TextDelta | None]


class AsyncBedrockBackend:
    """The async Bedrock backend, on the settings of the sync backend it is made from.

    >>> from bedrock_mistral.backends.bedrock import BedrockBackend
    >>> backend = BedrockBackend(endpoint_url="http://127.0.0.1:8000").async_backend()
    """

    name = "bedrock"
    accepts_tools = True  # through Converse, like the sync backend

    def __init__(self, sync: BedrockBackend) -> None:
        if importlib.util.find_spec("aiohttp") is None:
            raise BackendUnavailableError(
                "the async Bedrock transport needs aiohttp, which is not installed",
                fix=install_extra("async"),
            )
        self.sync = sync
        self._wire: _Wire | None = None
        self._lock: asyncio.Lock | None = None
        # Connections belong to the event loop that opened them: one session per loop.
        self._http: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    def __repr__(self) -> str:
        return f"AsyncBedrockBackend({self.sync!r})"

    # -- setup -----------------------------------------------------------------------------

    async def _get_wire(self) -> _Wire:
        wire = self._wire
        if wire is not None:
            return wire
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._wire is None:
                # boto3 reads config files and builds clients: seconds at worst, off the loop.
                self._wire = await asyncio.to_thread(self._resolve)
            return self._wire

    def _resolve(self) -> _Wire:
        import aiohttp
        from botocore import UNSIGNED

        from bedrock_mistral import __version__

        clients = self.sync._get_clients()
        unsigned = getattr(clients.invoke.meta.config, "signature_version", None) is UNSIGNED
        session = clients.session
        credentials = None if unsigned or session is None else session.get_credentials()
        service_model = clients.invoke.meta.service_model
        return _Wire(
            clients=clients,
            credentials=credentials,
            signing_name=service_model.signing_name or "bedrock",
            service_model=service_model,
            user_agent=f"bedrock-mistral/{__version__} aiohttp/{aiohttp.__version__}",
        )

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        held = self._http
        if held is not None and held[0] is loop and not held[1].closed:
            return held[1]
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=15.0)
        session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
        )
        self._http = (loop, session)
        return session

    async def aclose(self) -> None:
        """Close the connections (of the running loop's client); reopened when used again."""
        held, self._http = self._http, None
        if held is not None and held[0] is asyncio.get_running_loop():
            await held[1].close()

    def close(self) -> None:
        self.sync.close()

    # -- requests --------------------------------------------------------------------------

    async def _headers(self, wire: _Wire, url: str, body: bytes, accept: str) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            accept: "application/json",
            "User-Agent": wire.user_agent,
            "amz-sdk-invocation-id": str(uuid.uuid4()),
            "amz-sdk-request": "attempt=1; max=1",  # one attempt: our retry loop is the only one
        }
        credentials = wire.credentials
        if credentials is None:
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        refresh = getattr(credentials, "refresh_needed", None)
        if callable(refresh) and refresh():
            frozen = await asyncio.to_thread(credentials.get_frozen_credentials)  # may call STS
        else:
            frozen = credentials.get_frozen_credentials()
        signed = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(frozen, wire.signing_name, wire.clients.region).add_auth(signed)
        return dict(signed.headers.items())

    def _prepare(self, wire: _Wire, request: CompletionRequest, *, streaming: bool) -> _Call:
        from bedrock_mistral.backends.bedrock_wire import request_body

        ctx = self.sync._context(request, wire.clients, streaming=streaming)
        if request.uses_converse:
            operation = _CONVERSE_STREAM if streaming else _CONVERSE
            body = _converse_body(wire, operation, request, ctx)
        else:
            operation = _STREAM if streaming else _INVOKE
            body = request_body(request, request.spec.dialect)
        model = quote(ctx.model_id, safe="")
        url = f"{wire.clients.endpoint}/model/{model}/{_PATHS[operation]}"
        return _Call(ctx, operation, url, body)

    def _timeout(self, read: float) -> aiohttp.ClientTimeout:
        import aiohttp

        # sock_read bounds each wait for data: the whole answer, or the gap between events.
        return aiohttp.ClientTimeout(
            total=None, sock_connect=self.sync.connect_timeout, sock_read=read
        )

    def _send(
        self, url: str, body: bytes, headers: dict[str, str], read: float
    ) -> aiohttp.client._RequestContextManager:
        from yarl import URL

        # encoded=True: the path is sent exactly as it was signed (%3A stays %3A).
        return self._client().post(
            URL(url, encoded=True), data=body, headers=headers, timeout=self._timeout(read)
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        from bedrock_mistral.backends.bedrock_errors import map_error
        from bedrock_mistral.backends.bedrock_wire import parse_response, usage_from_headers

        wire = await self._get_wire()
        call = self._prepare(wire, request, streaming=False)
        ctx, url, body = call.ctx, call.url, call.body
        headers = await self._headers(wire, url, body, "Accept")
        started = asyncio.get_running_loop().time()
        try:
            async with self._send(url, body, headers, self.sync.read_timeout) as response:
                raw = await response.read()
        except _transport_errors() as err:  # evaluated only when something was raised
            mapped, cause = _mapped(err, ctx, url)
            raise mapped from cause
        if response.status >= 300:
            error = _client_error(wire, call.operation, response.status, response.headers, raw)
            raise map_error(error, ctx) from error
        wall_ms = (asyncio.get_running_loop().time() - started) * 1000.0
        if call.operation == _CONVERSE:
            reply = _converse_reply(wire, response.status, response.headers, raw)
            return reply.completion(request, self.name, wall_ms)
        parsed = parse_response(raw)
        header_usage, latency_ms = usage_from_headers(response.headers)
        return Completion(
            text=parsed.text,
            stop_reason=parsed.stop_reason,
            usage=header_usage or parsed.usage or Usage(),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=latency_ms if latency_ms is not None else wall_ms,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        """One InvokeModelWithResponseStream (or ConverseStream) call; ends with StreamEnd
        only on a stop reason."""
        from bedrock_mistral.backends.bedrock_errors import map_error

        wire = await self._get_wire()
        call = self._prepare(wire, request, streaming=True)
        ctx, url, body = call.ctx, call.url, call.body
        headers = await self._headers(wire, url, body, "X-Amzn-Bedrock-Accept")
        tally, read = _reader(wire, call.operation)
        try:
            async with self._send(url, body, headers, self.sync.stream_idle_timeout) as response:
                try:
                    if response.status >= 300:
                        raw = await response.read()
                        error = _client_error(
                            wire, call.operation, response.status, response.headers, raw
                        )
                        raise map_error(error, ctx) from error
                    async for delta in _deltas(response, read, tally, wire, call):
                        yield delta
                except BaseException:
                    response.close()  # not read to the end: drop the connection, never reuse it
                    raise
        except _transport_errors() as err:  # evaluated only when something was raised
            if tally.reason is None:
                mapped, cause = _mapped(err, ctx, url)
                raise mapped from cause
            logger.debug("stream failed after its stop reason (%r); answer kept", err)
        end = tally.end()
        if end is None:
            logger.debug("stream for %s ended without a stop reason", ctx.model_id)
            return
        yield end


def _converse_body(wire: _Wire, operation: str, request: CompletionRequest, ctx: Any) -> bytes:
    """The Converse body boto3 would send: validated and serialized by botocore."""
    import botocore.exceptions as bex
    from botocore.serialize import create_serializer
    from botocore.validate import validate_parameters

    from bedrock_mistral.backends.bedrock_errors import map_error
    from bedrock_mistral.backends.converse_wire import converse_params

    model = wire.service_model.operation_model(operation)
    params = converse_params(request, ctx.model_id)
    try:
        validate_parameters(params, model.input_shape)
    except bex.ParamValidationError as err:
        raise map_error(err, ctx) from err
    serializer = create_serializer(wire.service_model.metadata["protocol"])
    body: bytes = serializer.serialize_to_request(params, model)["body"]
    return body


def _converse_reply(
    wire: _Wire, status: int, headers: Mapping[str, str], body: bytes
) -> ConverseReply:
    """A Converse response read as boto3 reads it, then by :func:`parse_converse`."""
    from botocore.parsers import create_parser

    from bedrock_mistral.backends.converse_wire import parse_converse

    shape = wire.service_model.operation_model(_CONVERSE).output_shape
    parser = create_parser(wire.service_model.metadata["protocol"])
    lowered = {name.lower(): value for name, value in headers.items()}
    parsed = parser.parse({"status_code": status, "headers": lowered, "body": body}, shape)
    return parse_converse(parsed)


def _reader(wire: _Wire, operation: str) -> tuple[Any, _Reader]:
    """The tally of a stream and what reads each of its event frames into it."""
    if operation == _CONVERSE_STREAM:
        from botocore.parsers import EventStreamJSONParser

        from bedrock_mistral.backends.converse_wire import ConverseTally

        converse = ConverseTally()
        shape = wire.service_model.operation_model(operation).get_event_stream_output()
        parser = EventStreamJSONParser()

        def read_event(message: Any) -> TextDelta | None:
            # {"contentBlockDelta": {...}}, as boto3's EventStream yields it
            return converse.feed(parser.parse(message.to_response_dict(), shape))

        return converse, read_event

    from bedrock_mistral.backends.bedrock_wire import StreamTally

    tally = StreamTally()

    def read_chunk(message: Any) -> TextDelta | None:
        if message.headers.get(":event-type") != "chunk":
            return None  # an event type this SDK does not know
        return tally.feed(base64.b64decode(json.loads(message.payload)["bytes"]))

    return tally, read_chunk


async def _deltas(
    response: aiohttp.ClientResponse, read: _Reader, tally: Any, wire: _Wire, call: _Call
) -> AsyncIterator[TextDelta]:
    """Decode the event stream: events become deltas, exception frames raise mapped errors."""
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    async for data in response.content.iter_any():
        buffer.add_data(data)
        for message in buffer:
            headers: Any = message.headers  # botocore's stubs type it loosely
            if headers.get(":message-type") == "event":
                delta = read(message)
                if delta is not None:
                    yield delta
                continue
            _raise_frame(message, tally, wire, call)


def _raise_frame(message: Any, tally: Any, wire: _Wire, call: _Call) -> None:
    """An exception frame: raise it mapped, unless the answer was already complete."""
    import botocore.exceptions as bex
    from botocore.parsers import EventStreamJSONParser

    from bedrock_mistral.backends.bedrock_errors import map_error

    shape = wire.service_model.operation_model(call.operation).get_event_stream_output()
    parsed = EventStreamJSONParser().parse(message.to_response_dict(), shape)
    error = bex.EventStreamError(parsed, call.operation)
    if tally.reason is not None:
        logger.debug("stream failed after its stop reason (%s); answer kept", error)
        return
    raise map_error(error, call.ctx) from error


def _client_error(
    wire: _Wire, operation: str, status: int, headers: Mapping[str, str], body: bytes
) -> Any:
    """The ``ClientError`` boto3 would raise for this error response (its own parser reads it)."""
    import botocore.exceptions as bex
    from botocore.parsers import create_parser

    shape = wire.service_model.operation_model(operation).output_shape
    parser = create_parser(wire.service_model.metadata["protocol"])
    lowered = {name.lower(): value for name, value in headers.items()}  # as boto3 shows them
    parsed = parser.parse({"status_code": status, "headers": lowered, "body": body}, shape)
    return bex.ClientError(parsed, operation)


def _transport_errors() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (aiohttp.ClientError, asyncio.TimeoutError)


def _mapped(error: BaseException, ctx: Any, url: str) -> tuple[Exception, BaseException]:
    """An aiohttp failure as the botocore error it corresponds to, then mapped like boto3's."""
    import aiohttp
    import botocore.exceptions as bex

    from bedrock_mistral.backends.bedrock_errors import map_error

    translated: BaseException = error
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        translated = bex.ConnectTimeoutError(endpoint_url=url)
    elif isinstance(error, asyncio.TimeoutError):  # sock_read: no data for read_timeout
        translated = bex.ReadTimeoutError(endpoint_url=url)
    elif isinstance(error, aiohttp.ClientConnectorError):
        translated = bex.EndpointConnectionError(endpoint_url=url)
    if translated is not error:
        translated.__cause__ = error  # the chain reads: ours <- botocore's <- aiohttp's
    return map_error(translated, ctx), translated
