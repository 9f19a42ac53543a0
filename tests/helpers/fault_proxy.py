"""A fault-injecting HTTP proxy to put in front of a real engine (llama.cpp's server).

Every request is forwarded to the engine as is and its answer streamed back, unless the
script says otherwise. Faults are consumed in order, one per generation request
(``/v1/completions`` or ``/v1/chat/completions``; :meth:`FaultProxy.script`):

- ``{"status": 429, "retry_after": "0"}``, ``{"status": 500}``...: answered by the proxy,
  OpenAI-shaped, without reaching the engine;
- ``{"cut_after": 2}``: forward the engine's stream until two events carrying text have
  passed, then drop the connection;
- ``{"stall_after": 1, "seconds": 3}``: after one text event, send nothing for 3 s, then
  go on forwarding;
- ``None``: no fault for that request.

So the text before a cut is the engine's own, and a retried or resumed request is
answered by the engine too. Requests are recorded (path and JSON body).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.helpers.openai_server import (
    Receive,
    Scope,
    ScriptedFaults,
    Send,
    read_body,
    recorded,
    serve_asgi,
)

__all__ = ["FaultProxy", "start_fault_proxy"]

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class _Cut(Exception):
    """Raised inside a response to make uvicorn drop the connection mid-body."""


def _event_end(buffer: bytes) -> int:
    """Where the first complete server-sent event of ``buffer`` ends (0: none yet)."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    return min(ends, default=0)


def _has_text(event: bytes) -> bool:
    """Whether one server-sent event (``data: {...}``) carries generated text."""
    for line in event.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:"):
            continue
        try:
            data = json.loads(line[5:])
        except ValueError:
            return False
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if choice.get("text") or delta.get("content"):
                return True
    return False


@dataclass(kw_only=True)
class FaultProxy(ScriptedFaults):
    """Forwards to ``upstream`` (the engine's root URL, without ``/v1``)."""

    upstream: str

    def _fault_for(self, path: str) -> dict[str, Any]:
        """Scripted faults apply to generations only (models and token counts pass through)."""
        return self._next_fault() if path.endswith("completions") else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        request = recorded(scope, raw)
        path, headers = request.path, request.headers
        self.requests.append(request)
        fault = self._fault_for(path)
        try:
            if "status" in fault:
                await _refuse(send, fault)
            else:
                await self._forward(scope["method"], path, headers, raw, fault, send)
        except _Cut:
            raise RuntimeError("cut the connection (scripted fault)") from None

    async def _forward(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        fault: dict[str, Any],
        send: Send,
    ) -> None:
        sent_headers = {k: v for k, v in headers.items() if k not in ("host", *_HOP_HEADERS)}
        async with (
            httpx.AsyncClient(base_url=self.upstream, timeout=120) as client,
            client.stream(method, path, content=raw, headers=sent_headers) as response,
        ):
            back = [
                (k.encode(), v.encode())
                for k, v in response.headers.items()
                if k.lower() not in _HOP_HEADERS
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": back}
            )
            texts = 0
            buffer = b""
            async for piece in response.aiter_bytes():
                buffer += piece
                # Forward whole events, so a cut or a stall falls between two of them.
                while b"\n\n" in buffer or b"\r\n\r\n" in buffer:
                    cut = (
                        buffer.find(b"\n\n") + 2
                        if b"\n\n" in buffer
                        else buffer.find(b"\r\n\r\n") + 4
                    )
                    event, buffer = buffer[:cut], buffer[cut:]
                    if _has_text(event):
                        if fault.get("cut_after") == texts:
                            raise _Cut
                        if fault.get("stall_after") == texts:
                            await asyncio.sleep(float(fault.get("seconds", 3)))
                        texts += 1
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": buffer, "more_body": False})


async def _refuse(send: Send, fault: dict[str, Any]) -> None:
    status = int(fault["status"])
    message = fault.get("message", "scripted fault (proxy)")
    payload = {"error": {"message": message, "type": "server_error", "code": status}}
    headers = [(b"content-type", b"application/json")]
    if "retry_after" in fault:
        headers.append((b"retry-after", str(fault["retry_after"]).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


@contextmanager
def start_fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` for ``upstream`` on loopback; ``proxy.url`` ends in /v1."""
    proxy = FaultProxy(upstream=upstream.rstrip("/").removesuffix("/v1"))
    with serve_asgi(proxy, "fault proxy") as root:
        proxy.url = f"{root}/v1"
        yield proxy
