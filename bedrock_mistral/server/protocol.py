"""uvicorn's h11 protocol, plus a handle on the connection so a request can be dropped.

ASGI gives an app no way to close a connection without answering (uvicorn sends a 500
when an app returns without a response). The ``drop`` fault needs exactly that, so each
connection's transport is put into the request scope under ``TRANSPORT_KEY``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from bedrock_mistral.server.exchange import TRANSPORT_KEY

__all__ = ["DroppableH11Protocol"]

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def _with_transport(app: ASGIApp, transport: asyncio.Transport) -> ASGIApp:
    async def app_with_transport(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        scope = {
            **scope,
            "extensions": {**(scope.get("extensions") or {}), TRANSPORT_KEY: transport},
        }
        await app(scope, receive, send)

    return app_with_transport


class DroppableH11Protocol(H11Protocol):
    """H11Protocol whose requests can reach their own transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_transport(self.app, transport)
