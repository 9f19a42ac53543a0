"""The examples run unchanged against the local server (AWS_ENDPOINT_URL_BEDROCK_RUNTIME)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def local_endpoint(
    echo_server: Any, monkeypatch: pytest.MonkeyPatch, no_aws_credentials: None
) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", str(echo_server))
    return str(echo_server)


def test_chat_example(local_endpoint: str) -> None:
    result = run("chat.py", "Why is the sky blue?")
    assert result.returncode == 0, result.stderr
    # Over InvokeModel the system text opens the first user turn, and echo sends that turn back.
    assert result.stdout.strip() == "You answer briefly.\n\nWhy is the sky blue?"
    assert "tokens in" in result.stderr and "$" in result.stderr


def test_streaming_example(local_endpoint: str) -> None:
    result = run("streaming.py", "a haiku about rivers")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a haiku about rivers"
    assert "[stop; 4 tokens]" in result.stderr


def test_conversation_example(local_endpoint: str) -> None:
    result = run("conversation.py", stdin="first line\nsecond line\n\n")
    assert result.returncode == 0, result.stderr
    # The system text opens the first user turn, which echo sends back with it.
    assert result.stdout.splitlines() == [
        "You are a friendly assistant.",
        "",
        "first line",
        "second line",
    ]
    assert "[5 messages in the history]" in result.stderr


@pytest.mark.parametrize("backend", ["bedrock", "echo"])
def test_switch_backend_example(local_endpoint: str, backend: str) -> None:
    result = run("switch_backend.py", backend)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{backend}: Name three colours of the rainbow."


def test_examples_fail_with_one_readable_line(no_aws_credentials: None) -> None:
    result = run("chat.py", "hello")  # real AWS endpoint, no credentials: refused before sending
    assert result.returncode == 1
    assert result.stderr.startswith("error: No AWS credentials found")
    assert result.stderr.count("\n") == 1
