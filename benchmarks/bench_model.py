"""Decode and prefill speed of local_backend against transformers on the same checkpoint.

Both run in this process on the same random Mixtral checkpoint (written once per config in
fp32, loaded by each side in the dtype under test), interleaved round by round so a busy
machine slows both alike; ratios are what to read, absolute numbers move with the load.

The roofline is the bytes of weights one decode token must read (attention, router, the k
routed experts of every layer, final norm and lm_head) divided by the copy bandwidth this
script measures itself (``dst.copy_(src)`` on 1 GiB, counting bytes read + written).

    python benchmarks/bench_model.py                      # tiny and medium, fp32 and bf16
    python benchmarks/bench_model.py --configs tiny --dtypes float32 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import MixtralForCausalLM

import local_backend
from local_backend.checkpoint import TORCH_DTYPES, save_pretrained
from local_backend.config import PRESETS, ModelConfig
from local_backend.model import Transformer
from local_backend.runtime import LocalModel

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
    """Weight bytes one decode step reads: everything except the unrouted experts and embeddings."""
    h, d, i = config.dim, config.head_dim, config.hidden_dim
    attn = h * (config.n_heads + 2 * config.n_kv_heads) * d + config.n_heads * d * h
    ffn = 3 * h * i
    if config.moe is not None:
        ffn = config.moe.num_experts_per_tok * ffn + config.moe.num_experts * h
    per_layer = attn + ffn + 2 * h
    total = config.n_layers * per_layer + h + config.vocab_size * h
    return total * torch.finfo(dtype).bits // 8


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Pair:
    """Ours and transformers' model on one checkpoint and dtype, with the measurements."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.ours: LocalModel = local_backend.load(path, dtype=dtype)
        self.ref: Any = MixtralForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[dtype]).eval()  # type: ignore[index]
        self.ref.generation_config.eos_token_id = None
        self.ref.generation_config.pad_token_id = 0

    def ours_generate(self, prompt: list[int], n: int) -> None:
        self.ours.generate(prompt, n, stop_at_eos=False)

    def ref_generate(self, prompt: list[int], n: int) -> None:
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            self.ref.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def ours_prefill(self, prompt: list[int]) -> None:
        with torch.inference_mode():
            cache = self.ours.model.new_cache(1, capacity=len(prompt) + 1)
            self.ours.model.forward_last(torch.tensor([prompt]), cache)

    def ref_prefill(self, prompt: list[int]) -> None:
        with torch.inference_mode():
            self.ref(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1)


def measure(pair: Pair, *, prompt_len: int, decode_tokens: int, prefill_len: int, rounds: int) -> dict[str, float]:
    """Median over interleaved rounds of decode s/token and prefill s/prompt, per side."""
    gen = torch.Generator().manual_seed(0)
    vocab = pair.ours.config.vocab_size
    prompt = torch.randint(3, vocab, (prompt_len,), generator=gen).tolist()
    long_prompt = torch.randint(3, vocab, (prefill_len,), generator=gen).tolist()
    samples: dict[str, list[float]] = {k: [] for k in ("ours_decode", "ref_decode", "ours_prefill", "ref_prefill")}
    pair.ours_generate(prompt, 2)  # warm-up
    pair.ref_generate(prompt, 2)
    for _ in range(rounds):
        for side in ("ours", "ref"):
            generate = getattr(pair, f"{side}_generate")
            one = timed(lambda g=generate: g(prompt, 1))
            many = timed(lambda g=generate: g(prompt, decode_tokens + 1))
            samples[f"{side}_decode"].append(max(many - one, 1e-9) / decode_tokens)
            samples[f"{side}_prefill"].append(timed(lambda s=side: getattr(pair, f"{s}_prefill")(long_prompt)))
    return {k: statistics.median(v) for k, v in samples.items()}


def window_scaling(config: ModelConfig, window: int, dtype: str, steps: int = 16) -> list[tuple[int, float, int]]:
    """(position, ms per decode token, KV-cache bytes) at 1x, 4x and 8x the window."""
    model = Transformer(replace(config, sliding_window=window, dtype=dtype)).to(TORCH_DTYPES[dtype]).eval()  # type: ignore[arg-type]
    rows = []
    with torch.inference_mode():
        cache = model.new_cache(1)
        token = torch.tensor([[5]])
        for mult in (1, 4, 8):
            while cache.seq_len < mult * window - steps:
                model.forward_last(token, cache)
            start = time.perf_counter()
            for _ in range(steps):
                model.forward_last(token, cache)
            rows.append((cache.seq_len, (time.perf_counter() - start) / steps * 1e3, cache.nbytes))
    return rows


def run_config(name: str, args: argparse.Namespace, bandwidth: float) -> None:
    config = PRESETS[name]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(Transformer(config), config, tmp, dtype="float32")
        for dtype in args.dtypes:
            pair = Pair(Path(tmp), dtype)
            r = measure(pair, prompt_len=args.prompt_tokens, decode_tokens=args.decode_tokens,
                        prefill_len=args.prefill_tokens, rounds=args.rounds)
            roof = bandwidth / decode_bytes_per_token(config, TORCH_DTYPES[dtype])  # type: ignore[index]
            ours_tps, ref_tps = 1 / r["ours_decode"], 1 / r["ref_decode"]
            ours_pf, ref_pf = args.prefill_tokens / r["ours_prefill"], args.prefill_tokens / r["ref_prefill"]
            print(
                f"| {name} | {dtype} | {ours_tps:8.1f} ({ours_tps / roof:4.0%}) | {ref_tps:8.1f} ({ref_tps / roof:4.0%}) "
                f"| {ours_tps / ref_tps:5.2f}x | {roof:8.1f} | {ours_pf:8.0f} | {ref_pf:8.0f} | {ours_pf / ref_pf:5.2f}x |",
                flush=True,
            )
            del pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt before the timed decode")
    parser.add_argument("--decode-tokens", type=int, default=32, help="timed decode steps per round")
    parser.add_argument("--prefill-tokens", type=int, default=256, help="prompt length for prefill")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--window", type=int, default=128, help="window for the flat-cost check (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth()
    print(f"threads {torch.get_num_threads()}, copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)\n")
    print("| config | dtype | ours decode tok/s (% roofline) | transformers decode tok/s (% roofline) "
          "| decode ratio | roofline tok/s | ours prefill tok/s | transformers prefill tok/s | prefill ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        run_config(name, args, bandwidth)
    if args.window:
        print(f"\nsliding window W={args.window}, tiny config, float32: decode cost past the window")
        print("| position | ms / token | KV-cache bytes |\n|---|---|---|")
        for pos, ms, nbytes in window_scaling(PRESETS["tiny"], args.window, "float32"):
            print(f"| {pos} | {ms:.2f} | {nbytes:,} |")


if __name__ == "__main__":
    main()
