"""backend="llamacpp" against llama.cpp's own OpenAI-compatible server (llama-cpp-python),
serving a GGUF of the bundled model: raw and chat mode, streams, token counts, the engine's
own errors, and faults (429, 500, a cut stream, a stall) injected by a proxy in front of it.

No mocks: every answer is the engine's greedy output for our prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from bedrock_mistral import MistralClient, errors
from bedrock_mistral.backends.openai import LlamaCppBackend
from bedrock_mistral.models import ModelSpec, resolve_model
from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.retry import RetryPolicy
from tests.helpers.backends import SleepRecorder
from tests.helpers.fault_proxy import FaultProxy, start_fault_proxy
from tests.helpers.llamacpp import MODEL_ALIAS, LlamaCppServer

CAPITAL = [{"role": "user", "content": "What is the capital of Kenya?"}]
SUM = [{"role": "user", "content": "What is 58 + 67?"}]
REVERSE = [{"role": "user", "content": "Reverse the word: planet"}]
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 12}


def bundled_spec(context_window: int = 512) -> ModelSpec:
    """The bundled model's limits as this server runs it, under the engine's model name."""
    spec = resolve_model("mistral-7b")
    return replace(spec, model_id=MODEL_ALIAS, context_window=context_window)


@pytest.fixture
def proxy(llamacpp: LlamaCppServer) -> Iterator[FaultProxy]:
    with start_fault_proxy(llamacpp.url) as running:
        yield running


def client_for(url: str, sleeps: SleepRecorder | None = None, **options: Any) -> MistralClient:
    options.setdefault("model", bundled_spec())
    options.setdefault("prompt_mode", "raw")
    retry = RetryPolicy(
        max_attempts=options.pop("max_attempts", 4), sleep=sleeps or (lambda _: None)
    )
    return MistralClient(backend="llamacpp", base_url=url, retry=retry, **options)


def local_tokens(prompt: str) -> list[int]:
    from local_backend.runtime import BUNDLED_WEIGHTS
    from local_backend.tokenizer import Tokenizer

    return Tokenizer.from_file(BUNDLED_WEIGHTS / "tokenizer.model").encode_prompt(prompt)


# -- raw mode, chat mode, streams -----------------------------------------------------------


def test_raw_mode_sends_our_prompt_less_the_bos_the_engine_adds(
    llamacpp: LlamaCppServer, proxy: FaultProxy
) -> None:
    with client_for(proxy.url) as client:
        reply = client.chat(CAPITAL, **GREEDY)
    [sent] = proxy.generations()
    assert sent.path == "/v1/completions"
    assert sent.body is not None
    prompt = format_prompt(CAPITAL)
    assert "<s> " + sent.body["prompt"] == prompt  # the engine writes BOS and the space
    assert sent.body["repeat_penalty"] == 1.0  # so temperature 0 is plain greedy
    assert reply.text.strip() == "Nairobi" and reply.stop_reason == "stop"
    # The engine read exactly our tokens for the Bedrock prompt.
    assert reply.usage.input_tokens == len(local_tokens(prompt))
    assert reply.usage.output_tokens >= 1


def test_raw_stream_equals_the_whole_answer(llamacpp: LlamaCppServer) -> None:
    with client_for(llamacpp.url) as client:
        whole = client.chat(REVERSE, **GREEDY)
        with client.stream(REVERSE, **GREEDY) as stream:
            pieces = list(stream)
    assert len(pieces) >= 3  # one token a delta
    assert "".join(pieces) == whole.text
    assert stream.completion is not None
    assert stream.completion.stop_reason == whole.stop_reason == "stop"
    # llama-cpp-python sends no usage chunk (it ignores stream_options): zeros, not a guess.
    assert stream.completion.usage.output_tokens in (0, whole.usage.output_tokens)


def test_max_tokens_cut_is_a_length_stop(llamacpp: LlamaCppServer) -> None:
    with client_for(llamacpp.url) as client:
        reply = client.chat(REVERSE, temperature=0.0, max_tokens=2)
    assert reply.stop_reason == "length" and reply.usage.output_tokens == 2


def test_chat_mode_lets_the_engine_apply_its_template(
    llamacpp: LlamaCppServer, proxy: FaultProxy
) -> None:
    with client_for(proxy.url, prompt_mode="chat") as client:
        reply = client.chat(SUM, **GREEDY)
        with client.stream(SUM, **GREEDY) as stream:
            streamed = "".join(stream)
    first, second = proxy.generations()
    assert first.path == second.path == "/v1/chat/completions"
    assert first.body is not None and first.body["messages"] == SUM
    assert reply.text.strip() and reply.stop_reason == "stop"
    assert streamed == reply.text
    assert reply.usage.input_tokens > 0


def test_models_and_the_engines_token_count(llamacpp: LlamaCppServer) -> None:
    backend = LlamaCppBackend(base_url=llamacpp.url)
    try:
        assert backend.list_models() == [MODEL_ALIAS]
        prompt = format_prompt(CAPITAL)
        counted = backend.token_count(prompt, bundled_spec())
    finally:
        backend.close()
    assert counted.source == "engine"  # llama-cpp-python's /extras/tokenize/count
    assert counted.tokens == len(local_tokens(prompt))


def test_a_prompt_longer_than_the_engines_context_is_a_context_window_error(
    llamacpp: LlamaCppServer,
) -> None:
    long = "Reverse the word: " + " ".join(["planet"] * 120)  # ~840 tokens, n_ctx is 512
    # Our limits say 32K, so our validation lets it through and the engine itself refuses.
    with (
        client_for(llamacpp.url, model=bundled_spec(32_000)) as client,
        pytest.raises(errors.ContextWindowError) as caught,
    ):
        client.chat(long, **GREEDY)
    error = caught.value
    assert error.context_window == llamacpp.n_ctx == 512
    # The engine's own count, equal to ours.
    prompt = format_prompt([{"role": "user", "content": long}])
    assert error.prompt_tokens == len(local_tokens(prompt)) > 512
    assert "llama.cpp -c" in str(error)
    assert error.attempts == 1  # not retried


# -- faults through the proxy ---------------------------------------------------------------


def test_429_and_500_are_retried_then_the_engine_answers(
    proxy: FaultProxy, sleeps: SleepRecorder
) -> None:
    proxy.script({"status": 429, "retry_after": "1.5"}, {"status": 500})
    with client_for(proxy.url, sleeps) as client:
        assert client.chat(CAPITAL, **GREEDY).text.strip() == "Nairobi"
    assert len(proxy.generations()) == 3
    assert sleeps.delays[0] == 1.5 and len(sleeps.delays) == 2


def test_a_stream_is_retried_before_its_first_delta(proxy: FaultProxy) -> None:
    with client_for(proxy.url) as client:
        whole = client.chat(REVERSE, **GREEDY).text
        proxy.requests.clear()
        proxy.script({"status": 429}, {"cut_after": 0})
        assert "".join(client.stream(REVERSE, **GREEDY)) == whole
    assert len(proxy.generations()) == 3


def test_a_stream_cut_after_text_raises_stream_interrupted(proxy: FaultProxy) -> None:
    with client_for(proxy.url) as client:
        whole = client.chat(REVERSE, **GREEDY).text
        proxy.script({"cut_after": 2})
        received: list[str] = []
        with pytest.raises(errors.StreamInterrupted) as caught:
            for text in client.stream(REVERSE, **GREEDY):
                received.append(text)
    assert len(received) == 2
    assert caught.value.partial_text == "".join(received)
    assert whole.startswith(caught.value.partial_text) and caught.value.partial_text
    assert isinstance(caught.value.__cause__, errors.APIConnectionError)
    assert len(proxy.generations()) == 2  # the whole answer, then the cut stream: no retry


def test_resume_continues_a_cut_stream_with_the_engines_own_text(proxy: FaultProxy) -> None:
    with client_for(proxy.url) as client:
        whole = client.chat(REVERSE, **GREEDY).text
        proxy.script({"cut_after": 2})
        with client.stream(REVERSE, resume=True, **GREEDY) as stream:
            resumed = "".join(stream)
    assert stream.resumes == 1
    assert resumed == whole
    continuation = proxy.generations()[-1]
    assert continuation.body is not None
    # The continuation prompt: ours with the two deltas already received after [/INST].
    first_two = continuation.body["prompt"].rsplit("[/INST]", 1)[1]
    assert len(first_two) >= 2 and whole.startswith(first_two)


def test_a_stalled_stream_ends_by_the_idle_timeout(proxy: FaultProxy) -> None:
    proxy.script({"stall_after": 1, "seconds": 3})
    with (
        client_for(proxy.url, stream_idle_timeout=0.5) as client,
        pytest.raises(errors.StreamInterrupted) as caught,
    ):
        list(client.stream(REVERSE, **GREEDY))
    assert len(caught.value.partial_text) >= 1
    assert "stream_idle_timeout" in str(caught.value.__cause__)
