"""Batch input: parse JSONL or one-prompt-per-line text into records, refusing nothing silently.

A JSONL line looks like ``{"id": "q1", "prompt": "Hi"}`` or
``{"id": 7, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64}``.
Allowed keys: ``id``, exactly one of ``messages``/``prompt``, the per-record parameters
``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop``, and a free-form
``metadata`` value that is copied to the output. In a text file each non-blank line is
one prompt and its id is its line number (1-based).

A line that cannot become a record is an :class:`InputProblem` (with its line number),
which the runner writes as an error record. Duplicate ids refuse the whole input
(:class:`DuplicateIdError`) before anything is sent, because the output is keyed by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bedrock_mistral.errors import ValidationError
from bedrock_mistral.validation import PARAMS

__all__ = [
    "PARAM_KEYS",
    "BatchRecord",
    "DuplicateIdError",
    "InputFormat",
    "InputProblem",
    "ParsedInput",
    "RecordId",
    "check_unique",
    "detect_format",
    "parse_item",
    "parse_items",
    "read_input",
    "record_key",
]

RecordId = str | int
InputFormat = Literal["auto", "jsonl", "text"]

PARAM_KEYS = tuple(PARAMS)  # the SDK's parameters; their bounds are checked when sent
_ALLOWED_KEYS = frozenset({"id", "messages", "prompt", "metadata", *PARAM_KEYS})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
_TEXT_SUFFIXES = frozenset({".txt", ".text"})
_MAX_ID_LENGTH = 512


def record_key(record_id: RecordId) -> str:
    """The key a record is tracked by: ids ``7`` and ``"7"`` are the same record."""
    return str(record_id)


@dataclass(frozen=True)
class BatchRecord:
    """One request of a batch: an id, either chat ``messages`` or a ``prompt``, and params.

    ``line`` is the 1-based input line (None for records handed to the SDK directly).
    """

    id: RecordId
    messages: tuple[dict[str, str], ...] | None = None
    prompt: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None
    metadata: Any = None

    @property
    def key(self) -> str:
        return record_key(self.id)

    @property
    def where(self) -> str:
        """How to point a person at this record: ``line 12 (id 'q7')``."""
        return f"line {self.line} (id {self.id!r})" if self.line is not None else f"id {self.id!r}"


@dataclass(frozen=True)
class InputProblem:
    """A line that is not a valid record; written to the output as an error, never dropped."""

    line: int | None
    message: str
    id: RecordId | None = None
    metadata: Any = None

    @property
    def key(self) -> str | None:
        return record_key(self.id) if self.id is not None else None

    @property
    def where(self) -> str:
        if self.line is None:
            return f"id {self.id!r}"
        return f"line {self.line}" + (f" (id {self.id!r})" if self.id is not None else "")


@dataclass
class ParsedInput:
    records: list[BatchRecord] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    blank_lines: int = 0

    def add(self, entry: BatchRecord | InputProblem) -> None:
        if isinstance(entry, BatchRecord):
            self.records.append(entry)
        else:
            self.problems.append(entry)


class DuplicateIdError(ValidationError):
    """Two input lines share an id; nothing was sent. ``duplicates`` maps id -> lines."""

    def __init__(self, duplicates: Mapping[str, list[int | None]]) -> None:
        shown = "; ".join(
            f"id {key!r} on {_lines(lines)}" for key, lines in list(duplicates.items())[:5]
        )
        more = f" (and {len(duplicates) - 5} more)" if len(duplicates) > 5 else ""
        super().__init__(
            f"duplicate record ids: {shown}{more}. Each id must be unique because results are "
            "keyed by id; rename or remove the duplicates and rerun (nothing was sent)",
            field="id",
            value=list(duplicates),
            allowed="unique ids",
        )
        self.duplicates = dict(duplicates)


def _lines(lines: list[int | None]) -> str:
    numbers = [str(n) for n in lines if n is not None]
    return "lines " + ", ".join(numbers) if numbers else f"{len(lines)} records"


def _check_id(value: object) -> RecordId:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"'id' must be a string or an integer, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise ValueError("'id' is empty")
    if len(str(value)) > _MAX_ID_LENGTH:
        raise ValueError(f"'id' is longer than {_MAX_ID_LENGTH} characters")
    return value


def _check_messages(value: object) -> tuple[dict[str, str], ...]:
    # Imported here so parsing a text file does not pay for pydantic.
    from bedrock_mistral.prompt import format_prompt, to_messages
    from bedrock_mistral.validation import check_conversation

    if not isinstance(value, list):
        raise ValueError(
            f"'messages' must be a list of {{role, content}} objects, got {type(value).__name__}"
        )
    messages = to_messages(value)
    format_prompt(messages)  # order and roles: the template is the judge
    check_conversation(messages)
    return tuple({"role": m.role, "content": m.content} for m in messages)


def _check_params(item: Mapping[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError as PydanticError

    from bedrock_mistral.types import GenerationParams

    given = {key: item[key] for key in PARAM_KEYS if key in item and item[key] is not None}
    if isinstance(given.get("stop"), str):
        given["stop"] = [given["stop"]]  # one stop sequence, as the SDK and `-p stop=` take it
    try:
        GenerationParams(**given)
    except PydanticError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {first['msg']} (got {first.get('input')!r})") from err
    return given


def parse_item(
    item: object, *, line: int | None = None, default_id: RecordId | None = None
) -> BatchRecord | InputProblem:
    """Turn one decoded JSON value (or a plain prompt string) into a record or a problem."""
    if isinstance(item, BatchRecord):
        return item
    if isinstance(item, str):
        if default_id is None:
            return InputProblem(line, "a bare prompt string needs an id")
        if not item.strip():
            return InputProblem(line, "the prompt is empty", id=default_id)
        return BatchRecord(id=default_id, prompt=item, line=line)
    if not isinstance(item, Mapping):
        return InputProblem(line, f"expected a JSON object, got {type(item).__name__}")
    raw_id = item.get("id", default_id)
    metadata = item.get("metadata")
    try:
        record_id = _check_id(raw_id) if raw_id is not None else None
    except ValueError as err:
        return InputProblem(line, str(err), metadata=metadata)
    if record_id is None:
        return InputProblem(line, "missing 'id'", metadata=metadata)
    try:
        return _build(item, record_id, line)
    except (ValueError, ValidationError) as err:
        return InputProblem(line, str(err), id=record_id, metadata=metadata)


def _build(item: Mapping[str, Any], record_id: RecordId, line: int | None) -> BatchRecord:
    unknown = sorted(str(key) for key in item if key not in _ALLOWED_KEYS)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(sorted(_ALLOWED_KEYS))} (put extra data under 'metadata')"
        )
    has_messages, has_prompt = "messages" in item, "prompt" in item
    if has_messages == has_prompt:
        raise ValueError("give exactly one of 'messages' or 'prompt'")
    messages = prompt = None
    if has_messages:
        messages = _check_messages(item["messages"])
    else:
        prompt = item["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("'prompt' must be a non-empty string")
    return BatchRecord(
        id=record_id,
        messages=messages,
        prompt=prompt,
        params=_check_params(item),
        line=line,
        metadata=item.get("metadata"),
    )


def parse_items(items: Iterable[object]) -> ParsedInput:
    """The SDK's input: dicts shaped like JSONL lines, BatchRecords, or prompt strings.

    A prompt string's id is its 0-based position; ``line`` is the 1-based position.
    """
    parsed = ParsedInput()
    for index, item in enumerate(items):
        default_id = index if isinstance(item, str) else None
        parsed.add(parse_item(item, line=index + 1, default_id=default_id))
    return parsed


def detect_format(path: Path, first_line: str | None) -> Literal["jsonl", "text"]:
    """By extension; otherwise a first line that opens a JSON object means JSONL."""
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _TEXT_SUFFIXES:
        return "text"
    return "jsonl" if first_line is not None and first_line.lstrip().startswith("{") else "text"


def _decoded_lines(data: bytes) -> Iterable[tuple[int, str | None]]:
    """(line number, text) pairs; text is None where the bytes are not UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None


def read_input(path: str | Path, *, input_format: InputFormat = "auto") -> ParsedInput:
    """Parse a batch input file; problems carry their line numbers."""
    path = Path(path)
    lines = list(_decoded_lines(path.read_bytes()))
    if input_format == "auto":
        first = next((text for _, text in lines if text is not None and text.strip()), None)
        input_format = detect_format(path, first)
    parsed = ParsedInput()
    for number, text in lines:
        if text is not None and not text.strip():
            # The empty string after a trailing newline is not a line anyone wrote.
            if number < len(lines) or text:
                parsed.blank_lines += 1
            continue
        parsed.add(_parse_line(number, text, input_format))
    return parsed


def _parse_line(number: int, text: str | None, input_format: str) -> BatchRecord | InputProblem:
    if text is None:
        return InputProblem(
            number, "not valid UTF-8", id=number if input_format == "text" else None
        )
    if input_format == "text":
        return BatchRecord(id=number, prompt=text, line=number)
    try:
        item = json.loads(text)
    except json.JSONDecodeError as err:
        return InputProblem(number, f"not valid JSON: {err.msg} at column {err.colno}")
    return parse_item(item, line=number)


def check_unique(parsed: ParsedInput) -> None:
    """Refuse the input if two records (valid or not) share an id."""
    seen: dict[str, list[int | None]] = {}
    entries: list[BatchRecord | InputProblem] = [*parsed.records, *parsed.problems]
    for entry in entries:
        key = entry.key
        if key is not None:
            seen.setdefault(key, []).append(entry.line)
    duplicates = {key: lines for key, lines in seen.items() if len(lines) > 1}
    if duplicates:
        raise DuplicateIdError(duplicates)
