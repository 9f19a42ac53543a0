"""Which matrix-vector kernel is fastest here, and what int8/int4 weights do to decode speed.

1. kernels: one decode step's matrix-vector products of the 'medium' Mixtral (per layer
   wqkv, wo and the two routed experts' w13 and w2; then the output head), timed per kernel
   and shown as tokens/s if a step were nothing but those products:
   fp32/bf16 ``torch.mv``, bf16 ``F.linear``, ``_weight_int8pack_mm`` and
   ``_weight_int4pack_mm_for_cpu`` with bf16 and with fp32 activations, and the dequantise-
   then-product fallback. Candidates run interleaved round by round, best round kept.
2. decode: batch-1 greedy decode tok/s of the medium model in fp32, bf16, int8 and int4 (ours)
   and transformers bf16 on the same checkpoint, in the same run, interleaved.

    python benchmarks/bench_quant.py                  # both parts
    python benchmarks/bench_quant.py --skip-decode --rounds 20

Absolute figures move with the machine's load (read the ratios); the CPU model is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_model import Sides, _step_time

import local_backend
from local_backend.checkpoint import save_pretrained
from local_backend.config import PRESETS, ModelConfig
from local_backend.model import Transformer
from local_backend.quant import QuantizedWeight, QuantSpec, quantize, to_kernel

Kernel = Callable[[torch.Tensor], torch.Tensor]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def step_shapes(config: ModelConfig) -> list[tuple[int, int, int]]:
    """(N, K, times per decode step) of every product one token runs."""
    h, d, i = config.dim, config.head_dim, config.hidden_dim
    k = config.moe.num_experts_per_tok if config.moe else 1
    layers = config.n_layers
    return [
        ((config.n_heads + 2 * config.n_kv_heads) * d, h, layers),
        (h, config.n_heads * d, layers),
        (2 * i, h, layers * k),
        (h, i, layers * k),
        (config.vocab_size, h, 1),
    ]


def candidates(n: int, k: int) -> dict[str, tuple[Kernel, torch.dtype]]:
    """Kernel name -> (x [K] -> y [N], activation dtype) for one random [N, K] matrix."""
    w = torch.randn(n, k) * 0.02
    wb = w.bfloat16()
    out: dict[str, tuple[Kernel, torch.dtype]] = {
        "fp32 mv": (lambda x: torch.mv(w, x), torch.float32),
        "bf16 mv": (lambda x: torch.mv(wb, x), torch.bfloat16),
        "bf16 F.linear": (lambda x: F.linear(x.view(1, -1), wb), torch.bfloat16),
    }
    specs = {
        "int8": QuantSpec("int8"),
        **{f"int4 g{g}": QuantSpec("int4", g) for g in (32, 64, 128)},
    }
    for name, spec in specs.items():
        data = quantize(w, spec)
        fast = to_kernel(data, out_features=n, in_features=k)
        out[f"{name} kernel, bf16 act"] = (fast.mv, torch.bfloat16)
        out[f"{name} kernel, fp32 act"] = (_fp32_activations(fast), torch.float32)
        slow = to_kernel(data, out_features=n, in_features=k, kernel="dequant")
        out[f"{name} dequant + mv"] = (slow.mv, torch.float32)
    return out


def _fp32_activations(weight: QuantizedWeight) -> Kernel:
    """The same kernel fed fp32 activations and fp32 scales (what bf16 casting avoids)."""
    if hasattr(weight, "scale_zero"):
        table = weight.scale_zero.float()
        return lambda x: torch._weight_int4pack_mm_for_cpu(
            x.view(1, -1), weight.packed, weight.group_size, table
        )
    q, scale = weight.q, weight.scale.float()  # type: ignore[attr-defined]
    return lambda x: torch._weight_int8pack_mm(x.view(1, -1), q, scale)


def bench_kernels(config: ModelConfig, rounds: int, calls: int) -> dict[str, float]:
    """Kernel name -> seconds for one decode step's products (best round per shape)."""
    total: dict[str, float] = {}
    for n, k, times in step_shapes(config):
        kernels = candidates(n, k)
        xs = {dt: torch.randn(k).to(dt) for dt in (torch.float32, torch.bfloat16)}
        best = dict.fromkeys(kernels, float("inf"))
        for _ in range(rounds):
            for name, (run, dtype) in kernels.items():
                x = xs[dtype]
                run(x)
                start = time.perf_counter()
                for _ in range(calls):
                    run(x)
                best[name] = min(best[name], (time.perf_counter() - start) / calls)
        for name, seconds in best.items():
            total[name] = total.get(name, 0.0) + times * seconds
    return total


def decode_rates(config: ModelConfig, args: argparse.Namespace) -> dict[str, float]:
    """Row name -> best-round decode tok/s, all models on one random checkpoint."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, config.vocab_size, (args.prompt_tokens,), generator=gen).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_pretrained(Transformer(config), config, tmp, dtype="bfloat16")
        ref = Sides.load(Path(tmp), "bfloat16")
        models: dict[str, Any] = {
            "ours fp32": local_backend.load(tmp, dtype="float32"),
            "ours bf16": ref.ours,
        }
        for scheme, group in (("int8", None), ("int4", 32), ("int4", 64)):
            for dtype in ("float32", "bfloat16"):
                label = scheme if group is None else f"{scheme} g{group}"
                name = f"ours {label} ({'fp32' if dtype == 'float32' else 'bf16'} residual)"
                models[name] = local_backend.load(tmp, dtype, quantize=scheme, group_size=group)
    runs: dict[str, Callable[[], float]] = {
        name: (lambda m=m: _ours(m, prompt, args.decode_tokens)) for name, m in models.items()
    }
    runs["transformers bf16"] = lambda: ref.ref_decode(prompt, args.decode_tokens)
    for run in runs.values():
        run()  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return {name: 1 / seconds for name, seconds in best.items()}


def _ours(model: Any, prompt: list[int], n: int) -> float:
    times = [time.perf_counter()]
    for _ in model.iter_tokens(prompt, n, stop_at_eos=False):
        times.append(time.perf_counter())
    return _step_time(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (best kept)")
    parser.add_argument("--calls", type=int, default=10, help="kernel calls per round")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--decode-tokens", type=int, default=24)
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PRESETS["medium"]
    print(
        f"{cpu_model()}; torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
    )
    with torch.inference_mode():
        if not args.skip_kernels:
            totals = bench_kernels(config, args.rounds, args.calls)
            base = totals["bf16 mv"]
            print(
                "| kernel ('medium' decode-step products) | ms / step | tok/s-equiv. | vs bf16 mv |"
            )
            print("|---|---|---|---|")
            for name, seconds in sorted(totals.items(), key=lambda kv: kv[1]):
                print(
                    f"| {name} | {seconds * 1e3:.2f} | {1 / seconds:.0f} | {base / seconds:.2f}x |"
                )
            print()
        if not args.skip_decode:
            rates = decode_rates(config, args)
            ref = rates["transformers bf16"]
            print("| 'medium' decode | tok/s | vs transformers bf16 |\n|---|---|---|")
            for name, rate in rates.items():
                print(f"| {name} | {rate:.1f} | {rate / ref:.2f}x |")


if __name__ == "__main__":
    main()
