"""Batch runs on an ``AsyncMistralClient``: tasks instead of threads, the same decisions.

>>> run = client.batch(records, concurrency=64, output="out.jsonl")   # doctest: +SKIP
>>> results = await run                                                # doctest: +SKIP
>>> async for result in client.batch(records):                        # doctest: +SKIP
...     print(result.id, result.text or result.error)

Everything but the waiting is the sync runner's (:mod:`bedrock_mistral.batch.runner`):
the AIMD :class:`~bedrock_mistral.batch.limiter.AdaptiveLimiter`, which record goes next,
what a throttle or an error means, the totals. With ``output=`` each result is appended
to a crash-safe JSONL file as it finishes (:class:`~bedrock_mistral.batch.output.ResultWriter`,
the file the CLI writes), and records already in it are skipped: the same call again
resumes a run that was killed or cancelled.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncGenerator, Collection, Generator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedrock_mistral.batch.output import ResultWriter
from bedrock_mistral.batch.pool import Outcome
from bedrock_mistral.batch.records import ParsedInput
from bedrock_mistral.batch.result import BatchResult
from bedrock_mistral.batch.runner import (
    DEFAULT_CONCURRENCY,
    DispatchState,
    RecordLike,
    _Job,
    plan_run,
)

if TYPE_CHECKING:
    from bedrock_mistral.aclient import AsyncMistralClient
    from bedrock_mistral.types import Completion

__all__ = ["AsyncBatchRun", "arun_batch"]


class AsyncBatchRun(DispatchState):
    """``await`` it for every result (a list, completion order), or ``async for`` each one.

    ``stats`` and ``limiter`` are live. Leaving early (``await run.close()``, leaving an
    ``async with`` block, cancelling the task) cancels what is in flight: those records
    have no result, and a rerun with the same ``output`` sends them again.
    """

    def __init__(
        self,
        client: AsyncMistralClient,
        parsed: ParsedInput,
        *,
        writer: ResultWriter | None = None,
        **options: Any,
    ) -> None:
        super().__init__(client, parsed, **options)
        self.writer = writer
        self._results = self._dispatch()

    def __aiter__(self) -> AsyncBatchRun:
        return self

    async def __anext__(self) -> BatchResult:
        return await self._results.__anext__()

    def __await__(self) -> Generator[Any, None, list[BatchResult]]:
        return self._collect().__await__()

    async def _collect(self) -> list[BatchResult]:
        return [result async for result in self]

    async def close(self) -> None:
        await self._results.aclose()
        if self.writer is not None:
            self.writer.close()

    async def __aenter__(self) -> AsyncBatchRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the dispatcher (a task per request in flight) ---------------------------------------

    def _emit(self, result: BatchResult) -> BatchResult:
        if self.writer is not None:
            self.writer.write(result.to_dict())
        return self._account(result)

    async def _dispatch(self) -> AsyncGenerator[BatchResult, None]:
        self.stats.started = time.monotonic()
        outcomes: asyncio.Queue[Outcome[_Job, Completion]] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def attempt(job: _Job) -> None:
            assert job.request is not None
            try:
                value = await self._single.invoke(job.request)
            except Exception as error:  # handed to the dispatcher, which records it
                outcomes.put_nowait(Outcome(job, error=error))
            else:
                outcomes.put_nowait(Outcome(job, value=value))

        fresh = deque(_Job(record) for record in self._parsed.records)
        waiting: list[tuple[float, int, _Job]] = []  # (due, tie-break, job): retries in backoff
        order = itertools.count()
        try:
            for problem in self._parsed.problems:
                yield self._emit(BatchResult.input_problem(problem))
            while fresh or waiting or self.in_flight:
                now = self._clock()
                while (taken := self._take(fresh, waiting, now)) is not None:
                    if isinstance(taken, BatchResult):
                        yield self._emit(taken)
                        continue
                    task = asyncio.create_task(attempt(taken))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                try:
                    outcome = await asyncio.wait_for(outcomes.get(), self._wait_time(waiting))
                except asyncio.TimeoutError:  # not the builtin on Python 3.10
                    continue
                self.in_flight -= 1
                result, delay = self._settle(outcome)
                if result is not None:
                    yield self._emit(result)
                else:
                    heapq.heappush(waiting, (self._clock() + delay, next(order), outcome.job))
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.ended = time.monotonic()
            if self.writer is not None:
                self.writer.close()


def arun_batch(
    client: AsyncMistralClient,
    records: Iterable[RecordLike] | ParsedInput,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    adaptive: bool = True,
    max_attempts: int | None = None,
    initial_concurrency: int | None = None,
    params: Mapping[str, Any] | None = None,
    skip: Collection[str] = (),
    skip_lines: Collection[int] = (),
    output: str | Path | None = None,
) -> AsyncBatchRun:
    """:func:`~bedrock_mistral.batch.runner.run_batch` for the async client, plus ``output``.

    ``output``: a JSONL file that receives each result as it finishes; ids already in it
    (and id-less input problems already written) are skipped, so rerunning resumes.
    Nothing is sent until the run is awaited or iterated.
    """
    writer = ResultWriter(output) if output is not None else None
    try:
        if writer is not None:
            skip = {*skip, *writer.scan.done}
            skip_lines = {*skip_lines, *writer.scan.done_lines}
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
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    return AsyncBatchRun(
        client,
        todo,
        writer=writer,
        limiter=limiter,
        max_attempts=attempts,
        params=params,
        skipped=skipped,
    )
