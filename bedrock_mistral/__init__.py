"""Mistral models on Amazon Bedrock, and offline on your machine, with the same code.

>>> from bedrock_mistral import MistralClient
>>> client = MistralClient(model="mixtral-8x7b")              # Amazon Bedrock
>>> client = MistralClient(backend="local")                    # the bundled local model
>>> reply = client.chat([{"role": "user", "content": "What is 2 + 2?"}])
>>> reply.text, reply.usage.output_tokens

Exports load lazily: importing this package imports neither boto3 nor torch, and the
CLI's ``--help`` does not pay for pydantic either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "MistralClient": "bedrock_mistral.client",
    "AsyncMistralClient": "bedrock_mistral.aclient",
    "AsyncStream": "bedrock_mistral.aclient",
    "AsyncConversation": "bedrock_mistral.aclient",
    "Stream": "bedrock_mistral.client",
    "Conversation": "bedrock_mistral.client",
    "Message": "bedrock_mistral.types",
    "GenerationParams": "bedrock_mistral.types",
    "CompletionRequest": "bedrock_mistral.types",
    "Completion": "bedrock_mistral.types",
    "Usage": "bedrock_mistral.types",
    "TextDelta": "bedrock_mistral.types",
    "StreamEnd": "bedrock_mistral.types",
    "ToolCall": "bedrock_mistral.types",
    "ToolSpec": "bedrock_mistral.types",
    "Image": "bedrock_mistral.types",
    "ToolRun": "bedrock_mistral.client",
    "Tool": "bedrock_mistral.tools",
    "Toolset": "bedrock_mistral.tools",
    "to_tool": "bedrock_mistral.tools",
    "format_prompt": "bedrock_mistral.prompt",
    "ModelSpec": "bedrock_mistral.models",
    "resolve_model": "bedrock_mistral.models",
    "Backend": "bedrock_mistral.backends.base",
    "AsyncBackend": "bedrock_mistral.backends.aio",
    "RetryPolicy": "bedrock_mistral.retry",
}
_ERRORS = (
    "BedrockMistralError",
    "ConfigurationError",
    "CredentialsError",
    "RegionError",
    "BackendUnavailableError",
    "ValidationError",
    "PromptFormatError",
    "ContextWindowError",
    "APIError",
    "AccessDeniedError",
    "ModelNotFoundError",
    "ServiceValidationError",
    "ServiceQuotaExceededError",
    "ThrottledError",
    "ModelNotReadyError",
    "ModelTimeoutError",
    "InternalServerError",
    "ServiceUnavailableError",
    "ModelError",
    "ModelStreamError",
    "APIConnectionError",
    "APITimeoutError",
    "StreamInterrupted",
    "ParseError",
    "ToolCallError",
    "ToolRoundsError",
    "ToolSchemaError",
    "ToolsUnsupportedError",
)
_EXPORTS.update({name: "bedrock_mistral.errors" for name in _ERRORS})

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bedrock_mistral' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from bedrock_mistral.aclient import AsyncConversation, AsyncMistralClient, AsyncStream
    from bedrock_mistral.backends.aio import AsyncBackend
    from bedrock_mistral.backends.base import Backend
    from bedrock_mistral.client import Conversation, MistralClient, Stream, ToolRun
    from bedrock_mistral.errors import (
        AccessDeniedError,
        APIConnectionError,
        APIError,
        APITimeoutError,
        BackendUnavailableError,
        BedrockMistralError,
        ConfigurationError,
        ContextWindowError,
        CredentialsError,
        InternalServerError,
        ModelError,
        ModelNotFoundError,
        ModelNotReadyError,
        ModelStreamError,
        ModelTimeoutError,
        ParseError,
        PromptFormatError,
        RegionError,
        ServiceQuotaExceededError,
        ServiceUnavailableError,
        ServiceValidationError,
        StreamInterrupted,
        ThrottledError,
        ToolCallError,
        ToolRoundsError,
        ToolSchemaError,
        ToolsUnsupportedError,
        ValidationError,
    )
    from bedrock_mistral.models import ModelSpec, resolve_model
    from bedrock_mistral.prompt import format_prompt
    from bedrock_mistral.retry import RetryPolicy
    from bedrock_mistral.tools import Tool, Toolset, to_tool
    from bedrock_mistral.types import (
        Completion,
        CompletionRequest,
        GenerationParams,
        Image,
        Message,
        StreamEnd,
        TextDelta,
        ToolCall,
        ToolSpec,
        Usage,
    )
