"""Requests/s of serve's OpenAI face against its Bedrock face, same server, same backend.

One ``bedrock-mistral serve --backend echo`` runs in its own process. The clients are
plain keep-alive ``http.client`` connections (one per thread), the same for both faces, so
the figures compare the server's two faces and not two client libraries:

- Bedrock face: ``POST /model/{id}/invoke`` (and ``invoke-with-response-stream``) with the
  native text body, the prompt already formatted;
- OpenAI face: ``POST /v1/chat/completions`` (stream and not) with the messages, which the
  server validates and formats itself (what an OpenAI client sends).

Cells are interleaved (bedrock, openai, bedrock, ...) over several rounds. Prints, per
mode and client count, the best round of each face and their ratio (target: >= 0.90), the
median of the per-round ratios (each round's two cells run back to back, so on a shared
machine this pairs them under the same load), and the server's CPU time per request of
each face (median over rounds, all its threads, read from /proc on Linux: the figure least
moved by other jobs on the machine).

    python benchmarks/bench_serve_openai.py                  # 1000 requests a cell, 5 rounds
    python benchmarks/bench_serve_openai.py --requests 200 --rounds 2 --concurrency 1 8
    python benchmarks/bench_serve_openai.py --app-cpu       # no HTTP: the app's own CPU

``--app-cpu`` calls the ASGI app in-process, one non-streaming request at a time, the
backend called inline instead of on the thread pool, and prints each face's CPU time per
request (this thread's, best of the rounds): what the faces themselves cost, without the
HTTP server, the thread hand-off and the client, which both faces share.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

MODEL_ID = "mistral.mistral-7b-instruct-v0:2"
QUESTION = "Name three reasons why a local OpenAI-compatible server makes integration tests cheaper"
MESSAGES = [{"role": "user", "content": QUESTION}]


def start_server() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "bedrock_mistral", "serve", "--backend", "echo", "--port", "0",
               "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = re.search(r"http://\S+", process.stdout.readline())
    if match is None:
        process.kill()
        raise SystemExit("the server did not print its URL")
    return process, match.group(0)


def make_call(face: str, stream: bool, url: str) -> Callable[[], bytes]:
    """One request on its own keep-alive connection; returns the response body."""
    from bedrock_mistral.prompt import format_prompt

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    if face == "bedrock":
        operation = "invoke-with-response-stream" if stream else "invoke"
        path = f"/model/{quote(MODEL_ID, safe='')}/{operation}"
        body = json.dumps({"prompt": format_prompt(MESSAGES), "max_tokens": 64}).encode()
    else:
        path = "/v1/chat/completions"
        payload = {"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 64, "stream": stream}
        body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}

    def call() -> bytes:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{face}: {response.status} {data[:200]!r}")
        return data

    return call


def server_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, all its threads (None off Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(face: str, stream: bool, concurrency: int, url: str, total: int) -> float:
    calls = [make_call(face, stream, url) for _ in range(concurrency)]
    for call in calls:  # open and warm each connection
        call()
    per_thread = total // concurrency
    barrier = threading.Barrier(concurrency + 1)

    def worker(call: Callable[[], bytes]) -> None:
        barrier.wait()
        for _ in range(per_thread):
            call()

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return per_thread * concurrency / (time.perf_counter() - started)


def app_cpu(requests: int, rounds: int) -> None:
    """Each face's own CPU per non-streaming request, in-process (see the module docstring)."""
    from bedrock_mistral.backends.factory import create_backend
    from bedrock_mistral.prompt import format_prompt
    from bedrock_mistral.server.app import create_app

    app = create_app(create_backend("echo"))

    async def inline(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    app.runner.call = inline  # type: ignore[method-assign]
    bedrock_body = {"prompt": format_prompt(MESSAGES), "max_tokens": 64}
    openai_body = {"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 64}
    cells = {
        "bedrock": (f"/model/{quote(MODEL_ID, safe='')}/invoke", bedrock_body),
        "openai": ("/v1/chat/completions", openai_body),
    }

    async def cell(face: str) -> float:
        path, payload = cells[face]
        body = json.dumps(payload).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> MutableMapping[str, Any]:
            return message

        async def send(event: MutableMapping[str, Any]) -> None:
            if event["type"] == "http.response.start" and event["status"] != 200:
                raise RuntimeError(f"{face}: {event['status']}")

        started = time.thread_time()
        for _ in range(requests):
            await app(scope, receive, send)
        return (time.thread_time() - started) / requests * 1e6

    async def run() -> dict[str, float]:
        best: dict[str, float] = {}
        for round_ in range(rounds):
            for face in ("bedrock", "openai") if round_ % 2 == 0 else ("openai", "bedrock"):
                best[face] = min(best.get(face, float("inf")), await cell(face))
        return best

    best = asyncio.run(run())
    print("| face | app CPU µs/request |\n|---|---|")
    for face, micros in best.items():
        print(f"| {face} | {micros:.1f} |")
    print(f"OpenAI face - Bedrock face: {best['openai'] - best['bedrock']:.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--app-cpu", action="store_true", help="in-process, no HTTP")
    args = parser.parse_args()
    if args.app_cpu:
        app_cpu(args.requests, max(args.rounds, 10))
        return

    process, url = start_server()
    rates: dict[tuple[bool, int, str], list[float]] = {}
    cpu: dict[tuple[bool, int, str], list[float]] = {}
    try:
        for round_ in range(args.rounds):
            # Each round swaps which face goes first, so neither always runs on a warmer server.
            faces = ("bedrock", "openai") if round_ % 2 == 0 else ("openai", "bedrock")
            for stream in (False, True):
                for concurrency in args.concurrency:
                    for face in faces:
                        key = (stream, concurrency, face)
                        before = server_cpu_s(process.pid)
                        rates.setdefault(key, []).append(
                            run_cell(face, stream, concurrency, url, args.requests)
                        )
                        after = server_cpu_s(process.pid)
                        if before is not None and after is not None:
                            cpu.setdefault(key, []).append((after - before) / args.requests * 1e6)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)

    print(
        "| mode | clients | Bedrock face (req/s) | OpenAI face (req/s) | OpenAI / Bedrock "
        "| median ratio | server CPU µs/req Bedrock / OpenAI |"
    )
    print("|---|---|---|---|---|---|---|")
    for stream in (False, True):
        for concurrency in args.concurrency:
            bedrock = rates[(stream, concurrency, "bedrock")]
            openai = rates[(stream, concurrency, "openai")]
            paired = statistics.median(o / b for o, b in zip(openai, bedrock, strict=True))
            cpu_b = cpu.get((stream, concurrency, "bedrock"))
            cpu_o = cpu.get((stream, concurrency, "openai"))
            cpu_cell = (
                f"{statistics.median(cpu_b):.0f} / {statistics.median(cpu_o):.0f}"
                if cpu_b and cpu_o
                else "-"
            )
            mode = "stream" if stream else "invoke"
            print(
                f"| {mode} | {concurrency} | {max(bedrock):.0f} | {max(openai):.0f} "
                f"| {max(openai) / max(bedrock):.2f} | {paired:.2f} | {cpu_cell} |"
            )


if __name__ == "__main__":
    main()
