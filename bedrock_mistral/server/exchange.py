"""One HTTP request/response over raw ASGI, with the few moves the server needs.

Kept below Starlette's Response classes because the server needs things they do not
offer: aborting the TCP connection (the ``drop`` fault), refusing an oversized body
while discarding the rest of it (so the client can read the refusal), and watching for
the client hanging up while a stream is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

__all__ = [
    "TRANSPORT_KEY",
    "BodyTooLarge",
    "ClientDisconnected",
    "ConnectionDropped",
    "DropRequested",
    "ErrorReply",
    "Exchange",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRANSPORT_KEY = "bedrock_mistral.transport"
# Lingering close: after refusing a body we discard what the client keeps sending, for a
# bounded time and size, so it finishes writing and reads our answer instead of a reset.
LINGER_SECONDS = 5.0
LINGER_MAX_BYTES = 256 * 1024 * 1024


class ErrorReply(Protocol):
    """An error answer in some API's shape (Bedrock's, or OpenAI's)."""

    @property
    def status(self) -> int: ...

    @property
    def name(self) -> str: ...

    def body(self) -> bytes: ...

    def headers(self, request_id: str) -> list[tuple[bytes, bytes]]: ...


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class ConnectionDropped(Exception):
    """Raised to make the ASGI server close a connection it gave us no handle on."""


class ClientDisconnected(Exception):
    """The client hung up before its request body arrived."""


class DropRequested(Exception):
    """Raised by a frame source to have the stream's connection cut (the drop fault)."""


class Exchange:
    """The request side (headers, capped body) and response side of one HTTP call."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.request_id = str(uuid.uuid4())
        self.started_at = time.perf_counter()
        self.method: str = scope.get("method", "")
        self.raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode(
            "utf-8", "replace"
        )
        self.headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            self.headers[key.decode("latin-1").lower()] = value.decode("latin-1")
        self.response_started = False
        self.body_complete = False

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_at) * 1000.0

    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def read_body(self, limit: int) -> bytes:
        """The whole body, or :class:`BodyTooLarge` as soon as it passes ``limit``."""
        length = self.content_length()
        if length is not None and length > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.body_complete = True
                return b"".join(chunks)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.response_started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await self.start(status, headers)
        await self.write(body, more=False)

    async def respond_error(self, error: ErrorReply) -> None:
        await self.respond(error.status, error.headers(self.request_id), error.body())

    async def refuse(self, error: ErrorReply) -> None:
        """Answer ``error`` before the body was read, then discard the unread rest.

        A client still writing its body would otherwise meet a reset instead of our
        answer. Clients that sent ``Expect: 100-continue`` have not sent the body yet,
        so they get the answer and nothing is read.
        """
        headers = [*error.headers(self.request_id), (b"connection", b"close")]
        body = error.body()
        headers.append((b"content-length", str(len(body)).encode()))
        await self.start(error.status, headers)
        if self.body_complete or self.headers.get("expect", "").lower() == "100-continue":
            await self.write(body, more=False)
            return
        await self.write(body, more=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._discard_body(), LINGER_SECONDS)
        await self.write(b"", more=False)

    async def _discard_body(self) -> None:
        discarded = 0
        while discarded < LINGER_MAX_BYTES:
            message = await self._receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            discarded += len(message.get("body", b""))

    async def pause(self, seconds: float) -> None:
        """Sleep, but give up with :class:`ClientDisconnected` if the client hangs up."""
        watcher = asyncio.ensure_future(self.wait_disconnect())
        try:
            await asyncio.wait_for(asyncio.shield(watcher), seconds)
        except asyncio.TimeoutError:
            return
        finally:
            watcher.cancel()
        raise ClientDisconnected

    async def wait_disconnect(self) -> None:
        """Return when the client hangs up (call only once the body has been read)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def abort(self) -> None:
        """Cut the TCP connection now: no status line, no final frame."""
        transport = self.scope.get("extensions", {}).get(TRANSPORT_KEY)
        if transport is None:
            raise ConnectionDropped
        transport.abort()
        # Let the server see the connection go before we return, so it does not treat
        # the missing response as an application bug and log it.
        await asyncio.sleep(0)

    async def stream(
        self, headers: list[tuple[bytes, bytes]], frames: AsyncIterator[bytes]
    ) -> bool:
        """Send a 200 and ``frames`` as they come; False if the client hung up first."""
        await self.start(200, headers)
        sender = asyncio.ensure_future(self._send_frames(frames))
        watcher = asyncio.ensure_future(self.wait_disconnect())
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                return False
            try:
                sender.result()
            except DropRequested:
                await self.abort()
                return False
            return True
        finally:
            for task in (sender, watcher):
                task.cancel()
            await asyncio.gather(sender, watcher, return_exceptions=True)

    async def _send_frames(self, frames: AsyncIterator[bytes]) -> None:
        try:
            async for frame in frames:
                await self.write(frame)
            await self.write(b"", more=False)
        finally:
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()
