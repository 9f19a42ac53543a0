"""The AIMD limiter: rules one by one, then a simulated service with a hard limit.

The simulation is a discrete-event model on a virtual clock (no threads, no sleeps): a
service that refuses anything beyond ``capacity`` in flight at once, optionally also
refusing a random share of requests at any load, and a dispatcher that keeps
``limiter.limit`` requests in flight and retries refusals after a backoff.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

import pytest

from bedrock_mistral.batch.limiter import AdaptiveLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slow_start_doubles_then_stops_at_the_maximum() -> None:
    limiter = AdaptiveLimiter(16, initial=2)
    for _ in range(2):
        limiter.on_success(limiter.ticket())
    assert limiter.limit == 4
    for _ in range(100):
        limiter.on_success(limiter.ticket())
    assert limiter.limit == 16


def test_a_lone_throttle_is_noise_but_a_burst_cuts_multiplicatively() -> None:
    limiter = AdaptiveLimiter(32, initial=20)
    ticket = limiter.ticket()
    assert limiter.on_throttle(ticket) is False
    assert limiter.limit == 20
    for _ in range(3):
        assert limiter.on_throttle(ticket) is False
    assert limiter.on_throttle(ticket) is True  # 5 of the last 20 outcomes: over 25%
    assert limiter.limit == 15  # 20 * 0.75
    assert limiter.cuts == 1 and limiter.throttles == 5


def test_throttles_of_requests_sent_before_a_cut_do_not_cut_again() -> None:
    limiter = AdaptiveLimiter(32, initial=16)
    old = limiter.ticket()
    for _ in range(4):
        limiter.on_throttle(old)
    assert limiter.limit == 12
    for _ in range(30):  # the rest of the overshoot answers late: already handled
        assert limiter.on_throttle(old) is False
    assert limiter.limit == 12
    new = limiter.ticket()
    for _ in range(4):
        limiter.on_throttle(new)
    assert limiter.limit == 9


def test_additive_increase_after_the_first_cut_is_about_one_per_window() -> None:
    limiter = AdaptiveLimiter(64, initial=40)
    for _ in range(10):
        limiter.on_throttle(limiter.ticket())
    assert limiter.limit == 30
    for _ in range(30):
        limiter.on_success(limiter.ticket())
    assert limiter.limit == 30  # +1/30 per success: 30 successes, just short of +1
    for _ in range(3):
        limiter.on_success(limiter.ticket())
    assert limiter.limit == 31


def test_fixed_mode_never_moves() -> None:
    limiter = AdaptiveLimiter(8, adaptive=False)
    for _ in range(50):
        limiter.on_throttle(limiter.ticket())
        limiter.on_success(limiter.ticket())
    assert limiter.limit == 8 and limiter.cuts == 0
    assert limiter.throttles == 50


def test_limit_never_leaves_its_bounds() -> None:
    limiter = AdaptiveLimiter(5, initial=100, min_limit=2)
    assert limiter.limit == 5
    for _ in range(200):
        limiter.on_throttle(limiter.ticket())
    assert limiter.limit == 2


def test_history_and_time_weighted_mean() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(8, initial=4, clock=clock)
    clock.now = 1.0
    for _ in range(4):
        limiter.on_success(limiter.ticket())
    assert [(c.seconds, c.limit) for c in limiter.history] == [
        (0.0, 4),
        (1.0, 5),
        (1.0, 6),
        (1.0, 7),
        (1.0, 8),
    ]
    clock.now = 3.0
    assert limiter.mean_limit() == pytest.approx((4 * 1 + 8 * 2) / 3)
    assert limiter.mean_limit(since=1.0) == pytest.approx(8.0)


@dataclass
class Simulation:
    elapsed: float
    mean_second_half: float
    peak: int
    throttles: int


def simulate(
    *,
    capacity: int,
    noise: float,
    records: int = 2000,
    latency: float = 0.05,
    ceiling: int = 32,
    seed: int = 0,
) -> Simulation:
    """Run ``records`` through a service admitting ``capacity`` at once (virtual time)."""
    rng = random.Random(seed)
    clock = Clock()
    limiter = AdaptiveLimiter(ceiling, clock=clock)
    events: list[tuple[float, int, bool, int, int]] = []  # (time, seq, ok, tries, ticket)
    retries: list[tuple[float, int]] = []  # (due, tries)
    fresh, in_flight, at_service, done, sequence = records, 0, 0, 0, 0

    def dispatch() -> None:
        nonlocal fresh, in_flight, at_service, sequence
        while in_flight < limiter.limit and (fresh or (retries and retries[0][0] <= clock.now)):
            if retries and retries[0][0] <= clock.now:
                tries = heapq.heappop(retries)[1]
            else:
                fresh, tries = fresh - 1, 0
            in_flight += 1
            sequence += 1
            refused = at_service >= capacity or rng.random() < noise
            if not refused:
                at_service += 1
            took = 0.001 if refused else latency * rng.uniform(0.9, 1.1)
            heapq.heappush(
                events, (clock.now + took, sequence, not refused, tries, limiter.ticket())
            )

    dispatch()
    while done < records:
        if retries and (not events or retries[0][0] < events[0][0]) and in_flight < limiter.limit:
            clock.now = retries[0][0]
            dispatch()
            continue
        clock.now, _, ok, tries, ticket = heapq.heappop(events)
        in_flight -= 1
        if ok:
            at_service -= 1
            done += 1
            limiter.on_success(ticket)
        else:
            limiter.on_throttle(ticket)
            backoff = min(8.0, 0.5 * 2**tries) * rng.uniform(0.75, 1.0)
            heapq.heappush(retries, (clock.now + backoff, tries + 1))
        dispatch()
    return Simulation(
        elapsed=clock.now,
        mean_second_half=limiter.mean_limit(since=clock.now / 2, until=clock.now),
        peak=max(change.limit for change in limiter.history),
        throttles=limiter.throttles,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("noise", [0.0, 0.1], ids=["hard-limit", "hard-limit+10%-random"])
def test_settles_near_a_hard_limit_instead_of_oscillating(noise: float, seed: int) -> None:
    sim = simulate(capacity=8, noise=noise, seed=seed)
    assert 9 <= sim.peak <= 12  # it probes just past the limit...
    assert 7.0 <= sim.mean_second_half <= 9.0  # ...and holds near it
    ideal = 2000 * 0.05 / 8
    assert sim.elapsed < ideal * 1.3


def test_without_a_limit_it_runs_at_the_ceiling_despite_random_throttles() -> None:
    sim = simulate(capacity=10_000, noise=0.1, ceiling=32)
    assert sim.mean_second_half > 30


def test_pure_aimd_without_the_noise_rule_would_sag() -> None:
    """The tolerance rule is what keeps 10% random throttling from dragging the limit down."""
    original = AdaptiveLimiter.__init__

    def strict(self: AdaptiveLimiter, *args: object, **kwargs: object) -> None:
        original(self, *args, tolerance=0.0, horizon=1, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AdaptiveLimiter, "__init__", strict)
        sagging = simulate(capacity=8, noise=0.1, seed=0)
    assert sagging.mean_second_half < 7.0
