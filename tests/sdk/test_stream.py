"""Stream semantics with an in-process scripted backend.

The same rules over real HTTP are in test_sdk_bedrock_http.py.
"""

from __future__ import annotations

import pytest

from bedrock_mistral import MistralClient, RetryPolicy, errors
from bedrock_mistral.streaming import continuation_request
from bedrock_mistral.types import CompletionRequest, Message
from tests.helpers.backends import Drop, Fail, GreedyBackend, SleepRecorder

ANSWER = " alpha beta gamma delta epsilon zeta"


def client_with(backend: GreedyBackend, **policy: object) -> MistralClient:
    return MistralClient(backend=backend, retry=RetryPolicy(sleep=SleepRecorder(), **policy))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "failure",
    [Fail(errors.ThrottledError("busy")), Fail(errors.APIConnectionError("reset")), Drop(after=0)],
    ids=["throttled", "reset", "empty-drop"],
)
def test_failure_before_the_first_delta_is_retried_transparently(failure: Fail | Drop) -> None:
    backend = GreedyBackend(answer=ANSWER, script=[failure, failure])
    stream = client_with(backend).stream("q")
    assert "".join(stream) == ANSWER
    assert len(backend.calls) == 3
    assert stream.resumes == 0


def test_permanent_failure_before_the_first_delta_is_raised_as_is() -> None:
    backend = GreedyBackend(answer=ANSWER, script=[Fail(errors.AccessDeniedError("no access"))])
    with pytest.raises(errors.AccessDeniedError):
        list(client_with(backend).stream("q", resume=True))
    assert len(backend.calls) == 1


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (Fail(errors.ModelStreamError("boom"), after=2), errors.ModelStreamError),
        (Fail(errors.APITimeoutError("idle"), after=2), errors.APITimeoutError),
        (Drop(after=2), errors.APIConnectionError),
    ],
    ids=["model-stream-error", "idle-timeout", "no-stop-reason"],
)
def test_failure_after_text_is_never_restarted_silently(
    failure: Fail | Drop, cause: type[Exception]
) -> None:
    backend = GreedyBackend(answer=ANSWER, script=[failure])
    stream = client_with(backend).stream("q")
    seen: list[str] = []
    with pytest.raises(errors.StreamInterrupted) as info:
        for text in stream:
            seen.append(text)
    assert seen == [" alpha", " beta"]
    assert info.value.partial_text == " alpha beta" == stream.text
    assert type(info.value.__cause__) is cause or isinstance(info.value.__cause__, cause)
    assert len(backend.calls) == 1
    assert stream.completion is None


def test_permanent_failure_after_text_is_not_resumed() -> None:
    backend = GreedyBackend(answer=ANSWER, script=[Fail(errors.ModelError("bad input"), after=1)])
    with pytest.raises(errors.StreamInterrupted) as info:
        list(client_with(backend).stream("q", resume=True))
    assert isinstance(info.value.__cause__, errors.ModelError)
    assert len(backend.calls) == 1


@pytest.mark.parametrize(
    "script",
    [
        [Drop(after=1)],
        [Fail(errors.ModelStreamError("x"), after=3)],
        [Drop(after=1), Drop(after=2), Drop(after=1)],
    ],
    ids=["drop", "stream-error", "three-drops"],
)
def test_resume_produces_the_uninterrupted_text(script: list[Fail | Drop]) -> None:
    clean = client_with(GreedyBackend(answer=ANSWER)).stream("q", max_tokens=50)
    expected = "".join(clean)
    backend = GreedyBackend(answer=ANSWER, script=script)
    stream = client_with(backend).stream("q", max_tokens=50, resume=True)
    assert "".join(stream) == expected == ANSWER
    assert stream.completion is not None and stream.completion.text == expected
    assert stream.resumes == len(script) == len(backend.calls) - 1
    produced = ""
    for call in backend.calls[1:]:
        produced = call.prompt[len(backend.calls[0].prompt) :]
        assert expected.startswith(produced) and produced
        assert call.max_tokens < 50
    assert clean.completion is not None
    assert stream.completion.usage.input_tokens > clean.completion.usage.input_tokens


def test_resume_keeps_the_token_budget() -> None:
    # The answer is longer than max_tokens; the cut falls where the budget is already spent.
    backend = GreedyBackend(answer=" a b c d e f g h", script=[Drop(after=4)])
    stream = client_with(backend).stream("q", max_tokens=4, resume=True)
    assert "".join(stream) == " a b c d"
    assert stream.completion is not None and stream.completion.stop_reason == "length"
    assert len(backend.calls) == 1  # nothing left to ask for


def test_leaving_early_closes_the_backend_stream() -> None:
    backend = GreedyBackend(answer=ANSWER)
    with client_with(backend).stream("q") as stream:
        assert next(stream) == " alpha"
    assert backend.closed_streams == 1
    with pytest.raises(errors.StreamInterrupted) as info:
        stream.until_done()
    assert info.value.partial_text == " alpha"


def test_breaking_out_of_a_for_loop_and_closing_releases_it() -> None:
    backend = GreedyBackend(answer=ANSWER)
    stream = client_with(backend).stream("q")
    for _ in stream:
        break
    stream.close()
    stream.close()  # idempotent
    assert backend.closed_streams == 1


def test_until_done_and_an_empty_answer() -> None:
    assert client_with(GreedyBackend(answer=ANSWER)).stream("q").until_done().text == ANSWER
    empty = client_with(GreedyBackend(answer="")).stream("q")
    assert list(empty) == []
    assert (
        empty.completion is not None
        and empty.completion.text == ""
        and empty.completion.stop_reason == "stop"
    )


def test_nothing_is_sent_before_iteration() -> None:
    backend = GreedyBackend(answer=ANSWER)
    stream = client_with(backend).stream("q")
    assert backend.calls == []
    next(stream)
    assert len(backend.calls) == 1


def test_continuation_request_for_both_dialects() -> None:
    text = CompletionRequest(model_id="m", prompt="<s> [INST] q [/INST]", max_tokens=10)
    cont = continuation_request(text, " part", 3)
    assert cont is not None and (cont.prompt, cont.max_tokens) == ("<s> [INST] q [/INST] part", 7)
    assert continuation_request(text, " part", 10) is None

    chat = text.model_copy(update={"messages": (Message(role="user", content="q"),)})
    cont = continuation_request(chat, " part", 1)
    assert cont is not None and cont.messages == (
        Message(role="user", content="q"),
        Message(role="assistant", content=" part"),
    )
    prefilled = chat.model_copy(
        update={
            "messages": (
                Message(role="user", content="q"),
                Message(role="assistant", content="It is"),
            )
        }
    )
    cont = continuation_request(prefilled, " part", 1)
    assert (
        cont is not None and cont.messages is not None and cont.messages[-1].content == "It is part"
    )
