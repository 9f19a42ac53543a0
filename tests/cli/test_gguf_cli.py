"""``--local-model ollama:NAME`` end to end: Ollama's store -> GGUF blob -> model + tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("cli_home")
torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
pytest.importorskip("gguf", reason="needs the dev extra (gguf writes the test files)")

from local_backend.checkpoint import to_hf_state_dict  # noqa: E402
from local_backend.model import Transformer  # noqa: E402
from tests.helpers.cli import run_cli  # noqa: E402
from tests.helpers.configs import small_moe  # noqa: E402
from tests.helpers.gguf_files import (  # noqa: E402
    gguf_arrays,
    ollama_store,
    v1_tokenizer_metadata,
    write_gguf,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding a tiny random Mixtral with Mistral's v1 vocabulary, in Q8_0."""
    tmp = tmp_path_factory.mktemp("ollama")
    config = small_moe(vocab_size=32000)
    torch.manual_seed(0)
    arrays = gguf_arrays(to_hf_state_dict(Transformer(config)), config)
    file = write_gguf(tmp / "m.gguf", config, arrays, "Q8_0", tokenizer=v1_tokenizer_metadata())
    return ollama_store(tmp / "store", file, "tiny")


def test_route_through_ollama_store(store: Path) -> None:
    env = {"OLLAMA_MODELS": str(store)}
    args = ("local", "route", "--json", "-l", "0", "The quick brown fox")
    result = run_cli(*args[:2], "--local-model", "ollama:tiny", *args[2:], env=env)
    assert result.exit_code == 0, result.stderr
    trace = json.loads(result.stdout)
    text = "".join(trace["tokens"][1:]).replace("\u2581", " ").strip()
    assert trace["tokens"][0] == "<s>" and text == "The quick brown fox"
    assert trace["num_experts"] == 4


def test_missing_ollama_model_lists_the_store(store: Path) -> None:
    env = {"OLLAMA_MODELS": str(store)}
    result = run_cli("local", "route", "--local-model", "ollama:mistral", "x", env=env)
    assert result.exit_code != 0
    assert "mistral:latest" in result.stderr and "tiny:latest" in result.stderr
