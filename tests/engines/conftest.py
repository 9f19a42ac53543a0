"""The independent engine: llama.cpp's OpenAI-compatible server on a GGUF of our bundled model.

One server for the whole session (it loads in a second or two; building the GGUF takes
about as long). Without ``llama-cpp-python[server]`` every test here skips and says why,
unless ``BEDROCK_MISTRAL_REQUIRE_LLAMACPP=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.llamacpp import (
    LlamaCppServer,
    bundled_gguf,
    require_llamacpp,
    start_llamacpp_server,
)


@pytest.fixture(scope="session")
def llamacpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """``python -m llama_cpp.server`` serving the bundled model (n_ctx 512) on loopback."""
    require_llamacpp()
    folder = tmp_path_factory.mktemp("llamacpp")
    gguf = bundled_gguf(folder)
    with start_llamacpp_server(gguf, folder / "server.log", n_ctx=512) as server:
        yield server
        if server.process.poll() is not None:  # it died under a test: say so, with its log
            pytest.fail(f"llama_cpp.server died during the tests:\n{server.log_tail()}")
