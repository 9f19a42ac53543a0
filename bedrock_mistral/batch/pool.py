"""A bounded pool of daemon worker threads: one request per job, outcomes on a queue.

The pool never decides anything: how many jobs are in flight, and what happens after a
failure, is the dispatcher's business (:mod:`bedrock_mistral.batch.runner`). Threads are
started lazily, up to ``max_workers``, and are daemons so that an interrupted run exits
at once; a request still in flight then has no line in the output and is sent again on
resume.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

__all__ = ["Outcome", "WorkerPool"]

logger = logging.getLogger(__name__)

JobT = TypeVar("JobT")
ValueT = TypeVar("ValueT")

_STOP = object()


@dataclass(frozen=True)
class Outcome(Generic[JobT, ValueT]):
    """What one call of the work function gave: a value, or the exception it raised."""

    job: JobT
    value: ValueT | None = None
    error: BaseException | None = None


class WorkerPool(Generic[JobT, ValueT]):
    def __init__(
        self, work: Callable[[JobT], ValueT], *, max_workers: int, name: str = "batch"
    ) -> None:
        self._work = work
        self._max_workers = max_workers
        self._name = name
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome[JobT, ValueT]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pending = 0  # submitted, outcome not yet taken
        self._closed = False

    def submit(self, job: JobT) -> None:
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        self._pending += 1
        if self._pending > len(self._threads) and len(self._threads) < self._max_workers:
            thread = threading.Thread(
                target=self._run, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._jobs.put(job)

    def get(self, timeout: float | None) -> Outcome[JobT, ValueT] | None:
        """The next outcome, or None when none arrived within ``timeout`` seconds."""
        try:
            outcome = self._outcomes.get(timeout=timeout)
        except queue.Empty:
            return None
        self._pending -= 1
        return outcome

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            item = cast(JobT, job)
            try:
                outcome: Outcome[JobT, ValueT] = Outcome(item, value=self._work(item))
            except Exception as error:  # handed to the dispatcher, which records it
                outcome = Outcome(item, error=error)
            self._outcomes.put(outcome)

    def close(self) -> None:
        """Stop the workers after their current job; jobs not yet started are dropped."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(_STOP)
