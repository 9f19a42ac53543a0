"""LocalBackend: the SDK's Backend protocol served by local_backend, on a tiny real checkpoint."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from bedrock_mistral.backends.base import Backend, TokenCounter
from bedrock_mistral.backends.local import LocalBackend
from bedrock_mistral.errors import BackendUnavailableError, ContextWindowError
from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.types import CompletionRequest, StreamEnd, TextDelta
from local_backend.checkpoint import save_pretrained
from local_backend.model import Transformer
from tests.helpers.configs import small_moe

CONFIG = small_moe(vocab_size=32000, sliding_window=16, max_seq_len=128)
PROMPT = format_prompt([{"role": "user", "content": "Write a haiku about the sea"}])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("local-ckpt")
    save_pretrained(Transformer(CONFIG), CONFIG, path)  # vocab 32000: tokenizer from mistral-common
    return path


@pytest.fixture(scope="module")
def backend(checkpoint: Path) -> LocalBackend:
    return LocalBackend(checkpoint, dtype="float32")


def _request(max_tokens: int = 10, prompt: str = PROMPT, **params: object) -> CompletionRequest:
    return CompletionRequest(
        model_id="mistral.mixtral-8x7b-instruct-v0:1",
        prompt=prompt,
        max_tokens=max_tokens,
        **params,
    )  # type: ignore[arg-type]


def test_protocols(backend: LocalBackend) -> None:
    assert isinstance(backend, Backend) and isinstance(backend, TokenCounter)
    assert backend.name == "local"
    assert backend.context_window == 128


def test_complete_counts_tokens_and_stops_at_length(backend: LocalBackend) -> None:
    completion = backend.complete(_request(max_tokens=7))
    assert completion.stop_reason == "length"
    assert (
        completion.usage.input_tokens
        == backend.count_tokens(PROMPT)
        == len(backend.model.tokenizer.encode_prompt(PROMPT))
    )
    assert completion.usage.output_tokens == 7
    assert completion.backend == "local" and completion.model_id.startswith("mistral.")
    tok = backend.model.tokenizer
    ids = tok.encode_prompt(PROMPT)
    new = backend.model.generate(ids, 7)
    # the text continues the prompt: the first token's SentencePiece space is kept
    assert completion.text == tok.decode(ids[-1:] + new)[len(tok.decode(ids[-1:])) :]


def test_stream_matches_complete(backend: LocalBackend) -> None:
    events = list(backend.stream(_request(max_tokens=9)))
    assert all(isinstance(e, TextDelta) for e in events[:-1]) and isinstance(events[-1], StreamEnd)
    end = events[-1]
    assert isinstance(end, StreamEnd)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    completion = backend.complete(_request(max_tokens=9))
    assert text == completion.text
    assert end.stop_reason == completion.stop_reason and end.usage == completion.usage
    assert end.first_byte_latency_ms is not None and end.latency_ms is not None


def test_stop_string_ends_the_text_before_it(backend: LocalBackend) -> None:
    full = backend.complete(_request(max_tokens=12)).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), f"pick a visible stop string from {full!r}"
    completion = backend.complete(_request(max_tokens=12, stop=(stop,)))
    assert completion.stop_reason == "stop"
    assert completion.text == full[: full.index(stop)]


def test_sampling_parameters_are_honoured(backend: LocalBackend) -> None:
    greedy = backend.complete(_request(max_tokens=12)).text
    sampled = {
        backend.complete(_request(max_tokens=12, temperature=1.0, top_k=200)).text for _ in range(3)
    }
    assert sampled != {greedy}
    assert backend.complete(_request(max_tokens=12, temperature=1.0, top_k=1)).text == greedy
    assert backend.complete(_request(max_tokens=12, temperature=0.7, top_p=0.0)).text == greedy


def test_model_is_loaded_once_and_shared(checkpoint: Path, backend: LocalBackend) -> None:
    assert LocalBackend(str(checkpoint), dtype="float32").model is backend.model
    assert LocalBackend(checkpoint, dtype="bfloat16").model is not backend.model


def test_concurrent_streams_interleave_and_match_sequential(backend: LocalBackend) -> None:
    prompts = [format_prompt([{"role": "user", "content": f"Count to {n}"}]) for n in (3, 7, 11)]
    sequential = [backend.complete(_request(max_tokens=15, prompt=p)).text for p in prompts]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = "".join(
            e.text
            for e in backend.stream(_request(max_tokens=15, prompt=prompts[i]))
            if isinstance(e, TextDelta)
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(3)] == sequential


def test_prompt_too_long_for_the_context(backend: LocalBackend) -> None:
    with pytest.raises(ContextWindowError, match="does not fit"):
        backend.complete(_request(max_tokens=120))


def test_missing_checkpoint_is_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        LocalBackend(tmp_path / "missing").complete(_request())


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_is_cheap() -> None:
    result = _python(
        "import sys, bedrock_mistral.backends.local\n"
        "heavy = {'torch', 'local_backend.model'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    assert result.returncode == 0, result.stderr


def test_missing_torch_names_the_extra() -> None:
    result = _python(
        "import sys; sys.modules['torch'] = None\n"
        "from bedrock_mistral.backends.local import LocalBackend\n"
        "from bedrock_mistral.errors import BackendUnavailableError\n"
        "try:\n    LocalBackend()\nexcept BackendUnavailableError as err:\n    print(err)\n"
    )
    assert 'pip install "bedrock-mistral[local]"' in result.stdout, result.stderr


def _quantized_layers(backend: LocalBackend) -> int:
    from local_backend.quant import QuantizedLinear

    return sum(isinstance(m, QuantizedLinear) for m in backend.model.model.modules())


def test_quantize_is_a_backend_option_and_its_own_shared_model(checkpoint: Path) -> None:
    from bedrock_mistral import MistralClient

    plain = LocalBackend(checkpoint)
    client = MistralClient(backend="local", local_model=str(checkpoint), quantize="int8")
    quantized = client.backend
    assert isinstance(quantized, LocalBackend) and quantized.quantize == "int8"
    assert _quantized_layers(plain) == 0 and _quantized_layers(quantized) > 0
    assert quantized.model is not plain.model  # another load, cached under its own key
    assert quantized.model is LocalBackend(checkpoint, quantize="int8").model
    reply = client.complete(PROMPT, max_tokens=6)
    assert reply.usage.output_tokens == 6


def test_the_cli_quantizes_the_bundled_model_and_it_still_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers.cli import run_cli

    result = run_cli("ask", "-b", "local", "--quantize", "int8", "What is the capital of France?")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "Paris"
    monkeypatch.setenv("BEDROCK_MISTRAL_LOCAL_QUANTIZE", "int3")
    refused = run_cli("ask", "-b", "local", "hi")
    assert refused.exit_code == 2
    assert "quantize='int3' is not allowed: int8 or int4" in refused.stderr
