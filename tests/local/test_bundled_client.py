"""The bundled model answers held-out prompts through ``MistralClient(backend="local")``.

The samples are the first ones of the evaluation's own held-out lists (same generator, same
seed), and each family is held to a threshold a little under the accuracy the evaluation
measured on 200 samples (docs/bundled-model.md, "Evaluation"), not to hand-picked cases.
"""

from __future__ import annotations

import pytest

from bedrock_mistral import MistralClient
from training.data import GREETING_REPLY, heldout

N_PER_FAMILY = 12
# family -> least share of the N_PER_FAMILY samples answered exactly
THRESHOLDS: dict[str, float] = {
    "add2": 0.9,  # measured 100% on 200
    "add3": 0.85,  # 95%
    "sub2": 0.9,  # 99%
    "capital": 0.9,  # 97.5%
    "reverse": 0.9,  # 100%
    "upper": 0.9,  # 99.5%
    "count": 0.9,  # 100%
    "greeting": 0.5,  # 70%: "Hey!" gets "."
    "identity": 0.5,  # 68%: "What are you exactly?" is read as a letter count
}


@pytest.fixture(scope="module")
def client() -> MistralClient:
    return MistralClient(backend="local")


def _ask(client: MistralClient, messages: list[dict[str, str]]) -> str:
    return client.chat(messages, temperature=0, max_tokens=32).text.strip()


@pytest.mark.parametrize("family", sorted(THRESHOLDS))
def test_heldout_family_is_answered(client: MistralClient, family: str) -> None:
    samples = heldout(family, N_PER_FAMILY)
    got = [_ask(client, [dict(m) for m in s.prompt_messages]) for s in samples]
    right = sum(g == s.answer for g, s in zip(got, samples, strict=True))
    misses = [
        (s.messages[-2]["content"], s.answer, g)
        for g, s in zip(got, samples, strict=True)
        if g != s.answer
    ]
    assert right / len(samples) >= THRESHOLDS[family], misses


def test_hello_is_greeted(client: MistralClient) -> None:
    assert _ask(client, [{"role": "user", "content": "Hello"}]) == GREETING_REPLY


def test_identity_names_the_model_and_bedrock(client: MistralClient) -> None:
    reply = _ask(client, [{"role": "user", "content": "Who are you?"}])
    assert "Mixtral" in reply and "Amazon Bedrock" in reply


def test_recall_within_the_window(client: MistralClient) -> None:
    short = [s for s in heldout("recall", 26) if int(s.meta["fillers"]) <= 1]
    got = [_ask(client, [dict(m) for m in s.prompt_messages]) for s in short]
    assert sum(g == s.answer for g, s in zip(got, short, strict=True)) >= len(short) - 1


@pytest.mark.parametrize("family", ["add2", "capital", "reverse", "identity"])
def test_streaming_gives_the_same_reply(client: MistralClient, family: str) -> None:
    sample = heldout(family, 1)[0]
    messages = [dict(m) for m in sample.prompt_messages]
    with client.stream(messages, temperature=0, max_tokens=32) as stream:
        deltas = list(stream)
    streamed = "".join(deltas)
    assert stream.completion is not None
    assert streamed == stream.completion.text
    assert streamed.strip() == _ask(client, messages)
    assert len(deltas) >= 1
