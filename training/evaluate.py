"""Held-out evaluation of a bundled-style model: exact match per task family, and expert load.

``python -m training evaluate [PATH] [--n N]`` prints two rich tables for the checkpoint
folder PATH (default: the bundled model): accuracy at temperature 0 on the test split of
:mod:`training.data` (``recall`` also by distance from the name to the question), and for
every MoE layer the share of routing choices (top-k slots) each expert receives on held-out text.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from bedrock_mistral.prompt import format_prompt
from local_backend.model import Transformer
from local_backend.tokenizer import Tokenizer
from training.data import EVAL_FAMILIES, Sample, heldout

__all__ = [
    "FamilyResult",
    "Report",
    "expert_load",
    "greedy_generate",
    "recall_distance",
    "run_evaluation",
]

RECALL_BUCKETS = (32, 64, 96, 128, 160, 192, 256, 320)


@dataclass
class FamilyResult:
    """Exact-match counts of one family, with a few failures kept for the report."""

    correct: int = 0
    total: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (question, expected, got)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class Report:
    families: dict[str, FamilyResult]
    recall_by_distance: dict[int, FamilyResult]  # bucket upper bound -> result
    expert_share: list[list[float]]  # [layer][expert], shares sum to 1 per layer

    def to_json(self) -> dict[str, object]:
        return {
            "accuracy": {k: round(v.accuracy, 4) for k, v in self.families.items()},
            "counts": {k: [v.correct, v.total] for k, v in self.families.items()},
            "recall_by_distance": {
                str(k): [v.correct, v.total] for k, v in self.recall_by_distance.items()
            },
            "expert_share": [[round(s, 4) for s in layer] for layer in self.expert_share],
        }


@torch.no_grad()
def greedy_generate(
    model: Transformer, prompts: Sequence[list[int]], *, eos_id: int, max_new_tokens: int = 24
) -> list[list[int]]:
    """Temperature-0 continuations (EOS excluded), batching prompts of equal length.

    Without a cache each step reruns the whole sequence: prompts here are short, and it keeps
    this path independent of the serving code it is used to check.
    """
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_length[len(prompt)].append(index)
    outputs: list[list[int]] = [[] for _ in prompts]
    for indices in by_length.values():
        for start in range(0, len(indices), 64):
            chunk = indices[start : start + 64]
            tokens = torch.tensor([prompts[i] for i in chunk], device=device)
            done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
            for _ in range(max_new_tokens):
                next_ids = model(tokens)[:, -1].argmax(dim=-1)  # [b]
                for row, i in enumerate(chunk):
                    if not done[row] and int(next_ids[row]) != eos_id:
                        outputs[i].append(int(next_ids[row]))
                done |= next_ids == eos_id
                if bool(done.all()):
                    break
                tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
    return outputs


def recall_distance(tokenizer: Tokenizer, sample: Sample) -> int:
    """Tokens from the last token of the name to the end of the prompt (the generation cue)."""
    prompt = tokenizer.encode_prompt(format_prompt(sample.prompt_messages))
    name = str(sample.meta["name"])
    intro = sample.messages[0]["content"]
    upto_name = intro[: intro.index(name) + len(name)]
    head = tokenizer.encode_prompt(format_prompt([{"role": "user", "content": upto_name}]))
    # drop the "▁[/INST]" format_prompt closed the cut turn with
    return len(prompt) - (len(head) - 2)


def _bucket(distance: int) -> int:
    for bound in RECALL_BUCKETS:
        if distance <= bound:
            return bound
    return 10_000


def score(
    model: Transformer,
    tokenizer: Tokenizer,
    samples: Mapping[str, Sequence[Sample]],
) -> tuple[dict[str, FamilyResult], dict[int, FamilyResult]]:
    """Exact match of the decoded continuation against each sample's reply."""
    families: dict[str, FamilyResult] = {}
    by_distance: dict[int, FamilyResult] = defaultdict(FamilyResult)
    for family, items in samples.items():
        prompts = [tokenizer.encode_prompt(format_prompt(s.prompt_messages)) for s in items]
        outs = greedy_generate(model, prompts, eos_id=tokenizer.eos_id)
        result = FamilyResult()
        for sample, out in zip(items, outs, strict=True):
            got = tokenizer.decode(out)
            ok = got == sample.answer
            result.total += 1
            result.correct += ok
            if not ok and len(result.failures) < 5:
                result.failures.append((sample.messages[-2]["content"], sample.answer, got))
            if family == "recall":
                bucket = by_distance[_bucket(recall_distance(tokenizer, sample))]
                bucket.total += 1
                bucket.correct += ok
        families[family] = result
    return families, dict(sorted(by_distance.items()))


@torch.no_grad()
def expert_load(model: Transformer, sequences: Sequence[list[int]]) -> list[list[float]]:
    """Per MoE layer, the share of top-k routing choices that go to each expert."""
    moe = model.config.moe
    if moe is None:
        return []
    device = next(model.parameters()).device
    counts = torch.zeros(model.config.n_layers, moe.num_experts)
    for seq in sequences:
        _, router = model.forward_with_router_logits(torch.tensor([seq], device=device))
        for layer, logits in enumerate(router):
            chosen = logits.topk(moe.num_experts_per_tok, dim=-1).indices.flatten().cpu()
            counts[layer] += torch.bincount(chosen, minlength=moe.num_experts).float()
    shares: Tensor = counts / counts.sum(dim=1, keepdim=True)
    return [[float(s) for s in layer] for layer in shares]


def heldout_samples(n: int, families: Sequence[str] = EVAL_FAMILIES) -> dict[str, list[Sample]]:
    return {family: heldout(family, n) for family in families}


def run_evaluation(
    model: Transformer,
    tokenizer: Tokenizer,
    *,
    n: int = 200,
    families: Sequence[str] = EVAL_FAMILIES,
) -> Report:
    """The full report: accuracy per family, recall by distance, expert load."""
    model.eval()
    samples = heldout_samples(n, families)
    results, by_distance = score(model, tokenizer, samples)
    texts = [
        tokenizer.encode_prompt(format_prompt(list(s.messages)))
        for items in samples.values()
        for s in items[:20]
    ]
    return Report(results, by_distance, expert_load(model, texts))


def render(report: Report) -> None:
    """Print the report as rich tables."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    table = Table(title="Held-out exact match (temperature 0)")
    for column in ("family", "correct", "total", "accuracy", "a failure (expected -> got)"):
        table.add_column(
            column,
            justify="left" if column in ("family", "a failure (expected -> got)") else "right",
        )
    for family, result in report.families.items():
        failure = ""
        if result.failures:
            question, expected, got = result.failures[0]
            failure = f"{question!r}: {expected!r} -> {got!r}"
        table.add_row(
            family, str(result.correct), str(result.total), f"{result.accuracy:.1%}", Text(failure)
        )
    console.print(table)
    if report.recall_by_distance:
        recall = Table(title="Recall by distance (tokens from the name to the question's end)")
        recall.add_column("distance <=", justify="right")
        recall.add_column("correct", justify="right")
        recall.add_column("total", justify="right")
        recall.add_column("accuracy", justify="right")
        for bound, result in report.recall_by_distance.items():
            recall.add_row(
                str(bound), str(result.correct), str(result.total), f"{result.accuracy:.1%}"
            )
        console.print(recall)
    if report.expert_share:
        load = Table(title="Expert load: share of top-k routing choices per layer")
        load.add_column("layer", justify="right")
        for e in range(len(report.expert_share[0])):
            load.add_column(f"expert {e}", justify="right")
        for layer, shares in enumerate(report.expert_share):
            load.add_row(str(layer), *(f"{s:.1%}" for s in shares))
        console.print(load)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "path", nargs="?", default=None, help="checkpoint folder (default: bundled)"
    )
    parser.add_argument("--n", type=int, default=200, help="held-out samples per family")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--dtype", default=None, help="compute dtype (default: as load() chooses)")
    args = parser.parse_args(argv)
    from local_backend.runtime import load

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    local = load(args.path, dtype=args.dtype)  # the bundled model in the dtype it serves in
    model, tokenizer = local.model, local.tokenizer
    report = run_evaluation(model, tokenizer, n=args.n)
    render(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
