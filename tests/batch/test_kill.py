"""kill -9 a real ``bedrock-mistral batch`` at random moments; resume; nothing lost or doubled.

The server runs in this test's process (a thread); each batch run is a child process
pointed at it through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, killed with SIGKILL at a
seeded random point of its remaining work, so every kill lands mid-run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")]

RECORDS = 400


def prompt_for(index: int) -> str:
    return f"item {index}: repeat me verbatim"


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def start_batch(source: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bedrock_mistral",
            "batch",
            str(source),
            "-o",
            str(out),
            "-c",
            "16",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_midway(process: subprocess.Popen[str], out: Path, rng: random.Random) -> int:
    """SIGKILL at a random point of the remaining work: after 1 to a quarter of it is written."""
    before = count_lines(out)
    target = before + rng.randint(1, max(1, (RECORDS - before) // 4))
    deadline = time.monotonic() + 60
    while count_lines(out) < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return count_lines(out)


def test_killed_runs_resume_to_every_id_exactly_once(
    make_server: Callable[..., Any], tmp_path: Path
) -> None:
    server = make_server("echo", max_concurrency=8, latency_ms=10, faults={"throttle": 0.1}, seed=5)
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"id-{i}", "prompt": prompt_for(i)}) + "\n" for i in range(RECORDS)
        )
    )
    out = tmp_path / "out.jsonl"
    rng = random.Random(20240607)

    progress = []
    for _ in range(4):
        progress.append(kill_midway(start_batch(source, out, server), out, rng))
    with out.open("ab") as handle:  # as if the last kill had landed mid-write
        handle.write(b'{"id": "id-0", "text": "torn')
    final = start_batch(source, out, server, "--json")
    stdout, stderr = final.communicate(timeout=120)

    assert final.returncode == 0, stderr
    assert progress == sorted(progress)
    assert progress[0] > 0 and progress[-1] < RECORDS  # every kill landed mid-run
    assert "partial last line" in stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    counts = Counter(line["id"] for line in lines)
    assert counts == Counter(f"id-{i}" for i in range(RECORDS))  # every id, exactly once
    assert all(
        line["error"] is None and line["text"] == prompt_for(int(line["id"][3:])) for line in lines
    )
    summary = json.loads(stdout)
    assert summary["skipped"] == progress[-1] and summary["done"] == RECORDS - progress[-1]
