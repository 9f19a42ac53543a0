"""A small JSON-schema checker that words its findings the way Bedrock does.

Bedrock validates model bodies with a JSON schema and reports violations in the
everit-json-schema style (``#/max_tokens: 0 is not greater or equal to 1``). Only the
handful of schema features Mistral bodies use are here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bedrock_mistral.server.errors import malformed

__all__ = [
    "Anything",
    "Array",
    "Boolean",
    "Enum",
    "Integer",
    "Number",
    "Object",
    "OneOfTypes",
    "Schema",
    "String",
    "check",
    "parse_json",
    "type_name",
]


def type_name(value: Any) -> str:
    """The Java type name everit prints for a JSON value."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "BigDecimal"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    return "JSONObject"


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


class Schema(Protocol):
    def violations(self, value: Any, path: str) -> list[str]: ...


def _expected(path: str, expected: str, value: Any) -> list[str]:
    return [f"{path}: expected type: {expected}, found: {type_name(value)}"]


@dataclass(frozen=True)
class Anything:
    def violations(self, value: Any, path: str) -> list[str]:
        return []


@dataclass(frozen=True)
class String:
    def violations(self, value: Any, path: str) -> list[str]:
        return [] if isinstance(value, str) else _expected(path, "String", value)


@dataclass(frozen=True)
class Boolean:
    def violations(self, value: Any, path: str) -> list[str]:
        return [] if isinstance(value, bool) else _expected(path, "Boolean", value)


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]

    def violations(self, value: Any, path: str) -> list[str]:
        return [] if value in self.values else [f"{path}: {_show(value)} is not a valid enum value"]


def _bound(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else repr(limit)


def _range(path: str, value: float, minimum: float | None, maximum: float | None) -> list[str]:
    if minimum is not None and value < minimum:
        return [f"{path}: {_show(value)} is not greater or equal to {_bound(minimum)}"]
    if maximum is not None and value > maximum:
        return [f"{path}: {_show(value)} is not less or equal to {_bound(maximum)}"]
    return []


@dataclass(frozen=True)
class Integer:
    minimum: int | None = None
    maximum: int | None = None

    def violations(self, value: Any, path: str) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int):
            return _expected(path, "Integer", value)
        return _range(path, value, self.minimum, self.maximum)


@dataclass(frozen=True)
class Number:
    minimum: float | None = None
    maximum: float | None = None

    def violations(self, value: Any, path: str) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _expected(path, "Number", value)
        return _range(path, value, self.minimum, self.maximum)


@dataclass(frozen=True)
class OneOfTypes:
    """A value of any of several JSON types (``"content": "..." | [...]``)."""

    options: tuple[tuple[str, Schema], ...]

    def violations(self, value: Any, path: str) -> list[str]:
        names = [name for name, _ in self.options]
        for name, schema in self.options:
            if name == type_name(value) or (
                name == "Number" and type_name(value) in ("Integer", "BigDecimal")
            ):
                return schema.violations(value, path)
        return [f"{path}: expected type is one of {', '.join(names)}, found: {type_name(value)}"]


@dataclass(frozen=True)
class Array:
    items: Schema = field(default_factory=Anything)
    min_items: int | None = None
    max_items: int | None = None

    def violations(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            return _expected(path, "JSONArray", value)
        if self.min_items is not None and len(value) < self.min_items:
            return [f"{path}: expected minimum item count: {self.min_items}, found: {len(value)}"]
        if self.max_items is not None and len(value) > self.max_items:
            return [f"{path}: expected maximum item count: {self.max_items}, found: {len(value)}"]
        found: list[str] = []
        for index, item in enumerate(value):
            found += self.items.violations(item, f"{path}/{index}")
        return found


@dataclass(frozen=True)
class Object:
    properties: Mapping[str, Schema]
    required: tuple[str, ...] = ()
    additional: bool = False

    def violations(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return _expected(path, "JSONObject", value)
        found = [
            f"{path}: required key [{key}] not found" for key in self.required if key not in value
        ]
        for key, item in value.items():
            schema = self.properties.get(key)
            if schema is not None:
                found += schema.violations(item, f"{path}/{key}")
            elif not self.additional:
                found.append(f"{path}: extraneous key [{key}] is not permitted")
        return found


def check(schema: Schema, value: Any) -> None:
    """Raise Bedrock's ValidationException when ``value`` breaks ``schema``."""
    found = schema.violations(value, "#")
    if len(found) == 1:
        raise malformed(found[0])
    if found:
        raise malformed(f"#: {len(found)} schema violations found")


def _no_duplicates(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # rare: find which key came twice, for the message
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a double")
    return value


# Made once: ``json.loads`` with options builds a new decoder on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN, no duplicate keys), or Bedrock's 'Malformed input request'."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise malformed() from err
