"""The Bedrock backend through real boto3 over HTTP on loopback, against our own server."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from bedrock_mistral import MistralClient, RetryPolicy, errors
from bedrock_mistral.backends.bedrock import BedrockBackend
from tests.helpers.backends import GreedyBackend, SleepRecorder

MakeServer = Callable[..., Any]
SENTENCE = "one two three four five six seven eight"


@functools.cache
def shared_session() -> Any:
    """One boto3 session for this module: creating clients from it skips reloading the
    service model (0.2 s -> 0.02 s per client), which keeps this file fast."""
    import boto3

    return boto3.session.Session(region_name="us-east-1")


def bedrock(
    server: str, *, max_attempts: int = 5, model: str = "mistral-7b", **options: Any
) -> MistralClient:
    policy = RetryPolicy(max_attempts=max_attempts, sleep=SleepRecorder())
    return MistralClient(
        model=model,
        backend="bedrock",
        endpoint_url=server,
        retry=policy,
        session=shared_session(),
        **options,
    )


def model_requests(server: Any) -> list[Any]:
    return [r for r in server.stats.requests if r.operation is not None]


# -- happy paths ---------------------------------------------------------------------------


def test_chat_returns_text_usage_latency_and_cost(echo_server: Any) -> None:
    client = bedrock(echo_server)
    reply = client.chat([{"role": "user", "content": SENTENCE}], max_tokens=50)
    assert reply.text == SENTENCE
    assert reply.stop_reason == "stop"
    record = model_requests(echo_server)[-1]
    assert record.operation == "invoke" and record.status == 200
    # Token counts come from the X-Amzn-Bedrock-*-Token-Count headers.
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        record.input_tokens,
        record.output_tokens,
    )
    assert reply.usage.output_tokens == 8
    assert reply.latency_ms >= 0
    assert reply.backend == "bedrock" and reply.model_id == "mistral.mistral-7b-instruct-v0:2"
    assert reply.cost_usd == pytest.approx(client.model.cost_usd(reply.usage))


def test_stream_yields_deltas_and_final_metrics(echo_server: Any) -> None:
    client = bedrock(echo_server)
    with client.stream(SENTENCE) as stream:
        deltas = list(stream)
    assert len(deltas) == 8 and "".join(deltas) == SENTENCE
    completion = stream.completion
    assert completion is not None and completion.text == SENTENCE
    record = model_requests(echo_server)[-1]
    assert record.operation == "invoke-with-response-stream"
    # Token counts from the final chunk's amazon-bedrock-invocationMetrics.
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (
        record.input_tokens,
        8,
    )
    assert stream.usage == completion.usage and stream.text == SENTENCE


def test_max_tokens_cut_reports_length(echo_server: Any) -> None:
    client = bedrock(echo_server)
    assert client.chat(SENTENCE, max_tokens=3).stop_reason == "length"
    stream = client.stream(SENTENCE, max_tokens=3)
    assert "".join(stream) == "one two three"
    assert stream.completion is not None and stream.completion.stop_reason == "length"


def test_chat_dialect_model_sends_messages(make_server: MakeServer) -> None:
    backend = GreedyBackend(answer=" chat answer")
    server = make_server(backend)
    client = bedrock(server, model="mistral-large-2407")
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert client.chat(messages).text == " chat answer"
    assert "".join(client.stream(messages)) == " chat answer"
    sent = backend.calls[-1]
    assert sent.messages is not None and [m.role for m in sent.messages] == ["system", "user"]


@pytest.mark.parametrize(
    "model",
    [
        "arn:aws:bedrock:us-east-1::foundation-model/mistral.mistral-7b-instruct-v0:2",
        "mistral.mixtral-8x7b-instruct-v0:1",
    ],
)
def test_ids_and_arns_cross_the_wire_intact(echo_server: Any, model: str) -> None:
    bedrock(echo_server, model=model).chat("ping")
    assert model_requests(echo_server)[-1].model_id == model


# -- errors and retries --------------------------------------------------------------------

HTTP_FAULTS = [
    ("throttle", errors.ThrottledError, 429, "ThrottlingException"),
    ("internal", errors.InternalServerError, 500, "InternalServerException"),
    ("unavailable", errors.ServiceUnavailableError, 503, "ServiceUnavailableException"),
    ("timeout", errors.ModelTimeoutError, 408, "ModelTimeoutException"),
    ("not_ready", errors.ModelNotReadyError, 429, "ModelNotReadyException"),
    ("denied", errors.AccessDeniedError, 403, "AccessDeniedException"),
    ("not_found", errors.ModelNotFoundError, 404, "ResourceNotFoundException"),
    ("quota", errors.ServiceQuotaExceededError, 400, "ServiceQuotaExceededException"),
    ("model_error", errors.ModelError, 424, "ModelErrorException"),
    ("validation", errors.ServiceValidationError, 400, "ValidationException"),
]


@pytest.mark.parametrize(
    ("fault", "cls", "status", "code"), HTTP_FAULTS, ids=[f[0] for f in HTTP_FAULTS]
)
@pytest.mark.parametrize("call", ["chat", "stream"])
def test_each_bedrock_error_maps_to_its_class_and_only_transient_ones_retry(
    make_server: MakeServer,
    fault: str,
    cls: type[errors.APIError],
    status: int,
    code: str,
    call: str,
) -> None:
    server = make_server("echo", fault_script=[fault, fault, None])

    def send(client: MistralClient) -> str:
        return client.chat("hello").text if call == "chat" else "".join(client.stream("hello"))

    # 1. With retries off, the error surfaces as our class, chained to botocore's.
    with pytest.raises(cls) as info:
        send(bedrock(server, max_attempts=1))
    err = info.value
    assert type(err) is cls
    assert (err.status_code, err.code) == (status, code)
    assert err.request_id and err.request_id in str(err)
    assert err.model_id == "mistral.mistral-7b-instruct-v0:2"
    assert isinstance(err.__cause__, botocore.exceptions.ClientError)
    assert len(model_requests(server)) == 1  # botocore did not retry on its own

    # 2. With the default policy, transient errors are retried, the others are not.
    client = bedrock(server)
    if cls.retryable:
        assert send(client) == "hello"
        assert len(model_requests(server)) == 3
        assert isinstance(client.retry.sleep, SleepRecorder) and len(client.retry.sleep.delays) == 1
    else:
        with pytest.raises(cls) as again:
            send(client)
        assert again.value.attempts == 1
        assert len(model_requests(server)) == 2


def test_retries_stop_at_max_attempts_and_report_them(make_server: MakeServer) -> None:
    server = make_server("echo", faults={"throttle": 1.0})
    with pytest.raises(errors.ThrottledError) as info:
        bedrock(server, max_attempts=4).chat("hello")
    assert info.value.attempts == 4
    assert len(model_requests(server)) == 4
    assert all(
        r.attempt == 1 for r in model_requests(server)
    )  # every attempt is ours, none botocore's


def test_access_denied_says_how_to_enable_the_model(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["denied"])
    with pytest.raises(errors.AccessDeniedError) as info:
        bedrock(server, region="eu-west-3").chat("hello")
    message = str(info.value)
    assert "Enable model access for mistral.mistral-7b-instruct-v0:2" in message
    assert "Bedrock console of region eu-west-3" in message
    assert "\n" not in message


def test_dropped_connection_on_invoke_is_retried(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["drop"])
    assert bedrock(server).chat("hello").text == "hello"
    assert len(model_requests(server)) == 2


def test_read_timeout_on_invoke_is_retried(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["stall"], stall_seconds=2.0)
    started = time.monotonic()
    assert bedrock(server, read_timeout=0.3).chat("hello").text == "hello"
    assert time.monotonic() - started < 2.0
    assert len(model_requests(server)) >= 1


def test_read_timeout_maps_to_api_timeout(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["stall"], stall_seconds=2.0)
    with pytest.raises(errors.APITimeoutError) as info:
        bedrock(server, read_timeout=0.3, max_attempts=1).chat("hello")
    assert "read_timeout" in str(info.value)
    assert isinstance(info.value.__cause__, botocore.exceptions.ReadTimeoutError)


def test_connection_refused_is_a_connection_error(sleeps: SleepRecorder) -> None:
    client = MistralClient(
        backend="bedrock",
        endpoint_url="http://127.0.0.1:9",
        retry=RetryPolicy(max_attempts=2, sleep=sleeps),
    )
    with pytest.raises(errors.APIConnectionError) as info:
        client.chat("hello")
    assert info.value.attempts == 2
    assert "127.0.0.1:9" in str(info.value)
    assert isinstance(info.value.__cause__, botocore.exceptions.EndpointConnectionError)


# -- streams: failures before and after the first delta --------------------------------------


def test_midstream_failure_before_the_first_delta_is_retried(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["midstream", "drop", None], midstream_after=0)
    stream = bedrock(server).stream(SENTENCE)
    assert "".join(stream) == SENTENCE
    assert len(model_requests(server)) == 3


@pytest.mark.parametrize(
    ("fault", "cause"),
    [("midstream", errors.ModelStreamError), ("drop", errors.APIConnectionError)],
)
def test_failure_after_text_raises_stream_interrupted(
    make_server: MakeServer, fault: str, cause: type[Exception]
) -> None:
    server = make_server("echo", fault_script=[fault])
    stream = bedrock(server).stream(SENTENCE)
    received: list[str] = []
    with pytest.raises(errors.StreamInterrupted) as info:
        for text in stream:
            received.append(text)
    assert "".join(received) == "one two" == info.value.partial_text
    assert isinstance(info.value.__cause__, cause)
    assert "resume=True" in str(info.value)
    assert stream.completion is None
    assert len(model_requests(server)) == 1  # never restarted silently


def test_stalled_stream_ends_as_an_interruption(make_server: MakeServer) -> None:
    server = make_server("echo", fault_script=["stall"], stall_seconds=3.0)
    started = time.monotonic()
    with pytest.raises(errors.StreamInterrupted) as info:
        list(bedrock(server, stream_idle_timeout=0.4).stream(SENTENCE))
    assert time.monotonic() - started < 2.5
    assert info.value.partial_text == "one"
    assert isinstance(info.value.__cause__, errors.APITimeoutError)
    assert "stream_idle_timeout" in str(info.value.__cause__)


# -- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [["drop"], ["midstream"], ["midstream", "drop"], ["drop", "throttle", "midstream"]],
    ids="+".join,
)
def test_resume_gives_the_uninterrupted_text(make_server: MakeServer, script: list[str]) -> None:
    answer = " The quick brown fox jumps over the lazy dog and runs far away."
    clean = make_server(GreedyBackend(answer=answer))
    expected_stream = bedrock(clean).stream("Tell me about the fox", max_tokens=100)
    expected = "".join(expected_stream)
    assert expected == answer

    backend = GreedyBackend(answer=answer)
    faulty = make_server(backend, fault_script=script)
    stream = bedrock(faulty).stream("Tell me about the fox", max_tokens=100, resume=True)
    seen = list(stream)
    assert "".join(seen) == expected
    assert stream.completion is not None and stream.completion.text == expected
    assert stream.completion.stop_reason == "stop"
    interruptions = sum(1 for kind in script if kind != "throttle")
    assert stream.resumes == interruptions
    # Each continuation re-sends the prompt plus everything already received, and
    # asks for fewer tokens.
    first = backend.calls[0]
    for call in backend.calls[1:]:
        assert call.prompt.startswith(first.prompt)
        assert expected.startswith(call.prompt[len(first.prompt) :])
        assert call.max_tokens < first.max_tokens
    # Usage covers every piece: more input than one clean run, output at least the answer.
    assert expected_stream.completion is not None
    assert stream.completion.usage.input_tokens > expected_stream.completion.usage.input_tokens
    assert stream.completion.usage.output_tokens >= expected_stream.completion.usage.output_tokens


def test_resume_stops_after_max_attempts(make_server: MakeServer) -> None:
    server = make_server(
        GreedyBackend(answer=" a b c d e f g h i j k l"), fault_script=["drop"] * 5
    )
    with pytest.raises(errors.StreamInterrupted) as info:
        list(bedrock(server, max_attempts=3).stream("x", resume=True))
    assert len(model_requests(server)) == 3
    assert info.value.partial_text == " a b c d e f"


# -- connection hygiene ------------------------------------------------------------------------


def test_leaving_a_stream_early_closes_the_http_stream(make_server: MakeServer) -> None:
    backend = GreedyBackend(answer=" word" * 200)
    server = make_server(backend, latency_ms=0)
    client = bedrock(server)
    with client.stream("go") as stream:
        assert next(stream) == " word"
    deadline = time.monotonic() + 5
    while server.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats.in_flight == 0
    assert stream.completion is None
    with pytest.raises(StopIteration):
        next(stream)


def test_one_client_is_safe_to_share_between_threads(make_server: MakeServer) -> None:
    server = make_server("echo", latency_ms=20)
    # Its own session (not the shared one): the lazy client creation itself is raced.
    client = MistralClient(backend="bedrock", endpoint_url=server, max_pool_connections=16)
    backend = client.backend
    assert isinstance(backend, BedrockBackend) and backend._clients is None
    start = threading.Barrier(8)
    results: dict[tuple[int, int], str] = {}
    boto_clients: set[int] = set()
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            boto_clients.add(id(backend._get_clients()))
            for i in range(4):
                text = f"worker {worker} request {i}"
                if i % 2:
                    results[worker, i] = "".join(client.stream(text))
                else:
                    results[worker, i] = client.chat(text).text
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert results == {(w, i): f"worker {w} request {i}" for w in range(8) for i in range(4)}
    assert len(boto_clients) == 1  # created once, under the lock
    assert server.stats.peak_in_flight > 1  # requests really ran concurrently
