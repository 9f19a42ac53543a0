"""What llama.cpp's tokenizer reads when the llamacpp preset sends a raw prompt.

llama.cpp puts its BOS before every completions prompt and also parses ``<s>`` in the text
as BOS, and its SentencePiece tokenizer adds the dummy-prefix space after every special
token. The preset therefore sends our prompt without its leading ``<s>`` and without the
space after ``<s>``/``</s>`` (``openai_wire.raw_prompt``). Checked here with llama.cpp's
own tokenizer: on Mistral's v1 vocabulary (what real Mistral GGUFs carry) it then reads
exactly mistral-common's tokens, and on the bundled model's export (its unigram vocabulary
written as llama.cpp's ``t5`` tokenizer) exactly ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bedrock_mistral.backends.openai_wire import raw_prompt
from bedrock_mistral.prompt import format_prompt
from tests.helpers.llamacpp import LlamaCppServer, require_llamacpp

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is 58 + 67?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
    [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you!"},
        {"role": "user", "content": "What is my name?"},
    ],
    [  # a continuation, as resume=True sends it
        {"role": "user", "content": "Reverse the word: planet"},
        {"role": "assistant", "content": " ten"},
    ],
]


@pytest.fixture(scope="module")
def v1_vocab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama.cpp's tokenizer loaded from a GGUF carrying Mistral's v1 vocabulary."""
    require_llamacpp()
    pytest.importorskip("mistral_common", reason="needs the local extra: pip install -e '.[local]'")
    import llama_cpp

    from tests.helpers.configs import small_moe
    from tests.helpers.gguf_files import v1_tokenizer_metadata, write_gguf

    path = tmp_path_factory.mktemp("v1") / "v1-vocab.gguf"
    write_gguf(path, small_moe(vocab_size=32000), {}, tokenizer=v1_tokenizer_metadata())
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    yield vocab
    vocab.close()


def _prompt(messages: list[dict[str, str]]) -> str:
    if messages[-1]["role"] == "assistant":
        return format_prompt(messages, continue_final=True)
    return format_prompt(messages)


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["one", "system", "turns", "continue"])
def test_on_mistrals_vocabulary_llamacpp_reads_mistral_commons_tokens(
    v1_vocab: Any, messages: list[dict[str, str]]
) -> None:
    from local_backend.tokenizer import Tokenizer, bundled_v1_path

    path = bundled_v1_path()
    assert isinstance(path, Path)
    prompt = _prompt(messages)
    expected = Tokenizer.from_file(path).encode_prompt(prompt)  # = mistral-common's v1
    sent = raw_prompt(prompt, engine_bos=True)
    # What llama-cpp-python's completions do: its BOS, then the text with specials parsed.
    read = [v1_vocab.token_bos(), *v1_vocab.tokenize(sent.encode(), add_bos=False, special=True)]
    assert read == expected
    # The prompt as Bedrock gets it would start with two BOS tokens there.
    unchanged = v1_vocab.tokenize(prompt.encode(), add_bos=False, special=True)
    assert unchanged[0] == v1_vocab.token_bos() and read[:1] + unchanged != expected


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["one", "system", "turns", "continue"])
def test_on_the_bundled_export_llamacpp_reads_our_tokens(
    llamacpp: LlamaCppServer, messages: list[dict[str, str]]
) -> None:
    from local_backend.runtime import BUNDLED_WEIGHTS
    from local_backend.tokenizer import Tokenizer

    prompt = _prompt(messages)
    ours = Tokenizer.from_file(BUNDLED_WEIGHTS / "tokenizer.model").encode_prompt(prompt)
    answer = httpx.post(
        f"{llamacpp.root}/extras/tokenize", json={"input": raw_prompt(prompt, engine_bos=True)}
    )
    assert answer.json()["tokens"] == ours  # the server's tokenizer, BOS included
    # Sent as Bedrock gets it, the engine would read two BOS tokens.
    unchanged = httpx.post(f"{llamacpp.root}/extras/tokenize", json={"input": prompt})
    assert unchanged.json()["tokens"][:2] == [ours[0], ours[0]]
