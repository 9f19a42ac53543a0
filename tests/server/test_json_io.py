"""JSON in and out of the server: strict parsing (both faces refuse the same bodies) and the
one compact encoder every answer goes through."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from bedrock_mistral.server.errors import BedrockError
from bedrock_mistral.server.jsonbody import dump_json
from bedrock_mistral.server.schema import parse_json
from tests.helpers.server import MISTRAL_7B
from tests.server.test_openai_wire import request

NOT_JSON = [
    b'{"prompt": "a", "prompt": "b"}',  # a duplicate key
    b'{"messages": [{"role": "user", "role": "system", "content": "x"}]}',  # one, deeper
    b'{"temperature": NaN}',
    b'{"temperature": Infinity}',
    b'{"temperature": 1e999}',  # does not fit a double
    b'{"prompt": "\xff"}',  # not UTF-8
    '\ufeff{"prompt": "a"}'.encode(),  # a byte-order mark
    b'{"prompt": "a"} trailing',
]


@pytest.mark.parametrize("raw", NOT_JSON)
def test_parse_json_refuses_what_bedrock_calls_malformed(raw: bytes) -> None:
    with pytest.raises(BedrockError) as caught:
        parse_json(raw)
    assert caught.value.code == "ValidationException"
    assert caught.value.message.startswith("Malformed input request")


def test_parse_json_reads_nested_bodies() -> None:
    raw = b'{"a": [{"b": 1.5, "c": null}, {"b": -2}], "d": {"e": "\\u00e9"}}'
    assert parse_json(raw) == {"a": [{"b": 1.5, "c": None}, {"b": -2}], "d": {"e": "é"}}


def test_dump_json_is_compact_utf8_and_round_trips() -> None:
    body = {"text": "héllo ✓", "n": [1, 2.5, None, True]}
    raw = dump_json(body)
    assert raw == '{"text":"héllo ✓","n":[1,2.5,null,true]}'.encode()
    assert json.loads(raw) == body


@pytest.mark.parametrize("raw", NOT_JSON[:3])
def test_both_faces_refuse_the_same_bodies(echo_server: str, raw: bytes) -> None:
    path = f"/model/{quote(MISTRAL_7B, safe='')}/invoke"
    status, _, body = request(echo_server, "POST", path, raw=raw)
    assert status == 400
    assert json.loads(body)["message"].startswith("Malformed input request")
    status, _, body = request(echo_server, "POST", "/v1/chat/completions", raw=raw)
    assert status == 400
    assert json.loads(body)["error"] == {
        "message": "The request body is not valid JSON.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
