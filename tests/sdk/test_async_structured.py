"""await AsyncMistralClient.parse: the cases of tests/sdk/test_structured.py, awaited."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from bedrock_mistral import AsyncMistralClient, MistralClient, ParseError
from tests.helpers.backends import ScriptedBackend

pytestmark = pytest.mark.asyncio


class City(BaseModel):
    capital: str


class Backlog(BaseModel):
    title: str
    points: int
    tags: list[str]


async def test_a_valid_answer_comes_back_as_the_model() -> None:
    client = AsyncMistralClient(backend="echo")
    assert await client.parse('{"capital": "Paris"}', schema=City) == City(capital="Paris")


async def test_nested_and_non_object_schemas_validate() -> None:
    client = AsyncMistralClient(backend="echo")
    answer = '{"title": "Fix login", "points": 3, "tags": ["auth", "bug"]}'
    assert await client.parse(answer, schema=Backlog) == Backlog(
        title="Fix login", points=3, tags=["auth", "bug"]
    )
    assert await client.parse("[1, 2, 3]", schema=list[int]) == [1, 2, 3]
    assert await client.parse("42", schema=int) == 42


async def test_the_request_is_the_sync_clients_with_the_schema_and_the_prefill() -> None:
    aio_backend, sync_backend = (
        ScriptedBackend(['"capital": "Rome"}']),
        ScriptedBackend(['"capital": "Rome"}']),
    )
    city = await AsyncMistralClient(backend=aio_backend).parse("Capital of Italy?", schema=City)
    assert city.capital == "Rome"
    MistralClient(backend=sync_backend).parse("Capital of Italy?", schema=City)
    (request,) = aio_backend.calls
    assert request.prompt.endswith("Capital of Italy? [/INST] {")
    system = (request.messages or ())[0]
    assert system.role == "system" and json.dumps(City.model_json_schema()) in system.content
    assert request == sync_backend.calls[0]


async def test_an_invalid_answer_is_repaired_once_with_the_errors_shown() -> None:
    backend = ScriptedBackend(['"capital": 7}', '"capital": "Paris"}'])
    client = AsyncMistralClient(backend=backend)
    assert (await client.parse("Capital of France?", schema=City)).capital == "Paris"
    assert len(backend.calls) == 2
    repair = backend.calls[1].messages or ()
    assert [m.role for m in repair] == ["system", "user", "assistant", "user", "assistant"]
    assert repair[2].content == '{"capital": 7}'
    assert "capital: Input should be a valid string" in repair[3].content
    assert repair[4].content == "{"


async def test_a_hopeless_answer_raises_parse_error_after_exactly_one_repair() -> None:
    backend = ScriptedBackend(["no idea", "still no idea"])
    client = AsyncMistralClient(backend=backend)
    with pytest.raises(ParseError) as caught:
        await client.parse("Capital of France?", schema=City)
    assert len(backend.calls) == 2
    assert caught.value.raw_text == "{still no idea"
    assert caught.value.errors and "Invalid JSON" in caught.value.errors[0]


async def test_the_echo_backend_cannot_repair_prose_and_says_so() -> None:
    with pytest.raises(ParseError) as caught:
        await AsyncMistralClient(backend="echo").parse("Paris", schema=City)
    assert caught.value.raw_text.startswith("{That answer is not valid JSON")


async def test_params_reach_every_request() -> None:
    backend = ScriptedBackend(["nope", '"capital": "Oslo"}'])
    await AsyncMistralClient(backend=backend).parse("?", schema=City, max_tokens=77)
    assert [request.max_tokens for request in backend.calls] == [77, 77]
