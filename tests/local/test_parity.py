"""Numerical parity with transformers (eager, fp32) on tiny random checkpoints it wrote itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import local_backend
from local_backend.runtime import LocalModel
from tests.helpers.checkpoints import CASES, VOCAB, Case, build_reference, write_consolidated

ATOL = 1e-4
SEQ = 23  # longer than every window in CASES, so the band mask is exercised


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Case, Any, LocalModel, Path]:
    case: Case = request.param
    path = tmp_path_factory.mktemp(case.name)
    reference = build_reference(case, path)
    return case, reference, local_backend.load(path, dtype="float32"), path


def _tokens(batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _reference_logits(reference: Any, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference(input_ids=tokens).logits


def test_checkpoint_layout(pair: tuple[Case, Any, LocalModel, Path]) -> None:
    case, _, model, path = pair
    assert (path / "model.safetensors.index.json").is_file() == (case.shard is not None)
    assert model.config.sliding_window == case.fields["sliding_window"]


def test_full_forward_matches(pair: tuple[Case, Any, LocalModel, Path]) -> None:
    _, reference, model, _ = pair
    tokens = _tokens()
    ours = model.forward(tokens)
    assert ours.shape == (2, SEQ, VOCAB)
    torch.testing.assert_close(ours, _reference_logits(reference, tokens), atol=ATOL, rtol=0)


def test_cached_decode_across_the_window_matches(pair: tuple[Case, Any, LocalModel, Path]) -> None:
    _, reference, model, _ = pair
    tokens = _tokens()
    cache = model.new_cache(batch_size=2)
    steps = [model.forward(tokens[:, :3], cache)]
    steps += [model.forward(tokens[:, t : t + 1], cache) for t in range(3, SEQ)]
    assert cache.seq_len == SEQ
    torch.testing.assert_close(
        torch.cat(steps, dim=1), _reference_logits(reference, tokens), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("chunks", [(4, 4, 4, 4, 4, 3), (9, 1, 13), (2, 21)], ids=str)
def test_chunked_prefill_equals_one_shot(
    pair: tuple[Case, Any, LocalModel, Path], chunks: tuple[int, ...]
) -> None:
    _, _, model, _ = pair
    tokens = _tokens()
    one_shot = model.forward(tokens)
    cache = model.new_cache(batch_size=2)
    pieces, start = [], 0
    for size in chunks:
        pieces.append(model.forward(tokens[:, start : start + size], cache))
        start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), one_shot, atol=ATOL, rtol=0)


def test_greedy_generation_token_for_token(pair: tuple[Case, Any, LocalModel, Path]) -> None:
    _, reference, model, _ = pair
    prompt = _tokens(batch=1, seq=4, seed=7)
    expected = reference.generate(prompt, max_new_tokens=30, do_sample=False)[0, 4:].tolist()
    ours = model.generate(prompt[0].tolist(), 30, stop_at_eos=False)
    assert ours == expected
    model.prefill_chunk = 3  # a chunked prefill changes nothing
    try:
        assert (
            model.generate(_tokens(1, 11, 8)[0].tolist(), 12, stop_at_eos=False)
            == reference.generate(_tokens(1, 11, 8), max_new_tokens=12, do_sample=False)[
                0, 11:
            ].tolist()
        )
    finally:
        model.prefill_chunk = 1024


def test_consolidated_format_gives_the_same_logits(
    pair: tuple[Case, Any, LocalModel, Path], tmp_path: Path
) -> None:
    _, reference, _, path = pair
    write_consolidated(reference, tmp_path)
    # a folder may also carry the HF config.json (repos ship both); without HF weights
    # beside it, the consolidated files are the ones loaded
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    model = local_backend.load(tmp_path, dtype="float32")
    tokens = _tokens()
    torch.testing.assert_close(
        model.forward(tokens), _reference_logits(reference, tokens), atol=ATOL, rtol=0
    )


def test_bfloat16_load_stays_close(pair: tuple[Case, Any, LocalModel, Path]) -> None:
    _, reference, _, path = pair
    model = local_backend.load(path, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    tokens = _tokens(batch=1)
    ours = model.forward(tokens).float()
    assert (ours - _reference_logits(reference, tokens)).abs().max() < 0.05


def test_first_mixtral_release_layout(tmp_path: Path) -> None:
    case = CASES[0]  # Mixtral
    reference = build_reference(case, tmp_path / "hf")
    write_consolidated(reference, tmp_path / "orig", fused_experts=True)
    model = local_backend.load(tmp_path / "orig", dtype="float32")
    tokens = _tokens()
    torch.testing.assert_close(
        model.forward(tokens), _reference_logits(reference, tokens), atol=ATOL, rtol=0
    )
