"""Many concurrent streams from one process: AsyncMistralClient against MistralClient on threads.

``bedrock-mistral serve --backend echo --latency-ms 200`` runs in its own process (its GIL
is not ours). In this one, the same requests go through

- async: one ``AsyncMistralClient``, ``--streams`` (256) streams in flight at once on one
  event loop;
- sync: one ``MistralClient`` shared by ``--threads`` (64) threads, each streaming in turn.

Reported per client: throughput (streams/s), CPU seconds of this process per stream
(``time.process_time``), and p50/p99 time to first delta, measured from the moment a
stream is started (for the sync client: when a thread takes it, so queueing for a
thread is not counted against it). Rounds alternate (sync, async, ...) and the best
round of each is kept, which damps the noise of a shared machine.

    python benchmarks/bench_async.py                          # 1024 streams a round, 2 rounds
    python benchmarks/bench_async.py --requests 512 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

QUESTION = "Name three reasons why one event loop can hold many streams open at once"


@dataclass(frozen=True)
class Result:
    client: str
    streams: int
    streams_per_s: float
    cpu_ms_per_stream: float
    ttfd_p50_ms: float
    ttfd_p99_ms: float


def start_server(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    command = [sys.executable, "-m", "bedrock_mistral", "serve", "--backend", "echo", "--port", "0",
               "--latency-ms", str(latency_ms), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = re.search(r"http://\S+", process.stdout.readline())
    if match is None:
        process.kill()
        raise SystemExit("the server did not print its URL")
    return process, match.group(0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(client: str, ttfd: list[float], wall: float, cpu: float) -> Result:
    return Result(
        client=client,
        streams=len(ttfd),
        streams_per_s=round(len(ttfd) / wall, 1),
        cpu_ms_per_stream=round(cpu / len(ttfd) * 1000.0, 3),
        ttfd_p50_ms=round(statistics.median(ttfd) * 1000.0, 1),
        ttfd_p99_ms=round(percentile(ttfd, 0.99) * 1000.0, 1),
    )


def run_sync(url: str, total: int, threads: int) -> Result:
    from bedrock_mistral import MistralClient

    client = MistralClient(backend="bedrock", endpoint_url=url, max_pool_connections=threads)
    "".join(client.stream(QUESTION))  # warm: boto3 clients and a connection
    ttfd: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        started = time.perf_counter()
        first = None
        text = []
        for piece in client.stream(QUESTION):
            first = first or time.perf_counter()
            text.append(piece)
        assert "".join(text) == QUESTION and first is not None
        with lock:
            ttfd.append(first - started)

    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(total)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    client.close()
    return summarise(f"sync, {threads} threads", ttfd, wall, cpu)


def run_async(url: str, total: int, streams: int) -> Result:
    from bedrock_mistral import AsyncMistralClient

    async def main() -> Result:
        client = AsyncMistralClient(backend="bedrock", endpoint_url=url)
        async with client.stream(QUESTION) as warm:  # warm: credentials, endpoint, a connection
            await warm.until_done()
        gate = asyncio.Semaphore(streams)
        ttfd: list[float] = []

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                first = None
                text = []
                async with client.stream(QUESTION) as stream:
                    async for piece in stream:
                        first = first or time.perf_counter()
                        text.append(piece)
                assert "".join(text) == QUESTION and first is not None
                ttfd.append(first - started)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await client.close()
        return summarise(f"async, {streams} streams", ttfd, wall, cpu)

    return asyncio.run(main())


def best(results: list[Result]) -> Result:
    return max(results, key=lambda r: r.streams_per_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1024, help="streams per round and client")
    parser.add_argument("--streams", type=int, default=256, help="async streams in flight")
    parser.add_argument("--threads", type=int, default=64, help="sync client threads")
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    process, url = start_server(args.latency_ms)
    try:
        runs: dict[str, list[Result]] = {"sync": [], "async": []}
        for _ in range(args.rounds):
            runs["sync"].append(run_sync(url, args.requests, args.threads))
            runs["async"].append(run_async(url, args.requests, args.streams))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    sync, aio = best(runs["sync"]), best(runs["async"])
    if args.json:
        print(json.dumps({"sync": asdict(sync), "async": asdict(aio)}, indent=2))
        return
    print(f"{args.requests} streams a round, server latency {args.latency_ms} ms, "
          f"best of {args.rounds} round(s)")  # fmt: skip
    header = f"{'client':<20} {'streams/s':>10} {'CPU ms/stream':>14} {'TTFD p50':>9} {'p99':>8}"
    print(header)
    for r in (sync, aio):
        print(f"{r.client:<20} {r.streams_per_s:>10} {r.cpu_ms_per_stream:>14} "
              f"{r.ttfd_p50_ms:>9} {r.ttfd_p99_ms:>8}")  # fmt: skip
    print(f"async/sync throughput: {aio.streams_per_s / sync.streams_per_s:.2f}x; "
          f"CPU per stream: {aio.cpu_ms_per_stream / sync.cpu_ms_per_stream:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
