"""Conversation: history, replies appended, visible trimming to the context window."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from bedrock_mistral import MistralClient, RetryPolicy, errors
from bedrock_mistral.types import Message
from tests.helpers.backends import Drop, GreedyBackend, SleepRecorder


@dataclass
class SmallWindowBackend(GreedyBackend):
    """Counts whitespace-separated words and has a tiny window, so trimming is easy to see."""

    window: int = 60

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    @property
    def context_window(self) -> int | None:
        return self.window


def test_send_keeps_the_history() -> None:
    backend = GreedyBackend()
    chat = MistralClient(backend=backend).conversation(system="Be brief.", max_tokens=20)
    assert chat.send("first question").text == " first question"
    assert chat.send("second question").text == " second question"
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert backend.calls[-1].prompt == (
        # The reply's leading space is the template's own: the history stores it once.
        "<s> [INST] Be brief.\n\nfirst question [/INST] first question</s>"
        " [INST] second question [/INST]"
    )
    assert backend.calls[-1].max_tokens == 20
    assert chat.dropped == [] and chat.last_dropped == []


def test_stream_appends_the_reply_once_complete() -> None:
    chat = MistralClient(backend=GreedyBackend()).conversation()
    stream = chat.stream("streamed words")
    assert len(chat.messages) == 0
    assert "".join(stream) == " streamed words"
    assert chat.messages == [
        Message(role="user", content="streamed words"),
        Message(role="assistant", content="streamed words"),
    ]


def test_a_failed_turn_leaves_the_history_unchanged() -> None:
    backend = GreedyBackend(script=[None, Drop(after=1)])
    chat = MistralClient(backend=backend, retry=RetryPolicy(sleep=SleepRecorder())).conversation()
    chat.send("ok")
    with pytest.raises(errors.StreamInterrupted):
        list(chat.stream("this one breaks"))
    assert [m.content for m in chat.messages] == ["ok", "ok"]


def test_oldest_turns_are_dropped_visibly(caplog: pytest.LogCaptureFixture) -> None:
    backend = SmallWindowBackend(window=60)
    reports: list[list[Message]] = []
    chat = MistralClient(backend=backend).conversation(
        system="sys", max_tokens=10, on_trim=reports.append
    )
    turns = [f"turn {i} " + "word " * 6 for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="bedrock_mistral.conversation"):
        for text in turns:
            chat.send(text)
    assert chat.dropped, "a 60-token window cannot hold 8 turns of ~8 words"
    # Every request fitted: prompt + max_tokens <= window.
    for call in backend.calls:
        assert backend.count_tokens(call.prompt) + call.max_tokens <= 60
    # The system message stays first; roles still alternate; the newest turn is there.
    assert chat.messages[0] == Message(role="system", content="sys")
    roles = [m.role for m in chat.messages[1:]]
    assert roles == ["user", "assistant"] * (len(roles) // 2)
    assert chat.messages[-2].content == turns[-1]
    # What was dropped is reported: attribute, callback and log, oldest first, in pairs.
    assert [m.content for m in chat.dropped[::2]] == turns[: len(chat.dropped) // 2]
    assert [m for report in reports for m in report] == chat.dropped
    assert any("dropped the" in record.getMessage() for record in caplog.records)
    # Dropped text is no longer sent.
    assert turns[0] not in backend.calls[-1].prompt


def test_last_dropped_reports_this_turn_only() -> None:
    backend = SmallWindowBackend(window=40)
    chat = MistralClient(backend=backend).conversation(max_tokens=5)
    for i in range(6):
        chat.send(f"m{i} " + "w " * 5)
        if chat.last_dropped:
            assert all(m in chat.dropped for m in chat.last_dropped)
            assert len(chat.last_dropped) % 2 == 0


def test_a_turn_that_cannot_fit_raises_before_sending() -> None:
    backend = SmallWindowBackend(window=30)
    chat = MistralClient(backend=backend).conversation(max_tokens=10)
    chat.send("short")
    sent = len(backend.calls)
    with pytest.raises(errors.ContextWindowError) as info:
        chat.send("word " * 40)
    assert info.value.context_window == 30
    # The client's hint "use a Conversation" would be no help here: say what is.
    assert "Conversation" not in str(info.value)
    assert "even with every earlier turn dropped" in str(info.value)
    assert len(backend.calls) == sent
    assert [m.content for m in chat.messages] == ["short", "short"]


def test_bad_defaults_and_duplicate_system_are_refused() -> None:
    client = MistralClient(backend=GreedyBackend())
    with pytest.raises(errors.ValidationError):
        client.conversation(temperature=3)
    with pytest.raises(errors.ValidationError):
        from bedrock_mistral.client import Conversation

        Conversation(client, system="a", messages=[{"role": "system", "content": "b"}])


def test_clear_keeps_the_system_message() -> None:
    chat = MistralClient(backend=GreedyBackend()).conversation(system="sys")
    chat.send("hello")
    chat.clear()
    assert chat.messages == [Message(role="system", content="sys")]
