"""What the server saw: one record per model request, plus the in-flight peak."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ConcurrencyGate", "RequestRecord", "ServerStats", "parse_attempt", "request_attempt"]

_ATTEMPT = re.compile(r"attempt=(\d+)")


def parse_attempt(header: str | None) -> int | None:
    """``amz-sdk-request: attempt=2; max=3`` -> 2 (how tests count retries)."""
    if not header:
        return None
    match = _ATTEMPT.search(header)
    return int(match.group(1)) if match else None


def request_attempt(headers: Mapping[str, str]) -> int | None:
    """The client's attempt number: botocore's ``amz-sdk-request``, or the ``openai``
    client's ``x-stainless-retry-count`` (retries so far, so the attempt is one more)."""
    attempt = parse_attempt(headers.get("amz-sdk-request"))
    retries = headers.get("x-stainless-retry-count")
    if attempt is None and retries is not None and retries.isdigit():
        return int(retries) + 1
    return attempt


@dataclass(frozen=True)
class RequestRecord:
    """One finished request, written before the last byte of its response is sent."""

    method: str
    path: str
    operation: str | None
    model_id: str | None
    status: int
    attempt: int | None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    fault: str | None = None
    request_id: str = ""


@dataclass
class ServerStats:
    """Thread-safe counters; read them from tests while the server runs.

    ``max_records`` bounds memory for a long-running server: the oldest records go first.
    """

    requests: list[RequestRecord] = field(default_factory=list)
    max_records: int | None = None
    in_flight: int = 0
    peak_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)
            if self.max_records is not None and len(self.requests) > self.max_records:
                del self.requests[: len(self.requests) - self.max_records]

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset(self) -> None:
        """Forget past requests and the peak (the in-flight count stays true)."""
        with self._lock:
            self.requests.clear()
            self.peak_in_flight = self.in_flight


class ConcurrencyGate:
    """Admit at most ``limit`` requests at once; the rest are refused, never queued.

    Bedrock answers over-limit traffic with ThrottlingException straight away, so an
    unbounded queue here would hide exactly the behaviour clients need to be tested on.
    """

    def __init__(self, limit: int | None, stats: ServerStats) -> None:
        self._limit = limit
        self._stats = stats

    def try_enter(self) -> bool:
        with self._stats._lock:
            if self._limit is not None and self._stats.in_flight >= self._limit:
                return False
            self._stats.in_flight += 1
            self._stats.peak_in_flight = max(self._stats.peak_in_flight, self._stats.in_flight)
            return True

    def leave(self) -> None:
        self._stats.leave()
