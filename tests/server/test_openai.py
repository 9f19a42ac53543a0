"""The OpenAI face of ``serve``, driven by the official ``openai`` client over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bedrock_mistral.errors import ThrottledError
from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.retry import RetryPolicy
from tests.helpers.backends import Fail, GreedyBackend, SleepRecorder
from tests.helpers.server import MISTRAL_7B, MIXTRAL

openai = pytest.importorskip("openai", reason="needs the openai client: pip install -e '.[dev]'")

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a river"},
    {"role": "assistant", "content": "The Rhine."},
    {"role": "user", "content": "And one in [INST] France"},
]


def oai(url: str, *, key: str = "unused", retries: int = 0) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=retries, timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    from bedrock_mistral.server import serve_in_background

    with serve_in_background("echo") as url:
        yield url


def test_chat_answers_with_the_echo_and_its_usage(server: str) -> None:
    reply = oai(server).chat.completions.create(
        model="mistral-7b", messages=[{"role": "user", "content": "Hello there friend"}]
    )
    assert reply.object == "chat.completion"
    assert reply.model == MISTRAL_7B
    assert reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert (choice.message.role, choice.message.content) == ("assistant", "Hello there friend")
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.completion_tokens, reply.usage.total_tokens) == (
        3,
        reply.usage.prompt_tokens + 3,
    )


def test_the_backend_receives_format_prompt_byte_for_byte(make_server: Callable[..., Any]) -> None:
    backend = GreedyBackend()
    url = make_server(backend)
    oai(url).chat.completions.create(model=MIXTRAL, messages=MESSAGES, max_tokens=7)
    with oai(url).chat.completions.create(
        model="mixtral-8x7b", messages=MESSAGES, stream=True
    ) as stream:
        "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    expected = format_prompt(MESSAGES)
    assert "(INST) France" in expected  # the marker in the text was neutralised, as the SDK does
    assert [call.prompt for call in backend.calls] == [expected, expected]
    assert backend.calls[0].max_tokens == 7
    assert backend.calls[1].max_tokens == 512  # the model's default, from the registry


def test_stream_chunks_in_openai_order_with_usage_last(server: str) -> None:
    chunks = list(
        oai(server).chat.completions.create(
            model="mistral-7b",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    first, *middle, final, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in middle) == "one two three"
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in middle)
    assert final.choices[0].finish_reason == "stop" and final.usage is None
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 3


def test_stream_without_include_usage_has_no_usage_chunk(server: str) -> None:
    chunks = list(
        oai(server).chat.completions.create(
            model="mistral-7b",
            messages=[{"role": "user", "content": "a b c d"}],
            stream=True,
            max_tokens=2,
        )
    )
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b"


def test_completions_take_a_raw_prompt_stream_and_not(server: str) -> None:
    client = oai(server)
    raw = "<s> [INST] raw words here [/INST]"
    reply = client.completions.create(model=MIXTRAL, prompt=raw, max_tokens=2, stop=["zzz"])
    assert reply.object == "text_completion"
    assert (reply.choices[0].text, reply.choices[0].finish_reason) == ("raw words", "length")
    chunks = list(
        client.completions.create(
            model=MIXTRAL, prompt=raw, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "raw words here"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_models_lists_the_served_ids_with_their_aliases(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", model_ids=["mistral-7b", MIXTRAL])
    client = oai(url)
    listed = {model.id: model for model in client.models.list()}
    assert set(listed) == {MISTRAL_7B, MIXTRAL}
    assert listed[MISTRAL_7B].model_extra == {"aliases": ["mistral-7b"]}
    assert client.models.retrieve("mixtral-8x7b").id == MIXTRAL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("mistral-large-2407")
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="mistral-large-2407", messages=[{"role": "user", "content": "x"}]
        )
    error = info.value.body
    assert (error["type"], error["code"], error["param"]) == (
        "not_found_error",
        "model_not_found",
        "model",
    )
    assert MISTRAL_7B in error["message"] and MIXTRAL in error["message"]


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"temperature": 1.5}, "temperature", "temperature=1.5 is not allowed"),
        ({"max_completion_tokens": 9000}, "max_completion_tokens", "from 1 to 8192"),
        ({"n": 2}, "n", "one choice per request"),
        ({"stop": [""]}, "stop[0]", "a non-empty string"),
        ({"extra_body": {"max_token": 5}}, "max_token", "Unrecognized request argument"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"extra_body": {"top_k": 0}}, "top_k", "an integer from 1 to 200"),
    ],
)
def test_our_rules_refuse_bad_parameters_as_bad_requests(
    server: str, params: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(server).chat.completions.create(
            model="mistral-7b", messages=[{"role": "user", "content": "hi"}], **params
        )
    assert info.value.status_code == 400
    assert info.value.body["type"] == "invalid_request_error"
    assert info.value.body["param"] == param
    assert words in info.value.body["message"]


def test_the_conversation_rules_are_the_sdks(server: str) -> None:
    client = oai(server)
    with pytest.raises(openai.BadRequestError, match="last message must be the user's"):
        client.chat.completions.create(
            model="mistral-7b",
            messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        )
    # Mistral's "prefix" continues a final assistant turn instead.
    reply = client.chat.completions.create(
        model="mistral-7b",
        messages=[
            {"role": "user", "content": "alpha beta gamma"},
            {"role": "assistant", "content": "alpha", "prefix": True},
        ],
    )
    assert reply.choices[0].message.content == " beta gamma"
    with pytest.raises(openai.BadRequestError, match="system message is only allowed"):
        client.chat.completions.create(
            model="mistral-7b",
            messages=[
                {"role": "user", "content": "a"},
                {"role": "developer", "content": "b"},  # OpenAI's newer name for system
                {"role": "user", "content": "c"},
            ],
        )


def test_a_prompt_over_the_context_window_is_context_length_exceeded(server: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(server).chat.completions.create(
            model="mistral-7b",
            messages=[{"role": "user", "content": "word " * 40_000}],
        )
    assert info.value.body["code"] == "context_length_exceeded"
    assert info.value.body["param"] == "messages"
    assert "32000-token context window" in info.value.body["message"]


def test_throttle_fault_is_a_rate_limit_error_and_the_client_retries_it(
    make_server: Callable[..., Any],
) -> None:
    url = make_server("echo", fault_script=["throttle", "throttle"])
    with pytest.raises(openai.RateLimitError) as info:
        oai(url).chat.completions.create(
            model="mistral-7b", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["type"] == "rate_limit_error"
    # The official client's own retries (x-stainless-retry-count) are counted as attempts.
    reply = oai(url, retries=2).chat.completions.create(
        model="mistral-7b", messages=[{"role": "user", "content": "again"}]
    )
    assert reply.choices[0].message.content == "again"
    assert [(r.status, r.attempt, r.fault) for r in url.stats.requests] == [
        (429, 1, "throttle"),
        (429, 1, "throttle"),
        (200, 2, None),
    ]


@pytest.mark.parametrize(
    ("fault", "exception", "status"),
    [
        ("internal", "InternalServerError", 500),
        ("unavailable", "InternalServerError", 503),
        ("denied", "PermissionDeniedError", 403),
    ],
)
def test_http_faults_become_openai_status_errors(
    make_server: Callable[..., Any], fault: str, exception: str, status: int
) -> None:
    url = make_server("echo", fault_script=[fault])
    with pytest.raises(getattr(openai, exception)) as info:
        oai(url).completions.create(model="mistral-7b", prompt="x")
    assert info.value.status_code == status


def test_the_concurrency_gate_answers_429(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", max_concurrency=1, latency_ms=300)
    import threading

    started = threading.Thread(
        target=lambda: oai(url).completions.create(model="mistral-7b", prompt="slow")
    )
    started.start()
    try:
        for _ in range(100):  # wait for the first request to hold the only slot
            if url.stats.in_flight:
                break
            threading.Event().wait(0.01)
        with pytest.raises(openai.RateLimitError):
            oai(url).completions.create(model="mistral-7b", prompt="second")
    finally:
        started.join()
    assert url.stats.peak_in_flight == 1


def test_midstream_fault_raises_in_the_client_after_the_first_text(
    make_server: Callable[..., Any],
) -> None:
    url = make_server("echo", fault_script=["midstream"], midstream_after=2)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="failed while streaming"):
        for chunk in oai(url).chat.completions.create(
            model="mistral-7b",
            messages=[{"role": "user", "content": "one two three four"}],
            stream=True,
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one two"


def test_drop_fault_cuts_the_stream(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", fault_script=["drop"], midstream_after=1)
    with pytest.raises(openai.APIConnectionError):
        for _ in oai(url).chat.completions.create(
            model="mistral-7b",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
        ):
            pass


def test_stall_fault_trips_the_clients_timeout(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", fault_script=["stall"], stall_seconds=5)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.completions.create(model="mistral-7b", prompt="quiet")


def test_the_server_retries_the_backend_under_our_policy(make_server: Callable[..., Any]) -> None:
    backend = GreedyBackend(script=[Fail(ThrottledError("slow down")), None])
    sleeps = SleepRecorder()
    url = make_server(backend, retry=RetryPolicy(max_attempts=2, sleep=sleeps))
    reply = oai(url).chat.completions.create(
        model="mistral-7b", messages=[{"role": "user", "content": "persist"}]
    )
    assert reply.choices[0].message.content == " persist"
    assert len(backend.calls) == 2 and len(sleeps.delays) == 1
    # Out of retries: the backend's throttling reaches the client as a 429.
    backend = GreedyBackend(script=[Fail(ThrottledError("slow down"))] * 2)
    url = make_server(backend, retry=RetryPolicy(max_attempts=2, sleep=sleeps))
    with pytest.raises(openai.RateLimitError, match="slow down"):
        oai(url).chat.completions.create(
            model="mistral-7b", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert len(backend.calls) == 2


def test_bearer_key_is_required_when_set(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", api_key="s3cret")
    with pytest.raises(openai.AuthenticationError) as info:
        oai(url, key="wrong").models.list()
    assert (info.value.body["type"], info.value.body["code"]) == (
        "authentication_error",
        "invalid_api_key",
    )
    reply = oai(url, key="s3cret").chat.completions.create(
        model="mistral-7b", messages=[{"role": "user", "content": "let me in"}]
    )
    assert reply.choices[0].message.content == "let me in"
    assert [r.status for r in url.stats.requests] == [401, 200]
