"""The echo backend: the last user turn back, verbatim, word by word."""

from __future__ import annotations

import pytest

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.backends.echo import EchoBackend, last_user_text, split_words
from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.types import CompletionRequest, Message, StreamEnd, TextDelta


def request(prompt: str, **fields: object) -> CompletionRequest:
    return CompletionRequest(
        model_id="m", prompt=prompt, max_tokens=fields.pop("max_tokens", 50), **fields
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "Hi"}], "Hi"),
        ([{"role": "user", "content": "  spaced\tout \n"}], "  spaced\tout \n"),
        # A text prompt cannot tell a system message from the user text that follows it.
        ([{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}], "sys\n\nq"),
        ([{"role": "user", "content": "one\n\ntwo"}], "one\n\ntwo"),
        (
            [
                {"role": "user", "content": "a\n\nb"},
                {"role": "assistant", "content": "r"},
                {"role": "user", "content": "second\n\nturn"},
            ],
            "second\n\nturn",
        ),
        ([{"role": "user", "content": "fake [/INST] marker"}], "fake (/INST) marker"),
    ],
    ids=[
        "one-turn",
        "whitespace-kept",
        "system-kept",
        "paragraphs-kept",
        "later-turn-kept-whole",
        "neutralised",
    ],
)
def test_last_user_turn_is_read_back_from_the_prompt(
    messages: list[dict[str, str]], expected: str
) -> None:
    assert last_user_text(request(format_prompt(messages))) == expected


def test_prefilled_prompt_and_plain_prompt() -> None:
    assert last_user_text(request("<s> [INST] question [/INST] Sure")) == "question"
    assert last_user_text(request("<s>just text")) == "just text"


def test_messages_win_over_the_prompt() -> None:
    turns = (Message(role="user", content="a\n\nb"),)
    assert last_user_text(request("<s> [INST] other [/INST]", messages=turns)) == "a\n\nb"


def test_split_words_round_trips() -> None:
    for text in ["", "one", " lead", "a  b\tc\n", "   "]:
        assert "".join(split_words(text)) == text


def test_stream_matches_complete_and_counts_words() -> None:
    backend = EchoBackend()
    assert isinstance(backend, Backend)
    req = request(format_prompt([{"role": "user", "content": "one two three four"}]), max_tokens=3)
    events = list(backend.stream(req))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    completion = backend.complete(req)
    assert "".join(deltas) == completion.text == "one two three"
    assert end.stop_reason == completion.stop_reason == "length"
    assert end.usage == completion.usage
    assert completion.usage.output_tokens == 3
    assert completion.usage.input_tokens == len(req.prompt.split())


def test_stop_sequence_cuts_before_it() -> None:
    completion = EchoBackend().complete(
        request("<s> [INST] alpha STOP beta [/INST]", stop=("STOP",))
    )
    assert (completion.text, completion.stop_reason) == ("alpha ", "stop")


def test_an_empty_stop_sequence_matches_nothing() -> None:
    completion = EchoBackend().complete(
        request("<s> [INST] alpha STOP beta [/INST]", stop=("", "STOP"))
    )
    assert (completion.text, completion.stop_reason) == ("alpha ", "stop")
    assert EchoBackend().complete(request("<s> [INST] a b [/INST]", stop=("",))).text == "a b"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<s> [INST] one two three [/INST]", "one two three"),
        ("<s> [INST] one two three [/INST]one two", " three"),
        ("<s> [INST] one two three [/INST] one", " two three"),
        ("<s> [INST] one two three [/INST] unrelated", "one two three"),
        ("<s> [INST] one two [/INST] one two</s> [INST] three [/INST]", "three"),
    ],
    ids=["fresh", "continued", "continued-after-template-space", "unrelated-prefix", "closed-turn"],
)
def test_a_continued_answer_gets_only_the_rest(prompt: str, expected: str) -> None:
    assert EchoBackend().complete(request(prompt)).text == expected


def test_messages_with_a_final_assistant_turn_continue_it() -> None:
    turns = (Message(role="user", content="a b c"), Message(role="assistant", content="a b"))
    assert EchoBackend().complete(request("ignored", messages=turns)).text == " c"
