"""Real boto3 bedrock-runtime clients against the server on loopback: the happy paths,
model-id handling and Bedrock's validation wording."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.helpers.server import (
    LARGE_2402,
    LARGE_2407,
    MISTRAL_7B,
    MIXTRAL,
    PIXTRAL,
    prompt,
    runtime_client,
    text_body,
    user,
)


@pytest.fixture
def client(echo_server: str) -> Any:
    return runtime_client(echo_server)


def invoke_json(client: Any, model_id: str, body: Any) -> dict[str, Any]:
    response = client.invoke_model(modelId=model_id, body=json.dumps(body))
    return json.loads(response["body"].read())


def test_invoke_text_dialect_echoes_and_sets_bedrock_headers(client: Any, echo_server: Any) -> None:
    response = client.invoke_model(modelId=MISTRAL_7B, body=text_body("Hello  big\tworld"))
    assert json.loads(response["body"].read()) == {
        "outputs": [{"text": "Hello  big\tworld", "stop_reason": "stop"}]
    }
    assert response["contentType"] == "application/json"
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-output-token-count"] == "3"
    assert int(headers["x-amzn-bedrock-input-token-count"]) == len(
        prompt("Hello  big\tworld").split()
    )
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0
    assert response["ResponseMetadata"]["RequestId"] == headers["x-amzn-requestid"]
    record = next(
        r for r in echo_server.stats.requests if r.request_id == headers["x-amzn-requestid"]
    )
    assert (record.operation, record.model_id, record.status, record.attempt) == (
        "invoke",
        MISTRAL_7B,
        200,
        1,
    )
    assert record.output_tokens == 3


def test_invoke_honours_max_tokens_and_stop(client: Any) -> None:
    long = invoke_json(client, MIXTRAL, {"prompt": prompt("one two three four"), "max_tokens": 2})
    assert long["outputs"] == [{"text": "one two", "stop_reason": "length"}]
    stopped = invoke_json(client, MIXTRAL, {"prompt": prompt("one two. three"), "stop": ["."]})
    assert stopped["outputs"] == [{"text": "one two", "stop_reason": "stop"}]


def test_invoke_chat_dialect_body(client: Any) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second turn"}]},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
    }
    reply = invoke_json(client, LARGE_2407, body)
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "second turn"}
    assert choice["stop_reason"] == choice["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 2


def test_a_text_prompt_echoes_its_whole_last_inst_block(client: Any) -> None:
    # A text prompt cannot tell a system message from the user text it opens (see
    # tests/server/test_echo.py "system-kept"): the echo sends the whole block back.
    reply = invoke_json(client, LARGE_2402, {"prompt": "<s> [INST] Be terse.\n\nWhat now? [/INST]"})
    assert reply["outputs"][0]["text"] == "Be terse.\n\nWhat now?"


@pytest.mark.parametrize(
    "model_id",
    [
        MISTRAL_7B,
        f"arn:aws:bedrock:us-east-1::foundation-model/{MISTRAL_7B}",
        f"us.{PIXTRAL}",
        f"arn:aws:bedrock:us-west-2:123456789012:inference-profile/eu.{PIXTRAL}",
    ],
    ids=["bare", "foundation-arn", "profile", "profile-arn"],
)
def test_model_ids_profiles_and_arns_resolve(client: Any, echo_server: Any, model_id: str) -> None:
    if "pixtral" in model_id:
        body = {"messages": [{"role": "user", "content": "hi you"}]}
        assert invoke_json(client, model_id, body)["choices"][0]["message"]["content"] == "hi you"
    else:
        assert (
            invoke_json(client, model_id, {"prompt": prompt("hi you")})["outputs"][0]["text"]
            == "hi you"
        )
    assert echo_server.stats.requests[-1].model_id == model_id


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("mistral-7b", "The provided model identifier is invalid."),
        ("mistral.not-a-model-v1:0", "The provided model identifier is invalid."),
        ("anthropic.claude-3-haiku-20240307-v1:0", "The provided model identifier is invalid."),
        (
            PIXTRAL,
            f"Invocation of model ID {PIXTRAL} with on-demand throughput isn\u2019t supported.",
        ),
        (
            f"arn:aws:bedrock:us-east-1::foundation-model/{PIXTRAL}",
            "Invocation of model ID arn:aws:bedrock:us-east-1::foundation-model/",
        ),
        # Mistral 7B has no inference profiles, Pixtral none outside us. and eu.
        (f"us.{MISTRAL_7B}", "The provided model identifier is invalid."),
        (
            f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{MIXTRAL}",
            "The provided model identifier is invalid.",
        ),
        (f"global.{PIXTRAL}", "The provided model identifier is invalid."),
        (f"apac.{PIXTRAL}", "The provided model identifier is invalid."),
    ],
    ids=[
        "alias",
        "unknown-mistral",
        "other-vendor",
        "profile-only",
        "profile-only-by-foundation-arn",
        "no-profiles",
        "no-profiles-arn",
        "no-global-profile",
        "no-apac-profile",
    ],
)
def test_unknown_or_unservable_model_ids(client: Any, model_id: str, message: str) -> None:
    with pytest.raises(ClientError) as caught:
        client.invoke_model(modelId=model_id, body=text_body("x"))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["Error"]["Message"].startswith(message)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_model_ids_can_be_restricted(make_server: Any) -> None:
    url = make_server(model_ids=["mixtral-8x7b"])
    client = runtime_client(url)
    assert invoke_json(client, MIXTRAL, {"prompt": prompt("yes")})["outputs"][0]["text"] == "yes"
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("no"))


MALFORMED = "Malformed input request: {}, please reformat your input and try again."


@pytest.mark.parametrize(
    ("model_id", "body", "detail"),
    [
        (MISTRAL_7B, "{not json", None),
        (MISTRAL_7B, "[]", "#: expected type: JSONObject, found: JSONArray"),
        (MISTRAL_7B, "{}", "#: required key [prompt] not found"),
        (MISTRAL_7B, '{"prompt": "x", "foo": 1}', "#: extraneous key [foo] is not permitted"),
        (MISTRAL_7B, '{"prompt": 5}', "#/prompt: expected type: String, found: Integer"),
        (
            MISTRAL_7B,
            '{"prompt": "x", "max_tokens": 0}',
            "#/max_tokens: 0 is not greater or equal to 1",
        ),
        (
            MIXTRAL,
            '{"prompt": "x", "max_tokens": 4097}',
            "#/max_tokens: 4097 is not less or equal to 4096",
        ),
        (
            MISTRAL_7B,
            '{"prompt": "x", "max_tokens": 8193}',
            "#/max_tokens: 8193 is not less or equal to 8192",
        ),
        (
            MISTRAL_7B,
            '{"prompt": "x", "temperature": 1.5}',
            "#/temperature: 1.5 is not less or equal to 1",
        ),
        (
            MISTRAL_7B,
            '{"prompt": "x", "top_p": -0.1}',
            "#/top_p: -0.1 is not greater or equal to 0",
        ),
        (MISTRAL_7B, '{"prompt": "x", "top_k": 201}', "#/top_k: 201 is not less or equal to 200"),
        (
            MISTRAL_7B,
            json.dumps({"prompt": "x", "stop": ["s"] * 11}),
            "#/stop: expected maximum item count: 10, found: 11",
        ),
        (
            MISTRAL_7B,
            '{"prompt": "x", "stop": [1]}',
            "#/stop/0: expected type: String, found: Integer",
        ),
        (MISTRAL_7B, '{"prompt": "x", "max_tokens": 0, "foo": 1}', "#: 2 schema violations found"),
        (LARGE_2407, '{"prompt": "x"}', "#: 2 schema violations found"),
        (
            LARGE_2407,
            '{"messages": [{"role": "robot", "content": "x"}]}',
            "#/messages/0/role: robot is not a valid enum value",
        ),
        (
            LARGE_2407,
            '{"messages": [{"role": "user", "content": "x"}], "top_k": 5}',
            "#: extraneous key [top_k] is not permitted",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bedrock_validation_wording(
    client: Any, model_id: str, body: str, detail: str | None
) -> None:
    with pytest.raises(ClientError) as caught:
        client.invoke_model(modelId=model_id, body=body)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    expected = (
        "Malformed input request, please reformat your input and try again."
        if detail is None
        else MALFORMED.format(detail)
    )
    assert error["Message"] == expected


def test_a_prompt_longer_than_the_context_window_is_refused(client: Any) -> None:
    # Mistral 7B has a 32K window; echo counts a word as a token.
    too_long = "w " * 33_000
    calls = [
        lambda: client.invoke_model(modelId=MISTRAL_7B, body=text_body(too_long)),
        lambda: client.invoke_model_with_response_stream(
            modelId=MISTRAL_7B, body=text_body(too_long)
        ),
        lambda: client.converse(modelId=MIXTRAL, messages=[user(too_long)]),
        lambda: client.converse_stream(modelId=MIXTRAL, messages=[user(too_long)]),
    ]
    for call in calls:
        with pytest.raises(client.exceptions.ValidationException) as caught:
            call()
        assert caught.value.response["Error"]["Message"] == "Input is too long for requested model."
    fits = "w " * 31_000
    reply = invoke_json(client, MISTRAL_7B, {"prompt": prompt(fits), "max_tokens": 1})
    assert reply["outputs"][0]["text"] == "w"
    # Mistral Large 2407 has a 128K window.
    reply = invoke_json(client, LARGE_2407, {"messages": [{"role": "user", "content": too_long}]})
    assert reply["choices"][0]["stop_reason"] == "length"  # answered, up to max_tokens


def test_stream_chunks_and_final_metrics(client: Any) -> None:
    response = client.invoke_model_with_response_stream(
        modelId=MISTRAL_7B, body=text_body("one two three")
    )
    assert response["contentType"] == "application/json"
    assert (
        response["ResponseMetadata"]["HTTPHeaders"]["content-type"]
        == "application/vnd.amazon.eventstream"
    )
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    assert [c["outputs"][0]["text"] for c in chunks] == ["one", " two", " three", ""]
    assert [c["outputs"][0]["stop_reason"] for c in chunks] == [None, None, None, "stop"]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == 3
    assert metrics["inputTokenCount"] == len(prompt("one two three").split())
    assert metrics["invocationLatency"] >= metrics["firstByteLatency"] >= 0


def test_stream_chat_dialect_chunks(client: Any) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "alpha beta"}]})
    response = client.invoke_model_with_response_stream(modelId=LARGE_2407, body=body)
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    assert [c["choices"][0]["message"]["content"] for c in chunks] == ["alpha", " beta", ""]
    assert chunks[-1]["choices"][0]["stop_reason"] == "stop"
    assert "amazon-bedrock-invocationMetrics" in chunks[-1]


def test_stream_validation_errors_are_http_errors(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body="{}")


def test_converse_round_trip(client: Any) -> None:
    response = client.converse(
        modelId=LARGE_2402,
        system=[{"text": "You are terse."}],
        messages=[
            user("first question"),
            {"role": "assistant", "content": [{"text": "ok"}]},
            user("the real question"),
        ],
        inferenceConfig={"maxTokens": 2, "temperature": 0.1, "topP": 0.9, "stopSequences": ["zzz"]},
        additionalModelRequestFields={"top_k": 40},
    )
    assert response["output"]["message"] == {"role": "assistant", "content": [{"text": "the real"}]}
    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 2
    assert response["usage"]["totalTokens"] == response["usage"]["inputTokens"] + 2
    assert response["metrics"]["latencyMs"] >= 0


def test_converse_stream_event_order(client: Any) -> None:
    response = client.converse_stream(modelId=MIXTRAL, messages=[user("red green blue")])
    events = list(response["stream"])
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:4]) == "red green blue"
    assert events[5]["messageStop"]["stopReason"] == "end_turn"
    assert events[6]["metadata"]["usage"]["outputTokens"] == 3


TOOLS = {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]}


def named_tool(name: str) -> dict[str, Any]:
    return {"tools": [{"toolSpec": {"name": name, "inputSchema": {"json": {}}}}]}


@pytest.mark.parametrize(
    ("model_id", "kwargs", "message"),
    [
        (MISTRAL_7B, {"system": [{"text": "sys"}]}, "This model doesn't support system messages."),
        (MIXTRAL, {"toolConfig": TOOLS}, "This model doesn't support tool use."),
        (
            MISTRAL_7B,
            {"inferenceConfig": {"maxTokens": 9000}},
            "The maximum tokens you requested exceeds the model limit of 8192.",
        ),
        (
            MISTRAL_7B,
            {"inferenceConfig": {"temperature": 1.5}},
            "1 validation error detected: Value '1.5' at 'inferenceConfig.temperature'",
        ),
        (
            MISTRAL_7B,
            {"inferenceConfig": {"stopSequences": ["s"] * 11}},
            "Malformed input request: #/stop: expected maximum item count: 10",
        ),
        (
            LARGE_2407,
            {"additionalModelRequestFields": {"top_k": 5}},
            "Malformed input request: #: extraneous key [top_k]",
        ),
        (
            MISTRAL_7B,
            {"messages": [{"role": "assistant", "content": [{"text": "x"}]}]},
            "A conversation must start with a user message.",
        ),
        (
            MISTRAL_7B,
            {"messages": [user("a"), user("b")]},
            "A conversation must alternate between user and assistant roles.",
        ),
        (
            MISTRAL_7B,
            {"messages": [user("   ")]},
            "The text field in the ContentBlock object at messages.0.content.0 is blank.",
        ),
        (
            LARGE_2407,
            {"toolConfig": named_tool("get weather!")},
            "1 validation error detected: Value 'get weather!' at "
            "'toolConfig.tools.1.member.toolSpec.name' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: [a-zA-Z0-9_-]+",
        ),
        (
            LARGE_2407,
            {"toolConfig": named_tool("x" * 65)},
            f"1 validation error detected: Value '{'x' * 65}' at "
            "'toolConfig.tools.1.member.toolSpec.name' failed to satisfy constraint: Member must "
            "have length less than or equal to 64",
        ),
    ],
    ids=[
        "7b-system",
        "mixtral-tools",
        "max-tokens",
        "temperature",
        "stops",
        "chat-top-k",
        "assistant-first",
        "no-alternation",
        "blank",
        "tool-name-pattern",
        "tool-name-length",
    ],
)
def test_converse_rules_match_bedrock(
    client: Any, model_id: str, kwargs: dict[str, Any], message: str
) -> None:
    request: dict[str, Any] = {"modelId": model_id, "messages": [user("hi")], **kwargs}
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.converse(**request)
    assert caught.value.response["Error"]["Message"].startswith(message)


def test_tools_allowed_on_large_but_not_while_streaming(client: Any) -> None:
    reply = client.converse(modelId=LARGE_2402, messages=[user("use a tool")], toolConfig=TOOLS)
    assert reply["output"]["message"]["content"] == [{"text": "use a tool"}]
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.converse_stream(modelId=LARGE_2402, messages=[user("use a tool")], toolConfig=TOOLS)
    assert (
        caught.value.response["Error"]["Message"]
        == "This model doesn't support tool use in streaming mode."
    )


def test_count_tokens_for_invoke_and_converse_inputs(client: Any) -> None:
    native = json.dumps({"prompt": prompt("a b c")}).encode()
    counted = client.count_tokens(modelId=MISTRAL_7B, input={"invokeModel": {"body": native}})
    assert counted["inputTokens"] == len(prompt("a b c").split())
    counted = client.count_tokens(
        modelId=MISTRAL_7B, input={"converse": {"messages": [user("a b c")]}}
    )
    assert counted["inputTokens"] == len(prompt("a b c").split())
    assert base64.b64encode(native)  # the SDK sent it base64-encoded; the server decoded it


def test_concurrent_streams_are_served_together(make_server: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = make_server(latency_ms=400)
    client = runtime_client(url)

    def one(index: int) -> str:
        response = client.invoke_model_with_response_stream(
            modelId=MISTRAL_7B, body=text_body(f"stream {index}")
        )
        return "".join(
            json.loads(e["chunk"]["bytes"])["outputs"][0]["text"] for e in response["body"]
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(pool.map(one, range(12)))
    assert replies == [f"stream {i}" for i in range(12)]
    assert url.stats.peak_in_flight >= 6  # 12 x 400 ms overlapped, not queued one by one


def test_a_finished_call_is_already_out_of_flight_and_recorded(make_server: Any) -> None:
    """Stats are settled before the last byte goes out, for every operation and for errors:
    a client that has read its whole answer never sees its own request still in flight."""
    server = make_server("echo")
    client = runtime_client(server)
    messages = [{"role": "user", "content": [{"text": "c d"}]}]
    calls = {
        "invoke": lambda: client.invoke_model(modelId=MISTRAL_7B, body=text_body("a"))[
            "body"
        ].read(),
        "invoke-stream": lambda: list(
            client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body=text_body("a b"))[
                "body"
            ]
        ),
        "converse": lambda: client.converse(modelId=MIXTRAL, messages=messages),
        "converse-stream": lambda: list(
            client.converse_stream(modelId=MIXTRAL, messages=messages)["stream"]
        ),
        "count-tokens": lambda: client.count_tokens(
            modelId=MIXTRAL, input={"converse": {"messages": messages}}
        ),
    }
    for name, call in calls.items():
        for _ in range(40):
            call()
            assert server.stats.in_flight == 0, name
            assert server.stats.requests[-1].status == 200, name
    with pytest.raises(ClientError):
        client.invoke_model(modelId=MISTRAL_7B, body=b"{}")
    assert server.stats.in_flight == 0
    assert server.stats.requests[-1].status == 400
    assert len(server.stats.requests) == 5 * 40 + 1
