"""Structured output: ask for JSON that fits a schema, validate it, repair it once.

Works on any backend because it is made of plain chat turns: a system instruction with
the JSON schema, the answer's opening ``{`` prefilled for text-dialect models (the
prompt then ends inside the answer, and the model continues it), and pydantic to
validate. An invalid answer gets at most one repair request that shows the model its
answer and the validation errors; after that :class:`~bedrock_mistral.errors.ParseError`
carries the last raw text and its errors.

The client drives the loop (``MistralClient.parse``; the async client the same way with
``await``)::

    ask = StructuredAsk(schema, client.model)
    turns = ask.first_turns(messages)
    for _ in range(MAX_ATTEMPTS):
        outcome = ask.read(client.chat(turns, continue_final=ask.continue_final).text)
        if outcome.ok:
            return outcome.value
        turns = ask.repair_turns(turns, outcome)
    raise ask.failure(outcome)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from bedrock_mistral.errors import ParseError
from bedrock_mistral.models import ModelSpec
from bedrock_mistral.tools import error_lines
from bedrock_mistral.types import Message

__all__ = ["MAX_ATTEMPTS", "Outcome", "StructuredAsk"]

T = TypeVar("T")

MAX_ATTEMPTS = 2  # the first answer and at most one repair
_FENCED = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)
_INSTRUCTION = (
    "Answer with one JSON value and nothing else: no prose, no code fences. "
    "It must validate against this JSON schema:\n{schema}"
)
_REPAIR = (
    "That answer is not valid JSON for the schema:\n{errors}\n"
    "Answer again with only the corrected JSON."
)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One answer read against the schema: the value, or the raw text and its errors."""

    raw: str
    value: T | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class StructuredAsk(Generic[T]):
    """The turns that ask for ``schema`` and the reading of each answer.

    ``schema``: a pydantic model class, or any type pydantic can validate (``int``,
    ``list[str]``, a ``TypedDict``...).
    """

    def __init__(self, schema: type[T], spec: ModelSpec) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(schema)
        self.json_schema: dict[str, Any] = self.adapter.json_schema()
        # Only the text dialect's prompt can end inside the answer (Bedrock's chat body
        # has no prefill); only an object answer has a known first character.
        is_object = self.json_schema.get("type") == "object" or "properties" in self.json_schema
        self.opener = "{" if spec.dialect == "text" and is_object else ""

    @property
    def continue_final(self) -> bool:
        return bool(self.opener)

    def _with_prefill(self, turns: list[Message]) -> list[Message]:
        if self.opener:
            turns.append(Message(role="assistant", content=self.opener))
        return turns

    def first_turns(self, turns: Sequence[Message]) -> list[Message]:
        """The conversation plus the JSON instruction (in the system message) and prefill."""
        instruction = _INSTRUCTION.format(schema=json.dumps(self.json_schema, ensure_ascii=False))
        rest = list(turns)
        if rest and rest[0].role == "system":
            instruction = f"{rest.pop(0).content}\n\n{instruction}"
        return self._with_prefill([Message(role="system", content=instruction), *rest])

    def read(self, text: str) -> Outcome[T]:
        """Validate an answer (the prefilled opener put back in front of it)."""
        raw = self.opener + text if self.opener else text
        first: list[str] | None = None
        for candidate in _candidates(raw):
            try:
                return Outcome(raw=raw, value=self.adapter.validate_json(candidate))
            except PydanticValidationError as err:
                first = first if first is not None else error_lines(err)
        return Outcome(raw=raw, errors=first or ["(empty): no JSON in the answer"])

    def repair_turns(self, turns: Sequence[Message], outcome: Outcome[T]) -> list[Message]:
        """The one repair request: the failed answer, then its errors as the user's turn."""
        base = list(turns[:-1] if self.opener else turns)  # drop the open prefill turn
        base.append(Message(role="assistant", content=outcome.raw))
        base.append(Message(role="user", content=_REPAIR.format(errors="\n".join(outcome.errors))))
        return self._with_prefill(base)

    def failure(self, outcome: Outcome[T]) -> ParseError:
        return ParseError(
            f"the answer does not fit the schema after {MAX_ATTEMPTS} attempts "
            f"(the last one repaired): {'; '.join(outcome.errors)}",
            raw_text=outcome.raw,
            errors=outcome.errors,
        )


def _candidates(raw: str) -> list[str]:
    """The answer as is, then the body of a code fence, then its outermost {...} or [...]."""
    found = [raw.strip()]
    fenced = _FENCED.search(raw)
    if fenced:
        found.append(fenced.group(1).strip())
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = raw.find(open_), raw.rfind(close)
        if 0 <= start < end:
            found.append(raw[start : end + 1])
    return list(dict.fromkeys(candidate for candidate in found if candidate))
