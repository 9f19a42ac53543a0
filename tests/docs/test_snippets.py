"""Every ```python block in README.md and docs/*.md runs here, so the docs cannot rot.

Each snippet runs on its own (fresh globals, its own temporary working directory) in
the isolated test environment: fake AWS credentials, and ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``
pointing at a loopback ``bedrock-mistral serve --backend echo``, so a snippet written for
Amazon Bedrock runs through real boto3 against the emulator and nothing leaves the
machine (``AWS_ENDPOINT_URL`` sends any other AWS service to a closed local port).
Snippets on an engine (``backend="openai"``, ``"ollama"``...) get ``BEDROCK_MISTRAL_BASE_URL``
pointing at a loopback OpenAI-compatible server that echoes. Snippets that use the local
model need torch and are skipped, with the reason, without it. When the page shows a
``title="Output"`` block right after a snippet, what the snippet prints must equal it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs.blocks import Snippet, UnclosedFenceError, fenced_blocks, python_snippets

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"README.md": ROOT / "README.md"} | {
    f"docs/{path.name}": path for path in sorted((ROOT / "docs").glob("*.md"))
}
SNIPPETS = [snippet for name, path in PAGES.items() for snippet in python_snippets(path, name=name)]

# Nothing listens on the discard port: a call to any AWS service but the runtime fails fast.
CLOSED_ENDPOINT = "http://127.0.0.1:9"
_USES_LOCAL_MODEL = re.compile(r"""local_backend|backend=["']local["']|\bimport torch\b""")
_USES_ECHO_OR_LOCAL = re.compile(r"""backend=["'](echo|local)["']""")
_USES_ENGINE = re.compile(r"""backend=["'](openai|ollama|vllm|llamacpp)["']""")

TORCH_REASON = "needs the local extra for the bundled model: pip install -e '.[local]'"
SERVER_REASON = "needs the server extra for the loopback endpoint: pip install -e '.[server]'"
OPENAI_REASON = "needs the openai client (a dev dependency): pip install -e '.[dev]'"
_USES_OPENAI = re.compile(r"^\s*(from openai\b|import openai\b)", re.MULTILINE)


def _needs_server(code: str) -> bool:
    """Bedrock calls go to the loopback server: any boto3, serve, or client not on echo/local."""
    if "serve_in_background" in code or "boto3" in code:
        return True
    return "MistralClient(" in code and not _USES_ECHO_OR_LOCAL.search(code)


@pytest.fixture(scope="module")
def openai_engine() -> Iterator[str]:
    """The URL of a loopback OpenAI-compatible server that echoes (tests/helpers/openai_server)."""
    pytest.importorskip("httpx", reason="needs the openai extra: pip install -e '.[openai]'")
    from tests.helpers.openai_server import start_openai_server

    with start_openai_server() as server:
        yield server.url


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.id for snippet in SNIPPETS])
def test_snippet_runs(
    snippet: Snippet,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if _USES_LOCAL_MODEL.search(snippet.code):
        pytest.importorskip("torch", reason=TORCH_REASON)
    if _USES_OPENAI.search(snippet.code):
        pytest.importorskip("openai", reason=OPENAI_REASON)
    if _needs_server(snippet.code):
        if importlib.util.find_spec("uvicorn") is None:
            pytest.skip(SERVER_REASON)
        server = request.getfixturevalue("echo_server")
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", str(server))
    if _USES_ENGINE.search(snippet.code):  # every engine URL leads to a loopback echo engine
        monkeypatch.setenv("BEDROCK_MISTRAL_BASE_URL", request.getfixturevalue("openai_engine"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", CLOSED_ENDPOINT)
    monkeypatch.chdir(tmp_path)

    namespace: dict[str, Any] = {"__name__": "__docs__"}
    exec(compile(snippet.code, snippet.id, "exec"), namespace)

    printed = capsys.readouterr().out
    if snippet.output is not None:
        assert printed.rstrip() == snippet.output.rstrip(), f"{snippet.id} printed other output"


def test_the_pages_have_snippets() -> None:
    """The scan finds the pages and their code: an empty scan would pass every check above."""
    assert {"README.md", "docs/index.md", "docs/sdk.md", "docs/local.md"} <= set(PAGES)
    by_page = {snippet.page for snippet in SNIPPETS}
    assert {"README.md", "docs/sdk.md", "docs/local.md", "docs/serve.md"} <= by_page
    assert any(snippet.output is not None for snippet in SNIPPETS)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_output_block_follows_a_snippet(name: str) -> None:
    """An ``Output`` block not right after a python block would never be checked."""
    path = PAGES[name]
    checked = {snippet.output for snippet in python_snippets(path, name=name)}
    for block in fenced_blocks(path.read_text(encoding="utf-8")):
        if block.is_output:
            assert block.body in checked, f"{name}:{block.line}: Output block after no snippet"


def test_an_unclosed_fence_is_an_error() -> None:
    with pytest.raises(UnclosedFenceError, match="line 2"):
        fenced_blocks("text\n```python\nprint(1)\n")


def test_output_pairs_with_the_block_before_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '- item:\n\n  ```python\n  print(1)\n  ```\n\n  ```text title="Output"\n  1\n  ```\n'
        '\n```python\nprint(2)\n```\n\nprose\n\n```text title="Output"\n2\n```\n'
    )
    first, second = python_snippets(page, name="page.md")
    assert (first.code, first.output, first.line) == ("print(1)", "1", 3)
    assert (second.code, second.output) == ("print(2)", None)
