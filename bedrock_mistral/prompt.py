"""Mistral v1 instruct prompts: the one place that knows the ``[INST]`` format.

The format is the revised reference chat template of Mistral-7B-Instruct-v0.2 and
Mixtral-8x7B-Instruct-v0.1 (the template that accepts a system message)::

    <s> [INST] {system}\\n\\n{user 1} [/INST] {assistant 1}</s> [INST] {user 2} [/INST]

Rules (each one a rule of that template):

- ``<s>`` once, at the very start; ``</s>`` closes every assistant turn and nothing else.
- An optional system message, only at position 0; its text and ``\\n\\n`` open the first
  user turn.
- After it, roles alternate user/assistant/user/..., starting with the user.
- Content is pasted verbatim: no stripping or normalisation.

Because a string prompt cannot tell template markers from text, any ``[INST]``,
``[/INST]``, ``<s>`` or ``</s>`` inside message content is neutralised (the words stay
visible, the markers cannot open or close a turn), or refused in ``strict`` mode.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bedrock_mistral.errors import PromptFormatError
from bedrock_mistral.types import Message

BOS = "<s>"
EOS = "</s>"
INST_OPEN = "[INST]"
INST_CLOSE = "[/INST]"

# Each marker maps to a look-alike that the tokenizer and the model read as plain text.
_NEUTRAL = {
    INST_OPEN: "(INST)",
    INST_CLOSE: "(/INST)",
    BOS: "(s)",
    EOS: "(/s)",
}
_MARKER_RE = re.compile("|".join(re.escape(marker) for marker in _NEUTRAL))

MessageLike = Message | Mapping[str, Any]
_TOOL_KEYS = frozenset({"tool_calls", "tool_call_id", "is_error", "images"})

__all__ = [
    "BOS",
    "EOS",
    "INST_CLOSE",
    "INST_OPEN",
    "MessageLike",
    "assistant_content",
    "contains_control_text",
    "format_prompt",
    "neutralize",
    "to_messages",
]


def contains_control_text(text: str) -> bool:
    """True when ``text`` holds a marker that could open or close a turn."""
    return _MARKER_RE.search(text) is not None


def neutralize(text: str) -> str:
    """Rewrite every template marker in ``text`` so it reads as plain words.

    Repeated until nothing is left, so nested spellings such as ``[[INST]INST]`` cannot
    rebuild a marker once the inner one is replaced.
    """
    while True:
        rewritten = _MARKER_RE.sub(lambda match: _NEUTRAL[match.group(0)], text)
        if rewritten == text:
            return text
        text = rewritten


def assistant_content(reply_text: str) -> str:
    """A reply as it belongs in the history: without the template's space in front.

    Mistral models answer ``[/INST]`` with a leading space (the ``▁`` of their first token),
    and the template writes that space itself before an assistant turn, so a reply stored
    verbatim would carry two.
    """
    return reply_text[1:] if reply_text.startswith(" ") else reply_text


def to_messages(messages: Iterable[MessageLike]) -> list[Message]:
    """Coerce dicts to :class:`Message`, naming the position of the first bad one."""
    result: list[Message] = []
    for index, item in enumerate(messages):
        if isinstance(item, Message):
            result.append(item)
            continue
        if not isinstance(item, Mapping):
            raise PromptFormatError(
                f"messages[{index}] is a {type(item).__name__}; "
                'expected a Message or a dict {"role": ..., "content": ...}',
                field=f"messages[{index}]",
                value=item,
            )
        if item.get("role") == "tool" or not _TOOL_KEYS.isdisjoint(item):
            result.append(_rich_message(item, index))  # tool turns, tool calls, images
            continue
        role = item.get("role")
        if role not in ("system", "user", "assistant"):
            raise PromptFormatError(
                f"messages[{index}].role is {role!r}; allowed roles are "
                "'system' (first message only), 'user', 'assistant' and 'tool' (a tool result)",
                field=f"messages[{index}].role",
                value=role,
            )
        content = item.get("content")
        if not isinstance(content, str):
            raise PromptFormatError(
                f"messages[{index}].content must be a string, got {type(content).__name__}",
                field=f"messages[{index}].content",
                value=content,
            )
        result.append(Message(role=role, content=content))
    return result


def _rich_message(item: Mapping[str, Any], index: int) -> Message:
    """A dict with tool fields (or a tool turn) as a Message, naming what is wrong."""
    from pydantic import ValidationError as PydanticValidationError

    if item.get("role") == "tool" and not isinstance(item.get("tool_call_id"), str):
        raise PromptFormatError(
            f"messages[{index}] is a tool turn without a tool_call_id; a tool turn answers "
            "one tool call by its id",
            field=f"messages[{index}].tool_call_id",
            value=item.get("tool_call_id"),
        )
    try:
        return Message.model_validate(dict(item))
    except PydanticValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise PromptFormatError(
            f"messages[{index}]{'.' + where if where else ''}: {problem['msg']}",
            field=f"messages[{index}]{'.' + where if where else ''}",
            value=item,
        ) from err


def _checked_content(message: Message, index: int, *, strict: bool) -> str:
    if not contains_control_text(message.content):
        return message.content
    if strict:
        raise PromptFormatError(
            f"messages[{index}].content contains a control marker "
            f"({', '.join(sorted(set(_MARKER_RE.findall(message.content))))}); remove it, "
            "or use strict=False to neutralise it",
            field=f"messages[{index}].content",
            value=message.content,
        )
    return neutralize(message.content)


def format_prompt(
    messages: Sequence[MessageLike],
    *,
    strict: bool = False,
    continue_final: bool = False,
) -> str:
    """Render a conversation as the Mistral v1 instruct prompt string.

    >>> format_prompt([{"role": "user", "content": "Hello"}])
    '<s> [INST] Hello [/INST]'

    ``continue_final=True`` leaves a final assistant turn open (no ``</s>``) so the model
    continues that text instead of starting a new reply.
    """
    turns = to_messages(messages)
    if not turns:
        raise PromptFormatError(
            "messages is empty; a conversation needs at least one user message",
            field="messages",
            value=[],
        )
    offset = 0
    system: str | None = None
    if turns[0].role == "system":
        system = _checked_content(turns[0], 0, strict=strict)
        offset = 1

    parts = [BOS]
    last = len(turns) - 1
    for index in range(offset, len(turns)):
        message = turns[index]
        expected = "user" if (index - offset) % 2 == 0 else "assistant"
        if message.role != expected:
            raise PromptFormatError(
                _order_error(message.role, index, expected),
                field=f"messages[{index}].role",
                value=message.role,
            )
        content = _checked_content(message, index, strict=strict)
        if message.role == "user":
            if index == offset and system is not None:
                content = f"{system}\n\n{content}"
            parts.append(f" {INST_OPEN} {content} {INST_CLOSE}")
        elif continue_final and index == last:
            parts.append(f" {content}")
        else:
            parts.append(f" {content}{EOS}")
    return "".join(parts)


def _order_error(role: str, index: int, expected: str) -> str:
    if role == "system":
        return (
            f"messages[{index}] is a system message; a system message is only allowed "
            "as the first message"
        )
    return (
        f"messages[{index}] has role {role!r} but {expected!r} was expected: after the "
        "optional system message, roles must alternate user/assistant/user/..."
    )
