"""Amazon Bedrock through boto3 ``bedrock-runtime``: InvokeModel and InvokeModelWithResponseStream.

Requests with tools, tool turns or images go through Converse / ConverseStream instead
(:mod:`.converse_wire`): only those operations carry them.

A translation layer and nothing more: our request -> Bedrock body, Bedrock response ->
our types, botocore errors -> our errors (:mod:`.bedrock_errors`). It never retries.

Why botocore's retries are off: the client's :class:`~bedrock_mistral.retry.RetryPolicy`
is the one retry loop. botocore's own (legacy mode: 5 attempts, also re-sending a
generation after a read timeout) would multiply with ours, 5 x 5 = 25 requests, so each
boto3 client here is built with ``retries={"total_max_attempts": 1}``.

Two boto3 clients share one session, both created lazily and once, under a lock:

- ``invoke`` with a long ``read_timeout`` (default 900 s): InvokeModel sends nothing until
  the whole answer is generated;
- ``stream`` whose ``read_timeout`` is ``stream_idle_timeout`` (default 60 s): for a stream
  it bounds the gap between two events, so a stalled stream ends as an error instead of
  hanging.

Region: ``region=`` -> ``AWS_REGION`` -> ``AWS_DEFAULT_REGION`` -> the profile's
``region`` (boto3 itself does not read ``AWS_REGION``). Endpoint: ``endpoint_url=`` ->
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` -> ``AWS_ENDPOINT_URL`` (boto3 resolves the
variables). A loopback endpoint (``bedrock-mistral serve``) needs neither a region nor
credentials: ``us-east-1`` and unsigned requests are used when none are configured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bedrock_mistral.errors import Arg, ConfigurationError, Fix
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta, Usage

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

    from bedrock_mistral.backends.bedrock_async import AsyncBedrockBackend
    from bedrock_mistral.models import ModelSpec

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_POOL_CONNECTIONS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_STREAM_IDLE_TIMEOUT",
    "BedrockBackend",
]

logger = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 900.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_POOL_CONNECTIONS = 64
LOOPBACK_REGION = "us-east-1"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Region prefix -> geography of cross-region inference profiles (us-gov has its own).
_PROFILE_GEOS = {"us": "us", "eu": "eu", "ap": "apac"}


@dataclass(frozen=True)
class _Clients:
    invoke: BedrockRuntimeClient
    stream: BedrockRuntimeClient
    region: str
    endpoint: str
    session: boto3.session.Session | None = None  # the async transport signs with its credentials


def _positive(name: str, value: float | int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{name}={value!r} is not allowed: a positive number")


def _configured_endpoint(endpoint_url: str | None) -> str | None:
    """The endpoint boto3 will use, when it is set by argument or environment."""
    if endpoint_url:
        return endpoint_url
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME") or os.environ.get("AWS_ENDPOINT_URL")


def wire_model_id(spec: ModelSpec, region: str) -> str:
    """The id to send for ``spec`` in ``region``.

    A profile-only model (Pixtral Large) named by its bare id or alias cannot be invoked
    on demand, so it goes through the inference profile of the region's geography
    (``us.`` in us-east-1, ``eu.`` in eu-west-3). Every other id is sent as given.

    >>> from bedrock_mistral.models import resolve_model
    >>> wire_model_id(resolve_model("mistral.pixtral-large-2502-v1:0"), "eu-west-3")
    'eu.mistral.pixtral-large-2502-v1:0'
    """
    model_id = spec.model_id
    if not spec.profile_only or model_id != spec.canonical_id or region.startswith("us-gov-"):
        return model_id
    geo = _PROFILE_GEOS.get(region.split("-", 1)[0])
    if geo is None or (spec.profile_geos is not None and geo not in spec.profile_geos):
        return model_id  # no profile here: Bedrock's own error says what to do
    return f"{geo}.{model_id}"


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


class BedrockBackend:
    """Mistral on Amazon Bedrock. Thread-safe: share one per process or per client.

    >>> backend = BedrockBackend(region="us-west-2", read_timeout=300)
    >>> backend = BedrockBackend(endpoint_url="http://127.0.0.1:8000")   # bedrock-mistral serve
    """

    name = "bedrock"
    accepts_tools = True  # through Converse

    def __init__(
        self,
        *,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        stream_idle_timeout: float = DEFAULT_STREAM_IDLE_TIMEOUT,
        max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
        session: boto3.session.Session | None = None,
    ) -> None:
        for name, value in (
            ("read_timeout", read_timeout),
            ("connect_timeout", connect_timeout),
            ("stream_idle_timeout", stream_idle_timeout),
            ("max_pool_connections", max_pool_connections),
        ):
            _positive(name, value)
        if session is not None and profile is not None:
            raise ConfigurationError(
                "pass either session=... or profile=..., not both: "
                "a boto3 session already has its profile"
            )
        self._region = region
        self._profile = profile
        self._endpoint_url = endpoint_url
        self.read_timeout = float(read_timeout)
        self.connect_timeout = float(connect_timeout)
        self.stream_idle_timeout = float(stream_idle_timeout)
        self.max_pool_connections = int(max_pool_connections)
        self._session = session
        self._lock = threading.Lock()
        self._clients: _Clients | None = None

    def __repr__(self) -> str:
        return (
            f"BedrockBackend(region={self._region!r}, profile={self._profile!r}, "
            f"endpoint_url={self._endpoint_url!r})"
        )

    # -- boto3 clients -------------------------------------------------------------------

    @property
    def region(self) -> str:
        """The region requests go to (resolving it creates the boto3 clients)."""
        return self._get_clients().region

    @property
    def endpoint(self) -> str:
        return self._get_clients().endpoint

    def _get_clients(self) -> _Clients:
        clients = self._clients
        if clients is not None:
            return clients
        with self._lock:  # boto3 sessions are not thread-safe while creating clients
            if self._clients is None:
                self._clients = self._create_clients()
            return self._clients

    def _create_clients(self) -> _Clients:
        import boto3
        from botocore.config import Config

        from bedrock_mistral import __version__
        from bedrock_mistral.backends.bedrock_errors import MAPPED_ERRORS, CallContext, map_error

        ctx = CallContext(model_id="(none yet)", region=self._region, endpoint=self._endpoint_url)
        try:
            session = self._session or boto3.session.Session(profile_name=self._profile)
            endpoint = _configured_endpoint(self._endpoint_url)
            region = self._resolve_region(session, endpoint)
            extra: dict[str, Any] = {}
            if _is_loopback(endpoint) and session.get_credentials() is None:
                from botocore import UNSIGNED

                logger.debug(
                    "loopback endpoint %s without credentials: sending unsigned requests", endpoint
                )
                extra["signature_version"] = UNSIGNED

            def make(read_timeout: float) -> BedrockRuntimeClient:
                config = Config(
                    connect_timeout=self.connect_timeout,
                    read_timeout=read_timeout,
                    max_pool_connections=self.max_pool_connections,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    tcp_keepalive=True,
                    user_agent_extra=f"bedrock-mistral/{__version__}",
                    **extra,
                )
                return session.client(
                    "bedrock-runtime",
                    region_name=region,
                    endpoint_url=self._endpoint_url,
                    config=config,
                )

            invoke = make(self.read_timeout)
            stream = make(self.stream_idle_timeout)
        except MAPPED_ERRORS as err:
            raise map_error(err, ctx) from err
        except ValueError as err:  # botocore's "Invalid endpoint: ..."
            raise ConfigurationError(
                f"{err}: the Bedrock runtime endpoint must be a URL such as http://127.0.0.1:8000",
                fix=Fix(
                    "check {} (or AWS_ENDPOINT_URL_BEDROCK_RUNTIME / AWS_ENDPOINT_URL)",
                    Arg("endpoint_url"),
                ),
            ) from err
        logger.debug(
            "bedrock-runtime clients ready: region=%s endpoint=%s", region, invoke.meta.endpoint_url
        )
        return _Clients(
            invoke=invoke,
            stream=stream,
            region=region,
            endpoint=invoke.meta.endpoint_url,
            session=session,
        )

    def _resolve_region(self, session: boto3.session.Session, endpoint: str | None) -> str:
        from bedrock_mistral.backends.bedrock_errors import region_message
        from bedrock_mistral.errors import RegionError

        region = self._region or os.environ.get("AWS_REGION") or session.region_name
        if region:
            return region
        if _is_loopback(endpoint):
            logger.debug(
                "loopback endpoint %s without a region: using %s", endpoint, LOOPBACK_REGION
            )
            return LOOPBACK_REGION
        raise RegionError(region_message())

    def close(self) -> None:
        """Release the connection pools. The backend recreates them if used again."""
        with self._lock:
            clients, self._clients = self._clients, None
        if clients is not None:
            clients.invoke.close()
            clients.stream.close()

    def async_backend(self) -> AsyncBedrockBackend:
        """The asyncio twin on the same settings (httpx, signed with botocore's SigV4)."""
        from bedrock_mistral.backends.bedrock_async import AsyncBedrockBackend

        return AsyncBedrockBackend(self)

    # -- calls ---------------------------------------------------------------------------

    def _context(self, request: CompletionRequest, clients: _Clients, *, streaming: bool) -> Any:
        from bedrock_mistral.backends.bedrock_errors import CallContext

        return CallContext(
            model_id=wire_model_id(request.spec, clients.region),
            region=clients.region,
            endpoint=clients.endpoint,
            read_timeout=self.read_timeout,
            stream_idle_timeout=self.stream_idle_timeout,
            streaming=streaming,
        )

    def complete(self, request: CompletionRequest) -> Completion:
        from bedrock_mistral.backends.bedrock_errors import MAPPED_ERRORS, map_error
        from bedrock_mistral.backends.bedrock_wire import (
            parse_response,
            request_body,
            usage_from_headers,
        )

        clients = self._get_clients()
        ctx = self._context(request, clients, streaming=False)
        if request.uses_converse:
            return self._converse(request, clients, ctx)
        body = request_body(request, request.spec.dialect)
        started = time.perf_counter()
        try:
            response = clients.invoke.invoke_model(
                modelId=ctx.model_id,
                body=body,
                contentType="application/json",
                accept="application/json",
            )
            raw = response["body"].read()
        except MAPPED_ERRORS as err:
            raise map_error(err, ctx) from err
        wall_ms = (time.perf_counter() - started) * 1000.0
        parsed = parse_response(raw)
        header_usage, latency_ms = usage_from_headers(
            response["ResponseMetadata"].get("HTTPHeaders", {})
        )
        return Completion(
            text=parsed.text,
            stop_reason=parsed.stop_reason,
            usage=header_usage or parsed.usage or Usage(),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=latency_ms if latency_ms is not None else wall_ms,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        """Events of one InvokeModelWithResponseStream call.

        Ends with :class:`StreamEnd` only when Bedrock sent a stop reason; a stream cut
        before that just stops, and the client reports it as interrupted.
        """
        from bedrock_mistral.backends.bedrock_errors import MAPPED_ERRORS, map_error
        from bedrock_mistral.backends.bedrock_wire import request_body

        clients = self._get_clients()
        ctx = self._context(request, clients, streaming=True)
        if request.uses_converse:
            yield from self._converse_stream(request, clients, ctx)
            return
        body = request_body(request, request.spec.dialect)
        started = time.perf_counter()
        try:
            response = clients.stream.invoke_model_with_response_stream(
                modelId=ctx.model_id,
                body=body,
                contentType="application/json",
                accept="application/json",
            )
        except MAPPED_ERRORS as err:
            raise map_error(err, ctx) from err
        yield from _stream_events(response["body"], ctx, started)

    def _converse(self, request: CompletionRequest, clients: _Clients, ctx: Any) -> Completion:
        from bedrock_mistral.backends.bedrock_errors import MAPPED_ERRORS, map_error
        from bedrock_mistral.backends.converse_wire import converse_params, parse_converse

        started = time.perf_counter()
        try:
            response = clients.invoke.converse(**converse_params(request, ctx.model_id))
        except MAPPED_ERRORS as err:
            raise map_error(err, ctx) from err
        reply = parse_converse(response)
        return reply.completion(request, self.name, (time.perf_counter() - started) * 1000.0)

    def _converse_stream(
        self, request: CompletionRequest, clients: _Clients, ctx: Any
    ) -> Iterator[TextDelta | StreamEnd]:
        from bedrock_mistral.backends.bedrock_errors import MAPPED_ERRORS, map_error
        from bedrock_mistral.backends.converse_wire import converse_params, stream_events

        try:
            response = clients.stream.converse_stream(**converse_params(request, ctx.model_id))
            stream = response["stream"]
        except MAPPED_ERRORS as err:
            raise map_error(err, ctx) from err
        try:
            yield from stream_events(stream)
        except MAPPED_ERRORS as err:
            raise map_error(err, ctx) from err
        finally:
            stream.close()


def _stream_events(body: Any, ctx: Any, started: float) -> Iterator[TextDelta | StreamEnd]:
    from bedrock_mistral.backends.bedrock_errors import MAPPED_ERRORS, map_error
    from bedrock_mistral.backends.bedrock_wire import StreamTally

    tally = StreamTally()
    tally.started = started
    try:
        for event in body:
            chunk = event.get("chunk")
            if chunk is None:
                continue  # an event type this SDK does not know; botocore raises for errors
            delta = tally.feed(chunk["bytes"])
            if delta is not None:
                yield delta
    except MAPPED_ERRORS as err:
        if tally.reason is None:
            raise map_error(err, ctx) from err
        # The answer was complete (stop reason seen); only the tail of the connection failed.
        logger.debug(
            "stream failed after its stop reason (%s: %s); answer kept", type(err).__name__, err
        )
    finally:
        body.close()
    end = tally.end()
    if end is None:
        logger.debug("stream for %s ended without a stop reason", ctx.model_id)
        return
    yield end
