"""Tool use: schemas from functions, models and dicts; refusals before sending; run_tools."""

from __future__ import annotations

import functools
from typing import Any, Literal

import botocore.session
import pytest
from botocore.validate import ParamValidator
from pydantic import BaseModel

from bedrock_mistral import (
    Image,
    Message,
    MistralClient,
    ToolCall,
    ToolRoundsError,
    ToolSchemaError,
    ToolsUnsupportedError,
    ValidationError,
    to_tool,
)
from bedrock_mistral.backends.converse_wire import converse_params
from bedrock_mistral.models import MODELS
from tests.helpers.backends import GreedyBackend, ScriptedBackend

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """The current weather in a city.

    Args:
        city: the city's English name
        unit: degrees Celsius or Fahrenheit
    """
    return f"18 {unit} and sunny in {city}"


class Invoice(BaseModel):
    """An invoice to file."""

    number: str
    total: float


def untyped(city, days: int) -> str:  # type: ignore[no-untyped-def]
    return ""


class Opaque:
    pass


def opaque(thing: Opaque) -> str:
    return ""


# -- schemas -------------------------------------------------------------------------------


def test_a_function_tool_takes_its_schema_from_signature_and_docstring() -> None:
    spec = to_tool(get_weather).spec
    assert (spec.name, spec.description) == ("get_weather", "The current weather in a city.")
    schema = spec.input_schema
    assert schema["required"] == ["city"]
    assert schema["properties"]["city"]["description"] == "the city's English name"
    assert schema["properties"]["unit"]["enum"] == ["C", "F"]
    assert schema["additionalProperties"] is False


def test_a_pydantic_model_and_a_json_schema_dict_are_tools_too() -> None:
    assert to_tool(Invoice).spec.input_schema["required"] == ["number", "total"]
    assert to_tool(Invoice).spec.description == "An invoice to file."
    spec = to_tool(
        {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    ).spec
    assert spec.input_schema["properties"] == {"a": {"type": "integer"}}


@pytest.mark.parametrize(
    ("tool", "field", "words"),
    [
        (untyped, "untyped.city", "no type annotation"),
        (opaque, "opaque.thing", "no JSON schema"),
        (lambda *names: names, "<lambda>", "not allowed"),
        ({"name": "x"}, "x.parameters", "needs 'parameters'"),
    ],
    ids=["untyped-parameter", "unsupported-type", "bad-name", "dict-without-schema"],
)
def test_a_tool_without_a_derivable_schema_is_refused_when_prepared(
    tool: Any, field: str, words: str
) -> None:
    backend = ScriptedBackend(["unused"])
    client = MistralClient(model="mistral-large-2407", backend=backend)
    with pytest.raises(ToolSchemaError) as caught:
        client.prepare("hi", tools=[tool])
    assert words in str(caught.value)
    assert caught.value.field == field or caught.value.value == field
    assert backend.calls == []


# -- refusals before anything is sent ------------------------------------------------------


def test_the_registry_says_which_models_take_tools() -> None:
    takes = {spec.alias for spec in MODELS if spec.supports_tools}
    assert {"mistral-large-2407", "mistral-large-3", "pixtral-large", "magistral-small"} <= takes
    assert {"ministral-3b", "ministral-8b", "ministral-14b"} <= takes
    assert not {"mistral-7b", "mixtral-8x7b"} & takes


@pytest.mark.parametrize("model", ["mistral-7b", "mixtral-8x7b"])
def test_a_model_without_tools_is_refused_before_sending(model: str) -> None:
    backend = ScriptedBackend(["unused"])
    with pytest.raises(ToolsUnsupportedError, match="does not take tools") as caught:
        MistralClient(model=model, backend=backend).chat("hi", tools=[get_weather])
    assert "mistral-large-2407" in str(caught.value)  # the fix names models that do
    assert backend.calls == []


def test_images_need_a_model_that_reads_them() -> None:
    backend = ScriptedBackend(["unused"])
    turn = Message(role="user", content="What is this?", images=(Image(format="png", data=PNG),))
    with pytest.raises(ToolsUnsupportedError, match="does not take images"):
        MistralClient(model="mistral-large-2407", backend=backend).chat([turn])
    assert backend.calls == []


def test_a_backend_that_cannot_carry_tools_is_refused() -> None:
    client = MistralClient(model="mistral-large-2407", backend=GreedyBackend())
    with pytest.raises(ToolsUnsupportedError, match="greedy backend cannot carry tools"):
        client.chat("hi", tools=[get_weather])


def test_tools_in_a_stream_are_refused_as_bedrock_does() -> None:
    client = MistralClient(model="mistral-large-2407", backend="echo")
    with pytest.raises(ToolsUnsupportedError, match="call chat"):
        client.stream("hi", tools=[get_weather])


def test_tool_turns_need_their_tools_and_must_answer_a_call() -> None:
    client = MistralClient(model="mistral-large-2407", backend="echo")
    call = ToolCall(id="abc123def", name="get_weather", arguments={"city": "Oslo"})
    turns = [
        Message(role="user", content="weather?"),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", tool_call_id="zzz999zzz", content="sunny"),
    ]
    with pytest.raises(ValidationError, match="pass tools"):
        client.prepare(turns)
    with pytest.raises(ValidationError) as caught:
        client.prepare(turns, tools=[get_weather])
    assert caught.value.field == "messages[2].tool_call_id"


# -- the Converse request passes botocore's own validation ---------------------------------


@functools.cache
def converse_input_shape() -> Any:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    return model.operation_model("Converse").input_shape


def _botocore_errors(params: dict[str, Any]) -> str:
    report = ParamValidator().validate(params, converse_input_shape())
    return report.generate_report() if report.has_errors() else ""


def test_the_converse_request_passes_botocore_validation() -> None:
    client = MistralClient(model="pixtral-large", backend="echo")
    call = ToolCall(id="abc123def", name="get_weather", arguments={"city": "Oslo"})
    turns = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather here?", images=(Image(format="png", data=PNG),)),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", tool_call_id="abc123def", content="sunny"),
    ]
    request = client.prepare(
        turns, tools=[get_weather, Invoice], tool_choice="any", max_tokens=50, temperature=0.2
    )
    params = converse_params(request, "us.mistral.pixtral-large-2502-v1:0")
    assert _botocore_errors(params) == ""
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    assert params["messages"][2]["content"][0]["toolResult"]["status"] == "success"
    assert params["toolConfig"]["toolChoice"] == {"any": {}}
    assert params["system"] == [{"text": "Be brief."}]


def test_the_validator_does_refuse_a_bad_body() -> None:
    """The check above can fail: botocore refuses a tool without its schema."""
    bad = {
        "modelId": "m",
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "t"}}]},
    }
    assert "inputSchema" in _botocore_errors(bad)


# -- run_tools ------------------------------------------------------------------------------


def test_run_tools_runs_the_function_and_returns_the_final_reply() -> None:
    client = MistralClient(model="mistral-large-2407", backend="echo")
    run = client.run_tools('call get_weather {"city": "Oslo"}', [get_weather])
    assert run.completion.text == "18 C and sunny in Oslo"
    assert run.completion.stop_reason == "stop"
    assert [m.role for m in run.transcript] == ["user", "assistant", "tool", "assistant"]
    assert run.transcript[1].tool_calls[0].arguments == {"city": "Oslo"}
    assert run.transcript[2].tool_call_id == run.transcript[1].tool_calls[0].id


def test_bad_arguments_go_back_to_the_model_instead_of_calling_the_function() -> None:
    ran: list[dict[str, Any]] = []

    def book(room: int, nights: int) -> str:
        """Book a room."""
        ran.append({"room": room, "nights": nights})
        return "booked"

    client = MistralClient(model="mistral-large-2407", backend="echo")
    run = client.run_tools('call book {"room": "suite", "extra": 1}', [book])
    assert ran == []
    result = run.transcript[2]
    assert result.role == "tool" and result.is_error
    assert "room: Input should be a valid integer" in result.content
    assert "nights: Field required" in result.content
    assert run.completion.text == result.content  # the echo answers with the result


def test_a_call_to_an_unknown_tool_is_an_error_result() -> None:
    call = ToolCall(id="abc123def", name="launch", arguments={})
    backend = ScriptedBackend([(call,), "ok"])
    run = MistralClient(model="mistral-large-2407", backend=backend).run_tools("go", [get_weather])
    assert (
        run.transcript[2].is_error and "names no offered tool 'launch'" in run.transcript[2].content
    )


def test_run_tools_stops_after_max_rounds() -> None:
    call = ToolCall(id="abc123def", name="get_weather", arguments={"city": "Oslo"})
    backend = ScriptedBackend([(call,)])
    client = MistralClient(model="mistral-large-2407", backend=backend)
    with pytest.raises(ToolRoundsError) as caught:
        client.run_tools("loop", [get_weather], max_rounds=3)
    assert len(backend.calls) == 3
    assert len(caught.value.transcript) == 1 + 3 * 2
    assert "max_rounds" in str(caught.value)


def test_the_text_view_writes_tool_turns_into_the_prompt() -> None:
    backend = ScriptedBackend(["done"])
    client = MistralClient(model="mistral-large-2407", backend=backend)
    client.run_tools('call get_weather {"city": "Oslo"}', [get_weather])
    request = client.prepare(
        [
            Message(role="user", content="w?"),
            Message(
                role="assistant",
                content="",
                tool_calls=(
                    ToolCall(id="abc123def", name="get_weather", arguments={"city": "Oslo"}),
                ),
            ),
            Message(role="tool", tool_call_id="abc123def", content="sunny"),
        ],
        tools=[get_weather],
    )
    assert request.prompt == (
        '<s> [INST] w? [/INST] {"name": "get_weather", "arguments": {"city": "Oslo"}}</s>'
        " [INST] sunny [/INST]"
    )
    assert request.uses_converse and [t.name for t in request.tools] == ["get_weather"]
