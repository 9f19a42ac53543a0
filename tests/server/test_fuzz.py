"""Random bodies, headers, model ids and operations over raw HTTP.

Whatever arrives, the server answers within a deadline, never with a 5xx (a 500 here
would mean a handler crashed), always in Bedrock's error shape, and keeps serving.
"""

from __future__ import annotations

import base64
import http.client
import json
import string
from typing import Any
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.server import LARGE_2407, MISTRAL_7B, MIXTRAL, PIXTRAL, runtime_client, text_body

OPERATIONS = [
    "invoke",
    "invoke-with-response-stream",
    "converse",
    "converse-stream",
    "count-tokens",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
near_keys = st.sampled_from(
    [
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "messages",
        "tools",
        "tool_choice",
        "system",
        "inferenceConfig",
        "toolConfig",
        "additionalModelRequestFields",
        "input",
        "role",
        "content",
        "text",
        "toolUse",
        "toolResult",
        "image",
        "invokeModel",
        "converse",
        "body",
        "maxTokens",
        "stopSequences",
    ]
)
near_json = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(near_keys, inner, max_size=5),
    max_leaves=20,
)
# Bodies close to valid ones reach past the first check into parsing, prompts and streams.
numbers = st.one_of(st.integers(-5, 10_000), st.floats(-1, 2, allow_nan=False), json_values)
text_like = st.fixed_dictionaries(
    {"prompt": st.text(max_size=60)},
    optional={
        "max_tokens": numbers,
        "temperature": numbers,
        "top_p": numbers,
        "top_k": numbers,
        "stop": st.lists(st.text(max_size=5), max_size=12),
        "extra": json_values,
    },
)
chat_like = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "user", "assistant", "tool", "bot"])},
                optional={
                    "content": st.one_of(st.text(max_size=30), st.lists(json_values, max_size=3)),
                    "tool_calls": json_values,
                    "tool_call_id": st.text(max_size=12),
                },
            ),
            max_size=5,
        )
    },
    optional={
        "max_tokens": numbers,
        "temperature": numbers,
        "tools": json_values,
        "tool_choice": json_values,
    },
)
blocks = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=30)}),
    st.fixed_dictionaries({"toolUse": near_json}),
    st.fixed_dictionaries({"toolResult": near_json}),
    st.fixed_dictionaries({"image": near_json}),
    st.dictionaries(near_keys, json_values, max_size=2),
)
converse_like = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system"]),
                    "content": st.lists(blocks, max_size=3),
                }
            ),
            max_size=4,
        )
    },
    optional={
        "system": st.lists(st.fixed_dictionaries({"text": st.text(max_size=20)}), max_size=2),
        "inferenceConfig": st.fixed_dictionaries(
            {},
            optional={
                "maxTokens": numbers,
                "temperature": numbers,
                "topP": numbers,
                "stopSequences": st.lists(st.text(max_size=5), max_size=12),
            },
        ),
        "toolConfig": near_json,
        "additionalModelRequestFields": st.dictionaries(near_keys, json_values, max_size=3),
    },
)
count_like = st.one_of(
    text_like.map(
        lambda b: {
            "input": {"invokeModel": {"body": base64.b64encode(json.dumps(b).encode()).decode()}}
        }
    ),
    converse_like.map(lambda b: {"input": {"converse": b}}),
    st.fixed_dictionaries({"input": near_json}),
)
bodies = st.one_of(
    st.binary(max_size=300),
    near_json.map(lambda v: json.dumps(v).encode()),
    st.one_of(text_like, chat_like, converse_like, count_like).map(
        lambda v: json.dumps(v).encode()
    ),
)
model_ids = st.one_of(
    st.sampled_from(
        [
            MISTRAL_7B,
            MIXTRAL,
            LARGE_2407,
            f"us.{PIXTRAL}",
            PIXTRAL,
            f"arn:aws:bedrock:us-east-1::foundation-model/{MIXTRAL}",
        ]
    ),
    st.text(min_size=1, max_size=40),
    st.text(alphabet=string.ascii_lowercase + ".:-/", min_size=1, max_size=40),
)
header_names = st.one_of(
    st.sampled_from(
        [
            "Content-Type",
            "Accept",
            "X-Amzn-Bedrock-Accept",
            "X-Amzn-Bedrock-Trace",
            "amz-sdk-request",
            "Authorization",
            "X-Amzn-Bedrock-PerformanceConfig-Latency",
            "X-Amzn-Bedrock-Service-Tier",
            "Expect",
        ]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=20).filter(
        lambda n: (
            n.lower() not in {"content-length", "transfer-encoding", "host", "connection", "expect"}
        )
    ),
)
header_values = st.text(
    alphabet=string.ascii_letters + string.digits + " ;=/.-_:", max_size=40
).map(str.strip)


def post(
    url: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model_id=model_ids,
    operation=st.one_of(
        st.sampled_from(OPERATIONS), st.text(alphabet=string.ascii_lowercase + "-", max_size=12)
    ),
    body=bodies,
    headers=st.dictionaries(header_names, header_values, max_size=4),
    keep_slashes=st.booleans(),
)
def test_random_requests_never_crash_or_hang(
    echo_server: str,
    model_id: str,
    operation: str,
    body: bytes,
    headers: dict[str, str],
    keep_slashes: bool,
) -> None:
    path = f"/model/{quote(model_id, safe='/:' if keep_slashes else '')}/{operation}"
    status, response_headers, payload = post(echo_server, path, body, headers)
    assert status < 500, (status, payload[:300])
    if status >= 400:
        assert response_headers["x-amzn-errortype"].split(":")[0].endswith("Exception")
        assert isinstance(json.loads(payload)["message"], str)
        assert "Traceback" not in payload.decode("utf-8", "replace")


def test_every_operation_still_works_after_the_fuzzing(echo_server: Any) -> None:
    client = runtime_client(echo_server)
    reply = client.invoke_model(modelId=MISTRAL_7B, body=text_body("still here"))
    assert json.loads(reply["body"].read())["outputs"][0]["text"] == "still here"
    stream = client.invoke_model_with_response_stream(modelId=MISTRAL_7B, body=text_body("a b"))[
        "body"
    ]
    assert len(list(stream)) == 3
    messages = [{"role": "user", "content": [{"text": "c d"}]}]
    assert client.converse(modelId=MIXTRAL, messages=messages)["output"]["message"]["content"] == [
        {"text": "c d"}
    ]
    assert list(client.converse_stream(modelId=MIXTRAL, messages=messages)["stream"])[
        -1
    ].keys() == {"metadata"}
    assert (
        client.count_tokens(modelId=MIXTRAL, input={"converse": {"messages": messages}})[
            "inputTokens"
        ]
        > 0
    )
    assert echo_server.stats.in_flight == 0  # nothing left hanging from the fuzz run
