"""Run many records through a client with adaptive concurrency; yield results as they finish.

>>> from bedrock_mistral import MistralClient
>>> from bedrock_mistral.batch import run_batch
>>> client = MistralClient(model="mistral-7b")
>>> records = [{"id": "a", "prompt": "Hi"}, {"id": "b", "prompt": "Bye", "max_tokens": 20}]
>>> with run_batch(client, records, concurrency=16) as run:    # doctest: +SKIP
...     for result in run:                                    # in completion order
...         print(result.id, result.text or result.error)
...     print(run.stats.done, run.limiter.history)

Why the attempt loop lives here and not in the client: the adaptive limiter has to see
every throttle, and a record waiting out its backoff must not hold a concurrency slot.
So each worker makes exactly one attempt (:meth:`MistralClient.prepare` to validate and
format, then ``invoke`` on a copy of the client whose retry policy allows one attempt),
and the dispatcher applies the client's shared :class:`RetryPolicy` (which errors to
retry, how long to wait) between attempts.

Throttles are the limiter's signal, not a fault of the record: a throttled record is
retried until the policy's ``max_total_seconds`` (measured from its first attempt) would
be crossed, or, with no time cap, until it was throttled ``4 * max_attempts`` times.
Other transient errors get ``max_attempts`` attempts. ``max_attempts=1`` retries nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bedrock_mistral.batch.limiter import AdaptiveLimiter
from bedrock_mistral.batch.pool import Outcome, WorkerPool
from bedrock_mistral.batch.records import (
    BatchRecord,
    InputProblem,
    ParsedInput,
    check_unique,
    parse_items,
)
from bedrock_mistral.batch.result import BatchResult, BatchStats, RecordError
from bedrock_mistral.errors import BedrockMistralError, ConfigurationError, ThrottledError
from bedrock_mistral.retry import RetryPolicy, compute_delay, should_retry

if TYPE_CHECKING:
    from bedrock_mistral.client import MistralClient
    from bedrock_mistral.types import Completion, CompletionRequest

__all__ = ["DEFAULT_CONCURRENCY", "BatchRun", "DispatchState", "plan_run", "run_batch"]

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
THROTTLE_ATTEMPTS_FACTOR = 4
_IDLE_POLL = 0.5  # seconds; keeps the dispatcher responsive to Ctrl-C

RecordLike = BatchRecord | Mapping[str, Any] | str


@dataclass
class _Job:
    record: BatchRecord
    request: CompletionRequest | None = None  # set by the dispatcher before the first send
    attempts: int = 0
    throttles: int = 0
    first_sent: float | None = None
    ticket: int = 0


class DispatchState:
    """What the sync and the async dispatchers share: which record goes next, what an
    outcome means (done, retry after a wait, failed), the limiter and the totals."""

    def __init__(
        self,
        client: Any,
        parsed: ParsedInput,
        *,
        limiter: AdaptiveLimiter,
        max_attempts: int,
        params: Mapping[str, Any] | None = None,
        skipped: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.max_attempts = max_attempts
        self.params = dict(params or {})
        self.stats = BatchStats(total=len(parsed.records) + len(parsed.problems), skipped=skipped)
        self.in_flight = 0
        self._policy: RetryPolicy = client.retry
        # One attempt per call; the dispatcher is the retry loop.
        self._single = copy.copy(client)
        self._single.retry = dataclasses.replace(client.retry, max_attempts=1)
        self._parsed = parsed
        self._clock = clock

    def _account(self, result: BatchResult) -> BatchResult:
        self.stats.add(result)
        return result

    def _take(
        self, fresh: deque[_Job], waiting: list[tuple[float, int, _Job]], now: float
    ) -> _Job | BatchResult | None:
        """The next job to send (retries first: they have waited longest), a record refused
        before the network, or None when nothing may go now."""
        if self.in_flight >= self.limiter.limit:
            return None
        if waiting and waiting[0][0] <= now:
            job = heapq.heappop(waiting)[2]
        elif fresh:
            job = fresh.popleft()
            try:
                job.request = self._prepare(job.record)
            except BedrockMistralError as error:  # refused before the network: no attempt
                return _refused(job.record, error)
        else:
            return None
        job.attempts += 1
        job.ticket = self.limiter.ticket()
        if job.first_sent is None:
            job.first_sent = now
        self.in_flight += 1
        return job

    def _wait_time(self, waiting: list[tuple[float, int, _Job]]) -> float:
        if waiting and self.in_flight < self.limiter.limit:
            return min(_IDLE_POLL, max(0.0, waiting[0][0] - self._clock()))
        return _IDLE_POLL

    def _settle(self, outcome: Outcome[_Job, Completion]) -> tuple[BatchResult | None, float]:
        """A final result, or (None, seconds to wait) when the record goes round again."""
        job, error = outcome.job, outcome.error
        if error is None:
            self.limiter.on_success(job.ticket)
            assert outcome.value is not None
            return BatchResult.success(job.record, outcome.value, attempts=job.attempts), 0.0
        if isinstance(error, ThrottledError):
            self.limiter.on_throttle(job.ticket)
            job.throttles += 1
            delay = compute_delay(self._policy, job.throttles, error)
            if self._throttle_budget_left(job, delay):
                return None, delay
        elif should_retry(error) and job.attempts - job.throttles < self.max_attempts:
            delay = compute_delay(self._policy, job.attempts - job.throttles, error)
            if self._time_left(job, delay):
                return None, delay
        if not isinstance(error, BedrockMistralError):
            logger.error(
                "record %s failed with an unexpected error", job.record.where, exc_info=error
            )
        else:
            error.attempts = job.attempts
        return BatchResult.failure(
            job.record, RecordError.from_exception(error), attempts=job.attempts
        ), 0.0

    def _time_left(self, job: _Job, delay: float) -> bool:
        cap = self._policy.max_total_seconds
        if cap is None or job.first_sent is None:
            return True
        return self._clock() - job.first_sent + delay <= cap

    def _throttle_budget_left(self, job: _Job, delay: float) -> bool:
        if self.max_attempts <= 1:
            return False
        if self._policy.max_total_seconds is None:
            return job.throttles < THROTTLE_ATTEMPTS_FACTOR * self.max_attempts
        return self._time_left(job, delay)

    def _prepare(self, record: BatchRecord) -> CompletionRequest:
        """Validate against the model and format the prompt; sends nothing."""
        conversation: Any = list(record.messages) if record.messages is not None else record.prompt
        request: CompletionRequest = self._single.prepare(
            conversation, **{**self.params, **record.params}
        )
        return request


class BatchRun(DispatchState):
    """An iterator of :class:`BatchResult` in completion order, with live ``stats`` and ``limiter``.

    Input problems come first (as error results, nothing sent), then results as requests
    finish. Stopping early (``close()``, leaving the ``with`` block, Ctrl-C) drops what is
    still in flight: those records simply have no result.
    """

    def __init__(
        self,
        client: MistralClient,
        parsed: ParsedInput,
        *,
        limiter: AdaptiveLimiter,
        max_attempts: int,
        params: Mapping[str, Any] | None = None,
        skipped: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            client,
            parsed,
            limiter=limiter,
            max_attempts=max_attempts,
            params=params,
            skipped=skipped,
            clock=clock,
        )
        self._results = self._dispatch()

    def __iter__(self) -> Iterator[BatchResult]:
        return self

    def __next__(self) -> BatchResult:
        return next(self._results)

    def close(self) -> None:
        self._results.close()

    def __enter__(self) -> BatchRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the dispatcher (runs in the consumer's thread) --------------------------------------

    def _dispatch(self) -> Generator[BatchResult, None, None]:
        self.stats.started = time.monotonic()
        for problem in self._parsed.problems:
            yield self._account(BatchResult.input_problem(problem))
        pool: WorkerPool[_Job, Completion] = WorkerPool(
            self._attempt, max_workers=self.limiter.max_limit
        )
        fresh = deque(_Job(record) for record in self._parsed.records)
        waiting: list[tuple[float, int, _Job]] = []  # (due, tie-break, job): retries in backoff
        order = itertools.count()
        try:
            while fresh or waiting or self.in_flight:
                for refused in self._send(pool, fresh, waiting):
                    yield self._account(refused)
                outcome = pool.get(timeout=self._wait_time(waiting))
                if outcome is None:
                    continue
                self.in_flight -= 1
                result, delay = self._settle(outcome)
                if result is not None:
                    yield self._account(result)
                else:
                    heapq.heappush(waiting, (self._clock() + delay, next(order), outcome.job))
        finally:
            pool.close()
            self.stats.ended = time.monotonic()

    def _send(
        self,
        pool: WorkerPool[_Job, Completion],
        fresh: deque[_Job],
        waiting: list[tuple[float, int, _Job]],
    ) -> list[BatchResult]:
        """Fill free slots; return the records refused before the network."""
        refused: list[BatchResult] = []
        now = self._clock()
        while (taken := self._take(fresh, waiting, now)) is not None:
            if isinstance(taken, BatchResult):
                refused.append(taken)
            else:
                pool.submit(taken)
        return refused

    def _attempt(self, job: _Job) -> Completion:
        """One request (runs in a worker thread)."""
        assert job.request is not None
        completion: Completion = self._single.invoke(job.request)
        return completion


def _refused(record: BatchRecord, error: BedrockMistralError) -> BatchResult:
    """A record the client refused to send (bad parameters for this model, and so on)."""
    return BatchResult.failure(record, RecordError.from_exception(error), attempts=0)


def _written(problem: InputProblem, skip: Collection[str], skip_lines: Collection[int]) -> bool:
    if problem.key is not None:
        return problem.key in skip
    return problem.line is not None and problem.line in skip_lines


def _parse(records: Iterable[RecordLike] | ParsedInput) -> ParsedInput:
    return records if isinstance(records, ParsedInput) else parse_items(records)


def run_batch(
    client: MistralClient,
    records: Iterable[RecordLike] | ParsedInput,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    adaptive: bool = True,
    max_attempts: int | None = None,
    initial_concurrency: int | None = None,
    params: Mapping[str, Any] | None = None,
    skip: Collection[str] = (),
    skip_lines: Collection[int] = (),
) -> BatchRun:
    """Start a batch; iterate the returned :class:`BatchRun` for results as they complete.

    ``records``: dicts shaped like batch JSONL lines (``{"id", "prompt" | "messages",
    params...}``), :class:`BatchRecord` objects, or prompt strings (id = position).
    ``concurrency`` is the most requests in flight; with ``adaptive`` the limit starts
    lower and follows the service (AIMD). ``max_attempts`` defaults to the client's retry
    policy. ``params`` are generation parameters for every record; a record's own
    values win. ``skip`` holds record ids (as ``str``) already done, ``skip_lines`` the input
    lines of id-less problems already written: resume uses both.

    Duplicate ids raise :class:`~bedrock_mistral.batch.records.DuplicateIdError` here,
    before anything is sent.
    """
    todo, limiter, attempts, skipped = plan_run(
        client,
        records,
        concurrency=concurrency,
        adaptive=adaptive,
        max_attempts=max_attempts,
        initial_concurrency=initial_concurrency,
        skip=skip,
        skip_lines=skip_lines,
    )
    return BatchRun(
        client, todo, limiter=limiter, max_attempts=attempts, params=params, skipped=skipped
    )


def plan_run(
    client: Any,
    records: Iterable[RecordLike] | ParsedInput,
    *,
    concurrency: int,
    adaptive: bool,
    max_attempts: int | None,
    initial_concurrency: int | None,
    skip: Collection[str],
    skip_lines: Collection[int],
) -> tuple[ParsedInput, AdaptiveLimiter, int, int]:
    """Check the options and the ids; (what to send, the limiter, attempts, records skipped)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency={concurrency!r} is not allowed: an integer >= 1")
    attempts = client.retry.max_attempts if max_attempts is None else max_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigurationError(f"max_attempts={attempts!r} is not allowed: an integer >= 1")
    parsed = _parse(records)
    check_unique(parsed)
    todo = ParsedInput(
        records=[r for r in parsed.records if r.key not in skip],
        problems=[p for p in parsed.problems if not _written(p, skip, skip_lines)],
    )
    skipped = len(parsed.records) + len(parsed.problems) - len(todo.records) - len(todo.problems)
    limiter = AdaptiveLimiter(concurrency, adaptive=adaptive, initial=initial_concurrency)
    return todo, limiter, attempts, skipped
