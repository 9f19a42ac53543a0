"""``await client.batch(...)`` on the async client: the sync runner's limiter and decisions,
tasks instead of threads, and an output file that a second run resumes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bedrock_mistral import AsyncMistralClient, RetryPolicy
from bedrock_mistral.batch import BatchResult

pytestmark = pytest.mark.asyncio

QUICK_RETRIES = RetryPolicy(initial_delay=0.05, max_delay=0.5)


def prompt_for(index: int) -> str:
    return f"record {index}: say exactly this"


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_every_record_once_under_throttling_and_the_limiter_adapts(
    make_server: Callable[..., Any],
) -> None:
    server = make_server("echo", max_concurrency=8, faults={"throttle": 0.1}, seed=7)
    client = AsyncMistralClient(backend="bedrock", endpoint_url=str(server), retry=QUICK_RETRIES)
    records = [{"id": i, "prompt": prompt_for(i)} for i in range(200)]
    run = client.batch(records, concurrency=32)
    results: list[BatchResult] = await run
    assert Counter(r.id for r in results) == Counter(range(200))
    assert all(r.ok and r.text == prompt_for(int(str(r.id))) for r in results)
    assert run.limiter.throttles > 0 and run.limiter.cuts >= 1  # AIMD saw the service's limit
    assert run.stats.done == 200 and run.stats.failed == 0
    await client.close()


async def test_input_problems_and_refused_records_come_back_as_errors() -> None:
    client = AsyncMistralClient(backend="echo")
    records = [
        {"id": "ok", "prompt": "fine"},
        {"id": "bad"},
        {"id": "hot", "prompt": "x", "temperature": 9},
    ]
    results = {r.id: r for r in await client.batch(records)}
    assert results["ok"].text == "fine"
    assert results["bad"].error is not None and results["bad"].error.type == "InputError"
    assert results["hot"].error is not None and results["hot"].attempts == 0


async def test_a_stopped_run_resumes_from_its_output_file(tmp_path: Path) -> None:
    client = AsyncMistralClient(backend="echo")
    output = tmp_path / "out.jsonl"
    records = [{"id": f"r{i}", "prompt": prompt_for(i)} for i in range(30)]

    first = client.batch(records, output=output, concurrency=4)
    async for _ in first:
        if first.stats.finished == 7:
            break
    await first.close()
    assert len(lines(output)) == 7

    second = client.batch(records, output=output, concurrency=4)
    assert second.stats.skipped == 7
    results = await second
    assert len(results) == 23
    written = lines(output)
    assert Counter(line["id"] for line in written) == Counter(f"r{i}" for i in range(30))
    assert all(line["text"] == prompt_for(int(line["id"][1:])) for line in written)

    third = client.batch(records, output=output)
    assert await third == [] and third.stats.skipped == 30
