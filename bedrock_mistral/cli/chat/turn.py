"""One chat turn, sent through the SDK's :class:`~bedrock_mistral.conversation.Conversation`.

The session file is the transcript and keeps every turn. What is sent is a Conversation
over the turns still in context (``session.in_context()``); when prompt + ``max_tokens``
would not fit the model's window, the Conversation drops the oldest turns from the
prompt, exactly as it does for SDK users, and the chat says so. Dropped turns stay in
the session file and in /history; they are only no longer sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bedrock_mistral.cli.reply import show_reply

if TYPE_CHECKING:
    from bedrock_mistral.cli.render import ReplyView
    from bedrock_mistral.cli.reply import Reply
    from bedrock_mistral.cli.sessions import Session
    from bedrock_mistral.client import MistralClient

__all__ = ["Answer", "answer", "dropped_note"]


@dataclass(frozen=True)
class Answer:
    """The reply, and how many of the oldest in-context messages the prompt left out."""

    reply: Reply
    dropped: int


def answer(
    client: MistralClient, session: Session, text: str, view: Callable[[], ReplyView]
) -> Answer:
    """Send ``text`` after the session's in-context turns; the session is not changed.

    Parameters are checked before ``view()`` opens the reply's display.
    """
    from bedrock_mistral.conversation import Conversation

    conversation = Conversation(
        client, system=session.system, messages=session.in_context(), **session.params
    )
    reply = show_reply(client, view(), lambda: conversation.stream(text))
    # A finished reply reports what its prompt left out; a cut one drops nothing yet
    # (the next turn fits the window again, and reports then).
    return Answer(reply=reply, dropped=len(conversation.last_dropped))


def dropped_note(dropped: int, *, window: int) -> str:
    turns = dropped // 2
    what = "oldest turn" if turns == 1 else f"{turns} oldest turns"
    return (
        f"context full: dropped the {what} from what the model sees, to fit its "
        f"{window}-token window (the saved session and /history keep them)"
    )
