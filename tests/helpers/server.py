"""Helpers for the server tests: real boto3 clients and raw HTTP against a running server."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.session
from botocore.config import Config

MISTRAL_7B = "mistral.mistral-7b-instruct-v0:2"
MIXTRAL = "mistral.mixtral-8x7b-instruct-v0:1"
LARGE_2402 = "mistral.mistral-large-2402-v1:0"
LARGE_2407 = "mistral.mistral-large-2407-v1:0"
PIXTRAL = "mistral.pixtral-large-2502-v1:0"


_SESSIONS: list[botocore.session.Session] = []


def _botocore_session() -> botocore.session.Session:
    """One botocore session for all server tests: it caches the parsed service model."""
    if not _SESSIONS:
        _SESSIONS.append(botocore.session.get_session())
    return _SESSIONS[0]


def runtime_client(
    url: str,
    *,
    attempts: int = 1,
    read_timeout: float = 10.0,
    mode: str = "standard",
    access_key_id: str = "AKIDTESTTESTTESTTEST",
) -> Any:
    """A bedrock-runtime client on ``url`` that makes exactly ``attempts`` tries per call."""
    config = Config(
        retries={"total_max_attempts": attempts, "mode": mode},
        read_timeout=read_timeout,
        connect_timeout=5,
        max_pool_connections=64,
    )
    return boto3.session.Session(botocore_session=_botocore_session()).client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key="test-secret-key",
        config=config,
    )


def prompt(text: str) -> str:
    return f"<s> [INST] {text} [/INST]"


def text_body(text: str, **params: Any) -> str:
    return json.dumps({"prompt": prompt(text), **params})


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def raw_post(
    url: str,
    model_id: str,
    operation: str,
    body: bytes | Iterable[bytes],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    quote_id: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """POST over plain http.client (no SDK in between): status, lower-cased headers, body."""
    parts = urlsplit(url)
    segment = quote(model_id, safe="") if quote_id else model_id
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            f"/model/{segment}/{operation}",
            body=body,
            headers=headers or {},
            encode_chunked=not isinstance(body, bytes),
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
