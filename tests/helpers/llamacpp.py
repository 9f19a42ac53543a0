"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``, from the
``llama-cpp-python[server]`` package) serving a GGUF of our bundled model: the independent
engine ``backend="llamacpp"`` is tested against.

- :func:`bundled_gguf` writes the GGUF (one place to swap for ``bedrock-mistral local export
  --gguf``);
- :func:`start_llamacpp_server` runs the server as a subprocess on a free loopback port,
  waits for ``/v1/models`` and stops it; its log is kept for failure messages;
- :func:`require_llamacpp` skips with the reason when the package is missing, or fails
  when ``BEDROCK_MISTRAL_REQUIRE_LLAMACPP=1`` (CI) says these tests must run.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

__all__ = [
    "MODEL_ALIAS",
    "REQUIRE_ENV",
    "LlamaCppServer",
    "bundled_gguf",
    "llamacpp_missing",
    "require_llamacpp",
    "start_llamacpp_server",
]

REQUIRE_ENV = "BEDROCK_MISTRAL_REQUIRE_LLAMACPP"
# Read at import (collection), before the autouse fixture clears BEDROCK_MISTRAL_* variables.
REQUIRED = os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")
MODEL_ALIAS = "bundled-mixtral"
START_TIMEOUT = 120.0
_INSTALL = "pip install 'llama-cpp-python[server]>=0.3.36,<0.4'"


def llamacpp_missing() -> str | None:
    """Why the engine tests cannot run here, or None."""
    needs = (
        ("llama_cpp", f"llama.cpp's Python server is not installed: {_INSTALL}"),
        ("fastapi", f"llama_cpp.server's dependencies are missing: {_INSTALL}"),
        ("sse_starlette", f"llama_cpp.server's dependencies are missing: {_INSTALL}"),
        ("torch", "building the GGUF needs the local extra: pip install -e '.[local]'"),
        ("gguf", "building the GGUF needs the gguf package: pip install -e '.[local]'"),
    )
    for module, reason in needs:
        if importlib.util.find_spec(module) is None:
            return reason
    return None


def require_llamacpp() -> None:
    """Skip with the reason, or fail when ``BEDROCK_MISTRAL_REQUIRE_LLAMACPP=1``."""
    reason = llamacpp_missing()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"{REQUIRE_ENV}=1 but the llama.cpp engine tests cannot run: {reason}")
    pytest.skip(reason)


def bundled_gguf(tmp_dir: Path) -> Path:
    """The bundled model as ``bedrock-mistral local export --gguf`` writes it, in F32 (the
    float16 weights exactly): llama.cpp's ``llama`` architecture with merged expert tensors,
    and the bundled unigram vocabulary as llama.cpp's ``t5`` (unigram) tokenizer."""
    from local_backend.gguf_export import export_gguf

    return export_gguf(None, tmp_dir / "bundled.gguf", file_type="f32").path


@dataclass
class LlamaCppServer:
    """A running ``llama_cpp.server``: ``url`` ends in /v1; ``log`` holds its output."""

    url: str
    model: str
    gguf: Path
    log: Path
    process: subprocess.Popen[bytes]
    n_ctx: int

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def start_llamacpp_server(gguf: Path, log: Path, *, n_ctx: int = 512) -> Iterator[LlamaCppServer]:
    """Run ``python -m llama_cpp.server`` on ``gguf`` until the block ends.

    One thread, a fixed seed and no prompt cache, so greedy answers are reproducible.
    """
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
        "--seed",
        "0",
        "--chat_format",
        "mistral-instruct",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaCppServer(f"http://127.0.0.1:{port}/v1", MODEL_ALIAS, gguf, log, process, n_ctx)
    try:
        _wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_until_up(server: LlamaCppServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"llama_cpp.server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"llama_cpp.server did not answer within {START_TIMEOUT:g} s:\n{server.log_tail()}"
    )
