"""backend="openai" (and its presets) against a real OpenAI-compatible server on loopback.

The server (tests/helpers/openai_server.py) is a real ASGI app under uvicorn; every test
asserts on what crossed the wire or on what our client made of a real HTTP answer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from bedrock_mistral import MistralClient, errors
from bedrock_mistral.backends.factory import create_backend
from bedrock_mistral.backends.openai import OllamaBackend, OpenAIBackend, VLLMBackend
from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.retry import RetryPolicy
from tests.helpers.backends import SleepRecorder
from tests.helpers.openai_server import OpenAIServer, start_openai_server

pytest.importorskip("httpx", reason="needs the openai extra: pip install -e '.[openai]'")

ENGINE_MODEL = "mistral:7b-instruct"
HELLO = [{"role": "user", "content": "hello there friend"}]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with start_openai_server() as running:
        yield running


def client_for(
    server: OpenAIServer, sleeps: SleepRecorder | None = None, **options: Any
) -> MistralClient:
    options.setdefault("model", ENGINE_MODEL)
    retry = RetryPolicy(
        max_attempts=options.pop("max_attempts", 5), sleep=sleeps or (lambda _: None)
    )
    return MistralClient(backend="openai", base_url=server.url, retry=retry, **options)


# -- the wire --------------------------------------------------------------------------------


def test_chat_mode_sends_the_messages_and_returns_the_reply(server: OpenAIServer) -> None:
    with client_for(server) as client:
        reply = client.chat(HELLO, max_tokens=20, temperature=0.1)
    assert (reply.text, reply.stop_reason, reply.backend) == (
        "hello there friend",
        "stop",
        "openai",
    )
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (3, 3)
    [sent] = server.generations()
    assert sent.path == "/v1/chat/completions"
    assert sent.body == {
        "model": ENGINE_MODEL,
        "messages": HELLO,
        "max_tokens": 20,
        "temperature": 0.1,
        "top_p": 1.0,
    }


def test_raw_mode_sends_exactly_the_bedrock_prompt(server: OpenAIServer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    with client_for(server, model="mistral-7b", engine_model=ENGINE_MODEL, prompt_mode="raw") as c:
        reply = c.chat(messages, max_tokens=5, top_k=7, stop=["zz"])
    [sent] = server.generations()
    assert sent.path == "/v1/completions"
    assert sent.body is not None
    assert sent.body["prompt"] == format_prompt(messages)
    assert sent.body["prompt"] == c.prepare(messages).prompt  # what Bedrock would get
    assert (sent.body["top_k"], sent.body["stop"], sent.body["model"]) == (7, ["zz"], ENGINE_MODEL)
    assert reply.text == "second question"


def test_the_llamacpp_preset_sends_the_prompt_without_what_llamacpp_adds(
    server: OpenAIServer,
) -> None:
    """llama.cpp writes BOS and the dummy-prefix space after special tokens itself
    (measured against the real engine in tests/engines/test_llamacpp_tokens.py)."""
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    with MistralClient(
        model=ENGINE_MODEL, backend="llamacpp", base_url=server.url, prompt_mode="raw"
    ) as client:
        assert client.chat(messages).text == "second question"
    [sent] = server.generations()
    assert sent.body is not None
    assert sent.body["prompt"] == (
        "[INST] first question [/INST] first answer</s>[INST] second question [/INST]"
    )
    assert format_prompt(messages).startswith("<s> [INST]")
    assert sent.body["repeat_penalty"] == 1.0  # llama-cpp-python's default is 1.1


def test_stream_yields_deltas_then_usage_from_the_final_chunk(server: OpenAIServer) -> None:
    with client_for(server) as client, client.stream("one two three four") as stream:
        pieces = list(stream)
    assert pieces == ["one", " two", " three", " four"]
    assert stream.completion is not None
    assert stream.completion.usage.output_tokens == 4
    [sent] = server.generations()
    assert sent.body is not None
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}


def test_max_tokens_cut_is_a_length_stop(server: OpenAIServer) -> None:
    with client_for(server) as client:
        assert client.chat("a b c d e", max_tokens=2).stop_reason == "length"
        with client.stream("a b c d e", max_tokens=2) as stream:
            assert "".join(stream) == "a b"
        assert stream.completion is not None and stream.completion.stop_reason == "length"


def test_complete_with_a_raw_prompt_goes_to_completions_even_in_chat_mode(
    server: OpenAIServer,
) -> None:
    with client_for(server) as client:
        assert client.complete("<s> [INST] raw text [/INST]").text == "raw text"
    [sent] = server.generations()
    assert sent.path == "/v1/completions"


def test_the_api_key_is_sent_as_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDROCK_MISTRAL_OPENAI_API_KEY", "sk-from-env")
    with start_openai_server(api_key="sk-from-env") as server, client_for(server) as client:
        assert client.chat("authorised").text == "authorised"
        assert server.requests[-1].headers["authorization"] == "Bearer sk-from-env"


def test_one_connection_pool_per_backend_closed_by_close(server: OpenAIServer) -> None:
    client = client_for(server)
    backend: Any = client.backend
    client.chat("first")
    pool = backend._http
    client.chat("second")
    assert backend._http is pool and pool is not None
    client.close()
    assert backend._http is None and pool.is_closed


# -- models and presets ----------------------------------------------------------------------


def test_a_model_only_the_engine_knows_gets_a_conservative_spec(server: OpenAIServer) -> None:
    with client_for(server, model="mixtral:8x7b") as client:
        assert client.model.model_id == "mixtral:8x7b" and not client.model.known
        assert client.model.context_window == 32_000
        assert client.chat("ok").model_id == "mixtral:8x7b"
    with pytest.raises(errors.ValidationError, match="unknown model"):
        MistralClient(model="mixtral:8x7b", backend="echo")  # elsewhere it is still unknown


def test_presets_only_set_defaults() -> None:
    ollama = OllamaBackend()
    assert ollama.base_url == "http://localhost:11434/v1"
    assert MistralClient(model="mistral-7b", backend="ollama").backend.name == "ollama"
    from bedrock_mistral.models import resolve_model

    assert ollama.engine_name(resolve_model("mistral-7b")) == "mistral:7b-instruct"
    vllm = VLLMBackend(base_url="http://gpu-box:8000/v1/")
    assert vllm.base_url == "http://gpu-box:8000/v1"
    assert vllm.engine_name(resolve_model("mixtral-8x7b")) == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert create_backend("llamacpp").base_url == "http://localhost:8080/v1"  # type: ignore[attr-defined]


def test_plain_openai_needs_a_url_and_refuses_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ConfigurationError, match="base_url"):
        OpenAIBackend()
    with pytest.raises(errors.ConfigurationError, match="not an http"):
        OpenAIBackend(base_url="localhost:8000")
    with pytest.raises(errors.ConfigurationError, match="prompt_mode"):
        OpenAIBackend(base_url="http://x/v1", prompt_mode="fancy")  # type: ignore[arg-type]
    monkeypatch.setenv("BEDROCK_MISTRAL_BASE_URL", "http://from-env:1/v1")
    assert OpenAIBackend().base_url == "http://from-env:1/v1"


def test_list_models_and_token_counts_say_who_counted(server: OpenAIServer) -> None:
    backend = OpenAIBackend(base_url=server.url)
    assert backend.list_models() == ["mistral:7b-instruct", "mixtral:8x7b"]
    counted = backend.token_count("three little words")
    assert (counted.tokens, counted.source) == (3, "engine")
    without = OllamaBackend(base_url=server.url.replace("/v1", "/nothing/v1"))
    fallback = without.token_count("three little words")
    assert fallback.source in ("tokenizer", "estimate") and fallback.tokens > 0
    backend.close()
    without.close()


# -- retries, interruptions, timeouts --------------------------------------------------------


def test_429_and_500_are_retried_honouring_retry_after(
    server: OpenAIServer, sleeps: SleepRecorder
) -> None:
    server.script({"status": 429, "retry_after": "1.5"}, {"status": 500})
    with client_for(server, sleeps) as client:
        assert client.chat("third time lucky").text == "third time lucky"
    assert len(server.generations()) == 3
    assert sleeps.delays[0] == 1.5 and len(sleeps.delays) == 2


def test_retries_give_up_with_the_attempt_count(server: OpenAIServer) -> None:
    server.script(*[{"status": 503}] * 3)
    with (
        client_for(server, max_attempts=3) as client,
        pytest.raises(errors.ServiceUnavailableError) as caught,
    ):
        client.chat("never")
    assert caught.value.attempts == 3 and len(server.generations()) == 3


def test_a_stream_is_retried_before_its_first_delta(server: OpenAIServer) -> None:
    server.script({"status": 429}, {"cut_after": 0})
    with client_for(server) as client:
        assert "".join(client.stream("fine in the end")) == "fine in the end"
    assert len(server.generations()) == 3


def test_a_stream_cut_after_text_raises_stream_interrupted(server: OpenAIServer) -> None:
    server.script({"cut_after": 2})
    received: list[str] = []
    with client_for(server) as client, pytest.raises(errors.StreamInterrupted) as caught:
        for text in client.stream("one two three four"):
            received.append(text)
    assert caught.value.partial_text == "one two" == "".join(received)
    assert isinstance(caught.value.__cause__, errors.APIConnectionError)
    assert len(server.generations()) == 1  # never restarted silently


def test_resume_continues_a_cut_stream_without_duplicating(server: OpenAIServer) -> None:
    server.script({"cut_after": 2})
    with client_for(server) as client, client.stream("one two three four", resume=True) as stream:
        assert "".join(stream) == "one two three four"
    assert stream.resumes == 1
    _, second = server.generations()
    assert second.path == "/v1/completions"  # a continuation only the prompt can express
    assert second.body is not None and second.body["prompt"].endswith("[/INST]one two")


def test_a_stalled_stream_ends_by_the_idle_timeout(server: OpenAIServer) -> None:
    server.script({"stall_after": 1, "seconds": 3})
    with (
        client_for(server, stream_idle_timeout=0.3) as client,
        pytest.raises(errors.StreamInterrupted) as caught,
    ):
        list(client.stream("a b c"))
    assert caught.value.partial_text == "a"
    assert "stream_idle_timeout" in str(caught.value.__cause__)


# -- errors, with their fix ------------------------------------------------------------------


def test_401_is_an_auth_error_naming_the_key_variable() -> None:
    with (
        start_openai_server(api_key="right") as server,
        client_for(server) as client,
        pytest.raises(errors.CredentialsError) as caught,
    ):
        client.chat("hi")
    text = str(caught.value)
    assert "needs an API key" in text and "BEDROCK_MISTRAL_OPENAI_API_KEY" in text
    assert "api_key=" in text
    assert "--api-key" in caught.value.render("cli")


def test_unknown_model_lists_what_the_engine_serves(server: OpenAIServer) -> None:
    with (
        client_for(server, model="mistral:nope") as client,
        pytest.raises(errors.ModelNotFoundError) as caught,
    ):
        client.chat("hi")
    assert "mistral:7b-instruct, mixtral:8x7b" in str(caught.value)
    assert caught.value.attempts == 1


def test_context_too_long_from_the_engine_is_a_context_window_error() -> None:
    with (
        start_openai_server(context_window=10) as server,
        client_for(server) as client,
        pytest.raises(errors.ContextWindowError) as caught,
    ):
        client.chat("six words that do not fit", max_tokens=8)
    error = caught.value
    assert (error.prompt_tokens, error.max_tokens, error.context_window) == (6, 8, 10)
    assert "--max-model-len" in str(error)


def test_nothing_listening_says_which_url_and_how_to_start_the_engine() -> None:
    client = MistralClient(
        model="mistral-7b", backend="ollama", base_url="http://127.0.0.1:9/v1", max_attempts=1
    )
    with pytest.raises(errors.APIConnectionError) as caught:
        client.chat("anyone?")
    line = caught.value.render("cli")
    assert "http://127.0.0.1:9/v1" in line and "ollama serve" in line and "--base-url" in line


def test_a_url_without_the_api_path_is_a_setup_error(server: OpenAIServer) -> None:
    client = MistralClient(
        backend="openai", base_url=server.url.removesuffix("/v1"), model=ENGINE_MODEL
    )
    with pytest.raises(errors.ConfigurationError, match="/v1"):
        client.chat("hi")


def test_import_bedrock_mistral_imports_no_http_client(server: OpenAIServer) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import bedrock_mistral
        from bedrock_mistral import MistralClient
        assert "httpx" not in sys.modules and "openai" not in sys.modules, "import"
        client = MistralClient(model="{ENGINE_MODEL}", backend="openai", base_url="{server.url}")
        assert "httpx" not in sys.modules, "constructor"
        assert client.chat("lazy").text == "lazy"
        assert "httpx" in sys.modules and "openai" not in sys.modules, "call"
        assert "boto3" not in sys.modules and "torch" not in sys.modules, "others"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
