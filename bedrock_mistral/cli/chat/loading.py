"""Clients built off the main thread, so Ctrl-C never lands inside an import.

Building a client can import heavy modules (boto3; torch and the weights for the local
backend). A KeyboardInterrupt raised in the middle of an import leaves the module half
initialised, and every later import of it fails ("partially initialized module 'torch'",
"SystemError ... bad call flags"). Signals are only delivered to the main thread, so the
import and the model load run in a worker thread and the main thread only waits: Ctrl-C
interrupts the wait, the load goes on in the background, and the next request uses it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bedrock_mistral.client import MistralClient

__all__ = ["ClientPool", "LoadCancelled"]

Key = tuple[str, str]  # (backend, model)


class LoadCancelled(Exception):
    """Ctrl-C while waiting for a client; its load goes on in the background."""


@dataclass
class _Load:
    done: threading.Event = field(default_factory=threading.Event)
    client: MistralClient | None = None
    error: BaseException | None = None


def warm(client: MistralClient) -> None:
    """Do now, in the worker, what the first request would otherwise import or load lazily:
    the backend's context window (loads the local model) and a token count (its tokenizer)."""
    _ = client.counter.context_window
    client.count_tokens([{"role": "user", "content": "hello"}])


class ClientPool:
    """One client per (backend, model), built once, in a worker thread, and kept.

    ``build`` makes the client for a key; ``waiting(key)`` is shown while the main thread
    waits (a spinner for a slow load). A load that failed is tried again on the next call.
    """

    def __init__(
        self,
        build: Callable[[Key], MistralClient],
        *,
        waiting: Callable[[Key], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._build = build
        self._waiting = waiting or (lambda key: contextlib.nullcontext())
        self._loads: dict[Key, _Load] = {}

    def get(self, key: Key) -> MistralClient:
        """The client for ``key``; raises :class:`LoadCancelled` on Ctrl-C, or the load's error."""
        load = self._loads.get(key)
        if load is None:
            load = self._loads[key] = self._start(key)
        if not load.done.is_set():
            try:
                with self._waiting(key):
                    while not load.done.wait(0.1):  # short waits: Ctrl-C is seen at once
                        pass
            except KeyboardInterrupt:
                raise LoadCancelled(f"stopped waiting for the {key[0]} backend to load") from None
        if load.error is not None:
            del self._loads[key]
            raise load.error
        assert load.client is not None
        return load.client

    def _start(self, key: Key) -> _Load:
        load = _Load()

        def run() -> None:
            try:
                client = self._build(key)
                warm(client)
                load.client = client
            except BaseException as err:  # handed to the waiting thread, raised there
                load.error = err
            finally:
                load.done.set()

        # A daemon: quitting the chat mid-load must not wait for the load to finish.
        threading.Thread(target=run, name=f"load-{key[0]}", daemon=True).start()
        return load

    def close(self) -> None:
        """Close every client built so far (loads still running are left to finish)."""
        for load in self._loads.values():
            if load.done.is_set() and load.client is not None:
                load.client.close()
        self._loads.clear()
