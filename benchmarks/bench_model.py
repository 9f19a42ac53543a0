"""Decode and prefill speed of local_backend against transformers on the same checkpoint.

Both run in this process on the same random Mixtral checkpoint (written once per config in
fp32, loaded by each side in the dtype under test), interleaved round by round so a busy
machine slows both alike: read the ratios; absolute numbers move with the machine's load.

- decode: batch-1 greedy generation; every new token is timestamped (transformers through a
  ``streamer``, ours as ``generate`` yields it), a round's figure is the median step time and
  the table shows the best round of each side.
- prefill: one forward of a ``--prefill-tokens`` prompt into an empty cache, last-position
  logits only (what ``generate`` does first), best round.
- roofline: the weight bytes one decode token must read (attention, router, the k routed
  experts of every layer, final norm and lm_head) divided by the copy bandwidth measured here
  (``dst.copy_(src)`` on 1 GiB, counting bytes read + written, best of 5).

    python benchmarks/bench_model.py                      # bundled and medium, fp32 and bf16
    python benchmarks/bench_model.py --configs bundled --dtypes float32 --rounds 3

``--compare-matvec`` adds our decode with each dense matrix-vector path forced (``torch.mv``,
``F.linear`` and, where it builds, our kernel; see ``local_backend.matvec``) to the same interleaved
rounds, and prints them
with the path the load measured as the faster.

``--compare-threads`` adds our decode with ``BEDROCK_MISTRAL_LOCAL_PARALLEL_BYTES=off`` (every
call on torch's thread count, as before the decode step ran its small calls on one thread) to
the same rounds.

OpenMP's wait policy decides the small-model figures, for both sides alike: on an idle machine
the default (workers spin briefly at each barrier) is fastest; on a machine whose cores are
busy with other work, ``OMP_WAIT_POLICY=PASSIVE`` stops spinning workers from burning their
time slices (2-4x faster decode there, 3x slower on an idle machine). Set it in the
environment to match the machine; the script prints the policy it ran with.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import MixtralForCausalLM

import local_backend
from local_backend import matvec, native
from local_backend.checkpoint import TORCH_DTYPES, save_pretrained
from local_backend.config import PRESETS, DType, ModelConfig
from local_backend.decode import decode_step
from local_backend.model import Transformer

GIB = 1 << 30


def copy_bandwidth(n_bytes: int = GIB, repeats: int = 5) -> float:
    """Bytes per second moved by a large tensor copy (read + write), best of ``repeats``."""
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * n_bytes / best


def decode_bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """Weight bytes one decode step reads: all but the unrouted experts and the embeddings."""
    h, d, i = config.dim, config.head_dim, config.hidden_dim
    attn = h * (config.n_heads + 2 * config.n_kv_heads) * d + config.n_heads * d * h
    ffn = 3 * h * i
    if config.moe is not None:
        ffn = config.moe.num_experts_per_tok * ffn + config.moe.num_experts * h
    per_layer = attn + ffn + 2 * h
    total = config.n_layers * per_layer + h + config.vocab_size * h
    return total * torch.finfo(dtype).bits // 8


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels so a timer reads finished work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_checkpoint(config: ModelConfig, directory: str | Path) -> None:
    """Write a random ``config`` model (seed 0) to ``directory`` in float32, as every side loads."""
    torch.manual_seed(0)
    save_pretrained(Transformer(config), config, directory, dtype="float32")


def interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Every run's figure per round, the runs taking turns so a busy machine slows all alike."""
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            samples[key].append(run())
    return samples


class _Stamps:
    """A transformers streamer that only records when each new token arrives."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        sync(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _step_time(times: list[float]) -> float:
    """Median gap between consecutive tokens (the first gap includes the prefill: skipped)."""
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    return statistics.median(gaps)


@dataclass
class Sides:
    """Ours and transformers' model on one checkpoint, dtype and device.

    Every timed region starts and ends with :func:`sync`, so on CUDA a figure counts the
    kernels it queued, not just their launch.
    """

    ours: Any
    ref: Any
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, path: Path, dtype: DType, device: str | torch.device = "cpu") -> Sides:
        where = torch.device(device)
        ref: Any = MixtralForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[dtype])
        ref.to(where).eval()
        ref.generation_config.eos_token_id = None
        ref.generation_config.pad_token_id = 0
        return cls(local_backend.load(path, dtype=dtype, device=where), ref, where)

    def ours_decode(self, prompt: list[int], n: int) -> float:
        sync(self.device)
        times = [time.perf_counter()]
        for _ in self.ours.iter_tokens(prompt, n, stop_at_eos=False):
            sync(self.device)
            times.append(time.perf_counter())
        return _step_time(times)

    def ref_decode(self, prompt: list[int], n: int) -> float:
        stamps = _Stamps(self.device)
        ids = torch.tensor([prompt], device=self.device)
        with torch.inference_mode():
            self.ref.generate(
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=stamps
            )
        return _step_time(stamps.times)

    def ours_prefill(self, prompt: list[int], batch: int = 1) -> float:
        """Seconds for one forward of ``batch`` copies of ``prompt``, last-position logits."""
        ids = torch.tensor([prompt] * batch, device=self.device)
        sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            cache = self.ours.model.new_cache(batch, capacity=len(prompt) + 1)
            self.ours.model.forward_last(ids, cache)
        sync(self.device)
        return time.perf_counter() - start

    def ref_prefill(self, prompt: list[int], batch: int = 1) -> float:
        """Seconds for transformers' forward of the same batch, logits of the last position."""
        ids = torch.tensor([prompt] * batch, device=self.device)
        sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            self.ref(input_ids=ids, use_cache=True, logits_to_keep=1)
        sync(self.device)
        return time.perf_counter() - start


def measure(sides: Sides, args: argparse.Namespace) -> dict[str, float]:
    """Best (lowest) decode s/token and prefill s/prompt of each side over interleaved rounds."""
    gen = torch.Generator().manual_seed(0)
    vocab = sides.ours.config.vocab_size
    prompt = torch.randint(3, vocab, (args.prompt_tokens,), generator=gen).tolist()
    long_prompt = torch.randint(3, vocab, (args.prefill_tokens,), generator=gen).tolist()
    runs: dict[str, Callable[[], float]] = {
        "ours_decode": lambda: sides.ours_decode(prompt, args.decode_tokens),
        "ref_decode": lambda: sides.ref_decode(prompt, args.decode_tokens),
        "ours_prefill": lambda: sides.ours_prefill(long_prompt),
        "ref_prefill": lambda: sides.ref_prefill(long_prompt),
    }
    sides.ours_decode(prompt, 4)  # warm-up
    sides.ref_decode(prompt, 4)
    if args.compare_matvec:
        for path in _matvec_paths(sides.ours.dtype):
            runs[f"ours_decode_{path}"] = _forced(
                path, sides.ours.dtype, lambda: sides.ours_decode(prompt, args.decode_tokens)
            )
    if args.compare_threads:
        runs["ours_decode_threads_off"] = _env(
            matvec.PARALLEL_ENV_VAR, "off", lambda: sides.ours_decode(prompt, args.decode_tokens)
        )
    samples = interleaved(runs, args.rounds)
    return {k: min(v) for k, v in samples.items()}


def _forced(path: str, dtype: torch.dtype, run: Callable[[], float]) -> Callable[[], float]:
    """``run`` with ``dtype``'s dense products forced through ``path``, then the choice back."""
    sets = {"linear": matvec.LINEAR_DTYPES, "native": matvec.NATIVE_DTYPES}

    def forced() -> float:
        before = matvec.path_for(dtype)
        for name, members in sets.items():
            (members.add if name == path else members.discard)(dtype)
        try:
            return run()
        finally:
            for name, members in sets.items():
                (members.add if name == before else members.discard)(dtype)

    return forced


def _matvec_paths(dtype: torch.dtype) -> tuple[str, ...]:
    """The dense matrix-vector paths ``--compare-matvec`` forces for ``dtype``."""
    return ("mv", "linear", "native") if native.dense_available(dtype) else ("mv", "linear")


def _env(name: str, value: str, run: Callable[[], float]) -> Callable[[], float]:
    """``run`` with the environment variable ``name`` set to ``value``, then put back."""

    def with_env() -> float:
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return run()
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old

    return with_env


def window_scaling(
    config: ModelConfig, window: int, dtype: DType, steps: int = 32
) -> list[tuple[int, float, int]]:
    """(position, median ms per decode token, KV-cache bytes) at 1x, 4x and 8x the window."""
    model = Transformer(replace(config, sliding_window=window, dtype=dtype))
    model = model.to(TORCH_DTYPES[dtype]).eval()
    rows = []
    with torch.inference_mode():
        cache = model.new_cache(1, capacity=window)  # as generate() preallocates
        model.rotary.get(0, 8 * window + 1, torch.float32, cache.layers[0].k.device)
        for mult in (1, 4, 8):
            while cache.seq_len < mult * window - steps:
                decode_step(model, 5, cache)
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                decode_step(model, 5, cache)
                times.append(time.perf_counter() - start)
            rows.append((cache.seq_len, statistics.median(times) * 1e3, cache.nbytes))
    return rows


def run_config(name: str, args: argparse.Namespace, bandwidth: float) -> None:
    config = PRESETS[name]
    with tempfile.TemporaryDirectory() as tmp:
        random_checkpoint(config, tmp)
        for dtype in args.dtypes:
            sides = Sides.load(Path(tmp), dtype)
            r = measure(sides, args)
            roof = bandwidth / decode_bytes_per_token(config, TORCH_DTYPES[dtype])
            ours, ref = 1 / r["ours_decode"], 1 / r["ref_decode"]
            ours_pf = args.prefill_tokens / r["ours_prefill"]
            ref_pf = args.prefill_tokens / r["ref_prefill"]
            cells = [
                name,
                dtype,
                f"{ours:.1f} ({ours / roof:.0%})",
                f"{ref:.1f} ({ref / roof:.0%})",
                f"**{ours / ref:.2f}x**",
                f"{roof:.1f}",
                f"{ours_pf:.0f}",
                f"{ref_pf:.0f}",
                f"**{ours_pf / ref_pf:.2f}x**",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
            if args.compare_matvec:
                forced = ", ".join(
                    f"with {path} {1 / r[f'ours_decode_{path}']:.1f} tok/s "
                    f"({1 / r[f'ours_decode_{path}'] / ref:.2f}x)"
                    for path in _matvec_paths(sides.ours.dtype)
                )
                print(
                    f"|   ↳ {name} {dtype}: ours decode {forced}; "
                    f"measured choice: {sides.ours.matvec_path} |",
                    flush=True,
                )
            if args.compare_threads:
                off = 1 / r["ours_decode_threads_off"]
                print(
                    f"|   ↳ {name} {dtype}: ours decode with every call threaded (off) "
                    f"{off:.1f} tok/s ({off / ref:.2f}x transformers); now {ours / off:.2f}x "
                    f"that; load average {os.getloadavg()[0]:.1f} |",
                    flush=True,
                )
            del sides


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", nargs="+", default=["bundled", "medium"], choices=["bundled", "medium"]
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt before decoding")
    parser.add_argument("--decode-tokens", type=int, default=24, help="decode steps per round")
    parser.add_argument("--prefill-tokens", type=int, default=256, help="prompt for prefill")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument("--window", type=int, default=128, help="window of the flat-cost check")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--compare-matvec",
        action="store_true",
        help="also time our decode with torch.mv and with F.linear forced",
    )
    parser.add_argument(
        "--compare-threads",
        action="store_true",
        help="also time our decode with BEDROCK_MISTRAL_LOCAL_PARALLEL_BYTES=off",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth()
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={policy}, "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)\n"
    )
    print(
        "| config | dtype | ours decode tok/s (% roofline) | transformers decode tok/s "
        "(% roofline) | decode | roofline tok/s | ours prefill tok/s "
        "| transformers prefill tok/s | prefill |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        run_config(name, args, bandwidth)
    if args.window:
        print(f"\nsliding window W={args.window}, bundled config, float32: decode cost past it")
        print("| position | ms / token | KV-cache bytes |\n|---|---|---|")
        for pos, ms, nbytes in window_scaling(PRESETS["bundled"], args.window, "float32"):
            print(f"| {pos} | {ms:.2f} | {nbytes:,} |")


if __name__ == "__main__":
    main()
