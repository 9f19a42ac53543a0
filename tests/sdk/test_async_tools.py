"""Tool use on AsyncMistralClient: tools= on chat/stream/prepare, and await run_tools.

The sync expectations (tests/sdk/test_tools.py, tests/server/test_converse_tools.py),
awaited: over the echo backend on the loop, and over the native async Bedrock transport
(aiohttp, botocore's signing, serializer and parsers) against ``serve`` on loopback,
where tool requests must go through Converse and ConverseStream.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Literal

import pytest

from bedrock_mistral import (
    AsyncMistralClient,
    Image,
    Message,
    MistralClient,
    RetryPolicy,
    ToolCall,
    ToolRoundsError,
    ToolSchemaError,
    ToolsUnsupportedError,
    errors,
)
from bedrock_mistral.backends.bedrock_async import AsyncBedrockBackend
from bedrock_mistral.tools import Toolset
from tests.helpers.backends import ScriptedBackend, SleepRecorder
from tests.helpers.server import PIXTRAL

pytestmark = pytest.mark.asyncio


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """The current weather in a city.

    Args:
        city: the city's English name
    """
    return f"18 {unit} and sunny in {city}"


async def get_forecast(city: str, days: int) -> dict[str, Any]:
    """The forecast for the next days."""
    await asyncio.sleep(0)  # a real await: this runs on the loop
    return {"city": city, "days": days, "sky": "clear"}


# -- tools= on the request methods ---------------------------------------------------------


async def test_prepare_with_tools_is_the_sync_clients_request() -> None:
    kwargs: dict[str, Any] = {"tools": [get_weather], "tool_choice": "any", "max_tokens": 40}
    aio = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    sync = MistralClient(model="mistral-large-2407", backend="echo")
    request = aio.prepare("weather in Oslo?", **kwargs)
    assert request == sync.prepare("weather in Oslo?", **kwargs)
    assert [tool.name for tool in request.tools] == ["get_weather"]
    assert request.tool_choice == "any" and request.uses_converse


async def test_chat_with_tools_returns_typed_tool_calls() -> None:
    client = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    reply = await client.chat('call get_weather {"city": "Oslo"}', tools=[get_weather])
    assert reply.stop_reason == "tool_use"
    assert reply.tool_calls == (
        ToolCall(id="echo00001", name="get_weather", arguments={"city": "Oslo"}),
    )


async def test_refusals_happen_before_sending_as_for_the_sync_client() -> None:
    backend = ScriptedBackend(["never"])
    large = AsyncMistralClient(model="mistral-large-2407", backend=backend)
    with pytest.raises(ToolsUnsupportedError, match="call chat"):
        large.stream("hi", tools=[get_weather])
    with pytest.raises(ToolsUnsupportedError, match="does not take tools"):
        await AsyncMistralClient(model="mistral-7b", backend=backend).chat(
            "hi", tools=[get_weather]
        )

    def untyped(city) -> str:  # type: ignore[no-untyped-def]
        return ""

    with pytest.raises(ToolSchemaError, match="'city' has no type annotation"):
        await large.run_tools("hi", [untyped])
    assert backend.calls == []


# -- run_tools on the echo backend ---------------------------------------------------------


async def test_run_tools_runs_a_sync_tool_and_returns_the_final_reply() -> None:
    client = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    run = await client.run_tools('call get_weather {"city": "Oslo"}', [get_weather])
    assert run.completion.text == "18 C and sunny in Oslo"
    assert [m.role for m in run.transcript] == ["user", "assistant", "tool", "assistant"]
    assert run.transcript[2].tool_call_id == run.transcript[1].tool_calls[0].id
    sync = MistralClient(model="mistral-large-2407", backend="echo")
    mirrored = sync.run_tools('call get_weather {"city": "Oslo"}', [get_weather])
    assert run.transcript == mirrored.transcript
    assert run.completion.text == mirrored.completion.text


async def test_an_async_tool_is_awaited_on_the_loop() -> None:
    client = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    run = await client.run_tools(
        'call get_forecast {"city": "Oslo", "days": 2}\ncall get_weather {"city": "Rome"}',
        [get_forecast, get_weather],
    )
    results = [m for m in run.transcript if m.role == "tool"]
    assert [m.content for m in results] == [
        '{"city": "Oslo", "days": 2, "sky": "clear"}',
        "18 C and sunny in Rome",
    ]
    assert not any(m.is_error for m in results)


async def test_bad_arguments_to_an_async_tool_become_an_error_result_without_a_call() -> None:
    ran: list[str] = []

    async def book(room: int, nights: int) -> str:
        """Book a room."""
        ran.append("called")
        return "booked"

    client = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    run = await client.run_tools('call book {"room": "suite", "extra": 1}', [book])
    assert ran == []
    result = run.transcript[2]
    assert result.is_error and "room: Input should be a valid integer" in result.content
    assert "nights: Field required" in result.content
    assert run.completion.text == result.content


async def test_a_call_to_an_unknown_tool_is_an_error_result() -> None:
    call = ToolCall(id="abc123def", name="launch", arguments={})
    backend = ScriptedBackend([(call,), "ok"])
    client = AsyncMistralClient(model="mistral-large-2407", backend=backend)
    run = await client.run_tools("go", [get_weather])
    assert run.transcript[2].is_error
    assert "names no offered tool 'launch'" in run.transcript[2].content


async def test_run_tools_stops_after_max_rounds() -> None:
    call = ToolCall(id="abc123def", name="get_weather", arguments={"city": "Oslo"})
    backend = ScriptedBackend([(call,)])
    client = AsyncMistralClient(model="mistral-large-2407", backend=backend)
    with pytest.raises(ToolRoundsError) as caught:
        await client.run_tools("loop", [get_weather], max_rounds=3, tool_choice="any")
    assert len(backend.calls) == 3
    assert all(request.tool_choice == "any" for request in backend.calls)
    assert len(caught.value.transcript) == 1 + 3 * 2


async def test_exceptions_a_tool_raises_propagate() -> None:
    async def explode(city: str) -> str:
        raise RuntimeError(f"no weather service for {city}")

    client = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    with pytest.raises(RuntimeError, match="no weather service for Oslo"):
        await client.run_tools('call explode {"city": "Oslo"}', [explode])


async def test_a_slow_sync_tool_runs_in_a_thread_and_the_loop_keeps_going() -> None:
    """The tool waits for a task on the loop: it can only finish if the loop is free."""
    released = threading.Event()
    threads: list[int] = []

    def wait_for_the_loop() -> str:
        """Blocks until a task on the event loop releases it."""
        threads.append(threading.get_ident())
        return "released" if released.wait(timeout=5) else "the loop was blocked"

    async def release() -> None:
        await asyncio.sleep(0.05)
        released.set()

    client = AsyncMistralClient(model="mistral-large-2407", backend="echo")
    run, _ = await asyncio.gather(
        client.run_tools("call wait_for_the_loop {}", [wait_for_the_loop]), release()
    )
    assert run.completion.text == "released"
    assert threads and threads[0] != threading.get_ident()


async def test_the_sync_client_refuses_an_async_tool_instead_of_sending_a_coroutine() -> None:
    client = MistralClient(model="mistral-large-2407", backend="echo")
    with pytest.raises(ToolSchemaError, match=r"use AsyncMistralClient\.run_tools"):
        client.run_tools('call get_forecast {"city": "Oslo", "days": 1}', [get_forecast])


async def test_toolset_arun_matches_run_for_sync_tools() -> None:
    toolset = Toolset([get_weather])
    good = ToolCall(id="abc123def", name="get_weather", arguments={"city": "Lima"})
    bad = ToolCall(id="abc123deg", name="get_weather", arguments={"town": "Lima"})
    for call in (good, bad):
        assert await toolset.arun(call) == toolset.run(call)


# -- over the async Bedrock transport, against serve ---------------------------------------


@functools.cache
def _session() -> Any:
    import boto3

    return boto3.session.Session(region_name="us-east-1")


def _client(server: Any, model: str, *, max_attempts: int = 1) -> AsyncMistralClient:
    return AsyncMistralClient(
        model=model,
        backend="bedrock",
        endpoint_url=str(server),
        retry=RetryPolicy(max_attempts=max_attempts, sleep=SleepRecorder()),
        session=_session(),
    )


def _operations(server: Any) -> list[str | None]:
    return [r.operation for r in server.stats.requests if r.operation is not None]


async def test_run_tools_over_async_bedrock_converse_end_to_end(make_server: Any) -> None:
    server = make_server("echo")
    client = _client(server, "mistral-large-2407")
    assert isinstance(client.backend, AsyncBedrockBackend)
    run = await client.run_tools(
        'call get_forecast {"city": "Oslo", "days": 3}', [get_forecast], max_tokens=80
    )
    assert run.completion.text == '{"city": "Oslo", "days": 3, "sky": "clear"}'
    assert run.completion.backend == "bedrock"
    assert run.completion.usage.output_tokens > 0
    assert [m.role for m in run.transcript] == ["user", "assistant", "tool", "assistant"]
    assert run.transcript[1].tool_calls[0].id == "echo00001"
    assert _operations(server) == ["converse", "converse"]
    await client.close()


async def test_bad_arguments_over_async_bedrock_become_an_error_result(make_server: Any) -> None:
    server = make_server("echo")
    client = _client(server, "ministral-8b")
    run = await client.run_tools('call get_weather {"town": "Oslo"}', [get_weather])
    error = run.transcript[2]
    assert error.is_error and "city: Field required" in error.content
    assert run.completion.text == error.content  # sent back as a toolResult, status error
    await client.close()


async def test_chat_without_tools_still_uses_invoke_model(make_server: Any) -> None:
    server = make_server("echo")
    client = _client(server, "mistral-large-2407")
    assert (await client.chat("hello there")).text == "hello there"
    assert _operations(server) == ["invoke"]
    await client.close()


async def test_an_image_goes_through_converse_and_converse_stream(make_server: Any) -> None:
    server = make_server("echo")
    client = _client(server, "pixtral-large")
    turn = Message(
        role="user", content="Describe it", images=(Image(format="png", data=b"\x89PNG-bytes"),)
    )
    assert (await client.chat([turn])).text == "Describe it"
    async with client.stream([turn]) as stream:
        assert "".join([text async for text in stream]) == "Describe it"
    assert stream.completion is not None and stream.completion.stop_reason == "stop"
    assert _operations(server) == ["converse", "converse-stream"]
    assert {r.model_id for r in server.stats.requests} == {f"us.{PIXTRAL}"}  # its profile
    await client.close()


async def test_converse_errors_map_and_retry_as_for_invoke_model(make_server: Any) -> None:
    server = make_server("echo", fault_script=["throttle", None])
    client = _client(server, "mistral-large-2407", max_attempts=3)
    reply = await client.chat('call get_weather {"city": "Oslo"}', tools=[get_weather])
    assert reply.tool_calls[0].arguments == {"city": "Oslo"}  # after one throttled attempt
    assert isinstance(client.retry.sleep, SleepRecorder) and len(client.retry.sleep.delays) == 1

    server = make_server("echo", fault_script=["validation"])
    client = _client(server, "mistral-large-2407", max_attempts=3)
    with pytest.raises(errors.ServiceValidationError) as caught:
        await client.chat("hi", tools=[get_weather])
    assert (caught.value.status_code, caught.value.attempts) == (400, 1)
    assert caught.value.request_id and _operations(server) == ["converse"]
    await client.close()


async def test_a_converse_stream_cut_after_text_is_interrupted_like_the_sync_one(
    make_server: Any,
) -> None:
    turn = Message(
        role="user", content="one two three four", images=(Image(format="png", data=b"\x89P"),)
    )
    server = make_server("echo", fault_script=["midstream", "midstream"])
    sync = MistralClient(
        model="pixtral-large",
        backend="bedrock",
        endpoint_url=str(server),
        retry=RetryPolicy(max_attempts=1),
        session=_session(),
    )
    with pytest.raises(errors.StreamInterrupted) as sync_caught, sync.stream([turn]) as stream:
        "".join(stream)
    client = _client(server, "pixtral-large")
    with pytest.raises(errors.StreamInterrupted) as caught:
        async with client.stream([turn]) as astream:
            async for _ in astream:
                pass
    assert caught.value.partial_text == sync_caught.value.partial_text != ""
    assert type(caught.value.__cause__) is type(sync_caught.value.__cause__)
    await client.close()
