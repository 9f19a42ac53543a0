"""``AsyncStream``: :class:`~bedrock_mistral.streaming.Stream` for asyncio, with the same rules.

Opening a stream and waiting for its first text is retried under the client's policy;
once text has reached the caller a failure raises
:class:`~bedrock_mistral.errors.StreamInterrupted`, or with ``resume=True`` continues
from the partial text (see :mod:`bedrock_mistral.streaming`, whose decisions this
reuses). Waits between attempts are ``await``-ed, never blocking the loop.

Cancelling the task that iterates (``asyncio.timeout``, ``task.cancel()``, a client
disconnecting from your web handler) closes the backend stream where it waits: the HTTP
response and its connection, or the local model's generation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from bedrock_mistral.errors import BedrockMistralError
from bedrock_mistral.retry import RetryPolicy, acall_with_retry, async_sleep
from bedrock_mistral.streaming import StreamState, _Dropped
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta, Usage

if TYPE_CHECKING:
    from bedrock_mistral.backends.aio import AsyncBackend
    from bedrock_mistral.tokens import PromptCounter

__all__ = ["AsyncStream"]

Event = TextDelta | StreamEnd


async def _aclose(iterator: object) -> None:
    close = getattr(iterator, "aclose", None)
    if callable(close):
        await close()


class AsyncStream(StreamState, AsyncIterator[str]):
    """Iterate with ``async for`` for text deltas; ``async with`` releases the stream early.

    >>> async with client.stream("Tell me a story") as stream:      # doctest: +SKIP
    ...     async for text in stream:
    ...         print(text, end="", flush=True)
    >>> stream.completion.usage.output_tokens                        # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        backend: AsyncBackend,
        request: CompletionRequest,
        policy: RetryPolicy,
        counter: PromptCounter,
        resume: bool = False,
        finish: Callable[[Completion], Completion] | None = None,
        on_complete: Callable[[Completion], None] | None = None,
    ) -> None:
        super().__init__(
            backend_name=backend.name,
            request=request,
            policy=policy,
            counter=counter,
            resume=resume,
            finish=finish,
            on_complete=on_complete,
        )
        self._backend = backend
        self._events = self._run()

    # -- public surface ------------------------------------------------------------------

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> str:
        return await self._events.__anext__()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop reading and release the underlying stream. Safe to call twice."""
        await self._events.aclose()

    async def until_done(self) -> Completion:
        """Read to the end and return the final completion."""
        async for _ in self:
            pass
        if self.completion is None:  # closed early by the caller
            raise self._closed_early()
        return self.completion

    # -- machinery -----------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[str, None]:
        request: CompletionRequest | None = self.request
        while request is not None:
            iterator: AsyncIterator[Event] | None = None
            try:
                iterator, primed = await self._open(request)
                end: StreamEnd | None = None
                for event in primed:
                    if isinstance(event, StreamEnd):
                        end = event
                        break
                    if event.text:
                        self._received(event.text)
                        yield event.text
                if end is None:
                    async for event in iterator:
                        if isinstance(event, StreamEnd):
                            end = event
                            break
                        if event.text:
                            self._received(event.text)
                            yield event.text
                if end is None:
                    raise _Dropped("the stream ended without a stop reason (connection dropped?)")
            except BedrockMistralError as err:
                if not self._parts:
                    raise  # nothing reached the caller: the (already retried) error as is
                request, delay = self._plan_resume(request, err, reopen_failed=iterator is None)
                if request is not None:
                    await async_sleep(self._policy, delay)
                continue
            finally:
                if iterator is not None:
                    await _aclose(iterator)
            self._complete(end.stop_reason, end.usage, end.latency_ms)
            return
        # The token budget ran out exactly at the interruption: the full run stops here too.
        self._complete("length", Usage(), None)

    async def _open(self, request: CompletionRequest) -> tuple[AsyncIterator[Event], list[Event]]:
        """Start a backend stream and read up to its first text, retrying transient failures."""

        async def attempt() -> tuple[AsyncIterator[Event], list[Event]]:
            iterator = aiter(self._backend.stream(request))
            primed: list[Event] = []
            try:
                async for event in iterator:
                    primed.append(event)
                    if isinstance(event, StreamEnd) or event.text:
                        return iterator, primed
            except BaseException:
                await _aclose(iterator)
                raise
            await _aclose(iterator)
            raise _Dropped("the stream ended before any text or stop reason arrived")

        return await acall_with_retry(
            self._policy, attempt, operation=f"{self._backend.name} stream"
        )
