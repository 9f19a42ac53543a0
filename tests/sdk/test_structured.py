"""client.parse: JSON asked for, prefilled, validated, repaired at most once."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from bedrock_mistral import MistralClient, ParseError
from bedrock_mistral.backends.echo import EchoBackend
from tests.helpers.backends import ScriptedBackend


class City(BaseModel):
    capital: str


class Backlog(BaseModel):
    title: str
    points: int
    tags: list[str]


def test_a_valid_answer_comes_back_as_the_model() -> None:
    client = MistralClient(backend="echo")
    city = client.parse('{"capital": "Paris"}', schema=City)
    assert city == City(capital="Paris")


def test_the_request_carries_the_schema_and_prefills_the_brace_for_text_models() -> None:
    backend = ScriptedBackend(['"capital": "Rome"}'])
    client = MistralClient(model="mistral-7b", backend=backend)
    assert client.parse("Capital of Italy?", schema=City).capital == "Rome"
    (request,) = backend.calls
    assert request.prompt.endswith("Capital of Italy? [/INST] {")
    system = request.messages[0] if request.messages else None
    assert system is not None and system.role == "system"
    assert json.dumps(City.model_json_schema()) in system.content


def test_a_caller_system_message_is_kept_ahead_of_the_instruction() -> None:
    backend = ScriptedBackend(['"capital": "Rome"}'])
    client = MistralClient(backend=backend)
    client.parse(
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "?"}], schema=City
    )
    messages = backend.calls[0].messages or ()
    assert [m.role for m in messages] == ["system", "user", "assistant"]
    assert messages[0].content.startswith("Be terse.\n\nAnswer with one JSON value")


def test_chat_models_get_no_prefill_and_fenced_json_is_read() -> None:
    backend = ScriptedBackend(['Here it is:\n```json\n{"capital": "Lima"}\n```'])
    client = MistralClient(model="mistral-large-2407", backend=backend)
    assert client.parse("Capital of Peru?", schema=City).capital == "Lima"
    assert backend.calls[0].messages is not None
    assert backend.calls[0].messages[-1].role == "user"


def test_nested_schemas_validate() -> None:
    client = MistralClient(backend="echo")
    answer = '{"title": "Fix login", "points": 3, "tags": ["auth", "bug"]}'
    assert client.parse(answer, schema=Backlog) == Backlog(
        title="Fix login", points=3, tags=["auth", "bug"]
    )


def test_non_object_schemas_parse_without_a_prefill() -> None:
    client = MistralClient(backend="echo")
    assert client.parse("[1, 2, 3]", schema=list[int]) == [1, 2, 3]
    assert client.parse("42", schema=int) == 42


def test_an_invalid_answer_is_repaired_once_with_the_errors_shown() -> None:
    backend = ScriptedBackend(['"capital": 7}', '"capital": "Paris"}'])
    client = MistralClient(backend=backend)
    assert client.parse("Capital of France?", schema=City).capital == "Paris"
    assert len(backend.calls) == 2
    repair = backend.calls[1].messages or ()
    assert [m.role for m in repair] == ["system", "user", "assistant", "user", "assistant"]
    assert repair[2].content == '{"capital": 7}'  # the failed answer, as the model gave it
    assert "capital: Input should be a valid string" in repair[3].content
    assert repair[4].content == "{"  # prefilled again


def test_a_hopeless_answer_raises_parse_error_after_exactly_one_repair() -> None:
    backend = ScriptedBackend(["no idea", "still no idea"])
    client = MistralClient(backend=backend)
    with pytest.raises(ParseError) as caught:
        client.parse("Capital of France?", schema=City)
    assert len(backend.calls) == 2
    error = caught.value
    assert error.raw_text == "{still no idea"
    assert error.errors and "Invalid JSON" in error.errors[0]
    assert error.fix is not None and "max_tokens" in str(error)


def test_the_echo_backend_cannot_repair_prose_and_says_so() -> None:
    backend = EchoBackend()
    client = MistralClient(backend=backend)
    with pytest.raises(ParseError) as caught:
        client.parse("Paris", schema=City)
    assert caught.value.raw_text.startswith("{That answer is not valid JSON")


def test_a_wrong_type_in_valid_json_is_a_validation_error_not_a_json_error() -> None:
    backend = ScriptedBackend(['"capital": ["Paris"]}'] * 2)
    with pytest.raises(ParseError) as caught:
        MistralClient(backend=backend).parse("?", schema=City)
    assert caught.value.errors == ["capital: Input should be a valid string"]
