"""Converse and ConverseStream: content blocks in, the model's native request out.

Bedrock checks a Converse request, applies the model's own rules (Mistral 7B and
Mixtral take no system prompt and no tools; no Mistral model takes tools while
streaming), renders the messages into the model's template and merges
``additionalModelRequestFields`` into the native body, which the model's schema then
checks. We follow the same path, so the limits and messages match InvokeModel's.
Wording of Bedrock's own messages: ref section 7.

A request with tools (``toolConfig``), tool blocks or images also hands the backend
the structured conversation (``request.messages`` with tool calls, tool results and
images) and the offered tools, so a backend that knows tools (echo) can call them; the
answer's tool calls come back as ``toolUse`` blocks with stopReason ``tool_use``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Literal

from bedrock_mistral.models import ModelSpec
from bedrock_mistral.server.bodies import parse_native
from bedrock_mistral.server.conversation import Turn, normalize, render_prompt
from bedrock_mistral.server.errors import BedrockError
from bedrock_mistral.server.eventstream import event_frame
from bedrock_mistral.tool_turns import tool_call_text
from bedrock_mistral.types import (
    Completion,
    CompletionRequest,
    Image,
    Message,
    StopReason,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

__all__ = [
    "STOP_REASONS",
    "converse_body",
    "delta_frame",
    "end_frames",
    "parse_converse",
    "start_frame",
]

STOP_REASONS: dict[StopReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_use": "tool_use",
}
_TOOL_ID = re.compile(r"^(?:[A-Za-z0-9]{9}|tooluse_[A-Za-z0-9_-]+)$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")  # ToolSpecification.name: pattern, 1-64 chars
# Bedrock's own wording (ref section 7), so applications can match on it.
_MESSAGES = {
    "system": "This model doesn't support system messages. Try again without a system message "
    "or use a model that supports system messages.",
    "tools": "This model doesn't support tool use.",
    "tools_streaming": "This model doesn't support tool use in streaming mode.",
    "tool_choice": "This model doesn't support the toolConfig.toolChoice.tool field. Remove "
    "toolConfig.toolChoice.tool and try again.",
    "tool_config_needed": "The toolConfig field must be defined when using toolUse and "
    "toolResult content blocks.",
    "tool_id": "Tool call id was {tool_id} but must be a-z, A-Z, 0-9, with a length of 9.",
    "mixed_blocks": "messages.{index}.content: Conversation blocks and tool use blocks cannot "
    "be provided in the same turn.",
    "start": "A conversation must start with a user message. Try again with a conversation "
    "that starts with a user message.",
    "alternate": "A conversation must alternate between user and assistant roles. Make sure "
    "the conversation alternates between user and assistant roles and try again.",
    "blank": "The text field in the ContentBlock object at {where} is blank. Add text to the "
    "text field, and try again.",
    "empty_content": "The content field in the Message object at messages.{index} is empty. "
    "Add a ContentBlock object to the content field and try again.",
    "block_kind": "This model doesn't support the {kind} content block that you provided. Try "
    "again with text only.",
    "unknown_block": "The content block at {where} is not supported by this model. Remove it "
    "and try again.",
    "max_tokens": "The maximum tokens you requested exceeds the model limit of {limit}. Try "
    "again with a maximum tokens value that is lower than {limit}.",
}


def _invalid(message: str) -> BedrockError:
    return BedrockError("ValidationException", message)


def _coral(value: Any, where: str, constraint: str) -> BedrockError:
    """Bedrock's request-shape wording (the service framework's, not the model's)."""
    return _invalid(
        f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _block_text(block: dict[str, Any], where: str, spec: ModelSpec) -> tuple[str, str]:
    """(kind, text) of one content block."""
    if "text" in block:
        text = block["text"]
        if not isinstance(text, str) or not text.strip():
            raise _invalid(_MESSAGES["blank"].format(where=where))
        return "text", text
    if "toolUse" in block:
        use = block["toolUse"] if isinstance(block["toolUse"], dict) else {}
        _check_tool_id(use.get("toolUseId"))
        return "tool", tool_call_text(use.get("name"), use.get("input"))
    if "toolResult" in block:
        result = block["toolResult"] if isinstance(block["toolResult"], dict) else {}
        _check_tool_id(result.get("toolUseId"))
        return "tool", _tool_result_text(result.get("content"))
    if "image" in block or "document" in block:
        kind = "image" if "image" in block else "document"
        if spec.dialect == "text":
            raise _invalid(_MESSAGES["block_kind"].format(kind=kind))
        return kind, ""
    if "cachePoint" in block or "guardContent" in block:
        guard = block.get("guardContent")
        text = guard.get("text", {}).get("text", "") if isinstance(guard, dict) else ""
        return "text", text if isinstance(text, str) else ""
    raise _invalid(_MESSAGES["unknown_block"].format(where=where))


def _tool_result_text(content: Any) -> str:
    parts = []
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif isinstance(item, dict) and "json" in item:
            parts.append(json.dumps(item["json"], ensure_ascii=False))
    return "\n".join(parts)


def _check_tool_id(tool_id: Any) -> None:
    if not isinstance(tool_id, str) or not _TOOL_ID.match(tool_id):
        raise _invalid(_MESSAGES["tool_id"].format(tool_id=tool_id))


def _turns(messages: Any, spec: ModelSpec, *, has_tools: bool) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise _invalid(_MESSAGES["start"])
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _coral(message, f"messages.{index + 1}.member", "Member must be a structure")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _coral(
                role,
                f"messages.{index + 1}.member.role",
                "Member must satisfy enum value set: [user, assistant]",
            )
        expected = "user" if index % 2 == 0 else "assistant"
        if index == 0 and role != "user":
            raise _invalid(_MESSAGES["start"])
        if role != expected:
            raise _invalid(_MESSAGES["alternate"])
        turns.append((role, _turn_text(message.get("content"), index, spec, has_tools=has_tools)))
    return turns


def _turn_text(content: Any, index: int, spec: ModelSpec, *, has_tools: bool) -> str:
    if not isinstance(content, list) or not content:
        raise _invalid(_MESSAGES["empty_content"].format(index=index))
    kinds: set[str] = set()
    texts: list[str] = []
    for position, block in enumerate(content):
        if not isinstance(block, dict):
            raise _coral(
                block,
                f"messages.{index + 1}.member.content.{position + 1}.member",
                "Member must be a structure",
            )
        kind, text = _block_text(block, f"messages.{index}.content.{position}", spec)
        kinds.add(kind)
        texts.append(text)
    if "tool" in kinds and not has_tools:
        raise _invalid(_MESSAGES["tool_config_needed"])
    if "tool" in kinds and "text" in kinds:
        raise _invalid(_MESSAGES["mixed_blocks"].format(index=index))
    return "\n".join(text for text in texts if text)


def _system_texts(system: Any, spec: ModelSpec) -> list[str]:
    if system is None or system == []:
        return []
    if not isinstance(system, list):
        raise _coral(system, "system", "Member must be a list")
    if not spec.converse_system:
        raise _invalid(_MESSAGES["system"])
    return [
        block["text"]
        for block in system
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    ]


def _check_tools(tool_config: Any, spec: ModelSpec, *, streaming: bool) -> bool:
    if tool_config is None:
        return False
    if not spec.converse_tools:
        raise _invalid(_MESSAGES["tools"])
    if streaming:
        raise _invalid(_MESSAGES["tools_streaming"])
    tools = tool_config.get("tools") if isinstance(tool_config, dict) else None
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        tool_spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        name = tool_spec.get("name") if isinstance(tool_spec, dict) else None
        # boto3 checks neither the pattern nor the length; Bedrock's request model does.
        if isinstance(name, str) and not (len(name) <= 64 and _TOOL_NAME.match(name)):
            where = f"toolConfig.tools.{index + 1}.member.toolSpec.name"
            constraint = (
                "Member must have length less than or equal to 64"
                if len(name) > 64
                else "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
            )
            raise _coral(name, where, constraint)
    choice = tool_config.get("toolChoice") if isinstance(tool_config, dict) else None
    if isinstance(choice, dict) and "tool" in choice:
        raise _invalid(_MESSAGES["tool_choice"])
    return True


def _inference(config: Any, spec: ModelSpec) -> dict[str, Any]:
    """inferenceConfig -> native body keys, with Bedrock's Converse-level checks."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _coral(config, "inferenceConfig", "Member must be a structure")
    native: dict[str, Any] = {}
    max_tokens = config.get("maxTokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _coral(
                max_tokens,
                "inferenceConfig.maxTokens",
                "Member must have value greater than or equal to 1",
            )
        if max_tokens > spec.max_output_tokens:
            limit = spec.max_output_tokens
            raise _invalid(_MESSAGES["max_tokens"].format(limit=limit))
        native["max_tokens"] = max_tokens
    for key, native_key in (("temperature", "temperature"), ("topP", "top_p")):
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _coral(value, f"inferenceConfig.{key}", "Member must be a number")
        if not 0 <= value <= 1:
            bound = "greater than or equal to 0" if value < 0 else "less than or equal to 1"
            raise _coral(value, f"inferenceConfig.{key}", f"Member must have value {bound}")
        native[native_key] = value
    stops = config.get("stopSequences")
    if stops:
        native["stop"] = stops
    return native


def _image(block: dict[str, Any]) -> Image:
    image = block["image"] if isinstance(block["image"], dict) else {}
    source = image.get("source")
    data = source.get("bytes") if isinstance(source, dict) else None
    try:  # blob members travel base64-encoded in Converse's JSON
        raw = base64.b64decode(data if isinstance(data, str) else "", validate=True)
        return Image.model_validate({"format": image.get("format"), "data": raw})
    except (binascii.Error, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise _invalid("The image content block is not a valid image: format and bytes") from err


def _structured_turn(role: str, content: list[dict[str, Any]]) -> list[Message]:
    """One checked Converse message as our turns (tool results: one turn each)."""
    if role == "assistant":
        calls = tuple(
            ToolCall(
                id=b["toolUse"]["toolUseId"],
                name=b["toolUse"].get("name", ""),
                arguments=b["toolUse"].get("input") or {},
            )
            for b in content
            if "toolUse" in b
        )
        text = "\n".join(b["text"] for b in content if isinstance(b.get("text"), str))
        return [Message(role="assistant", content=text, tool_calls=calls)]
    results = [
        Message(
            role="tool",
            tool_call_id=b["toolResult"]["toolUseId"],
            content=_tool_result_text(b["toolResult"].get("content")),
            is_error=b["toolResult"].get("status") == "error",
        )
        for b in content
        if "toolResult" in b
    ]
    if results:
        return results
    text = "\n".join(b["text"] for b in content if isinstance(b.get("text"), str))
    images = tuple(_image(b) for b in content if "image" in b)
    return [Message(role="user", content=text, images=images)]


def _structured(system: list[str], messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    turns = [Message(role="system", content="\n\n".join(system))] if any(system) else []
    for message in messages:
        turns += _structured_turn(message["role"], message["content"])
    return tuple(turns)


def _tool_offer(tool_config: Any) -> tuple[tuple[ToolSpec, ...], ToolChoice | None]:
    tools: list[ToolSpec] = []
    for tool in tool_config.get("tools") or [] if isinstance(tool_config, dict) else []:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        schema = spec.get("inputSchema", {}).get("json") if isinstance(spec, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            tools.append(
                ToolSpec(
                    name=spec["name"],
                    description=str(spec.get("description", "")),
                    input_schema=schema if isinstance(schema, dict) else {},
                )
            )
    choice = tool_config.get("toolChoice") if isinstance(tool_config, dict) else None
    picked: Literal["auto", "any"] | None = None
    if isinstance(choice, dict):
        picked = "any" if "any" in choice else "auto" if "auto" in choice else None
    return tuple(tools), picked


def parse_converse(spec: ModelSpec, body: Any, *, streaming: bool) -> CompletionRequest:
    """A Converse / ConverseStream request -> the request the backend receives."""
    if not isinstance(body, dict):
        raise _invalid("Malformed input request, please reformat your input and try again.")
    system = _system_texts(body.get("system"), spec)
    has_tools = _check_tools(body.get("toolConfig"), spec, streaming=streaming)
    messages = normalize(system, _turns(body.get("messages"), spec, has_tools=has_tools))
    request = _native_request(spec, body, messages)
    has_images = any("image" in b for m in body["messages"] for b in m["content"])
    if not has_tools and not has_images:
        return request
    tools, choice = _tool_offer(body.get("toolConfig"))
    return request.model_copy(
        update={
            "messages": _structured(system, body["messages"]),
            "tools": tools,
            "tool_choice": choice,
        }
    )


def _native_request(
    spec: ModelSpec, body: dict[str, Any], messages: list[Message]
) -> CompletionRequest:
    """The model's native body, built and checked as InvokeModel would."""
    native: dict[str, Any]
    if spec.dialect == "text":
        native = {"prompt": render_prompt(messages)}
    else:
        native = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
    native.update(_inference(body.get("inferenceConfig"), spec))
    extra = body.get("additionalModelRequestFields")
    if isinstance(extra, dict):
        native.update(
            {key: value for key, value in extra.items() if key not in ("prompt", "messages")}
        )
    return parse_native(spec, native)


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
    }


def _content(completion: Completion) -> list[dict[str, Any]]:
    """A text block, or the tool calls as toolUse blocks (Mistral never mixes the two)."""
    if not completion.tool_calls:
        return [{"text": completion.text}]
    return [
        {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        for call in completion.tool_calls
    ]


def converse_body(completion: Completion, *, latency_ms: float) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": _content(completion)}},
        "stopReason": STOP_REASONS[completion.stop_reason],
        "usage": _usage(completion.usage),
        "metrics": {"latencyMs": round(latency_ms)},
    }


def start_frame() -> bytes:
    """ConverseStream's first event."""
    return event_frame("messageStart", {"role": "assistant"})


def delta_frame(text: str) -> bytes:
    return event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})


def end_frames(stop_reason: StopReason, usage: Usage, *, latency_ms: float) -> list[bytes]:
    """The closing events of a text answer, in Bedrock's order."""
    return [
        event_frame("contentBlockStop", {"contentBlockIndex": 0}),
        event_frame("messageStop", {"stopReason": STOP_REASONS[stop_reason]}),
        event_frame(
            "metadata", {"usage": _usage(usage), "metrics": {"latencyMs": round(latency_ms)}}
        ),
    ]
