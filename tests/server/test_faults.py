"""Faults, load limits and failures, as boto3 sees them over real HTTP."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EventStreamError,
    ReadTimeoutError,
)

from bedrock_mistral.errors import ThrottledError, ValidationError
from bedrock_mistral.server import FaultPlan
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta
from tests.helpers.server import (
    MISTRAL_7B,
    MIXTRAL,
    prompt,
    raw_post,
    runtime_client,
    text_body,
    user,
)


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("throttle", "ThrottlingException", 429),
        ("internal", "InternalServerException", 500),
        ("unavailable", "ServiceUnavailableException", 503),
        ("timeout", "ModelTimeoutException", 408),
        ("not_ready", "ModelNotReadyException", 429),
        ("denied", "AccessDeniedException", 403),
        ("not_found", "ResourceNotFoundException", 404),
        ("quota", "ServiceQuotaExceededException", 400),
        ("model_error", "ModelErrorException", 424),
        ("validation", "ValidationException", 400),
    ],
)
def test_each_fault_reaches_boto3_as_its_modeled_error(
    make_server: Any, kind: str, code: str, status: int
) -> None:
    url = make_server(fault_script=[kind, kind, None])
    client = runtime_client(url)
    with pytest.raises(ClientError) as caught:
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("hi"))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert isinstance(caught.value, getattr(client.exceptions, code))
    with pytest.raises(getattr(client.exceptions, code)):  # the streaming operation too
        client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body=text_body("hi"))
    assert (
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("hi"))["ResponseMetadata"][
            "HTTPStatusCode"
        ]
        == 200
    )
    assert [r.fault for r in url.stats.requests] == [kind, kind, None]


def test_model_error_carries_its_modeled_members(make_server: Any) -> None:
    client = runtime_client(make_server(fault_script=["model_error"]))
    with pytest.raises(client.exceptions.ModelErrorException) as caught:
        client.converse(modelId=MIXTRAL, messages=[user("x")])
    assert caught.value.response["originalStatusCode"] == 500
    assert caught.value.response["resourceName"].endswith(MIXTRAL)


def test_botocore_retries_transient_faults_and_the_attempts_are_counted(make_server: Any) -> None:
    url = make_server(fault_script=["throttle", "unavailable", None, "validation"])
    client = runtime_client(url, attempts=3)
    body = json.loads(
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("third time"))["body"].read()
    )
    assert body["outputs"][0]["text"] == "third time"
    assert [(r.status, r.attempt) for r in url.stats.requests] == [(429, 1), (503, 2), (200, 3)]
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("never retried"))
    assert len(url.stats.requests) == 4


@pytest.mark.parametrize("after", [0, 2])
def test_midstream_sends_a_model_stream_error_frame(make_server: Any, after: int) -> None:
    url = make_server(fault_script=["midstream", "midstream"], midstream_after=after)
    client = runtime_client(url)
    response = client.invoke_model_with_response_stream(
        modelId=MISTRAL_7B, body=text_body("a b c d e")
    )
    received = []
    with pytest.raises(EventStreamError) as caught:
        for event in response["body"]:
            received.append(json.loads(event["chunk"]["bytes"])["outputs"][0]["text"])
    assert caught.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert received == ["a", " b", " c"][:after]
    stream = client.converse_stream(modelId=MISTRAL_7B, messages=[user("a b c d e")])["stream"]
    with pytest.raises(EventStreamError) as caught:
        list(stream)
    assert caught.value.response["Error"]["Code"] == "modelStreamErrorException"


def test_midstream_on_a_short_answer_still_fails_before_the_end(make_server: Any) -> None:
    client = runtime_client(make_server(fault_script=["midstream"], midstream_after=5))
    response = client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body=text_body("short"))
    with pytest.raises(EventStreamError):
        list(response["body"])


def test_drop_cuts_a_stream_without_its_final_frame(make_server: Any) -> None:
    url = make_server(fault_script=["drop"])
    client = runtime_client(url)
    response = client.invoke_model_with_response_stream(
        modelId=MISTRAL_7B, body=text_body("a b c d e")
    )
    received = []
    with pytest.raises(Exception) as caught:  # urllib3/botocore: the response ended prematurely
        for event in response["body"]:
            received.append(json.loads(event["chunk"]["bytes"])["outputs"][0]["text"])
    assert not isinstance(caught.value, EventStreamError)
    assert received == ["a", " b"]
    assert (
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("fine"))["ResponseMetadata"][
            "HTTPStatusCode"
        ]
        == 200
    )


def test_drop_closes_a_plain_request_without_a_response(make_server: Any) -> None:
    url = make_server(fault_script=["drop", "drop", None])
    with pytest.raises(ConnectionClosedError):
        runtime_client(url).invoke_model(modelId=MISTRAL_7B, body=text_body("x"))
    reply = runtime_client(url, attempts=2).invoke_model(
        modelId=MISTRAL_7B, body=text_body("retried")
    )
    assert json.loads(reply["body"].read())["outputs"][0]["text"] == "retried"
    assert [r.attempt for r in url.stats.requests] == [1, 1, 2]


def test_stall_goes_silent_after_the_first_chunk(make_server: Any) -> None:
    url = make_server(fault_script=["stall"], stall_seconds=20)
    client = runtime_client(url, read_timeout=0.5)
    response = client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body=text_body("a b c"))
    events = iter(response["body"])
    assert json.loads(next(events)["chunk"]["bytes"])["outputs"][0]["text"] == "a"
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        next(events)
    assert "timed out" in str(caught.value).lower()
    assert time.monotonic() - started < 5


def test_stall_on_a_plain_request_trips_the_read_timeout(make_server: Any) -> None:
    client = runtime_client(make_server(fault_script=["stall"], stall_seconds=20), read_timeout=0.3)
    with pytest.raises(ReadTimeoutError):
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("x"))


def test_max_concurrency_throttles_at_once_instead_of_queueing(make_server: Any) -> None:
    url = make_server(max_concurrency=2, latency_ms=1500)
    client = runtime_client(url)

    def call(_: int) -> tuple[str, float]:
        started = time.monotonic()
        try:
            client.invoke_model(modelId=MISTRAL_7B, body=text_body("x"))
            return "ok", time.monotonic() - started
        except client.exceptions.ThrottlingException:
            return "throttled", time.monotonic() - started

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(call, range(6)))
    outcomes = [outcome for outcome, _ in results]
    assert outcomes.count("ok") == 2 and outcomes.count("throttled") == 4
    assert all(elapsed < 1.0 for outcome, elapsed in results if outcome == "throttled")
    assert all(elapsed >= 1.5 for outcome, elapsed in results if outcome == "ok")
    assert url.stats.peak_in_flight == 2
    assert sorted(r.status for r in url.stats.requests) == [200, 200, 429, 429, 429, 429]


def test_seeded_fault_rates_repeat_exactly(make_server: Any) -> None:
    runs = []
    for _ in range(2):
        url = make_server(faults={"throttle": 0.3, "internal": 0.2}, seed=7)
        client = runtime_client(url)
        for _ in range(30):
            with contextlib.suppress(ClientError):
                client.invoke_model(modelId=MISTRAL_7B, body=text_body("x"))
        runs.append([r.fault for r in url.stats.requests])
    assert runs[0] == runs[1]
    assert 3 <= runs[0].count("throttle") <= 18 and 1 <= runs[0].count("internal") <= 14


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"faults": {"explode": 0.1}}, "fault kind"),
        ({"faults": {"throttle": 0.7, "internal": 0.6}}, "sum to at most 1"),
        ({"faults": {"throttle": 1.5}}, "rate from 0 to 1"),
        ({"fault_script": ["throttle", "nope"]}, "fault kind"),
    ],
)
def test_bad_fault_settings_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        FaultPlan(script=options.get("fault_script", ()), rates=options.get("faults"))


def test_oversized_body_is_refused_from_its_content_length(make_server: Any) -> None:
    url = make_server(max_body_bytes=1_000)
    client = runtime_client(url)
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("x" * 5_000_000))
    assert "less than or equal to 1000" in caught.value.response["Error"]["Message"]
    assert (
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("small"))["ResponseMetadata"][
            "HTTPStatusCode"
        ]
        == 200
    )


def test_oversized_chunked_body_is_refused_while_reading(make_server: Any) -> None:
    url = make_server(max_body_bytes=1_000)

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"x" * 100

    status, headers, body = raw_post(url, MISTRAL_7B, "invoke", chunks())
    assert (status, headers["x-amzn-errortype"].split(":")[0]) == (400, "ValidationException")
    assert "1000" in json.loads(body)["message"]


class _Broken:
    """A backend that fails in a chosen way, to check the server's error mapping."""

    name = "broken"

    def __init__(self, error: Exception, *, after: int = 0) -> None:
        self.error = error
        self.after = after

    def complete(self, request: CompletionRequest) -> Completion:
        raise self.error

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        for index in range(self.after):
            yield TextDelta(text=f"w{index} ")
        raise self.error


def test_a_crashing_backend_gives_internal_server_error_json_not_a_traceback(
    make_server: Any,
) -> None:
    url = make_server(_Broken(RuntimeError("secret internals")))
    status, headers, body = raw_post(url, MISTRAL_7B, "invoke", text_body("x").encode())
    assert status == 500
    assert headers["x-amzn-errortype"].startswith("InternalServerException")
    assert "secret" not in body.decode() and "Traceback" not in body.decode()
    assert json.loads(body)["message"]


def test_backend_errors_map_to_bedrock_codes(make_server: Any) -> None:
    client = runtime_client(make_server(_Broken(ThrottledError("slow down"))))
    with pytest.raises(client.exceptions.ThrottlingException):
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("x"))


def test_a_backend_failing_mid_stream_sends_an_exception_frame(make_server: Any) -> None:
    client = runtime_client(make_server(_Broken(RuntimeError("boom"), after=2)))
    response = client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body=text_body("x"))
    with pytest.raises(EventStreamError) as caught:
        list(response["body"])
    assert caught.value.response["Error"]["Code"] == "internalServerException"
    stream = client.converse_stream(modelId=MISTRAL_7B, messages=[user("x")])["stream"]
    with pytest.raises(EventStreamError):
        list(stream)


def test_latency_is_added_per_request(make_server: Any) -> None:
    client = runtime_client(make_server(latency_ms=250))
    started = time.monotonic()
    client.invoke_model(modelId=MISTRAL_7B, body=json.dumps({"prompt": prompt("x")}))
    assert time.monotonic() - started >= 0.25
