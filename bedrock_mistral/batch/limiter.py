"""AIMD adaptive concurrency: find the service's limit and stay near it.

The limit is a float window, like TCP's congestion window:

- **Slow start**: until the first cut, every success adds 1 (the window doubles once per
  round trip), so a run reaches a high limit within a few round trips.
- **Additive increase**: afterwards every success adds ``1 / window`` (about +1 per round
  trip). Within one of the window at the last cut (the ``ceiling``), growth is
  ``probe_slowdown`` times slower, so the run dwells just under the level that was
  throttled before instead of bouncing off it every few round trips.
- **Multiplicative decrease**: when more than ``tolerance`` of the last
  ``max(limit, horizon)`` outcomes were throttles, the window is multiplied by
  ``decrease``.

Two rules keep it from oscillating:

- A lone throttle is noise, not a signal: services shed a few requests at any load, and
  cutting on each one would drag the limit far below what the service sustains. One
  request too many against a hard limit, on the other hand, makes the service refuse
  nearly every new request at once, which crosses the tolerance within a round trip.
- One cut per round trip: outcomes of requests sent *before* the last cut are ignored
  (they were answered by that cut), so one overshoot cannot cut the window to the floor.

Not thread-safe: the batch dispatcher alone calls it.

>>> limiter = AdaptiveLimiter(16, initial=4)
>>> limiter.limit
4
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AdaptiveLimiter", "LimitChange"]

DEFAULT_INITIAL = 4
DEFAULT_DECREASE = 0.75
DEFAULT_TOLERANCE = 0.25
DEFAULT_HORIZON = 16
DEFAULT_PROBE_SLOWDOWN = 4.0


@dataclass(frozen=True)
class LimitChange:
    """The whole-number limit became ``limit`` at ``seconds`` after the limiter started."""

    seconds: float
    limit: int


class AdaptiveLimiter:
    """How many requests may be in flight now; ``adaptive=False`` pins it at ``max_limit``.

    The dispatcher takes a :meth:`ticket` when it sends a request and hands it back with
    the outcome (:meth:`on_success` / :meth:`on_throttle`).
    """

    def __init__(
        self,
        max_limit: int,
        *,
        adaptive: bool = True,
        initial: int | None = None,
        min_limit: int = 1,
        decrease: float = DEFAULT_DECREASE,
        tolerance: float = DEFAULT_TOLERANCE,
        horizon: int = DEFAULT_HORIZON,
        probe_slowdown: float = DEFAULT_PROBE_SLOWDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit} and {max_limit}")
        if not 0.0 < decrease < 1.0 or not 0.0 <= tolerance < 1.0:
            raise ValueError(
                f"need 0 < decrease < 1 and 0 <= tolerance < 1, got {decrease}, {tolerance}"
            )
        self.max_limit = max_limit
        self.min_limit = min_limit
        self.adaptive = adaptive
        self.decrease = decrease
        self.tolerance = tolerance
        self.horizon = horizon
        self.probe_slowdown = probe_slowdown
        start = (initial if initial is not None else DEFAULT_INITIAL) if adaptive else max_limit
        self._window = float(min(max_limit, max(min_limit, start)))
        self._slow_start = adaptive
        self._ceiling: float | None = None
        self._epoch = 0
        self._outcomes = 0  # outcomes of requests sent since the last cut
        self._throttled: deque[int] = deque()  # which of those outcomes were throttles
        self.throttles = 0
        self.cuts = 0
        self._clock = clock
        self._started = clock()
        self.history: list[LimitChange] = [LimitChange(0.0, self.limit)]

    @property
    def limit(self) -> int:
        return max(self.min_limit, math.floor(self._window))

    @property
    def window(self) -> float:
        return self._window

    def ticket(self) -> int:
        """Stamp for a request about to be sent."""
        return self._epoch

    def on_success(self, ticket: int) -> None:
        if not self.adaptive:
            return
        if ticket == self._epoch:
            self._outcomes += 1
        self._set(min(float(self.max_limit), self._window + self._step()))

    def _step(self) -> float:
        if self._slow_start:
            return 1.0
        ceiling = self._ceiling
        if ceiling is not None and ceiling - 1.0 <= self._window < ceiling + 1.0:
            return 1.0 / (self._window * self.probe_slowdown)
        return 1.0 / self._window

    def on_throttle(self, ticket: int) -> bool:
        """Record a throttle; True when it cut the limit."""
        self.throttles += 1
        if not self.adaptive or ticket < self._epoch:
            return False
        self._outcomes += 1
        self._throttled.append(self._outcomes)
        horizon = max(self.limit, self.horizon)
        while self._throttled and self._throttled[0] <= self._outcomes - horizon:
            self._throttled.popleft()
        if len(self._throttled) < max(2, math.ceil(self.tolerance * horizon)):
            return False
        self._slow_start = False
        self._ceiling = self._window
        self._epoch += 1
        self._outcomes = 0
        self._throttled.clear()
        self.cuts += 1
        self._set(max(float(self.min_limit), self._window * self.decrease))
        return True

    def _set(self, window: float) -> None:
        before = self.limit
        self._window = window
        if self.limit != before:
            self.history.append(LimitChange(self._clock() - self._started, self.limit))

    def elapsed(self) -> float:
        return self._clock() - self._started

    def mean_limit(self, since: float = 0.0, until: float | None = None) -> float:
        """Time-weighted mean of the whole-number limit between two offsets in seconds."""
        end = until if until is not None else self.elapsed()
        total = weighted = 0.0
        for index, change in enumerate(self.history):
            next_at = self.history[index + 1].seconds if index + 1 < len(self.history) else end
            start, stop = max(change.seconds, since), min(next_at, end)
            if stop > start:
                total += stop - start
                weighted += (stop - start) * change.limit
        return weighted / total if total > 0 else float(self.limit)
