"""Batch runs over real HTTP: boto3 -> our Bedrock-compatible server (echo backend) on loopback.

The server refuses with ThrottlingException beyond 8 requests in flight and, on top,
throttles 10% of requests at random (seeded), as in ``bedrock-mistral serve --backend echo
--max-concurrency 8 --fault throttle=0.1``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bedrock_mistral.batch import run_batch
from bedrock_mistral.cli import cli
from bedrock_mistral.client import MistralClient
from bedrock_mistral.retry import RetryPolicy

QUICK_RETRIES = RetryPolicy(initial_delay=0.05, max_delay=0.5)


def prompt_for(index: int) -> str:
    return f"record {index}: say exactly this"


def test_every_record_done_exactly_once_with_the_right_text(
    make_server: Callable[..., Any],
) -> None:
    server = make_server("echo", max_concurrency=8, faults={"throttle": 0.1}, seed=7)
    client = MistralClient(backend="bedrock", endpoint_url=server, retry=QUICK_RETRIES)
    records = [{"id": i, "prompt": prompt_for(i)} for i in range(300)]
    with client, run_batch(client, records, concurrency=32) as run:
        results = list(run)
    assert Counter(r.id for r in results) == Counter(range(300))
    assert all(r.ok and r.text == prompt_for(int(str(r.id))) for r in results)
    served = [req for req in server.stats.requests if req.operation == "invoke"]
    assert sum(r.attempts for r in results) == len(served)  # our attempts = what crossed the wire
    assert sum(1 for req in served if req.status == 200) == 300
    assert run.limiter.throttles == sum(1 for req in served if req.status == 429) > 0
    assert server.stats.peak_in_flight <= 8


def test_the_adaptive_limit_reaches_and_holds_near_the_server_limit(
    make_server: Callable[..., Any],
) -> None:
    server = make_server("echo", max_concurrency=8, latency_ms=40, faults={"throttle": 0.1}, seed=3)
    client = MistralClient(backend="bedrock", endpoint_url=server, retry=QUICK_RETRIES)
    records = [{"id": i, "prompt": prompt_for(i)} for i in range(400)]
    with client, run_batch(client, records, concurrency=32) as run:
        results = list(run)
        elapsed = run.stats.elapsed
    assert sum(r.ok for r in results) == 400
    history = run.limiter.history
    reached = next(change.seconds for change in history if change.limit >= 8)
    assert reached < elapsed / 3  # it gets there early (the clock includes client setup)...
    later = [change.limit for change in history if change.seconds >= elapsed / 3]
    held = run.limiter.mean_limit(since=elapsed / 3, until=elapsed * 0.9)
    assert 7.0 <= held <= 9.5, history  # ...and holds near 8, not sawing between 1 and 32
    assert min(later) >= 4 and max(later) <= 12, history
    assert server.stats.peak_in_flight == 8
    refused_for_load = sum(
        1 for req in server.stats.requests if req.status == 429 and req.fault is None
    )
    assert refused_for_load < 0.1 * len(server.stats.requests)


def test_cli_uses_the_endpoint_from_the_environment_and_resumes(
    make_server: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server("echo", max_concurrency=8, faults={"throttle": 0.1}, seed=11)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    source = tmp_path / "prompts.txt"
    source.write_text("".join(prompt_for(i) + "\n" for i in range(1, 101)))
    out = tmp_path / "out.jsonl"
    out.write_text(
        json.dumps({"id": 5, "text": prompt_for(5), "error": None}) + "\n"
    )  # done before

    result = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out), "-c", "16", "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (99, 1, 0)
    assert summary["output"] == {"path": str(out), "results": 100, "failed": 0}
    assert "resuming: 1 records already in" in result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == list(range(1, 101))
    assert all(line["text"] == prompt_for(line["id"]) for line in lines)
    assert sum(1 for req in server.stats.requests if req.status == 200) == 99
