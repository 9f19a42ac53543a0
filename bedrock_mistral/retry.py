"""The one retry policy, shared by every backend and by the stream's connect phase.

Whether to retry and how long to wait are separate questions:

- :func:`should_retry` retries exactly the errors marked transient in
  :mod:`bedrock_mistral.errors` (``retryable = True``: throttling, 5xx, model timeout or
  not ready, connection resets and read timeouts). Validation, access and quota errors
  are never retried.
- :func:`compute_delay` trusts a server ``Retry-After`` hint when it is sane (0 to
  ``max_retry_after`` seconds); otherwise it uses capped exponential backoff with jitter.

botocore's own retries are turned off by the Bedrock backend (``total_max_attempts=1``),
so attempts never multiply: ``max_attempts=5`` means at most five HTTP requests.

>>> policy = RetryPolicy(max_attempts=3, initial_delay=0.1)
>>> call_with_retry(policy, lambda: "ok")
'ok'
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bedrock_mistral.errors import APIError, BedrockMistralError, ConfigurationError

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "RetryPolicy",
    "acall_with_retry",
    "async_sleep",
    "build_retrying",
    "call_with_retry",
    "compute_delay",
    "should_retry",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures. All times in seconds.

    ``max_attempts`` counts the first attempt (1 = never retry). ``max_total_seconds``
    caps the whole call: no retry starts whose wait would cross it (``None`` = no cap).
    ``jitter`` is the fraction of each backoff delay that is randomised (0 to 1).
    ``sleep`` is injectable so tests run without waiting. The async client awaits
    :func:`asyncio.sleep` where ``sleep`` is the default :func:`time.sleep`; an injected
    ``sleep`` may return an awaitable (see :func:`async_sleep`).

    >>> no_retries = RetryPolicy(max_attempts=1)
    >>> patient = RetryPolicy(max_attempts=8, max_delay=20.0, max_total_seconds=300.0)
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_total_seconds: float | None = 120.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    sleep: Callable[[float], object] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ConfigurationError(
                f"max_attempts={self.max_attempts!r} is not allowed: an integer >= 1 "
                "(it counts the first attempt; 1 disables retries)"
            )
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigurationError(
                    f"{name}={getattr(self, name)!r} is not allowed: seconds >= 0"
                )
        if self.max_total_seconds is not None and self.max_total_seconds < 0:
            raise ConfigurationError(
                f"max_total_seconds={self.max_total_seconds!r} is not allowed: "
                "seconds >= 0, or None"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(
                f"jitter={self.jitter!r} is not allowed: a fraction from 0 to 1"
            )

    def backoff(self, attempt: int) -> float:
        """Jittered exponential delay after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * (2.0 ** (attempt - 1)))
        return base * (1.0 - self.jitter * random.random())


def should_retry(error: BaseException) -> bool:
    """Retry only errors our tree marks transient; everything else surfaces at once."""
    return isinstance(error, BedrockMistralError) and error.retryable


def compute_delay(policy: RetryPolicy, attempt: int, error: BaseException | None) -> float:
    """Seconds to wait after failed attempt ``attempt``: the server's hint, else backoff."""
    hint = error.retry_after if isinstance(error, APIError) else None
    if hint is not None and 0.0 <= hint <= policy.max_retry_after:
        return hint
    return policy.backoff(attempt)


def _stop(policy: RetryPolicy, started: float | None) -> Callable[[tenacity.RetryCallState], bool]:
    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        if policy.max_total_seconds is None:
            return False
        elapsed = time.monotonic() - started if started is not None else state.seconds_since_start
        # idle_for counts the sleeps we asked for, so the cap holds with a patched sleep too.
        spent = max(elapsed or 0.0, state.idle_for)
        return spent + state.upcoming_sleep > policy.max_total_seconds

    return stop


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return compute_delay(policy, state.attempt_number, error)

    return wait


def _log_retry(operation: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.debug(
            "%s: attempt %d failed (%s: %s); retrying in %.2fs",
            operation,
            state.attempt_number,
            type(error).__name__,
            error,
            state.upcoming_sleep,
        )

    return log


def _retrying_options(
    policy: RetryPolicy, operation: str, started: float | None
) -> dict[str, object]:
    """What the sync and the async retry loops share: which errors, how long, when to stop."""
    import tenacity

    return {
        "retry": tenacity.retry_if_exception(should_retry),
        "wait": _wait(policy),
        "stop": _stop(policy, started),
        "before_sleep": _log_retry(operation),
        "reraise": True,
    }


def build_retrying(
    policy: RetryPolicy, *, operation: str = "request", started: float | None = None
) -> tenacity.Retrying:
    """A fresh tenacity ``Retrying`` for one call (they keep per-call state, so never share).

    ``started``: the ``time.monotonic()`` of the call's first attempt, when it ran before
    this object existed (the time budget counts from there).
    """
    import tenacity

    options = _retrying_options(policy, operation, started)
    return tenacity.Retrying(sleep=policy.sleep, **options)  # type: ignore[arg-type]


def call_with_retry(policy: RetryPolicy, fn: Callable[[], T], *, operation: str = "request") -> T:
    """Run ``fn`` under ``policy``; the error that escapes carries ``.attempts``.

    The first attempt runs directly: most calls succeed at once, and building tenacity's
    machinery for them would cost more than the SDK's whole request preparation. Only a
    transient failure hands over to tenacity, which replays that failure as its attempt 1,
    so waits, attempt numbers and the time budget are exactly those of one retry loop.
    """
    started = time.monotonic()
    try:
        return fn()
    except BedrockMistralError as error:
        if policy.max_attempts == 1 or not should_retry(error):
            error.attempts = 1
            raise
        first_failure: BedrockMistralError | None = error
    retrying = build_retrying(policy, operation=operation, started=started)
    attempts = 1

    def attempt() -> T:
        nonlocal attempts, first_failure
        if first_failure is not None:
            failure, first_failure = first_failure, None
            raise failure
        attempts += 1
        return fn()

    try:
        return retrying(attempt)
    except BedrockMistralError as error:
        error.attempts = attempts
        if attempts > 1:
            logger.debug("%s: giving up after %d attempts: %s", operation, attempts, error)
        raise


async def async_sleep(policy: RetryPolicy, seconds: float) -> None:
    """Wait ``seconds`` without blocking the event loop.

    The default ``time.sleep`` becomes ``asyncio.sleep``; an injected ``sleep`` is called
    as is (a recorder in tests), and awaited when it returns an awaitable.
    """
    if policy.sleep is time.sleep:
        await asyncio.sleep(seconds)
        return
    result: object = policy.sleep(seconds)
    if inspect.isawaitable(result):
        await result


async def acall_with_retry(
    policy: RetryPolicy, fn: Callable[[], Awaitable[T]], *, operation: str = "request"
) -> T:
    """:func:`call_with_retry` for coroutines: the same rules, waits never block the loop."""
    started = time.monotonic()
    try:
        return await fn()
    except BedrockMistralError as error:
        if policy.max_attempts == 1 or not should_retry(error):
            error.attempts = 1
            raise
        first_failure: BedrockMistralError | None = error
    import tenacity

    options = _retrying_options(policy, operation, started)
    retrying = tenacity.AsyncRetrying(
        sleep=lambda seconds: async_sleep(policy, seconds),
        **options,  # type: ignore[arg-type]
    )
    attempts = 1

    async def attempt() -> T:
        nonlocal attempts, first_failure
        if first_failure is not None:
            failure, first_failure = first_failure, None
            raise failure
        attempts += 1
        return await fn()

    try:
        return await retrying(attempt)
    except BedrockMistralError as error:
        error.attempts = attempts
        if attempts > 1:
            logger.debug("%s: giving up after %d attempts: %s", operation, attempts, error)
        raise
