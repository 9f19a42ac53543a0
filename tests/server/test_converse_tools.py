"""serve's Converse with tools and images, through real boto3, and the SDK's tool loop over it."""

from __future__ import annotations

import functools
from typing import Any

import boto3
import pytest

from bedrock_mistral import Image, Message, MistralClient, RetryPolicy
from tests.helpers.server import LARGE_2407, MISTRAL_7B, PIXTRAL, runtime_client, user

WEATHER = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    }
                },
            }
        }
    ]
}


def test_converse_answers_a_tool_request_with_tool_use(echo_server: Any) -> None:
    client = runtime_client(str(echo_server))
    reply = client.converse(
        modelId=LARGE_2407,
        messages=[user('call get_weather {"city": "Oslo"}')],
        toolConfig=WEATHER,
    )
    assert reply["stopReason"] == "tool_use"
    (block,) = reply["output"]["message"]["content"]
    assert block["toolUse"] == {
        "toolUseId": "echo00001",
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }


def test_a_tool_result_turn_gets_its_text_back(echo_server: Any) -> None:
    client = runtime_client(str(echo_server))
    use = {"toolUseId": "echo00001", "name": "get_weather", "input": {"city": "Oslo"}}
    result = {
        "toolUseId": "echo00001",
        "content": [{"text": "sunny"}, {"json": {"celsius": 18}}],
        "status": "success",
    }
    reply = client.converse(
        modelId=LARGE_2407,
        messages=[
            user('call get_weather {"city": "Oslo"}'),
            {"role": "assistant", "content": [{"toolUse": use}]},
            {"role": "user", "content": [{"toolResult": result}]},
        ],
        toolConfig=WEATHER,
    )
    assert reply["stopReason"] == "end_turn"
    assert reply["output"]["message"]["content"] == [{"text": 'sunny\n{"celsius": 18}'}]


def test_text_naming_no_offered_tool_is_echoed(echo_server: Any) -> None:
    client = runtime_client(str(echo_server))
    reply = client.converse(
        modelId=LARGE_2407, messages=[user("call launch {}")], toolConfig=WEATHER
    )
    assert reply["stopReason"] == "end_turn"
    assert reply["output"]["message"]["content"] == [{"text": "call launch {}"}]


def test_seven_b_still_refuses_tools(echo_server: Any) -> None:
    client = runtime_client(str(echo_server))
    with pytest.raises(client.exceptions.ValidationException, match="doesn't support tool use"):
        client.converse(modelId=MISTRAL_7B, messages=[user("hi")], toolConfig=WEATHER)


# -- the SDK over the same server ----------------------------------------------------------


@functools.cache
def _session() -> Any:
    return boto3.session.Session(region_name="us-east-1")


def _client(server: Any, model: str) -> MistralClient:
    return MistralClient(
        model=model,
        backend="bedrock",
        endpoint_url=str(server),
        retry=RetryPolicy(max_attempts=1),
        session=_session(),
    )


def _operations(server: Any, since: int) -> list[str | None]:
    return [r.operation for r in server.stats.requests[since:] if r.operation is not None]


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's English name
    """
    return f"18 C and sunny in {city}"


def test_run_tools_over_bedrock_converse_end_to_end(make_server: Any) -> None:
    server = make_server("echo")
    client = _client(server, "mistral-large-2407")
    run = client.run_tools('call get_weather {"city": "Oslo"}', [get_weather])
    assert run.completion.text == "18 C and sunny in Oslo"
    assert run.completion.backend == "bedrock"
    assert [m.role for m in run.transcript] == ["user", "assistant", "tool", "assistant"]
    assert run.transcript[1].tool_calls[0].id == "echo00001"
    assert _operations(server, 0) == ["converse", "converse"]


def test_bad_arguments_over_bedrock_become_an_error_result(make_server: Any) -> None:
    server = make_server("echo")
    run = _client(server, "ministral-8b").run_tools(
        'call get_weather {"town": "Oslo"}', [get_weather]
    )
    error = run.transcript[2]
    assert error.is_error and "city: Field required" in error.content
    assert run.completion.text == error.content  # sent back as a toolResult with status error


def test_chat_without_tools_still_uses_invoke_model(make_server: Any) -> None:
    server = make_server("echo")
    _client(server, "mistral-large-2407").chat("hello there")
    assert _operations(server, 0) == ["invoke"]


def test_an_image_goes_through_converse_and_converse_stream(make_server: Any) -> None:
    server = make_server("echo")
    client = _client(server, "pixtral-large")
    turn = Message(
        role="user", content="Describe it", images=(Image(format="png", data=b"\x89PNG-bytes"),)
    )
    assert client.chat([turn]).text == "Describe it"
    with client.stream([turn]) as stream:
        assert "".join(stream) == "Describe it"
    assert _operations(server, 0) == ["converse", "converse-stream"]
    assert {r.model_id for r in server.stats.requests} == {f"us.{PIXTRAL}"}  # its profile
