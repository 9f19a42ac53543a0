"""Resident memory while loading a GGUF file: peak and steady, as multiples of the file's size.

Each load runs in a fresh Python process, which imports torch and local_backend first, then
resets its high-water mark (writing 5 to /proc/self/clear_refs resets VmHWM to the current
resident size) and loads the file; it reports:

* before: resident memory after the imports (what the load starts from);
* peak: VmHWM after the load, i.e. the highest resident memory while loading;
* after: resident memory once loaded (anonymous and file-backed parts);
* held: the bytes of every tensor the model keeps (parameters, and the packed int8/int4
  kernel weights, which are plain attributes), each storage counted once.

Files (cached under ``--cache``) are a whole model of random, well-formed blocks in llama.cpp's
mixes (``tests/helpers/gguf_files.MIXES``: pure Q4_0, pure Q8_0, a Q4_K_M-like Q4_K/Q6_K mix),
'medium' shape by default (the issue's Mixtral: hidden 1024, 8 layers, 8 experts, vocab 32000).
``--baseline DIR`` also loads each file with another copy of ``local_backend`` (for example
``git archive main local_backend | tar -x -C DIR``), interleaved with ours round by round.

    python benchmarks/bench_gguf_memory.py
    python benchmarks/bench_gguf_memory.py --mix Q4_0 --baseline /tmp/main_src --rounds 3
    python benchmarks/bench_gguf_memory.py --threads 1   # steadier load times on a busy machine

Memory figures are nearly the same every round (the worst round is shown); load time moves
with the machine's load (the best round is shown: compare it with the baseline's). ``cpu s`` is
the load's user + system CPU time (all threads), steadier than wall time on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1e6

_CHILD = r"""
import gc, json, resource, sys, time
import torch
import local_backend
from torch import Tensor, nn

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out

def held(model):
    seen = {}
    def visit(x):
        if isinstance(x, Tensor):
            s = x.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        elif isinstance(x, (list, tuple)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)
        elif not isinstance(x, nn.Module) and type(x).__module__.startswith("local_backend"):
            visit(vars(x))
    for m in model.modules():
        visit({k: v for k, v in vars(m).items() if k != "_modules"})
    return sum(seen.values())

gc.collect()
before = status()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
model = local_backend.load(sys.argv[1])
seconds = time.perf_counter() - start
cpu_end = resource.getrusage(resource.RUSAGE_SELF)
cpu_seconds = cpu_end.ru_utime + cpu_end.ru_stime - cpu.ru_utime - cpu.ru_stime
peak = status()["VmHWM"]
gc.collect()
after = status()
print(json.dumps({
    "module": local_backend.__file__, "before": before["VmRSS"], "peak": peak,
    "after": after["VmRSS"], "after_anon": after["RssAnon"], "after_file": after["RssFile"],
    "held": held(model.model), "seconds": seconds, "cpu_seconds": cpu_seconds,
}))
"""


def build_file(cache: Path, preset: str, mix: str) -> Path:
    """The cached test file, written on first use (seconds: the blocks are drawn, not made)."""
    path = cache / f"{preset}-{mix}.gguf"
    if not path.exists():
        sys.path.insert(0, str(ROOT))
        from local_backend.config import PRESETS
        from tests.helpers.gguf_files import write_random_gguf

        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        write_random_gguf(tmp, PRESETS[preset], mix)
        tmp.replace(path)
    return path


def measure(path: Path, src: Path, threads: int | None) -> dict[str, Any]:
    """One load in a fresh process whose ``local_backend`` comes from ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path.resolve())],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["module"]).resolve().is_relative_to(src.resolve()), result["module"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", nargs="+", default=["Q4_0", "Q8_0", "Q4_K_M"])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="a folder holding another local_backend")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the loads")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bedrock-mistral-gguf-bench"))
    args = parser.parse_args()

    sides = {"ours": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    files = {mix: build_file(args.cache, args.preset, mix) for mix in args.mix}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for mix, path in files.items():
            for side, src in sides.items():
                runs.setdefault((mix, side), []).append(measure(path, src, args.threads))

    with open("/proc/cpuinfo") as info:
        cpu = next((ln.split(":", 1)[1].strip() for ln in info if "model name" in ln), "?")
    print(
        f"CPU: {cpu}; load average {os.getloadavg()[0]:.2f}; preset {args.preset}; "
        f"OMP_NUM_THREADS={args.threads or os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(
        f"{'file':8} {'side':8} {'size MB':>8} {'before':>7} {'peak':>7} {'after':>7} "
        f"{'held':>7} {'(peak-before)/size':>19} {'peak/size':>9} {'(after-before)/size':>20} "
        f"{'load s':>7} {'cpu s':>6}"
    )
    for (mix, side), results in runs.items():
        size = files[mix].stat().st_size
        before = min(r["before"] for r in results)
        peak = max(r["peak"] - r["before"] for r in results) + before
        after = max(r["after"] - r["before"] for r in results) + before
        held = results[0]["held"]
        seconds = min(r["seconds"] for r in results)
        cpu_seconds = min(r["cpu_seconds"] for r in results)
        print(
            f"{mix:8} {side:8} {size / MB:8.0f} {before / MB:7.0f} {peak / MB:7.0f} "
            f"{after / MB:7.0f} {held / MB:7.0f} {(peak - before) / size:19.2f} "
            f"{peak / size:9.2f} {(after - before) / size:20.2f} {seconds:7.2f} {cpu_seconds:6.2f}"
        )


if __name__ == "__main__":
    main()
