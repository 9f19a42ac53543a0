"""The OpenAI face on the wire (raw HTTP, no client in between), its API key, and the refusal
to serve a public address without one."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from bedrock_mistral.errors import ConfigurationError
from bedrock_mistral.server.auth import check_exposure, is_loopback
from tests.helpers.server import MISTRAL_7B, runtime_client, text_body
from tests.server.test_cli import cli_env, stop


def request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        payload = raw if raw is not None else None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def events(body: bytes) -> list[bytes]:
    """The SSE events of a body; asserts each is one ``data:`` line ended by a blank line."""
    assert body.endswith(b"\n\n")
    found = body[:-2].split(b"\n\n")
    assert all(event.startswith(b"data: ") and b"\n" not in event for event in found), found
    return [event[len(b"data: ") :] for event in found]


CHAT = {"model": "mistral-7b", "messages": [{"role": "user", "content": "alpha beta"}]}


def test_a_chat_stream_is_server_sent_events_ending_with_done(echo_server: str) -> None:
    status, headers, body = request(
        echo_server,
        "POST",
        "/v1/chat/completions",
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-request-id"]
    *chunks, done = events(body)
    assert done == b"[DONE]"
    decoded = [json.loads(chunk) for chunk in chunks]
    assert [c["choices"][0]["delta"] for c in decoded[:4]] == [
        {"role": "assistant", "content": ""},
        {"content": "alpha"},
        {"content": " beta"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in decoded[:4]] == [None, None, None, "stop"]
    assert decoded[-1]["choices"] == []
    assert decoded[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert all(c["model"] == MISTRAL_7B for c in decoded)


def test_a_midstream_fault_is_an_error_event_and_no_done(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", fault_script=["midstream"], midstream_after=1)
    status, _, body = request(url, "POST", "/v1/completions", {
        "model": "mistral-7b", "prompt": "one two three", "stream": True})  # fmt: skip
    assert status == 200
    first, error = events(body)
    assert json.loads(first)["choices"][0]["text"] == "one"
    assert json.loads(error)["error"]["type"] == "server_error"
    assert url.stats.requests[-1].error == "modelStreamErrorException"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        ("GET", "/v1/chat/completions", None, 404, "not_found_error"),
        ("POST", "/v1/embeddings", {"model": "x", "input": "y"}, 404, "not_found_error"),
        ("POST", "/v1/chat/completions", {"model": "mistral-7b"}, 400, "invalid_request_error"),
        (
            "POST",
            "/v1/chat/completions",
            {**CHAT, "stream_options": {}},
            400,
            "invalid_request_error",
        ),
    ],
)
def test_errors_are_openai_shaped(
    echo_server: str, method: str, path: str, body: Any, status: int, kind: str
) -> None:
    got, headers, raw = request(echo_server, method, path, body)
    assert got == status
    assert headers["content-type"] == "application/json"
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind


def test_invalid_json_and_an_oversized_body(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", max_body_bytes=1000)
    status, _, raw = request(url, "POST", "/v1/completions", raw=b"{not json")
    assert (status, json.loads(raw)["error"]["type"]) == (400, "invalid_request_error")
    big = {"model": "mistral-7b", "prompt": "x" * 2000}
    status, _, raw = request(url, "POST", "/v1/completions", big)
    assert (status, json.loads(raw)["error"]["code"]) == (413, "request_too_large")


def test_the_key_guards_the_bedrock_routes_too(make_server: Callable[..., Any]) -> None:
    url = make_server("echo", api_key="k-123")
    status, headers, _ = request(url, "GET", "/v1/models")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert request(url, "GET", "/v1/models", headers={"authorization": "Bearer k-123"})[0] == 200
    client: Any = runtime_client(url)
    with pytest.raises(client.exceptions.AccessDeniedException, match="AWS_ACCESS_KEY_ID"):
        client.invoke_model(modelId=MISTRAL_7B, body=text_body("signed with another key"))
    # boto3 sends bearer tokens over HTTPS only; over plain HTTP the key is the access key id.
    keyed: Any = runtime_client(url, access_key_id="k-123")
    reply = keyed.invoke_model(modelId=MISTRAL_7B, body=text_body("keyed"))
    assert json.loads(reply["body"].read())["outputs"][0]["text"] == "keyed"
    status, _, _ = request(url, "POST", f"/model/{MISTRAL_7B}/invoke", raw=text_body("x").encode(),
                           headers={"authorization": "Bearer k-123"})  # fmt: skip
    assert status == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_exposure_needs_a_key_or_an_explicit_opt_out() -> None:
    with pytest.raises(ConfigurationError, match=r'api_key=.*insecure_no_auth="True"'):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", "key")
    check_exposure("0.0.0.0", None, insecure_no_auth=True)
    check_exposure("127.0.0.1", None)


def test_serve_in_background_refuses_a_public_host_without_a_key() -> None:
    from bedrock_mistral.server import serve_in_background

    refused = pytest.raises(ConfigurationError, match=r"refusing to listen on 0\.0\.0\.0")
    with refused, serve_in_background("echo", host="0.0.0.0"):
        pass


def test_serve_on_a_public_host_without_a_key_is_refused_before_binding() -> None:
    # The port is taken: had serve tried to bind it, it would say "cannot listen". The
    # backend spec is broken: had serve built it first, it would complain about that.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "bedrock_mistral", "serve", "--host", "0.0.0.0",
             "--port", port, "--backend", "no_such_module:nothing"],
            env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "refusing to listen on 0.0.0.0 without an API key" in done.stderr
    assert "--api-key KEY (or set BEDROCK_MISTRAL_SERVE_API_KEY)" in done.stderr
    assert "--insecure-no-auth" in done.stderr
    assert "cannot listen" not in done.stderr and "no_such_module" not in done.stderr


def test_serve_reads_the_key_from_the_environment() -> None:
    env = cli_env(BEDROCK_MISTRAL_SERVE_API_KEY="from-env")
    process = subprocess.Popen(
        [sys.executable, "-m", "bedrock_mistral", "serve", "--port", "0", "--backend", "echo"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), (first, os.linesep)
        assert request(url, "GET", "/v1/models")[0] == 401
        keyed = {"authorization": "Bearer from-env"}
        assert request(url, "GET", "/v1/models", headers=keyed)[0] == 200
    finally:
        stop(process)
