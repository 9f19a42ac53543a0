"""Cold start of ``bedrock-mistral ask --backend local`` on the bundled model, as a ratio to
``python -c "import torch"``.

    python benchmarks/bench_start.py               # 7 runs of each, medians
    python benchmarks/bench_start.py --runs 11 --json
    git archive OLD | tar -x -C /tmp/old && python benchmarks/bench_start.py --baseline /tmp/old

Each case is a fresh process, the way a user meets it; runs are interleaved (one of each
case per round) so a busy machine slows every case alike. The ask answers one short question
in full (load, tokenise, prefill, decode, print). Target (issue 12): at most 1.6x the peer.
``--baseline DIR`` adds the same ask run from another source tree (``PYTHONPATH=DIR``), e.g.
the commit before a change, to the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench_cli import _env, _script, _time  # same fresh-process harness as the CLI benchmark

TARGET_RATIO = 1.6
PEER = "peer: import torch"


ASK = "ask --backend local (bundled model)"


def run(runs: int, baseline: Path | None = None) -> dict[str, dict[str, float]]:
    cli = _script()
    cases = {
        PEER: [sys.executable, "-c", "import torch"],
        ASK: [
            *cli,
            "ask",
            "--backend",
            "local",
            "-o",
            "max_tokens=16",
            "What is the capital of France?",
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(Path(tmp))
        envs = dict.fromkeys(cases, env)
        if baseline is not None:
            name = f"{ASK}, baseline {baseline}"
            cases[name] = cases[ASK]
            envs[name] = env | {"PYTHONPATH": str(baseline.resolve())}
        for name, command in cases.items():  # warm the file cache, compile .pyc files
            _time(command, envs[name])
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, command in cases.items():
                samples[name].append(_time(command, envs[name]))
    peer = statistics.median(samples[PEER])
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
        "--runs", type=int, default=7, help="runs of each case (medians are reported)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another source tree to time the ask from"
    )
    args = parser.parse_args()
    results = run(args.runs, args.baseline)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("| case | median | min | vs peer |\n|---|---:|---:|---:|")
        for name, row in results.items():
            median, low = row["median_s"] * 1000, row["min_s"] * 1000
            print(f"| {name} | {median:.0f} ms | {low:.0f} ms | {row['ratio']:.2f}x |")
    ratio = results[ASK]["ratio"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"\nask is {ratio:.2f}x the peer: {verdict} the {TARGET_RATIO}x target", file=sys.stderr)


if __name__ == "__main__":
    main()
