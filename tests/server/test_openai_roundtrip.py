"""Our ``openai`` backend against our own ``serve`` OpenAI face: both ends of issue 13 meet.

The engine side is the real server (uvicorn on loopback, echo backend); the client side is
``MistralClient(backend="openai")`` over httpx. Faults come from the server's own fault plan.
"""

from __future__ import annotations

from typing import Any

import pytest

from bedrock_mistral import MistralClient
from bedrock_mistral.errors import CredentialsError, StreamInterrupted

pytest.importorskip("httpx", reason="the openai backend needs httpx: pip install -e '.[openai]'")

TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there friend"},
]


def _client(url: str, **options: Any) -> MistralClient:
    return MistralClient(
        model="mixtral-8x7b", backend="openai", base_url=f"{url}/v1", api_key="k1", **options
    )


def test_chat_and_raw_modes_round_trip(make_server: Any) -> None:
    server = make_server("echo", api_key="k1")
    chat = _client(server, prompt_mode="chat").chat(TURNS, max_tokens=50)
    assert (chat.text, chat.stop_reason, chat.backend) == ("hello there friend", "stop", "openai")
    assert chat.usage.output_tokens == 3
    # Raw mode sends our [INST] prompt to /v1/completions: the echo reads the whole block back.
    raw = _client(server, prompt_mode="raw").chat(TURNS, max_tokens=50)
    assert raw.text == "Be brief.\n\nhello there friend"
    paths = [record.path for record in server.stats.requests]
    assert paths == ["/v1/chat/completions", "/v1/completions"]


def test_streams_deliver_every_delta_and_usage(make_server: Any) -> None:
    server = make_server("echo", api_key="k1")
    with _client(server).stream("one two three four") as stream:
        pieces = list(stream)
    assert "".join(pieces) == "one two three four" and len(pieces) == 4
    assert stream.completion is not None and stream.completion.usage.output_tokens == 4


def test_a_throttled_call_is_retried_by_the_client(make_server: Any) -> None:
    server = make_server("echo", api_key="k1", fault_script=["throttle", "internal", None])
    assert _client(server).chat("still here").text == "still here"
    assert [record.status for record in server.stats.requests] == [429, 500, 200]


def test_a_stream_cut_after_text_is_resumed_without_duplicates(make_server: Any) -> None:
    script = ["midstream", "midstream", None]
    server = make_server("echo", api_key="k1", fault_script=script, midstream_after=2)
    words = "alpha beta gamma delta epsilon"
    with pytest.raises(StreamInterrupted) as info:
        list(_client(server).stream(words))
    assert words.startswith(info.value.partial_text) and info.value.partial_text
    with _client(server).stream(words, resume=True) as stream:
        assert "".join(stream) == words
    assert stream.resumes == 1 and len(server.stats.requests) == 3


def test_a_wrong_key_is_a_credentials_error_naming_the_variable(make_server: Any) -> None:
    server = make_server("echo", api_key="k1")
    client = MistralClient(
        model="mixtral-8x7b", backend="openai", base_url=f"{server}/v1", api_key="wrong"
    )
    with pytest.raises(CredentialsError) as info:
        client.chat("hi")
    assert "BEDROCK_MISTRAL_OPENAI_API_KEY" in str(info.value)
