"""Train the bundled tiny Mixtral from scratch on the synthetic instruct data.

    python -m training train [--quick] [--out DIR] [--resume] [--steps N] [--seed S]
                              [--device auto|cpu|cuda]

Recipe: a SentencePiece tokenizer trained on the data's templates (digits and words one
character per token), conversations packed into fixed-length rows, loss on assistant tokens
(and their EOS) only, a three-phase curriculum over the task families (:func:`mix_at`), AdamW
with linear warmup and cosine decay, and Mixtral's load-balancing loss on every router. Batch
``i`` is a pure function of ``(seed, i)``, so a resumed run sees exactly the data an
uninterrupted one would; ``--steps`` may change on resume (the schedule follows it). The CPU
thread count is tuned while training (:class:`ThreadTuner`). Checkpoints are written
atomically (temp file, fsync, rename), so ``kill -9`` at any moment leaves the previous one
intact. At the end the model is exported to ``DIR/final`` (config.json, model.safetensors,
tokenizer.model, MANIFEST.json with sha256 of each file): the layout of
``local_backend/weights``. ``--export-only`` exports the last checkpoint of a run still going.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bedrock_mistral.prompt import format_prompt
from local_backend.config import ModelConfig, MoeConfig
from local_backend.model import Transformer
from local_backend.tokenizer import Tokenizer
from training.data import MIX, MIX_FOCUS, MIX_LATE, MIXES, Sample, iter_samples
from training.evaluate import FamilyResult, heldout_samples, score

__all__ = [
    "PRESETS",
    "TrainConfig",
    "encode_sample",
    "export",
    "load_balancing_loss",
    "make_batch",
    "train",
]

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
WATCH_FAMILIES = (
    "add2",
    "add3",
    "sub2",
    "sub3",
    "mul2",
    "reverse",
    "upper",
    "count",
    "capital",
    "identity",
    "recall",
)


@dataclass(frozen=True)
class Restart:
    """A warm restart: from step ``at`` on, the data mix ``mix`` (a key of ``data.MIXES``) and
    a new warmup + cosine cycle from ``lr`` that ends at the next restart or the last step."""

    at: int
    lr: float
    warmup: int = 50
    mix: str = "stage2"


@dataclass(frozen=True)
class TrainConfig:
    """Model shape and optimisation settings of one run (saved in every checkpoint)."""

    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 2
    hidden_dim: int = 384
    num_experts: int = 4
    num_experts_per_tok: int = 2
    sliding_window: int = 64
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 6000
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.1
    aux_loss_coef: float = 0.02
    # curriculum: the share of stage one's steps at which MIX_FOCUS, then MIX_LATE, replace MIX
    late_mix_from: float = 0.36
    near_recall_from: float = 7 / 12
    # later stages, in order of ``at`` (empty: a single stage over all the steps)
    restarts: tuple[Restart, ...] = ()
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_n: int = 24
    ckpt_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        starts = [r.at for r in self.restarts]
        if starts != sorted(set(starts)) or (starts and starts[0] <= 0):
            raise ValueError(f"restarts must start at increasing steps > 0, not {starts}")
        unknown = [r.mix for r in self.restarts if r.mix not in MIXES]
        if unknown:
            raise ValueError(f"unknown data mix {unknown[0]!r}; known: {', '.join(MIXES)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config a checkpoint or manifest recorded (older runs: one ``restart_*`` stage)."""
        values = dict(values)
        restarts = [Restart(**r) for r in values.pop("restarts", ())]
        legacy = {
            k: values.pop(k) for k in ("restart_at", "restart_lr", "restart_warmup") if k in values
        }
        if legacy.get("restart_at") is not None:
            restarts.insert(
                0,
                Restart(
                    legacy["restart_at"],
                    legacy.get("restart_lr", 1e-3),
                    legacy.get("restart_warmup", 50),
                ),
            )
        return cls(**values, restarts=tuple(restarts))

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            hidden_dim=self.hidden_dim,
            vocab_size=vocab_size,
            sliding_window=self.sliding_window,
            tie_embeddings=True,
            moe=MoeConfig(self.num_experts, self.num_experts_per_tok),
            max_seq_len=4096,
            rope_theta=10000.0,
        )


PRESETS: dict[str, TrainConfig] = {
    # the shipped model: ~3 hours on 2 CPU cores
    "full": TrainConfig(
        steps=6500,
        restarts=(Restart(3000, 1e-3, mix="stage2"), Restart(5000, 6e-4, mix="stage3")),
    ),
    # a usable model in under 20 minutes on 2 CPU cores
    "quick": TrainConfig(
        dim=192,
        hidden_dim=256,
        n_heads=6,
        batch_size=12,
        steps=800,
        lr=3e-3,
        warmup=80,
        eval_every=200,
        eval_n=16,
    ),
}


# -- data ------------------------------------------------------------------------------------


def encode_sample(
    tokenizer: Tokenizer, sample: Sample, inst_close_id: int
) -> tuple[list[int], list[bool]]:
    """Ids of the whole conversation (as ``encode_prompt`` sees it) and the loss mask.

    The mask is True on every assistant token and the EOS that closes it: the tokens after
    each ``[/INST]`` up to and including the next EOS.
    """
    ids = tokenizer.encode_prompt(format_prompt(list(sample.messages)))
    mask: list[bool] = []
    in_reply = False
    for token in ids:
        mask.append(in_reply)
        if token == inst_close_id:
            in_reply = True
        elif token == tokenizer.eos_id:
            in_reply = False
    return ids, mask


def _stage_one_steps(cfg: TrainConfig) -> int:
    return min(cfg.restarts[0].at, cfg.steps) if cfg.restarts else cfg.steps


def _restart_at(step: int, cfg: TrainConfig) -> tuple[int, Restart | None]:
    """The restart ``step`` belongs to (None: stage one) and its index in ``cfg.restarts``."""
    index, current = -1, None
    for i, restart in enumerate(cfg.restarts):
        if step >= restart.at:
            index, current = i, restart
    return index, current


def mix_at(step: int, cfg: TrainConfig) -> dict[str, float]:
    """The family weights of the curriculum phase ``step`` belongs to."""
    _, restart = _restart_at(step, cfg)
    if restart is not None:
        return MIXES[restart.mix]
    if step >= round(cfg.near_recall_from * _stage_one_steps(cfg)):
        return MIX_LATE
    if step >= round(cfg.late_mix_from * _stage_one_steps(cfg)):
        return MIX_FOCUS
    return MIX


def make_batch(
    step: int, cfg: TrainConfig, tokenizer: Tokenizer, inst_close_id: int
) -> tuple[Tensor, Tensor]:
    """Rows of packed conversations for ``step``: inputs [B, S] and targets [B, S] (-100 = no loss).

    Conversations never straddle two rows (an answer cut from its question would teach
    guessing); the tail of a row that nothing fits into is padding without loss.
    """
    width = cfg.seq_len + 1
    mix = mix_at(step, cfg)
    stream: Iterator[Sample] = iter_samples("train", seed=cfg.seed * 1_000_003 + step, mix=mix)

    def draw() -> tuple[list[int], list[bool]]:
        while True:  # a recall conversation longer than a row is skipped
            encoded = encode_sample(tokenizer, next(stream), inst_close_id)
            if len(encoded[0]) <= width:
                return encoded

    queue: list[tuple[list[int], list[bool]]] = []
    rows_ids: list[list[int]] = []
    rows_tgt: list[list[int]] = []
    for _ in range(cfg.batch_size):
        ids: list[int] = []
        tgt: list[int] = []
        misses = 0
        while width - len(ids) >= 8 and misses < 64:  # first fit from the queue, else draw
            room = width - len(ids)
            index = next((i for i, (q, _) in enumerate(queue) if len(q) <= room), None)
            if index is None:
                queue.append(draw())
                misses += 1
                continue
            sample_ids, sample_mask = queue.pop(index)
            ids += sample_ids
            tgt += [t if m else -100 for t, m in zip(sample_ids, sample_mask, strict=True)]
        pad = width - len(ids)
        ids += [tokenizer.eos_id] * pad
        tgt += [-100] * pad
        rows_ids.append(ids[:-1])
        rows_tgt.append(tgt[1:])
    return torch.tensor(rows_ids), torch.tensor(rows_tgt)


# -- losses and schedule ---------------------------------------------------------------------


def load_balancing_loss(router_logits: Sequence[Tensor], top_k: int) -> Tensor:
    """Switch/Mixtral auxiliary loss, averaged over layers: ``E * sum_e f_e * P_e``.

    ``f_e`` is the share of top-k choices that went to expert e, ``P_e`` its mean router
    probability; the product is smallest (1.0) when both are uniform.
    """
    losses = []
    for logits in router_logits:  # [T, E]
        probs = torch.softmax(logits.float(), dim=-1)
        experts = probs.shape[-1]
        chosen = probs.topk(top_k, dim=-1).indices  # [T, k]
        share = F.one_hot(chosen, experts).float().sum(dim=1).mean(dim=0) / top_k  # [E]
        losses.append(experts * (share * probs.mean(dim=0)).sum())
    return torch.stack(losses).mean()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the end of stage
    one; each restart repeats the shape from its own peak down to the same floor."""
    floor = cfg.lr * cfg.min_lr_ratio
    index, restart = _restart_at(step, cfg)
    if restart is None:
        peak, start, warmup, end = cfg.lr, 0, cfg.warmup, _stage_one_steps(cfg)
    else:
        following = cfg.restarts[index + 1].at if index + 1 < len(cfg.restarts) else cfg.steps
        peak, start, warmup, end = restart.lr, restart.at, restart.warmup, min(following, cfg.steps)
    step -= start
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, end - start - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: Transformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms and the (tied) embedding."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "tok_embeddings" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


# -- checkpoints and export ------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write: a crash or kill leaves either the old file or the new one, never half."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(
    model: Transformer,
    config: ModelConfig,
    tokenizer_path: Path,
    dest: Path,
    *,
    dtype: str = "float16",
    training: TrainConfig | None = None,
) -> Path:
    """Write the bundled layout to ``dest``: config, weights, tokenizer and a sha256 manifest."""
    from local_backend.checkpoint import save_pretrained

    dest.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, config, dest, dtype=dtype)
    shutil.copyfile(tokenizer_path, dest / "tokenizer.model")
    names = ("config.json", "model.safetensors", "tokenizer.model")
    for name in names:
        (dest / name).chmod(0o644)  # package data: readable by everyone
    manifest: dict[str, Any] = {
        "training": asdict(training) if training is not None else None,
        "files": {
            name: {"sha256": sha256(dest / name), "bytes": (dest / name).stat().st_size}
            for name in names
        },
    }
    (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return dest


# -- the loop --------------------------------------------------------------------------------


class ThreadTuner:
    """Chooses the CPU thread count by measured step time, and re-checks it now and then.

    On a shared 2-core machine two intra-op threads are twice as fast when the machine is
    idle and several times slower when other processes hold a core (each parallel region
    waits for the descheduled thread), so neither fixed choice is right for a long run.
    """

    def __init__(self, choices: Sequence[int], *, probe: int = 4, period: int = 150) -> None:
        self.choices, self.probe, self.period = list(choices), probe, period
        self.times: dict[int, list[float]] = {c: [] for c in self.choices}
        self.best = self.choices[-1]
        self.best_time = 0.0  # median step time of ``best`` when it was chosen
        self.recent: list[float] = []
        self.countdown = 0  # steps left on ``best`` before probing again
        self.probing = list(self.choices)

    def threads(self) -> int:
        return self.probing[0] if self.probing else self.best

    def record(self, seconds: float) -> None:
        if not self.probing:
            self.countdown -= 1
            self.recent = [*self.recent[-(self.probe - 1) :], seconds]
            slower = len(self.recent) == self.probe and _median(self.recent) > 1.3 * self.best_time
            if self.countdown <= 0 or slower:  # the machine's load changed: measure again
                self.probing = list(self.choices)
                self.times = {c: [] for c in self.choices}
                self.recent = []
            return
        current = self.probing[0]
        self.times[current].append(seconds)
        if len(self.times[current]) >= self.probe:
            self.probing.pop(0)
            if not self.probing:
                medians = {c: _median(t) for c, t in self.times.items()}
                self.best = min(medians, key=lambda c: medians[c])
                self.best_time = medians[self.best]
                self.countdown = self.period
                logger.debug("threads: %s -> %d", medians, self.best)


def _median(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2]


def pick_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def quick_eval(
    model: Transformer, tokenizer: Tokenizer, cfg: TrainConfig
) -> dict[str, FamilyResult]:
    """Held-out exact match on a small sample of the watched families."""
    model.eval()
    results, _ = score(model, tokenizer, heldout_samples(cfg.eval_n, WATCH_FAMILIES))
    model.train()
    return results


def train_step(
    model: Transformer,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    targets: Tensor,
    step: int,
    cfg: TrainConfig,
) -> tuple[float, float]:
    """One optimiser step; returns the reply cross-entropy and the balancing loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    logits, router = model.forward_with_router_logits(inputs)  # [B, S, V], per layer [B*S, E]
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
    aux = load_balancing_loss(router, cfg.num_experts_per_tok)
    optimizer.zero_grad(set_to_none=True)
    (ce + cfg.aux_loss_coef * aux).backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return float(ce.detach()), float(aux.detach())


def _restore(
    path: Path, model: Transformer, optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> int:
    """Load a checkpoint written with compatible settings; returns its step."""
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    saved = TrainConfig.from_dict(state["train_config"])
    if _fixed_settings(saved) != _fixed_settings(cfg):
        raise SystemExit(f"{path} was written with different settings: {saved}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def _fixed_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share (its length and bookkeeping may change)."""
    free = ("steps", "eval_every", "eval_n", "ckpt_every", "restarts")
    return {k: v for k, v in asdict(cfg).items() if k not in free}


def train(cfg: TrainConfig, out: Path, *, resume: bool = False, device: Device = "auto") -> Path:
    """Run (or resume) training into ``out``; returns the exported folder ``out/final``."""
    from tqdm import tqdm

    from training.sp_tokenizer import train_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    cores = min(2, os.cpu_count() or 1)
    tuner = ThreadTuner(sorted({1, cores})) if dev.type == "cpu" else None
    tok_path = out / "tokenizer.model"
    if not tok_path.is_file():
        train_tokenizer(tok_path, seed=cfg.seed)
    tokenizer = Tokenizer.from_file(tok_path)
    inst_close_id = tokenizer.encode("[/INST]")[-1]
    model_cfg = cfg.model_config(tokenizer.vocab_size)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = Transformer(model_cfg).to(dev)
    optimizer = make_optimizer(model, cfg)
    ckpt_path = out / "checkpoint.pt"
    step = _restore(ckpt_path, model, optimizer, cfg) if resume and ckpt_path.is_file() else 0
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    logger.info(
        "model: %.2fM parameters (%.2fM active per token), vocab %d, device %s",
        model.num_parameters() / 1e6,
        model.num_parameters(active=True) / 1e6,
        tokenizer.vocab_size,
        dev,
    )
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, mininterval=10.0, smoothing=0.05, dynamic_ncols=True)
    loss_avg: float | None = None
    last_acc = ""
    t_last, tokens_since = time.perf_counter(), 0
    while step < cfg.steps:
        step_start = time.perf_counter()
        if tuner is not None:
            torch.set_num_threads(tuner.threads())
        inputs, targets = (t.to(dev) for t in make_batch(step, cfg, tokenizer, inst_close_id))
        ce_value, aux_value = train_step(model, optimizer, inputs, targets, step, cfg)
        step += 1
        if tuner is not None:
            tuner.record(time.perf_counter() - step_start)
        tokens_since += inputs.numel()
        loss_avg = ce_value if loss_avg is None else 0.98 * loss_avg + 0.02 * ce_value
        now = time.perf_counter()
        bar.set_postfix_str(
            f"loss {loss_avg:.3f} aux {aux_value:.3f} "
            f"{tokens_since / (now - t_last):.0f} tok/s "
            f"thr {torch.get_num_threads()} lr {lr_at(step, cfg):.1e}{last_acc}",
            refresh=False,
        )
        bar.update(1)
        if now - t_last > 60:
            t_last, tokens_since = now, 0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            results = quick_eval(model, tokenizer, cfg)
            last_acc = " | " + " ".join(f"{k} {v.accuracy:.2f}" for k, v in results.items())
            logger.info("step %d loss %.4f held-out%s", step, loss_avg, last_acc)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "train_config": asdict(cfg),
                },
            )
    bar.close()
    return export(model.cpu(), model_cfg, tok_path, out / "final", training=cfg)


def export_checkpoint(out: Path) -> Path:
    """Export ``out/checkpoint.pt`` (e.g. of a run still going) to ``out/final``."""
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(state["train_config"])
    tok_path = out / "tokenizer.model"
    model = Transformer(cfg.model_config(Tokenizer.from_file(tok_path).vocab_size))
    model.load_state_dict(state["model"])
    logger.info("exporting step %d of %d", state["step"], cfg.steps)
    return export(model, model.config, tok_path, out / "final", training=cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the bundled tiny Mixtral.")
    parser.add_argument("--quick", action="store_true", help="the <= 20 minute preset")
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default .train/<preset>)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    parser.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--export-only", action="store_true", help="write DIR/final from DIR/checkpoint.pt and stop"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    preset = "quick" if args.quick else "full"
    cfg = PRESETS[preset]
    overrides = {
        k: v
        for k, v in (("steps", args.steps), ("seed", args.seed), ("lr", args.lr))
        if v is not None
    }
    cfg = replace(cfg, **overrides)
    out = args.out or Path(".train") / preset
    if args.export_only:
        logger.info("exported %s", export_checkpoint(out))
        return
    final = train(cfg, out, resume=args.resume, device=args.device)
    logger.info("exported %s", final)


if __name__ == "__main__":
    main()
