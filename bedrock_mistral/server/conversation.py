"""Turn chat-style conversations into the ``[INST]`` prompt the backend receives.

Chat bodies (Mistral Large 2407 and later) and Converse requests both arrive as role
lists. Bedrock renders them into the model's template itself; we do the same with
:func:`bedrock_mistral.prompt.format_prompt`, after the normalisation mistral-common
applies (system texts joined and put first, same-role neighbours merged, an empty user
turn inserted when the conversation opens with the assistant).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from bedrock_mistral.prompt import format_prompt
from bedrock_mistral.server.errors import BedrockError
from bedrock_mistral.types import Message

__all__ = ["Turn", "normalize", "render_prompt"]

Turn = tuple[Literal["user", "assistant"], str]


def normalize(system: Iterable[str], turns: Sequence[Turn]) -> list[Message]:
    """An alternating message list (optional system first) that format_prompt accepts."""
    merged: list[list[str]] = []
    for role, text in turns:
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n\n" + text
        else:
            merged.append([role, text])
    if not merged:
        raise BedrockError(
            "ValidationException",
            "A conversation must contain at least one user message. Add a user message and try "
            "again.",
        )
    if merged[0][0] == "assistant":
        merged.insert(0, ["user", ""])
    messages = [
        Message(role="user" if role == "user" else "assistant", content=text)
        for role, text in merged
    ]
    system_text = "\n\n".join(text for text in system if text)
    if system_text:
        messages.insert(0, Message(role="system", content=system_text))
    return messages


def render_prompt(messages: Sequence[Message]) -> str:
    """The prompt string; a final assistant turn is left open so the model continues it."""
    return format_prompt(messages, continue_final=messages[-1].role == "assistant")
