"""Small real backends for SDK tests: they implement the Backend protocol, scripted per call.

``GreedyBackend`` behaves like a deterministic (temperature 0) model: for a given
conversation it always produces the same answer, and when the prompt already ends with
part of that answer (a continued assistant turn) it produces exactly the rest. That is
what makes "resume gives the same text as an uninterrupted run" testable.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bedrock_mistral.prompt import INST_CLOSE
from bedrock_mistral.types import (
    Completion,
    CompletionRequest,
    StreamEnd,
    TextDelta,
    ToolCall,
    Usage,
)

_WORD = re.compile(r"\s*\S+")


def words(text: str) -> list[str]:
    """Pieces that join back to ``text``, one word each with its leading whitespace."""
    pieces = _WORD.findall(text)
    tail = text[len("".join(pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces.append(tail)
    return pieces


@dataclass
class Fail:
    """Raise ``error`` after ``after`` text deltas (0: before the first one)."""

    error: Exception
    after: int = 0


@dataclass
class Drop:
    """End the stream without a StreamEnd after ``after`` text deltas."""

    after: int = 0


Action = Fail | Drop | None


@dataclass
class GreedyBackend:
    """Answers ``answer`` (default: the last user text) word by word; scripted failures."""

    answer: str | None = None
    script: Sequence[Action] = ()
    name: str = "greedy"
    calls: list[CompletionRequest] = field(default_factory=list)
    closed_streams: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._script = list(self.script)

    def _next_action(self, request: CompletionRequest) -> Action:
        with self._lock:
            self.calls.append(request)
            return self._script.pop(0) if self._script else None

    def _target(self, request: CompletionRequest) -> tuple[str, str]:
        """(full answer, the part of it already in the prompt)."""
        cut = request.prompt.rfind(INST_CLOSE)
        produced = request.prompt[cut + len(INST_CLOSE) :] if cut >= 0 else ""
        head = request.prompt[:cut]
        user = head[head.rfind("[INST]") + len("[INST]") :].strip() if cut >= 0 else request.prompt
        user = user.split("\n\n")[-1]  # a system message opens the first user turn
        return (self.answer if self.answer is not None else " " + user), produced

    def _pieces(self, request: CompletionRequest) -> tuple[list[str], str]:
        full, produced = self._target(request)
        rest = full[len(produced) :] if full.startswith(produced) else full
        pieces = words(rest)
        if len(pieces) > request.max_tokens:
            return pieces[: request.max_tokens], "length"
        return pieces, "stop"

    def complete(self, request: CompletionRequest) -> Completion:
        action = self._next_action(request)
        if isinstance(action, Fail):
            raise action.error
        pieces, reason = self._pieces(request)
        return Completion(
            text="".join(pieces),
            stop_reason=reason,  # type: ignore[arg-type]
            usage=Usage(input_tokens=len(request.prompt.split()), output_tokens=len(pieces)),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=1.0,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        action = self._next_action(request)
        pieces, reason = self._pieces(request)
        try:
            for index, piece in enumerate(pieces):
                if isinstance(action, Fail) and action.after == index:
                    raise action.error
                if isinstance(action, Drop) and action.after == index:
                    return
                yield TextDelta(text=piece)
            if isinstance(action, Fail):
                raise action.error
            if isinstance(action, Drop):
                return
            yield StreamEnd(
                stop_reason=reason,  # type: ignore[arg-type]
                usage=Usage(input_tokens=len(request.prompt.split()), output_tokens=len(pieces)),
                latency_ms=2.0,
            )
        finally:
            with self._lock:
                self.closed_streams += 1


class SleepRecorder:
    """A ``sleep`` for RetryPolicy that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class ScriptedBackend:
    """Answers from a script, one entry per call: a text, or tool calls (stop "tool_use").

    Records every request; once the script runs out it repeats the last entry. It
    carries tools (``accepts_tools``) so the client's tool path can be driven with it.
    """

    answers: Sequence[str | tuple[ToolCall, ...]]
    name: str = "scripted"
    accepts_tools: bool = True
    calls: list[CompletionRequest] = field(default_factory=list)

    def complete(self, request: CompletionRequest) -> Completion:
        self.calls.append(request)
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        calls = answer if isinstance(answer, tuple) else ()
        return Completion(
            text=answer if isinstance(answer, str) else "",
            stop_reason="tool_use" if calls else "stop",
            usage=Usage(input_tokens=len(request.prompt.split()), output_tokens=1),
            model_id=request.model_id,
            backend=self.name,
            tool_calls=calls,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        completion = self.complete(request)
        yield TextDelta(text=completion.text)
        yield StreamEnd(stop_reason=completion.stop_reason, usage=completion.usage)
