"""The bundled model's files: checksums, size, and config, tensors and tokenizer agreeing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

import local_backend
from bedrock_mistral.prompt import format_prompt
from local_backend.checkpoint import hf_shapes
from local_backend.config import PRESETS, ModelConfig
from local_backend.tokenizer import Tokenizer
from training.data import heldout

WEIGHTS = Path(local_backend.__file__).resolve().parent / "weights"
SHIPPED = ("config.json", "model.safetensors", "tokenizer.model")
MAX_BYTES = 12_000_000


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    body: dict[str, Any] = json.loads((WEIGHTS / "MANIFEST.json").read_text(encoding="utf-8"))
    return body


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    return ModelConfig.from_file(WEIGHTS / "config.json")


def test_the_bundled_preset_is_the_shipped_model(config: ModelConfig) -> None:
    assert config == PRESETS["bundled"]


def test_shipped_files_match_recorded_checksums(manifest: dict[str, Any]) -> None:
    assert set(manifest["files"]) == set(SHIPPED)
    for name in SHIPPED:
        data = (WEIGHTS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["files"][name]["sha256"], name
        assert len(data) == manifest["files"][name]["bytes"], name


def test_bundle_is_at_most_12_mb() -> None:
    total = sum((WEIGHTS / name).stat().st_size for name in (*SHIPPED, "MANIFEST.json"))
    assert total <= MAX_BYTES


def test_tensors_match_the_config(config: ModelConfig) -> None:
    with safe_open(str(WEIGHTS / "model.safetensors"), framework="pt") as handle:
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118
    assert shapes == hf_shapes(config)
    assert dtypes == {"F16"}


def test_architecture_is_a_small_mixtral(config: ModelConfig, manifest: dict[str, Any]) -> None:
    assert config.architecture == "MixtralForCausalLM"
    assert config.moe is not None
    assert config.moe.num_experts >= 4 and config.moe.num_experts_per_tok == 2
    assert config.n_kv_heads < config.n_heads  # grouped-query attention
    assert config.sliding_window is not None
    assert config.sliding_window < manifest["training"]["seq_len"]


def test_tokenizer_belongs_to_the_model(config: ModelConfig) -> None:
    tokenizer = Tokenizer.from_file(WEIGHTS / "tokenizer.model")
    assert tokenizer.vocab_size == config.vocab_size
    assert (tokenizer.bos_id, tokenizer.eos_id) == (config.bos_token_id, config.eos_token_id)
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("What is 407 + 95?")]
    assert [p for p in pieces if p.isdigit()] == list("40795")


def test_load_without_arguments_gives_the_bundled_model(config: ModelConfig) -> None:
    model = local_backend.load()
    assert model.model.config.vocab_size == config.vocab_size
    assert model.model.config.moe == config.moe
    sample = heldout("add2", 1)[0]
    prompt = model.tokenizer.encode_prompt(format_prompt(sample.prompt_messages))
    assert model.tokenizer.decode(model.generate(prompt, max_new_tokens=8)) == sample.answer
