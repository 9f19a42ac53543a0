"""run_batch in-process: a scripted backend that implements the real Backend protocol.

The backend answers with the last user turn (like echo) unless the record's prompt
scripts otherwise, and keeps a history of every call and the peak number in flight.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bedrock_mistral.backends.echo import EchoBackend, last_user_text
from bedrock_mistral.batch import BatchRecord, DuplicateIdError, run_batch
from bedrock_mistral.client import MistralClient
from bedrock_mistral.errors import (
    AccessDeniedError,
    InternalServerError,
    ThrottledError,
)
from bedrock_mistral.retry import RetryPolicy
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta

FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.004, jitter=0.0)

# prompt -> (attempt number, 1-based) -> an error to raise, or None to answer
Script = Callable[[str, int], Exception | None]


@dataclass
class ScriptedBackend:
    script: Script = lambda prompt, attempt: None
    delay: Callable[[str], float] = lambda prompt: 0.0
    name: str = "scripted"
    calls: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, request: CompletionRequest) -> Completion:
        text = last_user_text(request)
        with self._lock:
            self.calls[text] += 1
            attempt = self.calls[text]
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay(text))
            error = self.script(text, attempt)
            if error is not None:
                raise error
            return EchoBackend().complete(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        raise NotImplementedError


def client_for(backend: ScriptedBackend, policy: RetryPolicy = FAST) -> MistralClient:
    return MistralClient(backend=backend, retry=policy)


def throttled() -> ThrottledError:
    return ThrottledError("Too many requests", code="ThrottlingException", status_code=429)


def test_every_record_once_with_its_own_answer() -> None:
    backend = ScriptedBackend()
    records = [{"id": f"r{i}", "prompt": f"answer number {i}"} for i in range(300)]
    with run_batch(client_for(backend), records, concurrency=8) as run:
        results = list(run)
    assert sorted(str(r.id) for r in results) == sorted(f"r{i}" for i in range(300))
    assert all(r.ok and r.text == f"answer number {str(r.id)[1:]}" for r in results)
    assert set(backend.calls.values()) == {1}
    assert run.stats.done == 300 and run.stats.failed == 0
    assert run.stats.output_tokens == 900
    assert backend.peak <= 8


def test_results_come_in_completion_order() -> None:
    backend = ScriptedBackend(delay=lambda prompt: 0.3 if prompt == "slow" else 0.0)
    records = [{"id": "slow", "prompt": "slow"}] + [
        {"id": i, "prompt": f"fast {i}"} for i in range(5)
    ]
    results = list(run_batch(client_for(backend), records, concurrency=4, adaptive=False))
    assert results[-1].id == "slow"


def test_throttles_are_retried_and_seen_by_the_limiter() -> None:
    def script(prompt: str, attempt: int) -> Exception | None:
        return throttled() if prompt.endswith("odd") and attempt <= 2 else None

    backend = ScriptedBackend(script=script)
    records = [{"id": i, "prompt": f"{i} {'odd' if i % 2 else 'even'}"} for i in range(20)]
    run = run_batch(client_for(backend), records, concurrency=4)
    results = {r.id: r for r in run}
    assert all(r.ok for r in results.values())
    assert {i: results[i].attempts for i in (0, 1, 2, 3)} == {0: 1, 1: 3, 2: 1, 3: 3}
    assert run.limiter.throttles == 20  # 10 odd records x 2 throttles
    assert run.stats.attempts == 40


def test_transient_errors_get_max_attempts_then_the_error_is_the_result() -> None:
    backend = ScriptedBackend(
        script=lambda prompt, attempt: InternalServerError("boom", status_code=500)
    )
    (result,) = run_batch(client_for(backend), [{"id": "x", "prompt": "p"}], max_attempts=4)
    assert not result.ok and result.attempts == 4
    assert result.error is not None
    assert (result.error.type, result.error.status_code) == ("InternalServerError", 500)
    assert backend.calls["p"] == 4
    assert result.to_dict()["error"] == {
        "type": "InternalServerError",
        "message": "boom",
        "status_code": 500,
    }


def test_permanent_errors_are_not_retried() -> None:
    backend = ScriptedBackend(
        script=lambda prompt, attempt: AccessDeniedError("no access", status_code=403)
    )
    (result,) = run_batch(client_for(backend), [{"id": "x", "prompt": "p"}])
    assert (
        result.attempts == 1
        and result.error is not None
        and result.error.type == "AccessDeniedError"
    )


def test_max_attempts_one_retries_nothing_not_even_throttles() -> None:
    backend = ScriptedBackend(script=lambda prompt, attempt: throttled())
    (result,) = run_batch(client_for(backend), [{"id": "x", "prompt": "p"}], max_attempts=1)
    assert (
        result.attempts == 1 and result.error is not None and result.error.type == "ThrottledError"
    )


def test_throttles_do_not_use_up_attempts_but_stop_at_the_time_budget() -> None:
    backend = ScriptedBackend(script=lambda prompt, attempt: throttled() if attempt <= 6 else None)
    (result,) = run_batch(client_for(backend), [{"id": "x", "prompt": "p"}], max_attempts=2)
    assert result.ok and result.attempts == 7  # 6 throttles, then an answer

    budget = RetryPolicy(
        max_attempts=3, initial_delay=0.02, max_delay=0.02, jitter=0.0, max_total_seconds=0.1
    )
    stuck = ScriptedBackend(script=lambda prompt, attempt: throttled())
    (result,) = run_batch(client_for(stuck, budget), [{"id": "x", "prompt": "p"}])
    assert result.error is not None and result.error.type == "ThrottledError"
    assert 3 <= result.attempts <= 7  # about 0.1 s / 0.02 s, whatever max_attempts says

    no_budget = RetryPolicy(
        max_attempts=2, initial_delay=0.001, max_delay=0.001, max_total_seconds=None
    )
    (result,) = run_batch(client_for(stuck, no_budget), [{"id": "y", "prompt": "q"}])
    assert result.attempts == 8  # 4 x max_attempts throttles


def test_a_record_in_backoff_frees_its_slot() -> None:
    def script(prompt: str, attempt: int) -> Exception | None:
        if prompt == "throttled" and attempt == 1:
            return ThrottledError("slow down", status_code=429, retry_after=0.5)
        return None

    backend = ScriptedBackend(
        script=script, delay=lambda prompt: 0.0 if prompt == "throttled" else 0.1
    )
    records = [{"id": "t", "prompt": "throttled"}] + [
        {"id": i, "prompt": f"other {i}"} for i in range(4)
    ]
    results = list(run_batch(client_for(backend), records, concurrency=2, adaptive=False))
    assert results[-1].id == "t" and results[-1].attempts == 2
    assert backend.peak == 2  # the other records ran two at a time while "t" waited


def test_in_flight_never_exceeds_the_concurrency() -> None:
    backend = ScriptedBackend(delay=lambda prompt: 0.01)
    records = [{"id": i, "prompt": f"p{i}"} for i in range(40)]
    run = run_batch(client_for(backend), records, concurrency=3, adaptive=False)
    assert len(list(run)) == 40
    assert backend.peak == 3


def test_duplicate_ids_raise_before_any_request() -> None:
    backend = ScriptedBackend()
    with pytest.raises(DuplicateIdError):
        run_batch(client_for(backend), [{"id": 1, "prompt": "a"}, {"id": "1", "prompt": "b"}])
    assert not backend.calls


def test_bad_records_are_results_and_nothing_is_sent_for_them() -> None:
    backend = ScriptedBackend()
    records: list[dict[str, Any]] = [
        {"id": "ok", "prompt": "fine"},
        {"id": "too-long", "prompt": "x", "max_tokens": 100_000},  # beyond mistral-7b's 8,192
        {"prompt": "no id"},
    ]
    results = {r.where: r for r in run_batch(client_for(backend), records)}
    assert results["line 1 (id 'ok')"].ok
    refused = results["line 2 (id 'too-long')"]
    assert refused.attempts == 0 and refused.error is not None
    assert refused.error.type == "ValidationError" and "max_tokens" in refused.error.message
    problem = results["line 3"]
    assert problem.error is not None and problem.error.type == "InputError"
    assert problem.to_dict()["line"] == 3 and problem.to_dict()["id"] is None
    assert list(backend.calls) == ["fine"]


def test_unexpected_exceptions_fail_the_record_not_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def script(prompt: str, attempt: int) -> Exception | None:
        return RuntimeError("bug in a plugin") if prompt == "bad" else None

    records = [{"id": "a", "prompt": "bad"}, {"id": "b", "prompt": "good"}]
    results = {r.id: r for r in run_batch(client_for(ScriptedBackend(script=script)), records)}
    assert results["b"].ok
    assert results["a"].error is not None
    assert (
        results["a"].error.type == "RuntimeError"
        and "bug in a plugin" in results["a"].error.message
    )
    assert "unexpected error" in caplog.text


def test_skip_resumes_and_default_params_apply_under_the_records_own() -> None:
    backend = ScriptedBackend()
    records: list[dict[str, Any]] = [
        {"id": "done", "prompt": "already done"},
        {"id": "a", "prompt": "one two three four five"},
        {"id": "b", "prompt": "one two three four five", "max_tokens": 4},
        {"prompt": "bad line already written"},
    ]
    run = run_batch(
        client_for(backend), records, params={"max_tokens": 2}, skip={"done"}, skip_lines={4}
    )
    results = {r.id: r for r in run}
    assert set(results) == {"a", "b"}
    assert results["a"].text == "one two" and results["a"].stop_reason == "length"
    assert results["b"].text == "one two three four"
    assert run.stats.skipped == 2 and run.stats.total == 2


def test_closing_early_stops_the_workers() -> None:
    backend = ScriptedBackend(delay=lambda prompt: 0.01)
    run = run_batch(
        client_for(backend), [{"id": i, "prompt": f"p{i}"} for i in range(200)], concurrency=4
    )
    first = [next(run) for _ in range(5)]
    run.close()
    time.sleep(0.1)
    sent = sum(backend.calls.values())
    time.sleep(0.1)
    assert sum(backend.calls.values()) == sent < 200  # nothing new starts after close
    assert len(first) == 5
    with pytest.raises(StopIteration):
        next(run)


def test_batch_records_and_plain_strings_work_too() -> None:
    backend = ScriptedBackend()
    results = list(run_batch(client_for(backend), ["first", BatchRecord(id="r", prompt="second")]))
    assert sorted((str(r.id), r.text) for r in results) == [("0", "first"), ("r", "second")]


def test_client_batch_method_runs_every_record_once(echo_server: Any) -> None:
    client = MistralClient(backend="bedrock", endpoint_url=str(echo_server))
    records = [{"id": f"r{i}", "prompt": f"say {i}"} for i in range(12)]
    results = list(client.batch(records, concurrency=4, params={"max_tokens": 8}))
    assert sorted(r.id for r in results) == sorted(f"r{i}" for i in range(12))
    assert {r.id: r.text for r in results} == {f"r{i}": f"say {i}" for i in range(12)}
    assert all(r.error is None for r in results)
