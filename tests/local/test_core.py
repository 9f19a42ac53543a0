"""Training-facing core: config round trips, forward parity, save/load, autograd through the MoE."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import MistralForCausalLM, MixtralForCausalLM

from local_backend.checkpoint import load_transformer, save_pretrained
from local_backend.config import ModelConfig, MoeConfig
from local_backend.errors import CheckpointError, UnsupportedArchitectureError
from local_backend.model import Transformer, route_one, select_experts

TINY_MOE = ModelConfig(
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=96,
    vocab_size=128,
    moe=MoeConfig(num_experts=4, num_experts_per_tok=2),
    sliding_window=6,
    rope_theta=5000.0,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {
                "architectures": ["MixtralForCausalLM"],
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 96,
                "vocab_size": 128,
                "head_dim": None,
                "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"},
                "dtype": "bfloat16",
                "sliding_window": None,
            },
            {
                "head_dim": 16,
                "n_kv_heads": 4,
                "rope_theta": 5000.0,
                "dtype": "bfloat16",
                "sliding_window": None,
                "norm_eps": 1e-5,
            },
            id="hf5-mixtral-null-head-dim",
        ),
        pytest.param(
            {
                "architectures": ["MistralForCausalLM"],
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 24,
                "intermediate_size": 96,
                "vocab_size": 128,
                "rope_theta": 10000.0,
                "torch_dtype": "float16",
                "sliding_window": 4096,
                "rms_norm_eps": 1e-5,
            },
            {
                "head_dim": 24,
                "n_kv_heads": 2,
                "rope_theta": 10000.0,
                "dtype": "float16",
                "sliding_window": 4096,
                "norm_eps": 1e-5,
            },
            id="hub-mistral-explicit-head-dim",
        ),
        pytest.param(
            {
                "model_type": "mistral",
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 96,
                "vocab_size": 128,
            },
            {
                "head_dim": 16,
                "n_kv_heads": 4,
                "rope_theta": 10000.0,
                "dtype": "float32",
                "sliding_window": 4096,
                "norm_eps": 1e-6,
            },
            id="mistral-defaults",
        ),
    ],
)
def test_config_from_hf_dict(raw: dict[str, object], expected: dict[str, object]) -> None:
    config = ModelConfig.from_hf_dict(raw)
    assert {k: getattr(config, k) for k in expected} == expected


def test_config_round_trips_through_both_formats() -> None:
    assert ModelConfig.from_hf_dict(TINY_MOE.to_hf_dict()) == TINY_MOE
    assert ModelConfig.from_params_json(TINY_MOE.to_params_dict()) == TINY_MOE


def test_unsupported_architecture_is_named() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="LlamaForCausalLM"):
        ModelConfig.from_hf_dict({"architectures": ["LlamaForCausalLM"], "hidden_size": 8})


def test_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"neither config\.json nor params\.json"):
        ModelConfig.from_file(tmp_path)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_saved_checkpoint_is_a_normal_hf_mixtral(tmp_path: Path, tie: bool) -> None:
    torch.manual_seed(0)
    config = replace(TINY_MOE, tie_embeddings=tie)
    model = Transformer(config).eval()
    save_pretrained(model, config, tmp_path)
    names = json.loads((tmp_path / "config.json").read_text())
    assert names["architectures"] == ["MixtralForCausalLM"]
    reference = MixtralForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    tokens = torch.randint(0, config.vocab_size, (2, 11))  # longer than the window of 6
    with torch.no_grad():
        ours = model(tokens)
        theirs = reference(input_ids=tokens).logits
        reloaded = load_transformer(tmp_path)(tokens)
    assert ours.shape == (2, 11, config.vocab_size)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(reloaded, ours, atol=0, rtol=0)


def test_saved_dense_checkpoint_loads_in_transformers(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = ModelConfig(
        dim=48,
        n_layers=2,
        n_heads=4,
        n_kv_heads=1,
        head_dim=16,
        hidden_dim=80,
        vocab_size=64,
        sliding_window=None,
    )
    model = Transformer(config).eval()
    save_pretrained(model, config, tmp_path, dtype="float32")
    reference = MistralForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    tokens = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(
            model(tokens), reference(input_ids=tokens).logits, atol=1e-4, rtol=0
        )


def test_moe_trains_and_returns_router_logits() -> None:
    torch.manual_seed(0)
    model = Transformer(TINY_MOE)
    tokens = torch.randint(0, TINY_MOE.vocab_size, (2, 10))
    logits, router = model.forward_with_router_logits(tokens)
    assert [r.shape for r in router] == [(20, 4), (20, 4)]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    expert_grads = [layer.feed_forward.w13.grad for layer in model.layers]
    assert all(g is not None and g.abs().sum() > 0 for g in expert_grads)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt.step()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(
            model(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()
        )
    assert after < loss


# a small consolidated-format params.json, without rope_theta or moe
PARAMS_JSON: dict[str, object] = {
    "dim": 64,
    "n_layers": 2,
    "head_dim": 16,
    "hidden_dim": 96,
    "n_heads": 4,
    "n_kv_heads": 2,
    "norm_eps": 1e-5,
    "vocab_size": 128,
}


@pytest.mark.parametrize(
    ("extra", "theta"),
    [({"sliding_window": 4096}, 10000.0), ({}, 1e6), ({"rope_theta": 5e5}, 5e5)],
    ids=["v0.1-window", "no-window", "explicit"],
)
def test_params_json_rope_theta_default(extra: dict[str, object], theta: float) -> None:
    raw = {**PARAMS_JSON, **extra}
    assert ModelConfig.from_params_json(raw).rope_theta == theta


def test_params_json_moe_and_file(tmp_path: Path) -> None:
    raw = {
        **PARAMS_JSON,
        "rope_theta": 1e6,
        "moe": {"num_experts": 8, "num_experts_per_tok": 2},
    }
    (tmp_path / "params.json").write_text(json.dumps(raw))
    config = ModelConfig.from_file(tmp_path)
    assert config.moe == MoeConfig(num_experts=8, num_experts_per_tok=2)
    assert config.architecture == "MixtralForCausalLM"


def test_route_one_picks_the_experts_and_weights_of_select_experts() -> None:
    logits = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    weights, experts = select_experts(logits, 2)
    for row, w, e in zip(logits, weights, experts, strict=True):
        routed = route_one(row.tolist(), 2)
        assert [x for x, _ in routed] == e.tolist()
        assert [y for _, y in routed] == pytest.approx(w.tolist(), abs=1e-6)
