"""Our ``openai`` backend against the raw ``openai`` client, both on the same OpenAI server.

The server is the loopback OpenAI-compatible test server (tests/helpers/openai_server.py,
echoing, uvicorn) in its own process, so it shares no GIL with the clients. For 1 and 8
concurrent clients (one thread each, one client object shared), the same number of calls
goes through

- raw: ``openai.OpenAI(base_url=url, max_retries=0).chat.completions.create(...)``
  (whole answers) and ``stream=True`` (time to the first text delta);
- ours: ``MistralClient(backend="openai", base_url=url).chat`` and ``.stream``.

Cells are interleaved (raw, ours, raw, ours) over several rounds; the best round of each
is kept. Prints calls/s, the median time to first delta, and ours/raw ratios (target:
throughput >= 0.95).

    python benchmarks/bench_openai.py                      # 300 calls a cell, 3 rounds
    python benchmarks/bench_openai.py --calls 100 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mistral:7b-instruct"
QUESTION = "Name three reasons why a local engine makes integration tests cheaper"
MESSAGES = [{"role": "user", "content": QUESTION}]

_SERVER = (
    "import sys, time\n"
    "from tests.helpers.openai_server import start_openai_server\n"
    "with start_openai_server() as s:\n"
    "    print(s.url, flush=True)\n"
    "    sys.stdin.read()\n"
)


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), **__import__("os").environ},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def run_cell(call: Callable[[], float | None], calls: int, concurrency: int) -> tuple[float, float]:
    """(calls per second, median seconds to first delta or 0) for ``calls`` calls."""
    per_thread = calls // concurrency
    firsts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(per_thread):
            first = call()
            if first is not None:
                with lock:
                    firsts.append(first)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return per_thread * concurrency / elapsed, statistics.median(firsts) if firsts else 0.0


def raw_calls(url: str) -> tuple[Callable[[], None], Callable[[], float], Any]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)

    def whole() -> None:
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=64)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == QUESTION

    def first() -> float:
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
        took = 0.0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and not took:
                took = time.perf_counter() - started
        return took

    return whole, first, client


def our_calls(url: str) -> tuple[Callable[[], None], Callable[[], float], Any]:
    from bedrock_mistral import MistralClient

    client = MistralClient(model=MODEL, backend="openai", base_url=url)

    def whole() -> None:
        assert client.chat(MESSAGES, max_tokens=64).text == QUESTION

    def first() -> float:
        started = time.perf_counter()
        took = 0.0
        for _ in client.stream(MESSAGES, max_tokens=64):
            if not took:
                took = time.perf_counter() - started
        return took

    return whole, first, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    proc, url = start_server()
    try:
        sides = {"raw openai": raw_calls(url), "ours": our_calls(url)}
        for whole, first, _ in sides.values():  # warm the pools and imports
            whole()
            first()
        print(f"server {url}; {args.calls} calls a cell, best of {args.rounds} rounds")
        print("| clients | side | calls/s | stream calls/s | first delta ms |")
        print("|---|---|---|---|---|")
        for concurrency in args.concurrency:
            best: dict[str, tuple[float, float, float]] = {}
            for _ in range(args.rounds):
                for name, (whole, first, _) in sides.items():
                    rate, _ = run_cell(lambda w=whole: w(), args.calls, concurrency)  # type: ignore[misc]
                    srate, ttfd = run_cell(first, args.calls, concurrency)
                    old = best.get(name)
                    if old is None or rate > old[0]:
                        best[name] = (rate, max(srate, old[1] if old else 0), ttfd)
            for name, (rate, srate, ttfd) in best.items():
                print(f"| {concurrency} | {name} | {rate:.0f} | {srate:.0f} | {ttfd * 1000:.2f} |")
            ratio = best["ours"][0] / best["raw openai"][0]
            sratio = best["ours"][1] / best["raw openai"][1]
            print(f"| {concurrency} | ours/raw | **{ratio:.2f}x** | **{sratio:.2f}x** | |")
        for _, _, client in sides.values():
            client.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
