"""The async backend protocol, and the adapters that give every sync backend an async face.

An :class:`AsyncBackend` is the asyncio twin of :class:`~bedrock_mistral.backends.base.Backend`:
``await complete(request)``, and ``stream(request)`` returning an async iterator of
:class:`TextDelta` then one :class:`StreamEnd` (a stream without ``StreamEnd`` was
interrupted). If the iterator has ``aclose()`` (an async generator does), the client
awaits it when the caller stops early or its task is cancelled, which must release the
connection or stop the generation.

:func:`to_async` turns any backend into one, in this order:

1. an object that already is async (its ``complete`` is a coroutine function): as is;
2. a backend offering ``async_backend()``: its own async twin (Bedrock: native HTTP;
   echo: inline on the loop; local: one worker thread per model);
3. anything else (a plugin's sync backend): :class:`ThreadedBackend`, which runs each
   call in a worker thread and hands stream events to the loop thread-safely.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, runtime_checkable

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta

__all__ = [
    "DEFAULT_THREADS",
    "AsyncBackend",
    "InlineBackend",
    "ThreadedBackend",
    "is_async_backend",
    "to_async",
]

logger = logging.getLogger(__name__)

Event = TextDelta | StreamEnd
DEFAULT_THREADS = 64  # like the sync backend's connection pool: calls beyond it queue


@runtime_checkable
class AsyncBackend(Protocol):
    """Anything with these two calls (and a name) can serve an ``AsyncMistralClient``."""

    name: str

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[Event]: ...


def is_async_backend(backend: object) -> bool:
    """True for an object whose ``complete`` is a coroutine function (the async protocol)."""
    return isinstance(backend, AsyncBackend) and inspect.iscoroutinefunction(backend.complete)


def to_async(backend: Backend | AsyncBackend) -> AsyncBackend:
    """The async backend for ``backend`` (see the module docstring for the order)."""
    if is_async_backend(backend):
        return backend  # type: ignore[return-value]
    twin = getattr(backend, "async_backend", None)
    if callable(twin):
        made: AsyncBackend = twin()
        return made
    return ThreadedBackend(backend)  # type: ignore[arg-type]


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


class InlineBackend:
    """A sync backend that never blocks (echo), run directly on the loop: no thread hops."""

    def __init__(self, backend: Backend) -> None:
        self.sync = backend
        self.name = backend.name

    def __repr__(self) -> str:
        return f"InlineBackend({self.sync!r})"

    def __getattr__(self, name: str) -> Any:  # count_tokens, context_window, ...
        return getattr(self.sync, name)

    async def complete(self, request: CompletionRequest) -> Completion:
        return self.sync.complete(request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Event]:
        iterator = iter(self.sync.stream(request))
        try:
            for event in iterator:
                yield event
                await asyncio.sleep(0)  # let other tasks run between events, as a socket would
        finally:
            _close(iterator)


class _Cancelled(Exception):
    """Raised in the worker to stop a sync stream whose awaiting task went away."""


class ThreadedBackend:
    """A sync backend off the loop: each call runs in a worker thread.

    ``executor``: where calls run; by default a pool of up to ``threads`` threads of its
    own. A one-thread executor makes calls run one at a time, in order (the local model).
    Cancelling the awaiting task stops the stream: the worker closes the sync iterator
    at its next event (a generator's ``finally`` runs there, releasing what it holds),
    and a call still waiting for its turn never starts.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        executor: concurrent.futures.Executor | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.sync = backend
        self.name = backend.name
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"bedrock-mistral-{backend.name}"
        )
        self._owns_executor = executor is None

    def __repr__(self) -> str:
        return f"ThreadedBackend({self.sync!r})"

    def __getattr__(self, name: str) -> Any:  # count_tokens, context_window, ...
        return getattr(self.sync, name)

    async def complete(self, request: CompletionRequest) -> Completion:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.sync.complete, request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[Event | None, BaseException | None]] = asyncio.Queue()
        stop = threading.Event()

        def hand(event: Event | None, error: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (event, error))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def work() -> None:
            if stop.is_set():  # cancelled while waiting for a thread: never start
                return
            iterator: Iterator[Event] | None = None
            try:
                iterator = iter(self.sync.stream(request))
                for event in iterator:
                    if stop.is_set():
                        raise _Cancelled
                    hand(event, None)
            except _Cancelled:
                pass
            except BaseException as error:
                hand(None, error)
                return
            finally:
                if iterator is not None:
                    _close(iterator)
            hand(None, None)

        future = self._executor.submit(work)
        try:
            while True:
                event, error = await events.get()
                if error is not None:
                    raise error
                if event is None:
                    return
                yield event
        finally:
            stop.set()
            if not future.cancel():  # a call still queued never starts; a running one
                # stops at its next event: wait for it, so the sync stream is closed (and
                # its connection or the model released) before this returns.
                await asyncio.shield(asyncio.wrap_future(future))

    async def aclose(self) -> None:
        close = getattr(self.sync, "close", None)
        if callable(close):
            close()
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
