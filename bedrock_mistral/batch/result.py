"""One finished record, in the shape of an output line, and the running totals of a batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bedrock_mistral.batch.records import BatchRecord, InputProblem, RecordId
from bedrock_mistral.errors import APIError, BedrockMistralError
from bedrock_mistral.types import Completion, Usage

__all__ = ["BatchResult", "BatchStats", "RecordError"]


@dataclass(frozen=True)
class RecordError:
    """Why a record has no answer: our error class name and its one-line message."""

    type: str
    message: str
    status_code: int | None = None

    @classmethod
    def from_exception(cls, error: BaseException) -> RecordError:
        status = error.status_code if isinstance(error, APIError) else None
        message = (
            str(error)
            if isinstance(error, BedrockMistralError)
            else f"{type(error).__name__}: {error}"
        )
        return cls(type=type(error).__name__, message=message, status_code=status)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.status_code is not None:
            data["status_code"] = self.status_code
        return data


@dataclass(frozen=True)
class BatchResult:
    """A record's outcome: the reply, or ``error``. ``to_dict()`` is its output line."""

    id: RecordId | None
    text: str | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    latency_ms: float | None = None
    error: RecordError | None = None
    attempts: int = 0
    line: int | None = None
    metadata: Any = None
    cost_usd: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def where(self) -> str:
        """``line 12 (id 'q7')``: how to point a person at the input record."""
        if self.line is None:
            return f"id {self.id!r}"
        return f"line {self.line}" + (f" (id {self.id!r})" if self.id is not None else "")

    @classmethod
    def success(cls, record: BatchRecord, completion: Completion, *, attempts: int) -> BatchResult:
        return cls(
            id=record.id,
            text=completion.text,
            stop_reason=completion.stop_reason,
            usage=completion.usage,
            latency_ms=round(completion.latency_ms, 1),
            attempts=attempts,
            line=record.line,
            metadata=record.metadata,
            cost_usd=completion.cost_usd,
        )

    @classmethod
    def failure(cls, record: BatchRecord, error: RecordError, *, attempts: int) -> BatchResult:
        return cls(
            id=record.id, error=error, attempts=attempts, line=record.line, metadata=record.metadata
        )

    @classmethod
    def input_problem(cls, problem: InputProblem) -> BatchResult:
        return cls(
            id=problem.id,
            error=RecordError("InputError", problem.message),
            line=problem.line,
            metadata=problem.metadata,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "stop_reason": self.stop_reason,
            "usage": None
            if self.usage is None
            else {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "latency_ms": self.latency_ms,
            "error": None if self.error is None else self.error.to_dict(),
            "attempts": self.attempts,
        }
        # The line number identifies an input problem that has no usable id.
        if self.line is not None and (self.error is not None or self.id is None):
            data["line"] = self.line
        if self.metadata is not None:
            data["metadata"] = self.metadata
        return data


@dataclass
class BatchStats:
    """Running totals; ``total`` counts the records this run sends (not those already done)."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    @property
    def records_per_second(self) -> float:
        elapsed = self.elapsed
        return self.finished / elapsed if elapsed > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        elapsed = self.elapsed
        return self.output_tokens / elapsed if elapsed > 0 else 0.0

    def add(self, result: BatchResult) -> None:
        self.attempts += result.attempts
        if not result.ok:
            self.failed += 1
            return
        self.done += 1
        if result.usage is not None:
            self.input_tokens += result.usage.input_tokens
            self.output_tokens += result.usage.output_tokens
        if result.cost_usd is None:
            self.cost_known = False
        else:
            self.cost_usd += result.cost_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "skipped": self.skipped,
            "done": self.done,
            "failed": self.failed,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6) if self.cost_known else None,
            "attempts": self.attempts,
            "elapsed_s": round(self.elapsed, 3),
            "records_per_s": round(self.records_per_second, 2),
            "output_tokens_per_s": round(self.tokens_per_second, 1),
        }
