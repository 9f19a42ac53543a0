"""The shared retry policy: what is retried, how often, how long it waits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from bedrock_mistral import errors
from bedrock_mistral.retry import RetryPolicy, call_with_retry, compute_delay, should_retry
from tests.helpers.backends import SleepRecorder


def flaky(failures: list[Exception], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A callable that raises ``failures`` in order, then returns ``result``."""
    calls: list[int] = []
    pending = list(failures)

    def fn() -> str:
        calls.append(1)
        if pending:
            raise pending.pop(0)
        return result

    return fn, calls


TRANSIENT = [
    errors.ThrottledError("slow down"),
    errors.ModelNotReadyError("loading"),
    errors.ModelTimeoutError("too slow"),
    errors.InternalServerError("500"),
    errors.ServiceUnavailableError("503"),
    errors.ModelStreamError("424 in stream"),
    errors.APIConnectionError("reset"),
    errors.APITimeoutError("read timeout"),
]
PERMANENT = [
    errors.ValidationError("bad"),
    errors.ServiceValidationError("bad body"),
    errors.AccessDeniedError("denied"),
    errors.ModelNotFoundError("404"),
    errors.ServiceQuotaExceededError("quota"),
    errors.ModelError("424"),
    errors.CredentialsError("no creds"),
    errors.RegionError("no region"),
    errors.StreamInterrupted("cut", partial_text="x"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried_until_success(
    error: Exception, sleeps: SleepRecorder
) -> None:
    fn, calls = flaky([error, error])
    assert call_with_retry(RetryPolicy(sleep=sleeps), fn) == "ok"
    assert len(calls) == 3
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent_errors_are_raised_at_once(
    error: errors.BedrockMistralError, sleeps: SleepRecorder
) -> None:
    fn, calls = flaky([error])
    with pytest.raises(type(error)) as info:
        call_with_retry(RetryPolicy(sleep=sleeps), fn)
    assert info.value is error
    assert len(calls) == 1 and sleeps.delays == []
    assert info.value.attempts == 1
    assert not should_retry(error)


def test_foreign_exceptions_are_not_retried(sleeps: SleepRecorder) -> None:
    fn, calls = flaky([KeyError("bug")])
    with pytest.raises(KeyError):
        call_with_retry(RetryPolicy(sleep=sleeps), fn)
    assert len(calls) == 1


@pytest.mark.parametrize("max_attempts", [1, 2, 5, 7])
def test_max_attempts_counts_the_first_attempt(max_attempts: int, sleeps: SleepRecorder) -> None:
    fn, calls = flaky([errors.ThrottledError(f"t{i}") for i in range(10)])
    with pytest.raises(errors.ThrottledError) as info:
        call_with_retry(RetryPolicy(max_attempts=max_attempts, sleep=sleeps), fn)
    assert len(calls) == max_attempts
    assert info.value.attempts == max_attempts
    assert str(info.value) == f"t{max_attempts - 1}"  # the last error, not a RetryError
    assert len(sleeps.delays) == max_attempts - 1


def test_a_permanent_error_after_retries_reports_all_attempts(sleeps: SleepRecorder) -> None:
    fn, _ = flaky([errors.ThrottledError("t"), errors.AccessDeniedError("denied")])
    with pytest.raises(errors.AccessDeniedError) as info:
        call_with_retry(RetryPolicy(sleep=sleeps), fn)
    assert info.value.attempts == 2


def test_backoff_is_exponential_capped_and_jittered(sleeps: SleepRecorder) -> None:
    policy = RetryPolicy(
        max_attempts=8,
        initial_delay=0.5,
        max_delay=4.0,
        jitter=0.25,
        max_total_seconds=None,
        sleep=sleeps,
    )
    fn, _ = flaky([errors.ThrottledError("t")] * 7)
    call_with_retry(policy, fn)
    bases = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert len(sleeps.delays) == len(bases)
    for delay, base in zip(sleeps.delays, bases, strict=True):
        assert base * 0.75 <= delay <= base


def test_no_jitter_gives_exact_delays() -> None:
    policy = RetryPolicy(initial_delay=0.25, max_delay=10.0, jitter=0.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("hint", "used"), [(0.01, True), (0.0, True), (30.0, True), (61.0, False), (-1.0, False)]
)
def test_server_retry_after_is_preferred_when_sane(hint: float, used: bool) -> None:
    policy = RetryPolicy(initial_delay=2.0, jitter=0.0)
    error = errors.ThrottledError("t", retry_after=hint)
    assert (compute_delay(policy, 1, error) == hint) is used
    if not used:
        assert compute_delay(policy, 1, error) == 2.0


def test_retry_after_drives_the_actual_wait(sleeps: SleepRecorder) -> None:
    fn, _ = flaky([errors.ThrottledError("t", retry_after=0.01)])
    call_with_retry(RetryPolicy(initial_delay=5.0, sleep=sleeps), fn)
    assert sleeps.delays == [0.01]


def one_second_waits_within(seconds: float, sleeps: SleepRecorder) -> RetryPolicy:
    """Up to 10 attempts, 1 s apart (no jitter), within a total of ``seconds``."""
    return RetryPolicy(
        max_attempts=10,
        initial_delay=1.0,
        max_delay=1.0,
        jitter=0.0,
        max_total_seconds=seconds,
        sleep=sleeps,
    )


def test_total_time_cap_stops_before_a_wait_that_would_cross_it(sleeps: SleepRecorder) -> None:
    policy = one_second_waits_within(3.5, sleeps)
    fn, calls = flaky([errors.ThrottledError("t")] * 10)
    with pytest.raises(errors.ThrottledError) as info:
        call_with_retry(policy, fn)
    assert sleeps.delays == [1.0, 1.0, 1.0]
    assert len(calls) == 4 and info.value.attempts == 4


def test_total_time_cap_counts_the_first_attempt(
    sleeps: SleepRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr("bedrock_mistral.retry.time.monotonic", lambda: clock[0])
    policy = one_second_waits_within(3.5, sleeps)
    calls: list[int] = []

    def slow_then_throttled() -> str:
        calls.append(1)
        clock[0] += 3.0  # the first attempt alone takes 3 of the 3.5 seconds
        raise errors.ThrottledError("t")

    with pytest.raises(errors.ThrottledError) as info:
        call_with_retry(policy, slow_then_throttled)
    assert sleeps.delays == [] and len(calls) == 1 and info.value.attempts == 1


def test_a_call_that_succeeds_at_once_never_builds_the_retry_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_tenacity(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built a retry loop for a call that needed none")

    monkeypatch.setattr("bedrock_mistral.retry.build_retrying", no_tenacity)
    assert call_with_retry(RetryPolicy(), lambda: "ok") == "ok"
    with pytest.raises(errors.ValidationError) as info:
        call_with_retry(RetryPolicy(), flaky([errors.ValidationError("bad")])[0])
    assert info.value.attempts == 1


def test_each_retry_is_logged_at_debug(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    fn, _ = flaky([errors.ThrottledError("slow"), errors.InternalServerError("boom")])
    with caplog.at_level(logging.DEBUG, logger="bedrock_mistral.retry"):
        call_with_retry(RetryPolicy(sleep=sleeps), fn, operation="unit")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("attempt 1 failed (ThrottledError: slow)" in line for line in lines)
    assert any("attempt 2 failed (InternalServerError: boom)" in line for line in lines)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"max_attempts": True},
        {"initial_delay": -1},
        {"max_delay": -0.1},
        {"jitter": 1.5},
        {"max_total_seconds": -2},
    ],
    ids=str,
)
def test_bad_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError):
        RetryPolicy(**kwargs)
