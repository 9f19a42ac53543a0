"""``Stream``: text deltas as they arrive, the final ``Completion`` after the loop.

Retry rules for streams (they differ from plain calls):

- Opening a stream and waiting for its first text is retried under the client's
  :class:`~bedrock_mistral.retry.RetryPolicy`: nothing has reached the caller yet.
- Once text has been yielded the stream is never restarted silently, which would
  duplicate text. A failure, or a stream that ends without a stop reason (dropped
  connection, stalled stream closed by the idle timeout), raises
  :class:`~bedrock_mistral.errors.StreamInterrupted` carrying the partial text.
- With ``resume=True`` the stream instead continues: it re-invokes the model with the
  partial answer appended to the prompt (an open assistant turn) and ``max_tokens``
  reduced by the tokens already produced, so the caller reads one text with nothing
  duplicated or lost. Usage is summed over the pieces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from bedrock_mistral.errors import APIConnectionError, BedrockMistralError, Fix, StreamInterrupted
from bedrock_mistral.retry import RetryPolicy, call_with_retry, compute_delay
from bedrock_mistral.types import (
    Completion,
    CompletionRequest,
    Message,
    StreamEnd,
    TextDelta,
    Usage,
)

if TYPE_CHECKING:
    from bedrock_mistral.backends.base import Backend
    from bedrock_mistral.tokens import PromptCounter

__all__ = ["Stream", "StreamState", "continuation_request", "open_stream"]

logger = logging.getLogger(__name__)

_RESUME_FIX = Fix("pass resume=True to continue from the partial text", cli="")

Event = TextDelta | StreamEnd


def continuation_request(
    original: CompletionRequest, partial: str, produced_tokens: int
) -> CompletionRequest | None:
    """The request that continues ``original`` after ``partial``; None when its budget is spent."""
    remaining = original.max_tokens - produced_tokens
    if remaining < 1:
        return None
    messages = original.messages
    if messages is not None:
        turns = list(messages)
        if turns and turns[-1].role == "assistant":
            turns[-1] = Message(role="assistant", content=turns[-1].content + partial)
        else:
            turns.append(Message(role="assistant", content=partial))
        messages = tuple(turns)
    return original.model_copy(
        update={"prompt": original.prompt + partial, "max_tokens": remaining, "messages": messages}
    )


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


class _Dropped(APIConnectionError):
    """A stream that ended without a stop reason."""


def open_stream(
    backend: Backend, request: CompletionRequest, policy: RetryPolicy
) -> tuple[Iterator[Event], list[Event]]:
    """Start a backend stream and read up to its first text, retrying transient failures.

    Returns the open iterator and the events read so far (the caller closes the iterator).
    """

    def attempt() -> tuple[Iterator[Event], list[Event]]:
        iterator = iter(backend.stream(request))
        primed: list[Event] = []
        try:
            for event in iterator:
                primed.append(event)
                if isinstance(event, StreamEnd) or event.text:
                    return iterator, primed
        except BaseException:
            _close(iterator)
            raise
        _close(iterator)
        raise _Dropped("the stream ended before any text or stop reason arrived")

    return call_with_retry(policy, attempt, operation=f"{backend.name} stream")


class StreamState:
    """What a sync :class:`Stream` and an async ``AsyncStream`` share: the text so far,
    the resume decisions and the final completion. Only the iteration differs."""

    def __init__(
        self,
        *,
        backend_name: str,
        request: CompletionRequest,
        policy: RetryPolicy,
        counter: PromptCounter,
        resume: bool = False,
        finish: Callable[[Completion], Completion] | None = None,
        on_complete: Callable[[Completion], None] | None = None,
    ) -> None:
        self.request = request
        self.resume = resume
        self.completion: Completion | None = None
        self.resumes = 0
        self._backend_name = backend_name
        self._policy = policy
        self._counter = counter
        self._finish = finish
        self._on_complete = on_complete
        self._parts: list[str] = []
        self._chunks = 0
        self._usage = Usage()  # of interrupted pieces, estimated
        self._started = time.perf_counter()

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    @property
    def usage(self) -> Usage | None:
        return self.completion.usage if self.completion is not None else None

    def _received(self, text: str) -> None:
        self._parts.append(text)
        self._chunks += 1

    def _closed_early(self) -> StreamInterrupted:
        return StreamInterrupted(
            "the stream was closed before it finished",
            partial_text=self.text,
            output_tokens=self._chunks,
        )

    def _produced_tokens(self) -> int:
        if self._counter.exact:
            return self._counter.count_text(self.text)
        # Bedrock streams Mistral roughly one token per chunk; the character estimate
        # would overcount and cut the resumed answer short.
        return self._chunks

    def _plan_resume(
        self, request: CompletionRequest, err: BedrockMistralError, *, reopen_failed: bool
    ) -> tuple[CompletionRequest | None, float]:
        """(the continuation, seconds to wait first), or raise StreamInterrupted."""
        produced = self._produced_tokens()
        attempts_left = self.resumes + 1 < self._policy.max_attempts
        if not (self.resume and err.retryable and attempts_left and not reopen_failed):
            raise StreamInterrupted(
                f"the stream was interrupted after {len(self.text)} characters ({err})",
                partial_text=self.text,
                output_tokens=produced,
                # The CLI keeps the partial text itself; resume is an SDK argument.
                fix=None if self.resume else _RESUME_FIX,
            ) from err
        self.resumes += 1
        piece_text = self.text[len(request.prompt) - len(self.request.prompt) :]
        self._usage = self._usage + Usage(
            input_tokens=self._counter.count_prompt(request.prompt),
            output_tokens=self._counter.count_text(piece_text),
        )
        following = continuation_request(self.request, self.text, produced)
        if following is None:
            logger.info(
                "stream interrupted after %d characters with its token budget spent", len(self.text)
            )
            return None, 0.0
        delay = compute_delay(self._policy, self.resumes, err)
        logger.info(
            "stream interrupted after %d characters (%s); resuming (resume %d) in %.2fs",
            len(self.text),
            err,
            self.resumes,
            delay,
        )
        return following, delay

    def _complete(self, stop_reason: str, usage: Usage, latency_ms: float | None) -> None:
        if self.resumes or latency_ms is None:
            latency_ms = (time.perf_counter() - self._started) * 1000.0
        completion = Completion(
            text=self.text,
            stop_reason="length" if stop_reason == "length" else "stop",
            usage=self._usage + usage,
            model_id=self.request.model_id,
            backend=self._backend_name,
            latency_ms=latency_ms,
        )
        if self._finish is not None:
            completion = self._finish(completion)
        self.completion = completion
        if self._on_complete is not None:
            self._on_complete(completion)


class Stream(StreamState, Iterator[str]):
    """Iterate for text deltas; use as a context manager to release the HTTP stream early.

    >>> with client.stream([{"role": "user", "content": "Tell me a story"}]) as stream:
    ...     for text in stream:
    ...         print(text, end="", flush=True)
    >>> stream.completion.usage.output_tokens

    ``completion`` is ``None`` until the stream has finished; ``text`` grows as you read.
    """

    def __init__(
        self,
        *,
        backend: Backend,
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

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        return next(self._events)

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and release the underlying HTTP stream. Safe to call twice."""
        self._events.close()

    def until_done(self) -> Completion:
        """Read to the end and return the final completion."""
        for _ in self:
            pass
        if self.completion is None:  # closed early by the caller
            raise self._closed_early()
        return self.completion

    # -- machinery -----------------------------------------------------------------------

    def _run(self) -> Generator[str, None, None]:
        request: CompletionRequest | None = self.request
        while request is not None:
            iterator: Iterator[Event] | None = None
            try:
                iterator, primed = self._open(request)
                end = yield from self._pump(iterator, primed)
            except BedrockMistralError as err:
                if not self._parts:
                    raise  # nothing reached the caller: the (already retried) error as is
                # A continuation that could not even be opened was retried already.
                request = self._after_failure(request, err, reopen_failed=iterator is None)
                continue
            finally:
                if iterator is not None:
                    _close(iterator)
            self._complete(end.stop_reason, end.usage, end.latency_ms)
            return
        # The token budget ran out exactly at the interruption: the full run stops here too.
        self._complete("length", Usage(), None)

    def _open(self, request: CompletionRequest) -> tuple[Iterator[Event], list[Event]]:
        return open_stream(self._backend, request, self._policy)

    def _pump(
        self, iterator: Iterator[Event], primed: Iterable[Event]
    ) -> Generator[str, None, StreamEnd]:
        for source in (primed, iterator):
            for event in source:
                if isinstance(event, StreamEnd):
                    return event
                if event.text:
                    self._received(event.text)
                    yield event.text
        raise _Dropped("the stream ended without a stop reason (connection dropped?)")

    def _after_failure(
        self, request: CompletionRequest, err: BedrockMistralError, *, reopen_failed: bool
    ) -> CompletionRequest | None:
        """Resume from the partial text, or raise StreamInterrupted with it."""
        following, delay = self._plan_resume(request, err, reopen_failed=reopen_failed)
        if following is not None:
            self._policy.sleep(delay)
        return following
