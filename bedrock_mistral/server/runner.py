"""Run the server: in a background thread for tests and scripts, or in the foreground.

``serve_in_background`` binds the socket itself (port 0 picks a free port), so the URL
is known before the first request, starts uvicorn in a thread, waits for its "started"
flag, and on exit asks it to stop and joins the thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.backends.factory import create_backend
from bedrock_mistral.errors import ConfigurationError
from bedrock_mistral.models import ModelSpec
from bedrock_mistral.retry import RetryPolicy
from bedrock_mistral.server.app import BedrockApp
from bedrock_mistral.server.auth import check_exposure
from bedrock_mistral.server.config import DEFAULT_MAX_BODY_BYTES, ServerConfig
from bedrock_mistral.server.stats import ServerStats

if TYPE_CHECKING:
    import uvicorn

__all__ = ["LocalServer", "run_server", "serve_in_background"]

logger = logging.getLogger("bedrock_mistral.server")

_START_TIMEOUT_S = 30.0


class LocalServer(str):
    """The base URL of a running server (pass it as boto3's ``endpoint_url``), plus its stats.

    >>> with serve_in_background() as url:          # doctest: +SKIP
    ...     boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1")
    ...     url.stats.requests[-1].status
    """

    stats: ServerStats
    app: BedrockApp

    def __new__(cls, url: str, *, app: BedrockApp) -> LocalServer:
        server = super().__new__(cls, url)
        server.app = app
        server.stats = app.stats
        return server

    @property
    def url(self) -> str:
        return str(self)

    @property
    def config(self) -> ServerConfig:
        return self.app.config


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it Nagle + delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        fix = (
            "pick another --port, or 0 for a free one"
            if err.errno in (errno.EADDRINUSE, errno.EACCES)
            else "check --host: an address of this machine, such as 127.0.0.1 or 0.0.0.0"
        )
        raise ConfigurationError(f"cannot listen on {host}:{port} ({err}); {fix}") from err
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _uvicorn_server(app: BedrockApp, *, log_level: str, graceful_s: int) -> uvicorn.Server:
    import uvicorn

    from bedrock_mistral.server.protocol import DroppableH11Protocol

    config = uvicorn.Config(
        app,
        http=DroppableH11Protocol,
        lifespan="on",
        log_config=None,
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=graceful_s,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def serve_in_background(
    backend: str | Backend = "echo",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_ids: Sequence[str | ModelSpec] | None = None,
    max_concurrency: int | None = None,
    latency_ms: float = 0,
    faults: Mapping[str, float] | None = None,
    fault_script: Sequence[str | None] = (),
    seed: int | None = None,
    midstream_after: int = 2,
    stall_seconds: float = 30.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workers: int | None = None,
    api_key: str | None = None,
    insecure_no_auth: bool = False,
    retry: RetryPolicy | None = None,
    log_level: str = "warning",
) -> Iterator[LocalServer]:
    """Start a Bedrock- and OpenAI-compatible server in a thread; yield its URL; stop it on exit.

    ``backend``: anything :func:`~bedrock_mistral.backends.factory.create_backend` takes
    (``"echo"``, ``"local"``, a plugin's name, ``package.module:attribute``, an object).
    ``api_key``: require ``Authorization: Bearer <api_key>`` on every request; a host other
    than loopback needs one (or ``insecure_no_auth=True``). ``retry``: the policy the
    OpenAI face calls the backend under (default: the SDK's).

    >>> with serve_in_background("echo", fault_script=["throttle"]) as url:  # doctest: +SKIP
    ...     client = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1")
    ...     openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    """
    check_exposure(host, api_key, insecure_no_auth=insecure_no_auth)
    config = ServerConfig(
        model_ids=tuple(model_ids) if model_ids is not None else None,
        max_concurrency=max_concurrency,
        latency_ms=latency_ms,
        faults=dict(faults or {}),
        fault_script=tuple(fault_script),
        seed=seed,
        midstream_after=midstream_after,
        stall_seconds=stall_seconds,
        max_body_bytes=max_body_bytes,
        workers=workers,
        api_key=api_key or None,
        retry=retry,
    )
    app = BedrockApp(create_backend(backend), config)
    sock = _bind(host, port)
    server = _uvicorn_server(app, log_level=log_level, graceful_s=1)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="bedrock-mistral-server", daemon=True
    )
    thread.start()
    try:
        _wait_started(server, thread)
        yield LocalServer(_url(sock), app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        app.runner.shutdown()
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise ConfigurationError(
                "the server thread exited during startup; run with log_level='debug' to see why"
            )
        if time.monotonic() > deadline:
            raise ConfigurationError(f"the server did not start within {_START_TIMEOUT_S:g}s")
        time.sleep(0.005)


def run_server(
    app: BedrockApp,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    on_ready: object = None,
    insecure_no_auth: bool = False,
) -> None:
    """Serve ``app`` in the foreground until Ctrl-C; ``on_ready(url)`` runs once listening.

    A host other than loopback needs ``app.config.api_key`` (or ``insecure_no_auth``).
    """
    check_exposure(host, app.config.api_key, insecure_no_auth=insecure_no_auth)
    sock = _bind(host, port)
    server = _uvicorn_server(app, log_level=log_level, graceful_s=5)
    if callable(on_ready):
        on_ready(_url(sock))
    try:
        server.run(sockets=[sock])
    finally:
        app.runner.shutdown()
        sock.close()
