"""Which matrix-vector kernel is fastest here, and what int8/int4 weights do to decode speed.

1. kernels: one decode step's matrix-vector products of the 'medium' Mixtral (per layer
   wqkv, wo and the two routed experts' w13 and w2; then the output head), timed per kernel
   and shown as tokens/s if a step were nothing but those products:
   fp32/bf16 ``torch.mv``, bf16 ``F.linear``, ``_weight_int8pack_mm`` and
   ``_weight_int4pack_mm_for_cpu`` with bf16 and with fp32 activations, our native kernel
   (local_backend/native) and the dequantise-then-product fallback. Candidates run interleaved
   round by round, best round kept (one matrix per shape, so small ones stay in the cache).
2. decode: batch-1 greedy decode tok/s of the medium model in fp32, bf16, int8 and int4 (ours,
   through our native kernel and, in rows marked so, PyTorch's),
   transformers bf16 and, where llama-cpp-python is installed, llama.cpp on the same
   checkpoint written as GGUF F16, Q8_0 and Q4_0 (gguf-py's own quantiser; in the Q4_0 file
   the output head is Q8_0, as our int4 keeps an int8 head), all in the same run, interleaved,
   at the same thread count. llama.cpp is fed token ids (the GGUF carries mistral-common's v1
   vocabulary only so that it loads) and picks the argmax of its logits, as we do.

    python benchmarks/bench_quant.py                  # both parts
    python benchmarks/bench_quant.py --skip-decode --rounds 20
    python benchmarks/bench_quant.py --skip-kernels --only "ours bf16" "fp32 residual" llama.cpp

Absolute figures move with the machine's load (read the ratios); the CPU model is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_model import Sides, _step_time

import local_backend
from local_backend import native
from local_backend.checkpoint import save_pretrained
from local_backend.config import PRESETS, ModelConfig
from local_backend.kernels import to_kernel
from local_backend.model import Transformer
from local_backend.quant import Int4Weight, QuantizedWeight, QuantSpec, quantize

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
        fast = to_kernel(data, out_features=n, in_features=k, kernel="torch")
        out[f"{name} PyTorch kernel, bf16 act"] = (fast.mv, torch.bfloat16)
        out[f"{name} PyTorch kernel, fp32 act"] = (_fp32_activations(fast), torch.float32)
        if native.library() is not None:
            ours = to_kernel(data, out_features=n, in_features=k, kernel="native")
            out[f"{name} native kernel, fp32 act"] = (ours.mv, torch.float32)
            out[f"{name} native kernel, bf16 act"] = (ours.mv, torch.bfloat16)
        slow = to_kernel(data, out_features=n, in_features=k, kernel="dequant")
        out[f"{name} dequant + mv"] = (slow.mv, torch.float32)
    return out


def _fp32_activations(weight: QuantizedWeight) -> Kernel:
    """The same kernel fed fp32 activations and fp32 scales (what bf16 casting avoids)."""
    if isinstance(weight, Int4Weight):
        table, packed, group = weight.scale_zero.float(), weight.packed, weight.group_size
        return lambda x: torch._weight_int4pack_mm_for_cpu(x.view(1, -1), packed, group, table)
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
    runs: dict[str, Callable[[], float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = Transformer(config)
        save_pretrained(model, config, tmp, dtype="bfloat16")
        if _wanted(args, "llama.cpp"):
            for kind, llm in llama_cpp_models(model, config, Path(tmp), args.threads).items():
                runs[f"llama.cpp {kind}"] = partial(_llama, llm, prompt, args.decode_tokens)
        del model
        ref = Sides.load(Path(tmp), "bfloat16")
        models: dict[str, Any] = {}
        if _wanted(args, "ours fp32"):
            models["ours fp32"] = local_backend.load(tmp, dtype="float32")
        models["ours bf16"] = ref.ours
        for scheme, group in (("int8", None), ("int4", 32), ("int4", 64)):
            for dtype in ("float32", "bfloat16"):
                for kernel in ("native", "torch"):
                    label = scheme if group is None else f"{scheme} g{group}"
                    residual = "fp32" if dtype == "float32" else "bf16"
                    name = f"ours {label} ({residual} residual)"
                    name += "" if kernel == "native" else " [PyTorch kernels]"
                    if _wanted(args, name):
                        with kernels(kernel):
                            models[name] = local_backend.load(
                                tmp, dtype, quantize=scheme, group_size=group
                            )
    runs.update({name: partial(_ours, m, prompt, args.decode_tokens) for name, m in models.items()})
    runs["transformers bf16"] = lambda: ref.ref_decode(prompt, args.decode_tokens)
    for run in runs.values():
        run()  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.rounds):
        for name, run in runs.items():
            time.sleep(0.5)  # llama.cpp's workers poll for a while after a call returns
            best[name] = min(best[name], run())
    return {name: 1 / seconds for name, seconds in best.items()}


@contextlib.contextmanager
def kernels(kernel: str) -> Iterator[None]:
    """Loads inside use our native kernel ("native") or PyTorch's ("torch"), untimed."""
    before = os.environ.get(native.ENV_VAR)
    os.environ[native.ENV_VAR] = "on" if kernel == "native" else "off"
    native.library.cache_clear()
    native.wins.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(native.ENV_VAR)
        else:
            os.environ[native.ENV_VAR] = before
        native.library.cache_clear()
        native.wins.cache_clear()


def _wanted(args: argparse.Namespace, name: str) -> bool:
    """Whether ``--only`` (substrings) keeps the row ``name`` (every row without it)."""
    return not args.only or any(part in name for part in args.only)


def llama_cpp_models(
    model: Transformer, config: ModelConfig, folder: Path, threads: int
) -> dict[str, Any]:
    """llama.cpp (llama-cpp-python) on ``model`` written as GGUF F16, Q8_0 and Q4_0; empty
    where llama-cpp-python is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp rows\n")
        return {}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers
    from local_backend.checkpoint import to_hf_state_dict
    from tests.helpers.gguf_files import gguf_arrays, v1_tokenizer_metadata, write_gguf

    arrays = gguf_arrays(to_hf_state_dict(model), config)
    tokenizer = v1_tokenizer_metadata() if config.vocab_size == 32000 else None
    kinds: dict[str, str | dict[str, str]] = {
        "F16": "F16",
        "Q8_0": "Q8_0",
        "Q4_0": {name: "Q8_0" if name == "output.weight" else "Q4_0" for name in arrays},
    }
    n = threads or torch.get_num_threads()
    out = {}
    for label, kind in kinds.items():
        path = write_gguf(folder / f"{label}.gguf", config, arrays, kind, tokenizer=tokenizer)
        out[label] = Llama(
            str(path), n_threads=n, n_threads_batch=n, n_ctx=256, n_batch=64, verbose=False
        )
    return out


def _llama(llm: Any, prompt: list[int], n: int) -> float:
    """Greedy decode through llama.cpp: median step time, as :func:`_ours`."""
    import numpy as np

    llm.reset()
    times = [time.perf_counter()]
    llm.eval(prompt)
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        times.append(time.perf_counter())
        llm.eval([token])
    return _step_time(times)


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
    parser.add_argument(
        "--only", nargs="+", default=[], help="decode rows whose name holds one of these"
    )
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
            print(f"\nload average after the run: {os.getloadavg()}")
            pairs = [
                ("ours bf16", "llama.cpp F16"),
                ("ours int8 (fp32 residual)", "llama.cpp Q8_0"),
                ("ours int4 g64 (fp32 residual)", "llama.cpp Q4_0"),
                ("ours int4 g32 (fp32 residual)", "llama.cpp Q4_0"),
                ("ours int8 (fp32 residual) [PyTorch kernels]", "llama.cpp Q8_0"),
                ("ours int4 g64 (fp32 residual) [PyTorch kernels]", "llama.cpp Q4_0"),
            ]
            for ours, theirs in pairs:
                if ours in rates and theirs in rates:
                    print(f"{ours} / {theirs}: {rates[ours] / rates[theirs]:.2f}x")


if __name__ == "__main__":
    main()
