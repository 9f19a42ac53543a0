"""Cold start of the ``bedrock-mistral`` command, as ratios to importing click and rich.

    python benchmarks/bench_cli.py               # 9 runs of each, medians
    python benchmarks/bench_cli.py --runs 15 --json

Each case is a fresh process, the way a user meets it; runs are interleaved (one of
each case per round) so a busy machine slows every case alike. Cases:

- peer: ``python -c "import click, rich"``, the floor for any click + rich CLI;
- ``bedrock-mistral --help`` (target: within 1.5x of the peer);
- ``bedrock-mistral ask`` over the Bedrock protocol (real boto3, SigV4, event stream)
  against the echo server on loopback, started once in this process;
- ``bedrock-mistral ask --backend echo``: the same command without boto3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bedrock_mistral.server.runner import serve_in_background

TARGET_HELP_RATIO = 1.5


def _script() -> list[str]:
    """The installed console script, as users run it (``python -m`` if it is missing)."""
    script = Path(sys.executable).with_name("bedrock-mistral")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bedrock_mistral"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_MISTRAL_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY="secret",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def run(runs: int) -> dict[str, dict[str, float]]:
    cli = _script()
    with tempfile.TemporaryDirectory() as tmp, serve_in_background(backend="echo") as url:
        env = _env(Path(tmp))
        cases = {
            "peer: import click, rich": [sys.executable, "-c", "import click, rich"],
            "bedrock-mistral --help": [*cli, "--help"],
            "ask (Bedrock protocol, echo server)": [
                *cli,
                "ask",
                "--endpoint-url",
                url,
                "hello there",
            ],
            "ask --backend echo": [*cli, "ask", "--backend", "echo", "hello there"],
        }
        for command in cases.values():  # warm the file cache, compile .pyc files
            _time(command, env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, command in cases.items():
                samples[name].append(_time(command, env))
    peer = statistics.median(samples["peer: import click, rich"])
    return {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "ratio": statistics.median(values) / peer,
        }
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=9, help="runs of each case (medians are reported)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = run(args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("| case | median | min | vs peer |\n|---|---:|---:|---:|")
        for name, row in results.items():
            median, low = row["median_s"] * 1000, row["min_s"] * 1000
            print(f"| {name} | {median:.0f} ms | {low:.0f} ms | {row['ratio']:.2f}x |")
    ratio = results["bedrock-mistral --help"]["ratio"]
    verdict = "meets" if ratio <= TARGET_HELP_RATIO else "misses"
    print(
        f"\n--help is {ratio:.2f}x the peer: {verdict} the {TARGET_HELP_RATIO}x target",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
