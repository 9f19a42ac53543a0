"""Decode and prefill of local_backend against transformers on one device, a CUDA GPU by default.

Both sides load the same random Mixtral checkpoint (``bench_model.random_checkpoint``) onto the
same device in the same dtype (the device's default unless ``--dtype``: bfloat16 on CUDA,
float32 on the CPU) and take turns, round by round, through ``bench_model.Sides``:

- decode: batch-1 greedy generation (ours ``iter_tokens``, transformers ``generate`` with a
  streamer); each new token is timestamped, a round's figure is the median step time, and the
  table shows each side's best round.
- prefill: one forward of a ``--prefill-tokens`` prompt (``--batch`` copies of it) into an
  empty cache, logits of the last position only, best round; one row per size and batch.
- ``--quantize int8 int4`` (the default on CUDA): ours also loads the checkpoint quantised
  (rows "bfloat16 + int4", ...), timed against the same transformers model.

On CUDA every timed region starts and ends with ``torch.cuda.synchronize()`` (on the CPU that
is a no-op), ``--warmup`` untimed rounds run first, and the peak memory column is the side's
resident weights plus the most ``torch.cuda.max_memory_allocated`` rose above what was
allocated before its run (both models stay loaded, so the raw peak would count both).

    python benchmarks/bench_gpu.py                                   # cuda, bundled + medium
    python benchmarks/bench_gpu.py --configs medium --prefill-tokens 128 512 2048 --batch 1 8
    python benchmarks/bench_gpu.py --device cpu --configs bundled --rounds 1 \\
        --decode-tokens 4 --prefill-tokens 16                        # a CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import cast

import torch

import local_backend
from local_backend.config import PRESETS, DType
from local_backend.device import CUDA_DTYPE, resolve_device
from local_backend.errors import DeviceError
from local_backend.quant_checkpoint import quantized_weights

MIB = 1 << 20
CUDA_PREFILL = [128, 512, 2048]
CPU_PREFILL = [128]


def device_or_exit(name: str) -> torch.device:
    """``--device`` as a torch.device, or one line on stderr and exit status 2."""
    try:
        return resolve_device(name)
    except DeviceError as err:
        if name.startswith("cuda") and not torch.cuda.is_available():
            reason = f"--device {name}, but this PyTorch ({torch.__version__}) sees no CUDA GPU"
            message = f"{reason}: run with --device cpu"
        else:
            message = str(err)
        print(f"bench_gpu.py: error: {message}", file=sys.stderr)
        raise SystemExit(2) from err


def resident_bytes(module: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (tied tensors counted once)."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def tracked(
    run: Callable[[], float], device: torch.device, extra: list[int]
) -> Callable[[], float]:
    """``run``, also appending how far CUDA memory in use rose above its start (CUDA only)."""

    def wrapped() -> float:
        if device.type != "cuda":
            return run()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds = run()
        extra.append(torch.cuda.max_memory_allocated(device) - base)
        return seconds

    return wrapped


def quantised_bytes(model: local_backend.LocalModel) -> int:
    """Bytes of a model's quantised matrices (codes, scales, zeros), not module parameters."""
    return sum(w.nbytes for w in quantized_weights(model.model))


def machine(device: torch.device) -> str:
    """One line naming the hardware and software the figures came from."""
    import transformers  # here and below, not at the top: a wrong --device fails in a blink
    from bench_quant import cpu_model

    where = f"CPU {cpu_model()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        cuda = torch.version.cuda
        where = f"GPU {torch.cuda.get_device_name(device)} (CUDA {cuda}); {where}"
    return (
        f"device {device}: {where}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; load average {os.getloadavg()[0]:.1f}"
    )


def run_config(name: str, args: argparse.Namespace, device: torch.device, dtype: DType) -> None:
    """Load both sides of one config, time them in interleaved rounds, print the table rows."""
    from bench_model import Sides, interleaved, random_checkpoint

    config = PRESETS[name]
    gen = torch.Generator().manual_seed(0)
    vocab = config.vocab_size
    prompt = torch.randint(3, vocab, (args.prompt_tokens,), generator=gen).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        random_checkpoint(config, tmp)
        sides = Sides.load(Path(tmp), dtype, device)
        # the same checkpoint quantised while loading, against the same transformers model
        variants = {dtype: sides} | {
            f"{dtype} + {q}": replace(sides, ours=local_backend.load(tmp, dtype, quantize=q,
                                                                     device=device))
            for q in args.quantize
        }  # fmt: skip
    rows: list[tuple[str, str, float, str, str]] = []  # kind, label, tokens, ours key, ref key
    runs: dict[str, Callable[[], float]] = {}
    extra: dict[str, list[int]] = {}
    weights = {"ref": resident_bytes(sides.ref)}

    def add(key: str, run: Callable[[], float]) -> None:
        extra[key] = []
        runs[key] = tracked(run, device, extra[key])

    add("ref decode", lambda: sides.ref_decode(prompt, args.decode_tokens))
    for kind, side in variants.items():
        weights[kind] = resident_bytes(side.ours.model) + quantised_bytes(side.ours)
        add(f"{kind}|decode", partial(side.ours_decode, prompt, args.decode_tokens))
        rows.append((kind, "decode, batch 1", 1.0, f"{kind}|decode", "ref decode"))
    for n in args.prefill_tokens:
        long = torch.randint(3, vocab, (n,), generator=gen).tolist()
        for b in args.batch:
            label = f"prefill {n} x {b}"
            add(f"ref {label}", partial(sides.ref_prefill, long, b))
            for kind, side in variants.items():
                add(f"{kind}|{label}", partial(side.ours_prefill, long, b))
                rows.append((kind, label, float(n * b), f"{kind}|{label}", f"ref {label}"))
    interleaved(runs, args.warmup)
    for figures in extra.values():
        figures.clear()
    best = {k: min(v) for k, v in interleaved(runs, args.rounds).items()}

    def peak(key: str, side: str) -> str:
        if not extra[key]:
            return "–"
        return f"{(weights[side] + max(extra[key])) / MIB:,.0f}"

    for kind, label, tokens, ours_key, ref_key in rows:
        ours, ref = tokens / best[ours_key], tokens / best[ref_key]
        cells = [
            name,
            kind,
            label,
            f"{ours:,.1f}",
            f"{ref:,.1f}",
            f"**{ours / ref:.2f}x**",
            peak(ours_key, kind),
            peak(ref_key, "ref"),
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument(
        "--configs", nargs="+", default=["bundled", "medium"], choices=["bundled", "medium"]
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="default: bfloat16 on CUDA, float32 on the CPU",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt before decoding")
    parser.add_argument("--decode-tokens", type=int, default=64, help="decode steps per round")
    parser.add_argument(
        "--prefill-tokens",
        type=int,
        nargs="+",
        help=f"prompt sizes for prefill (default {CUDA_PREFILL} on CUDA, {CPU_PREFILL} on CPU)",
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1], help="prefill batch sizes (default 1)"
    )
    parser.add_argument(
        "--quantize",
        nargs="*",
        choices=["int8", "int4"],
        help="also time ours with these weights (default int8 int4 on CUDA, none on the CPU)",
    )
    args = parser.parse_args()
    if args.decode_tokens < 2 or args.rounds < 1 or args.warmup < 0:
        parser.error("--decode-tokens needs at least 2 (one step gap), --rounds at least 1")
    device = device_or_exit(args.device)
    dtype = cast(DType, args.dtype or (CUDA_DTYPE if device.type == "cuda" else "float32"))
    if args.quantize is None:
        args.quantize = ["int8", "int4"] if device.type == "cuda" else []
    if args.prefill_tokens is None:
        args.prefill_tokens = CUDA_PREFILL if device.type == "cuda" else CPU_PREFILL
    print(machine(device) + "\n")
    print(
        "| config | dtype | run | ours tok/s | transformers tok/s | ours / transformers "
        "| ours peak MiB | transformers peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        run_config(name, args, device, dtype)
        gc.collect()  # the config's two models go before the next config loads
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
