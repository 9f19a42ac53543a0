"""Token counting: exact with the v1 tokenizer, a conservative estimate otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

# Exact counts need the v1 tokenizer (mistral-common and sentencepiece, the local extra).
pytest.importorskip("mistral_common", reason="needs the local extra: pip install -e '.[local]'")

from hypothesis import given, settings
from hypothesis import strategies as st
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from bedrock_mistral import MistralClient
from bedrock_mistral.models import resolve_model
from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.tokens import PromptCounter, estimate_tokens, v1_tokenizer
from tests.helpers.backends import GreedyBackend

CONVERSATIONS = [
    [("user", "Hello")],
    [("user", "Hello"), ("assistant", "Hi there"), ("user", "Who are   you\n\tnow?")],
    [("system", "Be terse."), ("user", "What is 2+2?"), ("assistant", "4"), ("user", "and 3+3")],
    [("user", "Unicode: héllo, 世界, 😀 and code `x = {'a': [1, 2]}`")],
]


def _mistral_common_ids(turns: list[tuple[str, str]]) -> list[int]:
    classes = {"user": UserMessage, "assistant": AssistantMessage, "system": SystemMessage}
    request = ChatCompletionRequest(messages=[classes[role](content=text) for role, text in turns])
    return MistralTokenizer.v1().encode_chat_completion(request).tokens


@pytest.mark.parametrize("turns", CONVERSATIONS)
def test_v1_prompt_count_matches_mistral_common(turns: list[tuple[str, str]]) -> None:
    counter = PromptCounter(resolve_model("mistral-7b"), GreedyBackend())
    assert counter.exact
    prompt = format_prompt([{"role": r, "content": t} for r, t in turns])
    assert counter.count_prompt(prompt) == len(_mistral_common_ids(turns))


def test_models_without_the_v1_tokenizer_use_the_estimate() -> None:
    counter = PromptCounter(resolve_model("mistral-large-2407"), GreedyBackend())
    assert not counter.exact
    assert counter.count_prompt("abc def") == estimate_tokens("abc def")


@pytest.mark.parametrize(
    "text",
    [
        Path(__file__).read_text(encoding="utf-8"),  # code
        "The quick brown fox jumps over the lazy dog. " * 40,  # prose
        '{"key": [1, 2, 3], "nested": {"a": "b"}}' * 30,  # JSON
        "这是一个测试。我们想知道分词器如何处理中文文本。" * 20,  # Chinese
        "Это проверка русского текста." * 20,
        "😀🎉 ok " * 50,
        "1234567890 " * 50,
    ],
    ids=["code", "prose", "json", "chinese", "russian", "emoji", "digits"],
)
def test_estimate_is_conservative_for_ordinary_text(text: str) -> None:
    processor = v1_tokenizer()
    assert processor is not None
    assert estimate_tokens(text) >= len(processor.encode(text))


def test_backend_token_counter_wins_and_bounds_the_window() -> None:
    class Counting(GreedyBackend):
        def count_tokens(self, prompt: str) -> int:
            return len(prompt)

        @property
        def context_window(self) -> int | None:
            return 100

    client = MistralClient(backend=Counting())
    assert client.counter.context_window == 100
    assert client.count_tokens("abc") == len("<s> [INST] abc [/INST]")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["mistral-7b", "mistral-large-2407"]))
def test_upper_bound_is_never_below_the_count(text: str, alias: str) -> None:
    counter = PromptCounter(resolve_model(alias), object())
    prompt = format_prompt([{"role": "user", "content": text}])
    bound = counter.upper_bound(prompt)
    assert bound is not None
    assert bound >= counter.count_prompt(prompt)


def test_upper_bound_defers_to_a_backends_own_counter() -> None:
    class Counting:
        def count_tokens(self, prompt: str) -> int:
            return 1

        @property
        def context_window(self) -> int | None:
            return None

    counter = PromptCounter(resolve_model("mistral-7b"), Counting())
    assert counter.upper_bound("<s> [INST] hi [/INST]") is None
