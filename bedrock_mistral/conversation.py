"""``Conversation``: a chat history that fits the context window, visibly.

When the next request would not fit (prompt + ``max_tokens`` > the model's context
window), the oldest user/assistant exchanges are dropped, never the system message.
What was dropped is reported three ways: ``conversation.last_dropped`` (this turn),
``conversation.dropped`` (all so far) and the ``on_trim`` callback, plus a log warning.
A request that cannot fit even with all older turns gone raises
:class:`~bedrock_mistral.errors.ContextWindowError` before anything is sent.

>>> chat = client.conversation(system="You are terse.", max_tokens=200)
>>> chat.send("Name a prime.").text
>>> chat.send("Another one?").text          # sees the first exchange
>>> chat.messages                            # system, user, assistant, user, assistant
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from bedrock_mistral.errors import ContextWindowError, ValidationError
from bedrock_mistral.prompt import MessageLike, assistant_content, to_messages
from bedrock_mistral.types import Completion, CompletionRequest, Message

if TYPE_CHECKING:
    from bedrock_mistral.client import MistralClient
    from bedrock_mistral.models import ModelSpec
    from bedrock_mistral.streaming import Stream
    from bedrock_mistral.tokens import PromptCounter

__all__ = ["Conversation", "ConversationState"]

logger = logging.getLogger(__name__)

TrimCallback = Callable[[list[Message]], None]


class Preparer(Protocol):
    """The non-I/O part of a client that a conversation plans its turns with."""

    @property
    def model(self) -> ModelSpec: ...

    @property
    def counter(self) -> PromptCounter: ...

    @property
    def model_id(self) -> str: ...

    def prepare(
        self, messages: Any, *, continue_final: bool = False, **params: Any
    ) -> CompletionRequest: ...


class ConversationState:
    """History, trimming and bookkeeping; :class:`Conversation` and the async one add sending."""

    def __init__(
        self,
        client: Preparer,
        *,
        system: str | None = None,
        messages: Sequence[MessageLike] = (),
        on_trim: TrimCallback | None = None,
        **params: Any,
    ) -> None:
        from bedrock_mistral.validation import resolve_params

        resolve_params(client.model, params)  # refuse bad defaults now
        history = to_messages(messages)
        if system is not None:
            if history and history[0].role == "system":
                raise ValidationError(
                    "pass the system message either as system=... or as messages[0], not both",
                    field="system",
                    value=system,
                )
            history.insert(0, Message(role="system", content=system))
        self.client = client
        self.params = params
        self.messages: list[Message] = history
        self.on_trim = on_trim
        self.dropped: list[Message] = []
        self.last_dropped: list[Message] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.messages)} messages, {len(self.dropped)} dropped)"

    def clear(self) -> None:
        """Forget every turn except the system message."""
        self.messages = [m for m in self.messages[:1] if m.role == "system"]

    # -- fitting -----------------------------------------------------------------------

    def _plan(
        self, text: str, params: dict[str, Any]
    ) -> tuple[CompletionRequest, list[Message], Message]:
        if not isinstance(text, str):
            raise ValidationError.out_of_range("text", text, "a string")
        user = Message(role="user", content=text)
        head = self.messages[:1] if self.messages and self.messages[0].role == "system" else []
        body = self.messages[len(head) :]
        merged = {**self.params, **params}
        dropped: list[Message] = []
        while True:
            try:
                request = self.client.prepare([*head, *body, user], **merged)
            except ContextWindowError as err:
                if len(body) < 2:
                    raise self._too_long(err) from err
                cut = self._pairs_to_drop(
                    body, err.prompt_tokens + err.max_tokens - err.context_window
                )
                dropped.extend(body[:cut])
                body = body[cut:]
                continue
            return request, dropped, user

    def _too_long(self, err: ContextWindowError) -> ContextWindowError:
        """The client's error says "use a Conversation"; here the turn itself is too long."""
        how = "" if self.client.counter.exact else " (estimated)"
        return ContextWindowError(
            f"this message does not fit even with every earlier turn dropped: prompt "
            f"({err.prompt_tokens} tokens{how}) + max_tokens ({err.max_tokens}) exceeds the "
            f"{err.context_window}-token context window of {self.client.model_id}; shorten the "
            "message (or the system prompt), or lower max_tokens",
            prompt_tokens=err.prompt_tokens,
            max_tokens=err.max_tokens,
            context_window=err.context_window,
        )

    def _pairs_to_drop(self, body: list[Message], excess: int) -> int:
        """Leading messages (whole user/assistant pairs) to drop to shed ``excess`` tokens."""
        shed = 0
        cut = 0
        while cut + 2 <= len(body) and shed < excess:
            shed += sum(self.client.counter.count_text(m.content) + 4 for m in body[cut : cut + 2])
            cut += 2
        return max(cut, 2)

    def _commit(self, dropped: list[Message], user: Message, completion: Completion) -> None:
        if dropped:
            head = self.messages[:1] if self.messages and self.messages[0].role == "system" else []
            remaining = self.messages[len(head) + len(dropped) :]
            self.messages = [*head, *remaining]
            self.dropped.extend(dropped)
            logger.warning(
                "conversation trimmed to fit the %d-token context window: dropped the %d oldest "
                "message(s)",
                self.client.counter.context_window,
                len(dropped),
            )
            if self.on_trim is not None:
                self.on_trim(list(dropped))
        self.last_dropped = list(dropped)
        self.messages.extend(
            [user, Message(role="assistant", content=assistant_content(completion.text))]
        )


class Conversation(ConversationState):
    """History plus defaults for each turn. Not thread-safe: one conversation, one thread."""

    client: MistralClient

    def __init__(
        self,
        client: MistralClient,
        *,
        system: str | None = None,
        messages: Sequence[MessageLike] = (),
        on_trim: TrimCallback | None = None,
        **params: Any,
    ) -> None:
        super().__init__(client, system=system, messages=messages, on_trim=on_trim, **params)

    def send(self, text: str, **params: Any) -> Completion:
        """Add a user turn, get the reply, keep both in the history."""
        request, dropped, user = self._plan(text, params)
        completion = self.client.invoke(request)
        self._commit(dropped, user, completion)
        return completion

    def stream(self, text: str, *, resume: bool = False, **params: Any) -> Stream:
        """Like :meth:`send`, streamed; the history is updated once the stream completes."""
        request, dropped, user = self._plan(text, params)
        return self.client.invoke_stream(
            request,
            resume=resume,
            on_complete=lambda completion: self._commit(dropped, user, completion),
        )
