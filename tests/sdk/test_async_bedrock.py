"""AsyncMistralClient against our Bedrock-compatible server: the sync expectations, awaited.

The same fault plans as test_bedrock_http.py (throttle, 5xx, stream cut before and after
the first delta, stall), over the native async transport (botocore's signing and
event-stream decoding, aiohttp on the wire).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from bedrock_mistral import AsyncMistralClient, RetryPolicy, errors
from bedrock_mistral.backends.bedrock_async import AsyncBedrockBackend
from tests.helpers.backends import GreedyBackend, SleepRecorder

pytestmark = pytest.mark.asyncio

MakeServer = Callable[..., Any]
SENTENCE = "one two three four five six seven eight"


@functools.cache
def shared_session() -> Any:
    import boto3

    return boto3.session.Session(region_name="us-east-1")


def abedrock(
    server: Any, *, max_attempts: int = 5, model: str = "mistral-7b", **options: Any
) -> AsyncMistralClient:
    policy = RetryPolicy(max_attempts=max_attempts, sleep=SleepRecorder())
    return AsyncMistralClient(
        model=model,
        backend="bedrock",
        endpoint_url=str(server),
        retry=policy,
        session=shared_session(),
        **options,
    )


def model_requests(server: Any) -> list[Any]:
    return [r for r in server.stats.requests if r.operation is not None]


async def read(stream: Any) -> str:
    return "".join([text async for text in stream])


async def until_idle(server: Any) -> None:
    deadline = time.monotonic() + 5
    while server.stats.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


# -- happy paths ---------------------------------------------------------------------------


async def test_the_backend_is_native_async(echo_server: Any) -> None:
    client = abedrock(echo_server)
    assert isinstance(client.backend, AsyncBedrockBackend)


async def test_chat_returns_text_usage_latency_and_cost(echo_server: Any) -> None:
    client = abedrock(echo_server)
    reply = await client.chat([{"role": "user", "content": SENTENCE}], max_tokens=50)
    assert (reply.text, reply.stop_reason) == (SENTENCE, "stop")
    record = model_requests(echo_server)[-1]
    assert record.operation == "invoke" and record.status == 200
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        record.input_tokens,
        record.output_tokens,
    )
    assert reply.usage.output_tokens == 8
    assert reply.backend == "bedrock" and reply.model_id == "mistral.mistral-7b-instruct-v0:2"
    assert reply.cost_usd == pytest.approx(client.model.cost_usd(reply.usage))
    await client.close()


async def test_stream_yields_deltas_and_final_metrics(echo_server: Any) -> None:
    client = abedrock(echo_server)
    async with client.stream(SENTENCE) as stream:
        deltas = [text async for text in stream]
    assert len(deltas) == 8 and "".join(deltas) == SENTENCE
    completion = stream.completion
    assert completion is not None and completion.text == SENTENCE
    record = model_requests(echo_server)[-1]
    assert record.operation == "invoke-with-response-stream"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (
        record.input_tokens,
        8,
    )
    assert completion.cost_usd == pytest.approx(client.model.cost_usd(completion.usage))


async def test_max_tokens_cut_reports_length(echo_server: Any) -> None:
    client = abedrock(echo_server)
    assert (await client.chat(SENTENCE, max_tokens=3)).stop_reason == "length"
    stream = client.stream(SENTENCE, max_tokens=3)
    assert await read(stream) == "one two three"
    assert stream.completion is not None and stream.completion.stop_reason == "length"


async def test_chat_dialect_and_arns_cross_the_wire_intact(make_server: MakeServer) -> None:
    backend = GreedyBackend(answer=" chat answer")
    server = make_server(backend)
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    large = abedrock(server, model="mistral-large-2407")
    assert (await large.chat(messages)).text == " chat answer"
    assert await read(large.stream(messages)) == " chat answer"
    sent = backend.calls[-1]
    assert sent.messages is not None and [m.role for m in sent.messages] == ["system", "user"]
    arn = "arn:aws:bedrock:us-east-1::foundation-model/mistral.mistral-7b-instruct-v0:2"
    await abedrock(server, model=arn).chat("ping")
    assert model_requests(server)[-1].model_id == arn


async def test_requests_are_signed_with_sigv4(make_server: MakeServer) -> None:
    seen: list[str] = []
    server = make_server("echo")
    client = abedrock(server)
    backend = client.backend
    assert isinstance(backend, AsyncBedrockBackend)
    wire = await backend._get_wire()
    headers = await backend._headers(wire, f"{server}/model/x/invoke", b"{}", "Accept")
    seen.append(headers["Authorization"])
    assert seen[0].startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTESTTEST/")
    assert "/us-east-1/bedrock/aws4_request" in seen[0]
    assert headers["X-Amz-Security-Token"] == "test-session-token"


# -- errors and retries --------------------------------------------------------------------

HTTP_FAULTS = [
    ("throttle", errors.ThrottledError, 429, "ThrottlingException"),
    ("internal", errors.InternalServerError, 500, "InternalServerException"),
    ("unavailable", errors.ServiceUnavailableError, 503, "ServiceUnavailableException"),
    ("not_ready", errors.ModelNotReadyError, 429, "ModelNotReadyException"),
    ("denied", errors.AccessDeniedError, 403, "AccessDeniedException"),
    ("validation", errors.ServiceValidationError, 400, "ValidationException"),
]


@pytest.mark.parametrize(
    ("fault", "cls", "status", "code"), HTTP_FAULTS, ids=[f[0] for f in HTTP_FAULTS]
)
@pytest.mark.parametrize("call", ["chat", "stream"])
async def test_each_bedrock_error_maps_to_its_class_and_only_transient_ones_retry(
    make_server: MakeServer,
    fault: str,
    cls: type[errors.APIError],
    status: int,
    code: str,
    call: str,
) -> None:
    server = make_server("echo", fault_script=[fault, fault, None])

    async def send(client: AsyncMistralClient) -> str:
        if call == "chat":
            return (await client.chat("hello")).text
        return await read(client.stream("hello"))

    with pytest.raises(cls) as info:
        await send(abedrock(server, max_attempts=1))
    err = info.value
    assert type(err) is cls
    assert (err.status_code, err.code) == (status, code)
    assert err.request_id and err.request_id in str(err)
    assert err.model_id == "mistral.mistral-7b-instruct-v0:2"
    assert isinstance(err.__cause__, botocore.exceptions.ClientError)
    assert len(model_requests(server)) == 1

    client = abedrock(server)
    if cls.retryable:
        assert await send(client) == "hello"
        assert len(model_requests(server)) == 3
        assert isinstance(client.retry.sleep, SleepRecorder) and len(client.retry.sleep.delays) == 1
    else:
        with pytest.raises(cls) as again:
            await send(client)
        assert again.value.attempts == 1
        assert len(model_requests(server)) == 2


async def test_retries_stop_at_max_attempts_and_report_them(make_server: MakeServer) -> None:
    server = make_server("echo", faults={"throttle": 1.0})
    with pytest.raises(errors.ThrottledError) as info:
        await abedrock(server, max_attempts=4).chat("hello")
    assert info.value.attempts == 4
    assert len(model_requests(server)) == 4
    assert all(r.attempt == 1 for r in model_requests(server))


async def test_retry_waits_do_not_block_the_loop(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["internal"])
    client = AsyncMistralClient(
        backend="bedrock",
        endpoint_url=str(server),
        retry=RetryPolicy(initial_delay=0.3, jitter=0.0),  # the default sleep: awaited
        session=shared_session(),
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    assert (await client.chat("hello")).text == "hello"
    task.cancel()
    assert time.monotonic() - started >= 0.3
    assert ticks >= 10  # the loop ran other tasks during the 0.3 s wait


async def test_dropped_connection_on_invoke_is_retried(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["drop"])
    assert (await abedrock(server).chat("hello")).text == "hello"
    assert len(model_requests(server)) == 2


async def test_read_timeout_maps_to_api_timeout(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["stall"], stall_seconds=2.0)
    with pytest.raises(errors.APITimeoutError) as info:
        await abedrock(server, read_timeout=0.3, max_attempts=1).chat("hello")
    assert "read_timeout" in str(info.value)
    assert isinstance(info.value.__cause__, botocore.exceptions.ReadTimeoutError)
    assert isinstance(info.value.__cause__.__cause__, TimeoutError)


async def test_connection_refused_is_a_connection_error(sleeps: SleepRecorder) -> None:
    client = AsyncMistralClient(
        backend="bedrock",
        endpoint_url="http://127.0.0.1:9",
        retry=RetryPolicy(max_attempts=2, sleep=sleeps),
    )
    with pytest.raises(errors.APIConnectionError) as info:
        await client.chat("hello")
    assert info.value.attempts == 2
    assert "127.0.0.1:9" in str(info.value)
    assert isinstance(info.value.__cause__, botocore.exceptions.EndpointConnectionError)


# -- streams: failures before and after the first delta --------------------------------------


async def test_midstream_failure_before_the_first_delta_is_retried(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["midstream", "drop", None], midstream_after=0)
    assert await read(abedrock(server).stream(SENTENCE)) == SENTENCE
    assert len(model_requests(server)) == 3


@pytest.mark.parametrize(
    ("fault", "cause"),
    [("midstream", errors.ModelStreamError), ("drop", errors.APIConnectionError)],
)
async def test_failure_after_text_raises_stream_interrupted(
    make_server: MakeServer, fault: str, cause: type[Exception]
) -> None:
    server = make_server("echo", fault_script=[fault])
    stream = abedrock(server).stream(SENTENCE)
    received: list[str] = []
    with pytest.raises(errors.StreamInterrupted) as info:
        async for text in stream:
            received.append(text)
    assert "".join(received) == "one two" == info.value.partial_text
    assert isinstance(info.value.__cause__, cause)
    assert "resume=True" in str(info.value)
    assert stream.completion is None
    assert len(model_requests(server)) == 1


async def test_stalled_stream_ends_as_an_interruption(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["stall"], stall_seconds=3.0)
    started = time.monotonic()
    with pytest.raises(errors.StreamInterrupted) as info:
        await read(abedrock(server, stream_idle_timeout=0.4).stream(SENTENCE))
    assert time.monotonic() - started < 2.5
    assert info.value.partial_text == "one"
    assert isinstance(info.value.__cause__, errors.APITimeoutError)
    assert "stream_idle_timeout" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "script",
    [["drop"], ["midstream"], ["drop", "throttle", "midstream"]],
    ids="+".join,
)
async def test_resume_gives_the_uninterrupted_text(
    make_server: MakeServer, script: list[str]
) -> None:
    answer = " The quick brown fox jumps over the lazy dog and runs far away."
    backend = GreedyBackend(answer=answer)
    faulty = make_server(backend, fault_script=script)
    stream = abedrock(faulty).stream("Tell me about the fox", max_tokens=100, resume=True)
    assert await read(stream) == answer
    assert stream.completion is not None and stream.completion.text == answer
    assert stream.completion.stop_reason == "stop"
    assert stream.resumes == sum(1 for kind in script if kind != "throttle")
    first = backend.calls[0]
    for call in backend.calls[1:]:
        assert call.prompt.startswith(first.prompt)
        assert answer.startswith(call.prompt[len(first.prompt) :])
        assert call.max_tokens < first.max_tokens


async def test_resume_stops_after_max_attempts(make_server: MakeServer) -> None:
    server = make_server(
        GreedyBackend(answer=" a b c d e f g h i j k l"), fault_script=["drop"] * 5
    )
    with pytest.raises(errors.StreamInterrupted) as info:
        await read(abedrock(server, max_attempts=3).stream("x", resume=True))
    assert len(model_requests(server)) == 3
    assert info.value.partial_text == " a b c d e f"


# -- connection hygiene ------------------------------------------------------------------------


async def test_leaving_a_stream_early_closes_the_http_stream(make_server: MakeServer) -> None:
    server = make_server(GreedyBackend(answer=" word" * 2000), latency_ms=0)
    client = abedrock(server)
    async with client.stream("go") as stream:
        assert await stream.__anext__() == " word"
    await until_idle(server)
    assert server.stats.in_flight == 0
    assert stream.completion is None
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


@pytest.mark.parametrize("when", ["before-first-delta", "mid-stream", "chat"])
async def test_cancelling_the_task_closes_the_connection(
    make_server: MakeServer, when: str
) -> None:
    # A stalled server keeps the request open until the client goes away.
    script = ["stall"] if when != "before-first-delta" else [None]
    latency = 1000 if when == "before-first-delta" else 0
    server = make_server("echo", fault_script=script, stall_seconds=20.0, latency_ms=latency)
    client = abedrock(server)
    started = asyncio.Event()

    async def consume() -> None:
        if when == "chat":
            started.set()
            await client.chat(SENTENCE)
            return
        async with client.stream(SENTENCE) as stream:
            started.set()
            async for _ in stream:
                pass

    task = asyncio.create_task(consume())
    await started.wait()
    deadline = time.monotonic() + 5
    while not server.stats.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.stats.in_flight == 1
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until_idle(server)
    assert server.stats.in_flight == 0  # the server saw the connection close


async def test_256_concurrent_streams_through_one_client(make_server: MakeServer) -> None:
    # The latency keeps every stream open long enough for all of them to overlap.
    server = make_server("echo", latency_ms=500)
    client = abedrock(server)

    async def one(i: int) -> tuple[str, str]:
        question = f"stream {i} says hello"
        async with client.stream(question) as stream:
            return question, await read(stream)

    results = await asyncio.gather(*(one(i) for i in range(256)))
    assert all(question == answer for question, answer in results)
    assert len(results) == 256
    assert server.stats.peak_in_flight > 64  # more than the sync pool's threads: one loop
    await client.close()


async def test_a_client_works_across_event_loops(echo_server: Any) -> None:
    client = abedrock(echo_server)
    assert (await client.chat("first loop")).text == "first loop"

    def other_loop() -> str:
        return asyncio.run(client.chat("second loop")).text

    assert await asyncio.to_thread(other_loop) == "second loop"
