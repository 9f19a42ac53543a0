"""The backend protocol: the one seam between the client and where tokens come from.

A backend takes a :class:`CompletionRequest` (Bedrock's Mistral text-completion body plus
the model id) and either returns a :class:`Completion` or yields stream events: zero or
more :class:`TextDelta` then exactly one :class:`StreamEnd`. A stream that stops without a
``StreamEnd`` was interrupted. Backends raise only :mod:`bedrock_mistral.errors` types and
do not retry: the client applies the one shared retry policy around them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta

__all__ = ["Backend", "TokenCounter"]


@runtime_checkable
class Backend(Protocol):
    """Anything with these two calls (and a name) can serve a :class:`MistralClient`.

    ``stream`` returns an iterator; if it also has ``close()`` (a generator does), the
    client calls it when the caller stops early, so network streams are released.
    """

    name: str

    def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """Optional capability: exact prompt token counts and the backend's own context limit."""

    def count_tokens(self, prompt: str) -> int: ...

    @property
    def context_window(self) -> int | None: ...
