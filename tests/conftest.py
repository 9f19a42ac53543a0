"""Shared fixtures: an isolated environment for every test, and Bedrock-compatible servers.

Every test runs with a private HOME and XDG directories, no AWS config files, fake AWS
credentials, region ``us-east-1`` (through ``AWS_DEFAULT_REGION``, boto3's own variable)
and none of the ``BEDROCK_MISTRAL_*`` / endpoint variables of the developer's shell, so
nothing reaches a real account and no test depends on the machine it runs on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.backends import SleepRecorder
from tests.helpers.plugins import plugin_fixture, plugin_site_fixture

__all__ = ["plugin_fixture", "plugin_site_fixture"]  # fixtures: a real installed plugin backend

FAKE_REGION = "us-east-1"

_CLEARED_PREFIXES = ("AWS_", "BEDROCK_MISTRAL_", "BOTO_")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Private HOME/XDG dirs, fake AWS credentials and region, no inherited AWS settings."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / ".aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws" / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTTESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "test-session-token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", FAKE_REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never wait on IMDS
    return home


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture(scope="session")
def echo_server() -> Iterator[Any]:
    """One shared loopback server (echo backend, no faults) for tests that only read."""
    from bedrock_mistral.server import serve_in_background

    with serve_in_background("echo") as server:
        yield server


@pytest.fixture
def make_server() -> Iterator[Callable[..., Any]]:
    """Start Bedrock-compatible servers for one test: ``make_server(backend, **options)``.

    Options are those of ``serve_in_background`` (faults, fault_script, latency_ms, ...);
    every server started is shut down when the test ends.
    """
    from bedrock_mistral.server import serve_in_background

    with ExitStack() as stack:

        def start(backend: Any = "echo", **options: Any) -> Any:
            return stack.enter_context(serve_in_background(backend, **options))

        yield start
