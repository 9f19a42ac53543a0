"""Shared pieces of the CLI tests: an isolated home, scripted backends, runners.

Backends here are real implementations of the backend protocol, loaded by the CLI the
way any plugin is (``--backend tests.helpers.cli:NAME``), in-process for CliRunner tests and
in a child process (``PYTHONPATH`` includes the repository root) for pseudo-terminal tests.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bedrock_mistral.backends.echo import EchoBackend, split_words
from bedrock_mistral.cli import cli
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta, Usage

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliHome:
    """Paths of the isolated home; ``env`` is what a child process should run with."""

    root: Path
    config: Path
    data: Path
    state: Path
    env: dict[str, str]

    @property
    def sessions(self) -> Path:
        return self.data / "bedrock-mistral" / "sessions"

    @property
    def config_file(self) -> Path:
        return self.config / "bedrock-mistral" / "config.toml"


@pytest.fixture(name="cli_home")
def cli_home_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliHome:
    """HOME and the XDG dirs in tmp_path; no AWS or BEDROCK_MISTRAL settings leak in."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "BEDROCK_MISTRAL_")) or name in (
            "NO_COLOR",
            "FORCE_COLOR",
            "COLUMNS",
        ):
            monkeypatch.delenv(name)
    home = CliHome(
        root=tmp_path / "home",
        config=tmp_path / "home" / "config",
        data=tmp_path / "home" / "data",
        state=tmp_path / "home" / "state",
        env={},
    )
    values = {
        "HOME": str(home.root),
        "XDG_CONFIG_HOME": str(home.config),
        "XDG_DATA_HOME": str(home.data),
        "XDG_STATE_HOME": str(home.state),
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no slow instance-metadata probes
    }
    home.root.mkdir()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    home.env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return home


def fake_aws(monkeypatch: pytest.MonkeyPatch, region: str = "us-east-1") -> None:
    """Credentials boto3 will sign with; they are never checked by our loopback servers."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", region)


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI in-process; stdout and stderr stay separate."""
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


# --- backends --------------------------------------------------------------------------


@dataclass
class ScriptedBackend:
    """Replies from a queue (text, or an exception to raise); every request is kept."""

    name: str = "scripted"
    replies: deque[str | BaseException] = field(default_factory=deque)
    requests: list[CompletionRequest] = field(default_factory=list)

    def enqueue(self, *replies: str | BaseException) -> ScriptedBackend:
        self.replies.extend(replies)
        return self

    def _next(self, request: CompletionRequest) -> str:
        self.requests.append(request)
        reply = self.replies.popleft() if self.replies else "ok"
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def complete(self, request: CompletionRequest) -> Completion:
        text = self._next(request)
        return Completion(
            text=text,
            stop_reason="stop",
            usage=Usage(input_tokens=len(request.prompt.split()), output_tokens=len(text.split())),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=1.0,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        text = self._next(request)
        for word in split_words(text):
            yield TextDelta(text=word)
        yield StreamEnd(
            stop_reason="stop",
            usage=Usage(input_tokens=len(request.prompt.split()), output_tokens=len(text.split())),
            latency_ms=1.0,
        )


SCRIPTED = (
    ScriptedBackend()
)  # tests replace it with monkeypatch; the CLI loads tests.helpers.cli:SCRIPTED


class SlowEcho(EchoBackend):
    """The echo backend, one word every CLI_TEST_DELAY seconds: time to press Ctrl-C."""

    name = "slow-echo"

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        delay = float(os.environ.get("CLI_TEST_DELAY", "0.05"))
        for event in super().stream(request):
            if isinstance(event, TextDelta):
                time.sleep(delay)
            yield event


class SmallWindowEcho(EchoBackend):
    """The echo backend with an exact token count (whitespace words) and a small context
    window, so a chat fills it in a few turns whatever the echo estimate does. Keeps every
    prompt it was sent."""

    name = "small-window-echo"

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self.prompts: list[str] = []

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    @property
    def context_window(self) -> int | None:
        return self.window

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        self.prompts.append(request.prompt)
        return super().stream(request)


SMALL_WINDOW = SmallWindowEcho()  # tests replace it with monkeypatch


class SlowLoadingEcho(EchoBackend):
    """The echo backend behind a slow import that, like torch's, breaks for good when Ctrl-C
    cuts it short (see :mod:`tests.helpers.slow_import`). The import happens when the context
    window is first read, which is when the local backend loads its model."""

    name = "slow-loading-echo"

    @property
    def context_window(self) -> int | None:
        import tests.helpers.slow_import  # noqa: F401

        return None


# --- pseudo-terminal -------------------------------------------------------------------


def spawn_cli(
    home: CliHome,
    *args: str,
    rows: int = 30,
    cols: int = 100,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """``bedrock-mistral ARGS`` on a real pseudo-terminal (pexpect)."""
    import pexpect

    env = {
        **home.env,
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",  # pexpect does not answer cursor-position requests
        "COLUMNS": str(cols),
        "LINES": str(rows),
        **(extra_env or {}),
    }
    return pexpect.spawn(
        sys.executable,
        ["-m", "bedrock_mistral", *args],
        env=env,
        cwd=str(home.root),
        encoding="utf-8",
        dimensions=(rows, cols),
        timeout=20,
    )


def markdown_lines(text: str, width: int) -> list[str]:
    """``text`` rendered by rich in one go, as plain lines (what a streamed reply must equal)."""
    import io

    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(Markdown(text))
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def tiny_checkpoint(path: Path) -> Path:
    """A random 2-layer Mixtral with 4 experts and the v1 vocabulary (tokenizer from
    mistral-common): loads in well under a second and routes like the real thing."""
    import torch

    from local_backend.checkpoint import save_pretrained
    from local_backend.model import Transformer
    from tests.helpers.configs import small_moe

    config = small_moe(vocab_size=32000, sliding_window=64, max_seq_len=512)
    torch.manual_seed(0)
    save_pretrained(Transformer(config), config, path)
    return path
