"""Run a (CPU-bound, blocking) backend off the event loop, with bounded concurrency.

``complete`` is one job on a thread pool. A stream is one job too: the whole backend
generator runs in a single worker thread (model code may keep thread-local state such
as torch's grad mode across ``yield``), and each event is handed to the loop through an
asyncio queue. When the HTTP side goes away the job is told to stop and the generator
is closed, so an abandoned stream frees its thread at the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta

__all__ = ["BackendRunner"]

StreamItem = TextDelta | StreamEnd
T = TypeVar("T")


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Done:
    pass


_DONE = _Done()


class BackendRunner:
    """The backend behind a thread pool of ``workers`` threads."""

    def __init__(self, backend: Backend, *, workers: int) -> None:
        self.backend = backend
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="bedrock-mistral-backend"
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self.call(self.backend.complete, request)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Any blocking call on the pool (the OpenAI face runs the client's retries there)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def stream(
        self, request: CompletionRequest
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[StreamItem]]:
        """``async with runner.stream(req) as events: async for event in events: ...``"""
        return self.events(lambda: self.backend.stream(request))

    @contextlib.asynccontextmanager
    async def events(
        self, source: Callable[[], Iterable[StreamItem]]
    ) -> AsyncIterator[AsyncIterator[StreamItem]]:
        """The events of ``source()``, a blocking iterable run as one job on the pool."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamItem | _Failed | _Done] = asyncio.Queue()
        stop = threading.Event()

        def post(item: StreamItem | _Failed | _Done) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            if stop.is_set():
                return
            events: Iterable[StreamItem] | None = None
            try:
                events = source()
                for event in events:
                    if stop.is_set():
                        break
                    post(event)
            except BaseException as err:  # handed to the loop, re-raised there
                post(_Failed(err))
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
                post(_DONE)

        job = loop.run_in_executor(self._pool, pump)

        async def events() -> AsyncIterator[StreamItem]:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item

        try:
            yield events()
        finally:
            stop.set()
            job.add_done_callback(_retrieve)

    async def count_tokens(self, prompt: str) -> int:
        """The backend's own count when it has one (TokenCounter), else whitespace words."""
        counter = getattr(self.backend, "count_tokens", None)
        if counter is None:
            return len(prompt.split())
        loop = asyncio.get_running_loop()
        return int(await loop.run_in_executor(self._pool, counter, prompt))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
