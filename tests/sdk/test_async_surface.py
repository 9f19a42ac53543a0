"""AsyncMistralClient mirrors MistralClient: same public names, same signatures, awaited I/O."""

from __future__ import annotations

import inspect

import pytest

import bedrock_mistral
from bedrock_mistral import AsyncMistralClient, MistralClient
from bedrock_mistral.aclient import AsyncConversation, AsyncStream
from bedrock_mistral.conversation import Conversation
from bedrock_mistral.streaming import Stream

# Calls that wait on a backend: coroutines (or async iterables) on the async side.
AWAITED = {
    "chat",
    "complete",
    "invoke",
    "count_tokens",
    "close",
    "send",
    "until_done",
    "parse",
    "run_tools",
}


def public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def _params(function: object) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(
    ("sync", "aio"),
    [(MistralClient, AsyncMistralClient), (Conversation, AsyncConversation), (Stream, AsyncStream)],
    ids=["client", "conversation", "stream"],
)
def test_the_same_public_methods_with_the_same_parameters(sync: type, aio: type) -> None:
    sync_members, async_members = public(sync), public(aio)
    assert set(sync_members) == set(async_members)
    for name, member in sync_members.items():
        mirrored = async_members[name]
        assert _params(member) == _params(mirrored), name
        if name in AWAITED:
            assert inspect.iscoroutinefunction(mirrored), f"{aio.__name__}.{name} is not async"
        else:
            assert not inspect.iscoroutinefunction(mirrored), f"{aio.__name__}.{name} is async"


def test_the_same_public_attributes() -> None:
    def attributes(client: object) -> set[str]:
        return {name for name in dir(client) if not name.startswith("_")}

    sync, aio = MistralClient(backend="echo"), AsyncMistralClient(backend="echo")
    assert attributes(sync) == attributes(aio)
    assert (aio.model, aio.retry, aio.model_id) == (sync.model, sync.retry, sync.model_id)


def test_the_constructors_take_the_same_arguments() -> None:
    sync = _params(MistralClient.__init__)
    aio = _params(AsyncMistralClient.__init__)
    assert [p[:2] for p in sync] == [p[:2] for p in aio]
    assert [p[2] for p in sync] == [p[2] for p in aio]


def test_stream_is_an_async_context_manager_and_iterator() -> None:
    for name in ("__aenter__", "__aexit__", "__aiter__", "__anext__"):
        assert hasattr(AsyncStream, name)
    for name in ("__aenter__", "__aexit__"):
        assert inspect.iscoroutinefunction(getattr(AsyncMistralClient, name))


def test_exported_lazily() -> None:
    assert {"AsyncMistralClient", "AsyncStream", "AsyncConversation", "AsyncBackend"} <= set(
        bedrock_mistral.__all__
    )
    assert bedrock_mistral.AsyncMistralClient is AsyncMistralClient
