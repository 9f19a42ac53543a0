"""The public SDK surface stays what callers rely on."""

from __future__ import annotations

import inspect

import bedrock_mistral
from bedrock_mistral import Conversation, MistralClient, RetryPolicy, Stream

SDK_NAMES = {
    "MistralClient",
    "Stream",
    "Conversation",
    "RetryPolicy",
    "Message",
    "Completion",
    "Usage",
    "CompletionRequest",
    "GenerationParams",
    "TextDelta",
    "StreamEnd",
    "format_prompt",
    "resolve_model",
    "ModelSpec",
    "Backend",
    "BedrockMistralError",
    "StreamInterrupted",
    "ContextWindowError",
    "ValidationError",
    "AccessDeniedError",
    "ThrottledError",
}


def test_exports_resolve() -> None:
    assert set(bedrock_mistral.__all__) >= SDK_NAMES
    for name in SDK_NAMES:
        assert getattr(bedrock_mistral, name) is not None


def test_client_options_after_model_and_backend_are_keyword_only() -> None:
    params = inspect.signature(MistralClient).parameters
    assert list(params)[:2] == ["model", "backend"]
    for name in (
        "region",
        "profile",
        "endpoint_url",
        "max_attempts",
        "retry",
        "local_model",
        "strict_prompts",
        "stream_idle_timeout",
    ):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_chat_and_stream_take_the_same_arguments() -> None:
    chat = inspect.signature(MistralClient.chat).parameters
    stream = inspect.signature(MistralClient.stream).parameters
    assert set(chat) <= set(stream)
    assert set(stream) - set(chat) == {"resume"}
    send = inspect.signature(Conversation.send).parameters
    conv_stream = inspect.signature(Conversation.stream).parameters
    assert set(conv_stream) - set(send) == {"resume"}


def test_stream_is_an_iterator_and_a_context_manager() -> None:
    for name in ("__iter__", "__next__", "__enter__", "__exit__", "close", "until_done"):
        assert callable(getattr(Stream, name))
    assert {"text", "usage"} <= {
        n for n, _ in inspect.getmembers(Stream, lambda m: isinstance(m, property))
    }


def test_retry_policy_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (5, 0.5, 8.0)
