"""Batch throughput against the echo server: how close to the ideal, and nothing lost or doubled.

    python benchmarks/bench_batch.py                      # 1,000 records, 50 ms, 16 at once
    python benchmarks/bench_batch.py --records 3000 --concurrency 64

The server (``bedrock-mistral serve --backend echo --latency-ms 50 --max-concurrency 16``)
runs in its own process, so its work does not share our GIL. Three timings, same run:

- ideal: records x latency / server limit (no overhead at all);
- peer: raw boto3 InvokeModel calls from a pool of exactly ``max_concurrency`` threads,
  the best a hand-written script that already knows the limit can do;
- batch: ``run_batch`` with adaptive concurrency (it must find the limit itself), writing
  every result through the crash-safe ``ResultWriter``.

It then checks the output holds every id exactly once, and prints the in-flight limit
over time (sampled every 100 ms).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bedrock_mistral.batch import ResultWriter, run_batch
from bedrock_mistral.client import MistralClient

MODEL_ID = "mistral.mistral-7b-instruct-v0:2"


@contextmanager
def echo_server(latency_ms: float, max_concurrency: int) -> Iterator[str]:
    command = [
        sys.executable, "-m", "bedrock_mistral", "serve", "--backend", "echo", "--port", "0",
        "--latency-ms", str(latency_ms), "--max-concurrency", str(max_concurrency),
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                yield match.group(0)
                return
        raise SystemExit("the server did not print its URL")
    finally:
        process.terminate()
        process.wait(timeout=10)


def prompt_for(index: int) -> str:
    return f"record {index} of the benchmark"


def peer_seconds(url: str, records: int, threads: int) -> float:
    """Raw boto3 from a fixed pool sized to the server's limit."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        max_pool_connections=threads,
        retries={"total_max_attempts": 1},
        signature_version=UNSIGNED,  # loopback: no credentials needed, same as the SDK
    )
    client = boto3.client(
        "bedrock-runtime", endpoint_url=url, region_name="us-east-1", config=config
    )

    def call(index: int) -> str:
        body = json.dumps({"prompt": f"<s> [INST] {prompt_for(index)} [/INST]", "max_tokens": 64})
        reply = client.invoke_model(modelId=MODEL_ID, body=body)
        return str(json.loads(reply["body"].read())["outputs"][0]["text"])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, range(threads)))  # warm the connection pool
        started = time.perf_counter()
        answers = list(pool.map(call, range(records)))
        elapsed = time.perf_counter() - started
    assert answers == [prompt_for(i) for i in range(records)]
    return elapsed


def batch_run(url: str, records: int, concurrency: int, out: Path) -> dict[str, Any]:
    client = MistralClient(backend="bedrock", endpoint_url=url, max_pool_connections=concurrency)
    client.chat("warm up")
    items = [{"id": i, "prompt": prompt_for(i)} for i in range(records)]
    samples: list[tuple[float, int, int]] = []
    with ResultWriter(out) as writer:
        run = run_batch(client, items, concurrency=concurrency, params={"max_tokens": 64})
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                samples.append((run.stats.elapsed, run.limiter.limit, run.in_flight))

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        for result in run:
            writer.write(result.to_dict())
        elapsed = time.perf_counter() - started
        stop.set()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    counts = Counter(line["id"] for line in lines)
    return {
        "seconds": elapsed,
        "lost": records - len(counts),
        "duplicated": sum(n - 1 for n in counts.values()),
        "wrong_text": sum(1 for line in lines if line["text"] != prompt_for(line["id"])),
        "throttles": run.limiter.throttles,
        "mean_limit_second_half": round(run.limiter.mean_limit(elapsed / 2, elapsed), 2),
        "attempts": run.stats.attempts,
        "history": [(round(c.seconds, 3), c.limit) for c in run.limiter.history],
        "samples": samples,
    }


def timeline(samples: list[tuple[float, int, int]], width: int = 32) -> str:
    rows = ["   t (s)  limit  in flight"]
    for seconds, limit, in_flight in samples:
        bar = "#" * min(in_flight, width)
        rows.append(f"  {seconds:6.1f}  {limit:5d}  {in_flight:9d}  {bar}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--max-concurrency", type=int, default=16, help="the server's limit")
    parser.add_argument("--concurrency", type=int, default=16, help="the batch's ceiling")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--server-url",
        help="use this running server (started with the same latency and limit) instead of one",
    )
    args = parser.parse_args()

    ideal = args.records * args.latency_ms / 1000 / args.max_concurrency
    server: AbstractContextManager[str] = echo_server(args.latency_ms, args.max_concurrency)
    if args.server_url:
        server = nullcontext(args.server_url)
    with server as url, tempfile.TemporaryDirectory() as tmp:
        peer = peer_seconds(url, args.records, args.max_concurrency)
        result = batch_run(url, args.records, args.concurrency, Path(tmp) / "out.jsonl")

    print(f"{args.records} records, server latency {args.latency_ms:g} ms, server limit "
          f"{args.max_concurrency}, batch ceiling {args.concurrency}")  # fmt: skip
    print(f"  ideal      {ideal:6.2f} s")
    print(f"  raw boto3  {peer:6.2f} s  ({peer / ideal:.2f} x ideal)")
    print(f"  batch      {result['seconds']:6.2f} s  ({result['seconds'] / ideal:.2f} x ideal, "
          f"{result['seconds'] / peer:.2f} x raw boto3)")  # fmt: skip
    print(f"  lost {result['lost']}, duplicated {result['duplicated']}, "
          f"wrong text {result['wrong_text']}, throttled {result['throttles']}, "
          f"requests {result['attempts']}")  # fmt: skip
    print(f"  in-flight limit: mean {result['mean_limit_second_half']} over the second half; "
          f"changes (s, limit): {result['history']}")  # fmt: skip
    print(timeline(result["samples"]))
    target = "met" if result["seconds"] <= ideal * 1.15 else "MISSED"
    print(f"target (within 15% of ideal): {target}")
    if args.json:
        figures = {k: v for k, v in result.items() if k not in ("samples",)}
        print(json.dumps({"ideal": ideal, "peer": peer, **figures}))
    if result["lost"] or result["duplicated"] or result["wrong_text"]:
        raise SystemExit("records were lost, duplicated or wrong")


if __name__ == "__main__":
    main()
