"""Conversations with tool turns and images: the checks before sending, and their text view.

Tools, tool turns and images travel only through Converse (Bedrock renders them into the
model's template itself). Everything that reads a prompt string (token counting, the
context-window check, backends that answer from the prompt) sees the *text view*: each
tool call written as ``{"name": ..., "arguments": ...}`` in the assistant's turn, each
tool result as a user turn, neighbours of one role merged, images left out. The server
renders Converse's toolUse/toolResult blocks with the same two functions.

:class:`ToolRounds` is ``run_tools`` without I/O; each client drives it, awaiting or not::

    rounds = ToolRounds(messages, tools, max_rounds)
    for _ in range(rounds.max_rounds):
        completion = client.chat(rounds.transcript, tools=rounds.toolset, ...)
        if (run := rounds.reply(completion)) is not None:
            return run
        rounds.transcript.extend(rounds.toolset.run(call) for call in completion.tool_calls)
    raise rounds.exhausted()
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bedrock_mistral.errors import Fix, ToolRoundsError, ToolsUnsupportedError, ValidationError
from bedrock_mistral.models import MODELS, ModelSpec
from bedrock_mistral.prompt import assistant_content
from bedrock_mistral.tools import ToolLike, Toolset
from bedrock_mistral.types import Completion, CompletionRequest, Message, ToolChoice

__all__ = [
    "ToolOffer",
    "ToolRounds",
    "ToolRun",
    "offer_tools",
    "reply_message",
    "text_view",
    "tool_call_text",
]

_TOOL_CHOICES = ("auto", "any")


def tool_call_text(name: object, arguments: object) -> str:
    """One tool call as text (the text view of a toolUse block)."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def _has_tool_content(turns: Iterable[Message]) -> bool:
    return any(m.tool_calls or m.images or m.role == "tool" for m in turns)


def text_view(turns: Sequence[Message]) -> list[Message]:
    """Plain system/user/assistant turns for the prompt string (see the module docstring)."""
    if not _has_tool_content(turns):
        return list(turns)
    merged: list[Message] = []
    for message in turns:
        role = "user" if message.role == "tool" else message.role
        texts = [message.content] if message.content else []
        texts += [tool_call_text(call.name, call.arguments) for call in message.tool_calls]
        text = "\n".join(texts)
        if merged and merged[-1].role == role and role != "system":
            text = f"{merged[-1].content}\n\n{text}"
            merged.pop()
        merged.append(Message(role=role, content=text))
    return merged


def reply_message(completion: Completion) -> Message:
    """The assistant turn a reply adds to the history (its text and its tool calls)."""
    return Message(
        role="assistant",
        content=assistant_content(completion.text),
        tool_calls=completion.tool_calls,
    )


@dataclass(frozen=True)
class ToolOffer:
    """What a request adds to its text body: the tools and the tool choice (Converse only)."""

    toolset: Toolset | None
    tool_choice: ToolChoice | None

    def apply(self, request: CompletionRequest) -> CompletionRequest:
        if self.toolset is None:
            return request
        return request.model_copy(
            update={"tools": self.toolset.specs, "tool_choice": self.tool_choice}
        )


_NO_TOOLS = ToolOffer(None, None)


def _unsupported(what: str, spec: ModelSpec, able: list[str], fix_arg: str) -> None:
    raise ToolsUnsupportedError(
        f"{spec.model_id} does not take {what} on Bedrock; nothing was sent",
        field=fix_arg,
        value=spec.model_id,
        allowed=", ".join(able),
        fix=Fix(f"use a model that does, such as {', '.join(able[:4])}"),
    )


def _check_ids(turns: Sequence[Message]) -> None:
    """Each tool turn answers a call of the assistant turn before it."""
    calls: set[str] = set()
    for index, message in enumerate(turns):
        if message.role == "assistant":
            calls = {call.id for call in message.tool_calls}
        elif message.role == "tool" and message.tool_call_id not in calls:
            raise ValidationError(
                f"messages[{index}] answers tool call {message.tool_call_id!r}, which the "
                "assistant turn before it did not make",
                field=f"messages[{index}].tool_call_id",
                value=message.tool_call_id,
                allowed=", ".join(sorted(calls)) or "(no calls to answer)",
            )


def offer_tools(
    spec: ModelSpec,
    backend: Any,
    turns: Sequence[Message],
    tools: Toolset | Iterable[ToolLike] | None,
    tool_choice: ToolChoice | None,
    *,
    streaming: bool = False,
) -> ToolOffer:
    """Check tools, tool turns and images against the model and backend; nothing is sent.

    Raises :class:`ToolsUnsupportedError` for a model (or backend) that cannot take them,
    :class:`~bedrock_mistral.errors.ToolSchemaError` for a tool without a schema, and
    :class:`ValidationError` for a conversation Converse would refuse.
    """
    if tools is None and tool_choice is None and not _has_tool_content(turns):
        return _NO_TOOLS  # a plain chat, the common case: nothing to check
    toolset = tools if isinstance(tools, Toolset) or tools is None else Toolset(tools)
    has_turns = any(m.tool_calls or m.role == "tool" for m in turns)
    has_images = any(m.images for m in turns)
    if tool_choice is not None and tool_choice not in _TOOL_CHOICES:
        raise ValidationError.out_of_range("tool_choice", tool_choice, "'auto', 'any' or None")
    if toolset is None or not toolset.tools:
        if has_turns or tool_choice is not None:
            raise ValidationError(
                "tool calls, tool results and tool_choice need the tools they refer to: "
                "pass tools=[...]",
                field="tools",
                value=None,
                allowed="the tools the conversation used",
            )
        toolset = None
    if toolset is not None and not spec.supports_tools:
        _unsupported("tools", spec, [m.alias for m in MODELS if m.supports_tools], "tools")
    if has_images and not spec.supports_images:
        _unsupported("images", spec, [m.alias for m in MODELS if m.supports_images], "images")
    if (toolset is not None or has_images) and not getattr(backend, "accepts_tools", False):
        raise ToolsUnsupportedError(
            f"the {getattr(backend, 'name', '?')} backend cannot carry tools or images; "
            "nothing was sent",
            field="backend",
            value=getattr(backend, "name", None),
            allowed="bedrock, echo",
        )
    if toolset is not None and streaming:
        raise ToolsUnsupportedError(
            "no Mistral model on Bedrock takes tools in a stream (ConverseStream refuses "
            "them); nothing was sent",
            field="tools",
            fix=Fix("call chat() instead of stream() when you pass tools"),
        )
    _check_ids(turns)
    return ToolOffer(toolset, tool_choice)


class ToolRun(NamedTuple):
    """What ``run_tools`` returns: the final reply and every turn."""

    completion: Completion
    transcript: list[Message]


class ToolRounds:
    """The state of one ``run_tools`` loop: the toolset, the transcript, when to stop."""

    def __init__(
        self, turns: list[Message], tools: Toolset | Iterable[ToolLike], max_rounds: int
    ) -> None:
        self.toolset = tools if isinstance(tools, Toolset) else Toolset(tools)
        self.transcript = turns
        self.max_rounds = max_rounds

    def reply(self, completion: Completion) -> ToolRun | None:
        """Add the reply to the transcript; the finished run when it called no tools."""
        self.transcript.append(reply_message(completion))
        return None if completion.tool_calls else ToolRun(completion, self.transcript)

    def exhausted(self) -> ToolRoundsError:
        return ToolRoundsError(
            f"the model still called tools after {self.max_rounds} rounds",
            transcript=self.transcript,
        )
