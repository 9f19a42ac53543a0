"""Rolling cache memory, sparse expert execution, sampling, streaming text and loader errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import local_backend
from local_backend.checkpoint import save_pretrained
from local_backend.config import ModelConfig
from local_backend.decode import decode_step
from local_backend.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ShapeMismatchError,
    UnsupportedArchitectureError,
)
from local_backend.generate import SamplingParams, TextStream, sample, top_k_filter, top_p_filter
from local_backend.model import MoeFeedForward, Transformer
from local_backend.runtime import LocalModel
from local_backend.tokenizer import Tokenizer, bundled_v1_path
from tests.helpers.checkpoints import CASES, build_reference
from tests.helpers.configs import SMALL_MOE, small_moe

MOE = SMALL_MOE


@pytest.fixture(scope="module")
def v1() -> Tokenizer:
    path = bundled_v1_path()
    assert path is not None
    return Tokenizer.from_file(path)


def _model(config: ModelConfig = MOE, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(config).eval()


# -- KV cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "flat"), [(8, True), (None, False)], ids=["rolling", "growing"])
def test_cache_memory_is_flat_past_the_window(window: int | None, flat: bool) -> None:
    model = _model(small_moe(sliding_window=window))
    cache = model.new_cache(1)
    sizes = {}
    with torch.inference_mode():
        for pos in range(40):
            model(torch.tensor([[pos % 64]]), cache)
            sizes[pos + 1] = cache.nbytes
    if flat:
        assert sizes[8] == sizes[16] == sizes[40]
        assert cache.capacity == 8
    else:
        assert sizes[40] > sizes[16] > sizes[8]


def test_rolling_slots_hold_the_last_window_positions() -> None:
    model = _model()
    cache = model.new_cache(1)
    with torch.inference_mode():
        model(torch.arange(11)[None], cache)  # 11 > W = 8
    assert cache.slot_positions().tolist() == [8, 9, 10, 3, 4, 5, 6, 7]


# -- sparse MoE -------------------------------------------------------------------------------


def _count_expert_calls(
    model: Transformer, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int, int]]:
    """Record (layer, expert, rows) for every expert call."""
    calls: list[tuple[int, int, int]] = []
    original = MoeFeedForward.expert
    layer_of = {id(layer.feed_forward): i for i, layer in enumerate(model.layers)}

    def counting(self: MoeFeedForward, e: int, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        calls.append((layer_of[id(self)], e, x.shape[0] if x.dim() == 2 else 1))
        return original(self, e, x, **kwargs)

    monkeypatch.setattr(MoeFeedForward, "expert", counting)
    return calls


@pytest.mark.parametrize("path", ["forward", "decode_step"])
def test_decode_step_runs_only_the_selected_experts(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    model = _model()
    cache = model.new_cache(1)
    with torch.inference_mode():
        _, router = model.forward_with_router_logits(torch.tensor([[1, 2, 3, 4]]))
        model(torch.tensor([[1, 2, 3]]), cache)
        calls = _count_expert_calls(model, monkeypatch)
        if path == "forward":
            model(torch.tensor([[4]]), cache)
        else:
            decode_step(model, 4, cache)
    assert [layer for layer, _, _ in calls] == [0, 0, 1, 1]  # top-2 of 4, per layer
    assert all(rows == 1 for _, _, rows in calls)
    for layer, logits in enumerate(router):  # and they are the two the router ranks first
        expected = set(torch.topk(logits[-1], 2).indices.tolist())
        assert {e for at, e, _ in calls if at == layer} == expected


def test_decode_step_equals_forward_with_cache() -> None:
    model = _model()
    tokens = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(3))
    full, fast = model.new_cache(1), model.new_cache(1)
    with torch.inference_mode():
        model(tokens[:, :2], full)
        model(tokens[:, :2], fast)
        for t in range(2, 20):  # crosses the window of 8
            expected = model(tokens[:, t : t + 1], full)[0, -1]
            torch.testing.assert_close(
                decode_step(model, int(tokens[0, t]), fast), expected, atol=1e-5, rtol=0
            )


def test_prefill_runs_each_expert_once_on_its_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    tokens = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    calls = _count_expert_calls(model, monkeypatch)
    with torch.no_grad():
        _, router = model.forward_with_router_logits(tokens)
    for layer, logits in enumerate(router):
        chosen = torch.topk(logits, 2, dim=-1).indices
        expected = {e: int((chosen == e).sum()) for e in range(4) if (chosen == e).any()}
        layer_calls = [(e, rows) for at, e, rows in calls if at == layer]
        assert len(layer_calls) == len(expected)  # one call per used expert ...
        assert dict(layer_calls) == expected  # ... on exactly the rows routed to it
    assert sum(rows for _, _, rows in calls) == 2 * 9 * 2 * MOE.n_layers


# -- sampling ---------------------------------------------------------------------------------


def test_sampling_filters() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[False, False, True, True]]
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, 0.03
    assert torch.isinf(top_p_filter(logits, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(top_p_filter(logits, float(probs[0]) - 1e-3)).tolist() == [
        [False, True, True, True]
    ]
    assert torch.isinf(top_p_filter(logits, 0.0)).sum() == 3
    assert sample(logits, SamplingParams()).item() == 0


def test_seeded_sampling_is_reproducible_and_varies() -> None:
    model = LocalModel(_model(), _no_tokenizer())
    runs = {
        s: model.generate([1, 2, 3], 12, temperature=1.0, top_k=20, top_p=0.95, seed=s)
        for s in (1, 2)
    }
    assert model.generate([1, 2, 3], 12, temperature=1.0, top_k=20, top_p=0.95, seed=1) == runs[1]
    assert runs[1] != runs[2]


# -- streaming text ---------------------------------------------------------------------------


def _stream(
    tokenizer: Tokenizer, text: str, stop: list[str] | None = None, eos: bool = False
) -> TextStream:
    ids = tokenizer.encode(text) + ([tokenizer.eos_id, 5, 6] if eos else [])
    return TextStream(
        iter(ids),
        tokenizer,
        prompt_tokens=3,
        stop=stop or (),
        stop_ids=frozenset({tokenizer.eos_id}),
    )


def test_stream_deltas_never_split_a_character(v1: Tokenizer) -> None:
    text = "Ünïcödé 東京タワー 😀🎉 done"
    stream = _stream(v1, text)
    deltas = list(stream)
    assert "".join(deltas) == text == stream.text
    assert len(deltas) > 5 and not any("\ufffd" in d for d in deltas)
    assert stream.stop_reason == "length" and stream.completion_tokens == len(v1.encode(text))


def test_stream_stops_at_eos_and_at_stop_strings(v1: Tokenizer) -> None:
    at_eos = _stream(v1, "one two", eos=True)
    assert "".join(at_eos) == "one two" and at_eos.stop_reason == "stop"
    assert at_eos.token_ids[-1] == v1.eos_id
    stopped = _stream(v1, "alpha beta\n\nEND gamma", stop=["END", "zzz"])
    assert "".join(stopped) == "alpha beta\n\n" and stopped.stop_reason == "stop"
    held = _stream(v1, "1. x\n2. y", stop=["\n3."])  # "\n" is held back until ruled out
    assert "".join(held) == "1. x\n2. y" and held.stop_reason == "length"


# -- loading errors ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("saved")
    save_pretrained(_model(), MOE, path)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_weights_file(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "ckpt")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no safetensors weights"):
        local_backend.load(path)


def test_pickle_only_checkpoint_is_refused(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "ckpt")
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointNotFoundError, match="pickle"):
        local_backend.load(path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        local_backend.load(tmp_path / "nope")


def test_missing_shard_named_by_the_index(tmp_path: Path) -> None:
    build_reference(CASES[1], tmp_path)  # the sharded case
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointNotFoundError, match=shard.name):
        local_backend.load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"), [("intermediate_size", 40), ("num_key_value_heads", 4)]
)
def test_shape_not_matching_the_config(saved: Path, tmp_path: Path, field: str, value: int) -> None:
    path = _copy(saved, tmp_path / "ckpt")
    raw: dict[str, Any] = json.loads((path / "config.json").read_text())
    raw[field] = value
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ShapeMismatchError, match=r"(does|do) not match"):
        local_backend.load(path)


def test_fewer_layers_in_config_than_in_weights(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "ckpt")
    raw = json.loads((path / "config.json").read_text())
    raw["num_hidden_layers"] = 1
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        local_backend.load(path)


def test_unsupported_architecture(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "ckpt")
    raw = json.loads((path / "config.json").read_text())
    raw["architectures"], raw["model_type"] = ["Qwen2ForCausalLM"], "qwen2"
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UnsupportedArchitectureError, match="Qwen2ForCausalLM"):
        local_backend.load(path)


def test_bundled_model_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("local_backend.runtime.BUNDLED_WEIGHTS", tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="bundled model"):
        local_backend.load()


def test_tokenizer_falls_back_to_mistral_common_v1(tmp_path: Path) -> None:
    config = small_moe(vocab_size=32000)
    save_pretrained(_model(config), config, tmp_path)
    model = local_backend.load(tmp_path)
    assert model.tokenizer.vocab_size == 32000
    assert model.tokenizer.encode_prompt("<s> [INST] Hi [/INST]")[:4] == [1, 733, 16289, 28793]
    trace = model.route("<s> [INST] Hi [/INST]")
    assert trace.pieces[:2] == ["<s>", "▁["] and len(trace.experts) == MOE.n_layers
    assert all(len(set(chosen)) == 2 for layer in trace.experts for chosen in layer)
    assert sum(trace.expert_counts()[0]) == 2 * len(trace.token_ids)


def _no_tokenizer() -> Any:
    from local_backend.errors import TokenizerError

    return TokenizerError("no tokenizer in this test")


def test_bundled_model_runs_in_float32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    save_pretrained(_model(), MOE, tmp_path, dtype="float16")  # stored small, as it ships
    monkeypatch.setattr("local_backend.runtime.BUNDLED_WEIGHTS", tmp_path)
    assert local_backend.load().dtype == torch.float32
    assert local_backend.load(tmp_path).dtype == torch.float16  # other checkpoints: as stored
    assert local_backend.load(dtype="bfloat16").dtype == torch.bfloat16
