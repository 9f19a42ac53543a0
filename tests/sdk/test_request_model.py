"""The request carries its model: a ModelSpec the registry does not list reaches the wire
with its own dialect, through real boto3 and the loopback server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from bedrock_mistral import MistralClient
from bedrock_mistral.models import ModelSpec, resolve_model
from tests.helpers.backends import GreedyBackend

# Not in the registry; by its name alone the registry would guess the text dialect.
UNLISTED_CHAT = ModelSpec(
    model_id="mistral.mistral-7b-instruct-v0:3",
    alias="my-7b-chat",
    name="A Mistral 7B the registry does not list, with a chat body",
    dialect="chat",
    context_window=32_000,
    max_output_tokens=8_192,
    default_max_tokens=256,
    default_temperature=0.5,
    default_top_p=1.0,
    default_top_k=None,
    input_price_per_1k=None,
    output_price_per_1k=None,
)


def test_the_registry_would_guess_another_dialect_for_this_id() -> None:
    guessed = resolve_model(UNLISTED_CHAT.model_id)
    assert not guessed.known and guessed.dialect == "text"


def _recording_session(bodies: list[dict[str, Any]]) -> boto3.session.Session:
    """A boto3 session whose clients record every body they send."""
    session = boto3.session.Session()

    def record(request: Any, **_: Any) -> None:
        bodies.append(json.loads(request.body))

    session.events.register("before-send.bedrock-runtime.*", record)
    return session


@pytest.mark.parametrize("call", ["chat", "stream"])
def test_an_unlisted_chat_model_is_sent_the_chat_body(
    call: str, make_server: Callable[..., Any]
) -> None:
    server = make_server("echo", model_ids=[UNLISTED_CHAT])
    bodies: list[dict[str, Any]] = []
    client = MistralClient(
        model=UNLISTED_CHAT,
        backend="bedrock",
        endpoint_url=server.url,
        session=_recording_session(bodies),
    )
    if call == "chat":
        text = client.chat("hello there").text
    else:
        text = "".join(client.stream("hello there"))
    assert bodies == [
        {
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 256,
            "temperature": 0.5,
            "top_p": 1.0,
        }
    ]
    assert text == "hello there"  # the server took it as the chat body of that model
    assert server.stats.requests[-1].status == 200


def test_the_request_carries_the_clients_spec_by_reference() -> None:
    backend = GreedyBackend(answer=" ok")
    client = MistralClient(model=UNLISTED_CHAT, backend=backend)
    client.chat("hi")
    request = backend.calls[0]
    assert request.model is UNLISTED_CHAT and request.spec.dialect == "chat"
    assert "model=" not in repr(request) and "model" not in request.model_dump()


def test_a_hand_built_request_falls_back_to_the_registry() -> None:
    from bedrock_mistral.types import CompletionRequest

    request = CompletionRequest(model_id="mixtral-8x7b", prompt="p", max_tokens=1)
    assert request.spec is resolve_model("mixtral-8x7b")
