"""Throughput and latency of the SDK against raw boto3, both talking to `bedrock-mistral serve`.

The server (echo backend) runs in its own process so it does not share a GIL with the
clients. For 1, 8 and 32 concurrent clients (one thread and one client object each),
streaming and not, the same number of requests goes through

- raw boto3: ``invoke_model`` / ``invoke_model_with_response_stream`` with a hand-built body;
- the SDK: ``MistralClient(backend="bedrock", endpoint_url=url).chat`` / ``.stream``.

Cells are interleaved (raw, SDK, raw, SDK, ...) over several rounds and the best round of
each is kept, which damps the noise of a shared machine. Prints a table and the SDK/raw
throughput ratio (target: >= 0.95).

    python benchmarks/bench_server.py                 # defaults: 400 requests a cell, 3 rounds
    python benchmarks/bench_server.py --requests 200 --rounds 2 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODEL_ID = "mistral.mistral-7b-instruct-v0:2"
QUESTION = (
    "Name three reasons why a local Bedrock-compatible server makes integration tests cheaper"
)
MESSAGES = [{"role": "user", "content": QUESTION}]


@dataclass(frozen=True)
class Cell:
    mode: str  # "invoke" or "stream"
    concurrency: int
    client: str  # "boto3" or "sdk"


@dataclass(frozen=True)
class Result:
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def start_server() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    command = [sys.executable, "-m", "bedrock_mistral", "serve", "--backend", "echo", "--port", "0",
               "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = re.search(r"http://\S+", process.stdout.readline())
    if match is None:
        process.kill()
        raise SystemExit("the server did not print its URL")
    return process, match.group(0)


def raw_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=4)
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=config,
    )


def make_call(cell: Cell, url: str) -> Callable[[], str]:
    """One request of ``cell``, returning the reply text (built before timing starts)."""
    if cell.client == "boto3":
        from bedrock_mistral.prompt import format_prompt

        client = raw_client(url)
        body = json.dumps({"prompt": format_prompt(MESSAGES), "max_tokens": 64})
        if cell.mode == "invoke":

            def invoke() -> str:
                reply = client.invoke_model(modelId=MODEL_ID, body=body)
                return str(json.loads(reply["body"].read())["outputs"][0]["text"])

            return invoke

        def stream() -> str:
            reply = client.invoke_model_with_response_stream(modelId=MODEL_ID, body=body)
            parts = [json.loads(e["chunk"]["bytes"])["outputs"][0]["text"] for e in reply["body"]]
            return "".join(parts)

        return stream

    from bedrock_mistral import MistralClient

    sdk = MistralClient(model=MODEL_ID, backend="bedrock", endpoint_url=url, region="us-east-1")
    if cell.mode == "invoke":
        return lambda: sdk.chat(MESSAGES, max_tokens=64).text

    def sdk_stream() -> str:
        with sdk.stream(MESSAGES, max_tokens=64) as events:
            return "".join(str(delta) for delta in events)

    return sdk_stream


def run_cell(cell: Cell, url: str, total: int) -> Result:
    calls = [make_call(cell, url) for _ in range(cell.concurrency)]
    for call in calls:  # warm each connection pool
        assert call() == QUESTION, "unexpected reply from the echo backend"
    per_thread = max(1, total // cell.concurrency)
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(cell.concurrency + 1)

    def worker(call: Callable[[], str]) -> None:
        mine = []
        barrier.wait()
        for _ in range(per_thread):
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        requests_per_s=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per cell and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the best is kept"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    process, url = start_server()
    best: dict[Cell, Result] = {}
    try:
        for _ in range(args.rounds):
            for mode in ("invoke", "stream"):
                for concurrency in args.concurrency:
                    for client in ("boto3", "sdk"):
                        cell = Cell(mode, concurrency, client)
                        result = run_cell(cell, url, args.requests)
                        if cell not in best or result.requests_per_s > best[cell].requests_per_s:
                            best[cell] = result
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    print(
        f"echo backend, {args.requests} requests a cell, best of {args.rounds} interleaved rounds"
    )
    print(f"{'mode':<7} {'clients':>7} | {'boto3 req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'SDK req/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'SDK/boto3':>9}")  # fmt: skip
    ratios = []
    for mode in ("invoke", "stream"):
        for concurrency in args.concurrency:
            raw, sdk = best[Cell(mode, concurrency, "boto3")], best[Cell(mode, concurrency, "sdk")]
            ratio = sdk.requests_per_s / raw.requests_per_s
            ratios.append(ratio)
            print(f"{mode:<7} {concurrency:>7} | {raw.requests_per_s:>11.0f} {raw.p50_ms:>7.1f} "
                  f"{raw.p99_ms:>7.1f} | {sdk.requests_per_s:>9.0f} {sdk.p50_ms:>7.1f} "
                  f"{sdk.p99_ms:>7.1f} | {ratio:>9.2f}")  # fmt: skip
    print(f"SDK throughput / raw boto3: min {min(ratios):.2f}, mean {statistics.mean(ratios):.2f} "
          f"(target >= 0.95)")  # fmt: skip


if __name__ == "__main__":
    main()
