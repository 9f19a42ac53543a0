"""InvokeModel bodies: Mistral's text and chat dialects, parsed in and rendered out.

The registry says which dialect a model speaks (ref sections 2 and 3). Requests are
checked against a per-model schema with Bedrock's wording, then become the SDK's own
:class:`CompletionRequest`, so every backend sees the same thing the client would send.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from bedrock_mistral.models import ModelSpec
from bedrock_mistral.server.conversation import Turn, normalize, render_prompt
from bedrock_mistral.server.schema import (
    Anything,
    Array,
    Boolean,
    Enum,
    Integer,
    Number,
    Object,
    OneOfTypes,
    Schema,
    String,
    check,
)
from bedrock_mistral.types import Completion, CompletionRequest, Message, StopReason, Usage
from bedrock_mistral.validation import MAX_STOP_SEQUENCES, TOP_K_RANGE

__all__ = [
    "body_schema",
    "chat_chunk",
    "chat_usage",
    "completion_body",
    "parse_native",
    "request_from_native",
    "text_chunk",
]

_UNIT = Number(0, 1)
_STOP = Array(String(), max_items=MAX_STOP_SEQUENCES)
_CONTENT = OneOfTypes(
    (("String", String()), ("JSONArray", Array(Anything())), ("Null", Anything()))
)
_CHAT_MESSAGE = Object(
    {
        "role": Enum(("system", "user", "assistant", "tool")),
        "content": _CONTENT,
        "tool_calls": Array(Anything()),
        "tool_call_id": String(),
        "name": String(),
        "prefix": Boolean(),
    },
    required=("role",),
)


@functools.lru_cache(maxsize=64)
def body_schema(dialect: str, max_output_tokens: int) -> Schema:
    """The JSON schema Bedrock applies to a model's InvokeModel body."""
    max_tokens = Integer(1, max_output_tokens)
    if dialect == "text":
        properties: dict[str, Schema] = {
            "prompt": String(),
            "max_tokens": max_tokens,
            "temperature": _UNIT,
            "top_p": _UNIT,
            "top_k": Integer(*TOP_K_RANGE),
            "stop": _STOP,
        }
        return Object(properties, required=("prompt",))
    properties = {
        "messages": Array(_CHAT_MESSAGE, min_items=1),
        "tools": Array(Anything()),
        "tool_choice": OneOfTypes(
            (("String", Enum(("auto", "any", "none"))), ("JSONObject", Anything()))
        ),
        "max_tokens": max_tokens,
        "temperature": _UNIT,
        "top_p": _UNIT,
        # Not in AWS's field list, but its response docs mention a stop parameter.
        "stop": _STOP,
    }
    return Object(properties, required=("messages",))


def _chat_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def _chat_messages(items: list[dict[str, Any]]) -> list[Message]:
    system: list[str] = []
    turns: list[Turn] = []
    for item in items:
        text = _chat_text(item.get("content"))
        role = item["role"]
        if role == "system":
            system.append(text)
        elif role == "assistant":
            turns.append(("assistant", text or _tool_calls_text(item.get("tool_calls"))))
        else:  # user, and tool results, which the model reads as the user's side
            turns.append(("user", text))
    return normalize(system, turns)


def _tool_calls_text(calls: Any) -> str:
    if not isinstance(calls, list):
        return ""
    return json.dumps(calls, ensure_ascii=False)


def parse_native(spec: ModelSpec, body: Any) -> CompletionRequest:
    """Check a decoded InvokeModel body against ``spec`` and build the backend request."""
    check(body_schema(spec.dialect, spec.max_output_tokens), body)
    return request_from_native(spec, body)


def request_from_native(spec: ModelSpec, body: dict[str, Any]) -> CompletionRequest:
    """A schema-valid native body -> :class:`CompletionRequest`, model defaults filled."""
    messages: tuple[Message, ...] | None = None
    if spec.dialect == "text":
        prompt = body["prompt"]
        top_k = body.get("top_k", spec.default_top_k)
    else:
        messages = tuple(_chat_messages(body["messages"]))
        prompt = render_prompt(messages)
        top_k = None
    return CompletionRequest(
        model_id=spec.model_id,
        prompt=prompt,
        max_tokens=body.get("max_tokens", spec.default_max_tokens),
        temperature=body.get("temperature", spec.default_temperature),
        top_p=body.get("top_p", spec.default_top_p),
        top_k=top_k,
        stop=tuple(body.get("stop", ())),
        messages=messages,
        model=spec,
    )


def completion_body(spec: ModelSpec, completion: Completion, *, request_id: str) -> dict[str, Any]:
    """The InvokeModel response body of ``spec``'s dialect."""
    if spec.dialect == "text":
        return {"outputs": [{"text": completion.text, "stop_reason": completion.stop_reason}]}
    usage = completion.usage
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": spec.canonical_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                # The AWS page says stop_reason, live clients read finish_reason: send both.
                "stop_reason": completion.stop_reason,
                "finish_reason": completion.stop_reason,
            }
        ],
        "usage": chat_usage(usage),
    }


def chat_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def text_chunk(spec: ModelSpec, text: str, stop_reason: StopReason | None) -> dict[str, Any]:
    """One decoded stream chunk (before the metrics are attached to the last one)."""
    if spec.dialect == "text":
        return {"outputs": [{"text": text, "stop_reason": stop_reason}]}
    return chat_chunk(text, stop_reason)


def chat_chunk(text: str, stop_reason: StopReason | None) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "stop_reason": stop_reason,
    }
    if stop_reason is not None:
        choice["finish_reason"] = stop_reason
    return {"choices": [choice]}
