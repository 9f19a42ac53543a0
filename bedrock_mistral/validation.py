"""The one set of parameter and conversation rules, checked before anything is sent.

:data:`PARAMS` declares every generation parameter once: its name, type, bounds and help.
Each surface goes through it, so a value refused in one is refused with the same message
in all: the SDK (:func:`check_params`, Python values), the CLI's ``-o``, ``config set``,
``config.toml`` and the chat's ``/set`` (:func:`parse_param`, text or TOML values), and
per-model limits for every one of them (:func:`resolve_params`).

>>> parse_param("temperature", "0.2")
0.2
>>> check_param("top_k", 0)
Traceback (most recent call last):
bedrock_mistral.errors.ValidationError: top_k=0 is not allowed: an integer from 1 to 200
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bedrock_mistral.errors import Fix, ValidationError

if TYPE_CHECKING:  # pydantic stays unimported until a request is built: CLI flags are cheap
    from bedrock_mistral.models import ModelSpec
    from bedrock_mistral.types import GenerationParams, Message

__all__ = [
    "MAX_STOP_SEQUENCES",
    "PARAMS",
    "TOP_K_RANGE",
    "UNIT_RANGE",
    "ParamSpec",
    "check_conversation",
    "check_device",
    "check_param",
    "check_params",
    "parse_param",
    "resolve_params",
    "resolve_values",
]

ParamKind = Literal["int", "float", "stop"]

# Bedrock's bounds for every Mistral model; per-model limits live in the model registry.
MAX_STOP_SEQUENCES = 10
TOP_K_RANGE = (1, 200)
UNIT_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class ParamSpec:
    """One generation parameter: its type and bounds every model shares, and its help.

    ``high`` None means no shared upper bound (``max_tokens``: each model has its own,
    checked by :func:`resolve_params`).
    """

    name: str
    kind: ParamKind
    help: str
    low: float = 0
    high: float | None = None

    @property
    def allowed(self) -> str:
        """What would be accepted, as the error message says it."""
        if self.kind == "stop":
            return f"a string or a list of up to {MAX_STOP_SEQUENCES} non-empty strings"
        what = "an integer" if self.kind == "int" else "a number"
        if self.high is None:
            return f"{what} >= {self.low:g}"
        return f"{what} from {self.low:g} to {self.high:g}"

    def check(self, value: Any) -> Any:
        """A Python value as the SDK takes it -> the typed value; raises ValidationError."""
        if self.kind == "stop":
            return _check_stop(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (self.kind == "int" and not isinstance(value, int))
            or math.isnan(value)
            or value < self.low
            or (self.high is not None and value > self.high)
        ):
            raise ValidationError.out_of_range(self.name, value, self.allowed)
        return value if self.kind == "int" else float(value)

    def parse(self, value: Any) -> Any:
        """Text (a flag, ``/set``) or a TOML value -> the typed value; raises ValidationError.

        Text that reads as a number is checked as that number, so ``-o top_k=1.5`` and
        ``top_k=1.5`` in Python are refused with the same message.
        """
        if isinstance(value, str):
            value = _stop_from_text(value) if self.kind == "stop" else _number_from_text(value)
        return self.check(value)


PARAMS: Mapping[str, ParamSpec] = {
    spec.name: spec
    for spec in (
        ParamSpec("max_tokens", "int", "most tokens to generate (integer >= 1)", low=1),
        ParamSpec("temperature", "float", "randomness, 0 to 1", *UNIT_RANGE),
        ParamSpec("top_p", "float", "nucleus sampling mass, 0 to 1", *UNIT_RANGE),
        ParamSpec("top_k", "int", "sample among the k likeliest tokens, 1 to 200", *TOP_K_RANGE),
        ParamSpec("stop", "stop", "stop sequences (comma-separated, or a JSON/TOML list)"),
    )
}


def _number_from_text(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text.strip())
        except ValueError:
            continue
    return text  # not a number: check() refuses it, naming the text


def _stop_from_text(text: str) -> Any:
    if not text.strip().startswith("["):
        return [part for part in text.split(",") if part]
    try:
        return json.loads(text)
    except ValueError as err:
        raise ValidationError.out_of_range("stop", text, 'a list like ["###", "END"]') from err


def _check_stop(stop: Any) -> list[str]:
    if isinstance(stop, str):
        stop = [stop]
    elif isinstance(stop, tuple):
        stop = list(stop)
    if not isinstance(stop, list):
        raise ValidationError.out_of_range("stop", stop, PARAMS["stop"].allowed)
    if len(stop) > MAX_STOP_SEQUENCES:
        raise ValidationError.out_of_range(
            "stop", stop, f"at most {MAX_STOP_SEQUENCES} stop sequences (got {len(stop)})"
        )
    for index, item in enumerate(stop):
        if not isinstance(item, str) or not item:
            raise ValidationError.out_of_range(f"stop[{index}]", item, "a non-empty string")
    return stop


def _spec(name: str, value: Any) -> ParamSpec:
    spec = PARAMS.get(name)
    if spec is None:
        names = ", ".join(PARAMS)
        raise ValidationError(
            f"unknown parameter {name!r}; allowed: {names}",
            field=name,
            value=value,
            allowed=names,
        )
    return spec


def check_param(name: str, value: Any) -> Any:
    """One parameter given as a Python value (the SDK); unknown names are refused."""
    return _spec(name, value).check(value)


def parse_param(name: str, value: Any) -> Any:
    """One parameter given as text or a TOML value (CLI ``-o``, config file, ``/set``)."""
    return _spec(name, value).parse(value)


def _checked(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: None if value is None else check_param(name, value) for name, value in values.items()
    }


def check_params(values: Mapping[str, Any]) -> GenerationParams:
    """SDK keyword parameters -> :class:`GenerationParams`; ``None`` means the model's default."""
    from bedrock_mistral.types import GenerationParams

    return GenerationParams.model_construct(**_checked(values))  # checked: no second pass


def _check_model_limits(spec: ModelSpec, params: Mapping[str, Any]) -> None:
    max_tokens, top_k, stop = params.get("max_tokens"), params.get("top_k"), params.get("stop")
    if max_tokens is not None and max_tokens > spec.max_output_tokens:
        raise ValidationError.out_of_range(
            "max_tokens",
            max_tokens,
            f"an integer from 1 to {spec.max_output_tokens} (the most {spec.model_id} "
            "can generate)",
        )
    if top_k is not None and not spec.supports_top_k:
        raise ValidationError.out_of_range(
            "top_k", top_k, f"not supported by {spec.model_id} (its chat body has no top_k)"
        )
    if stop and not spec.supports_stop:
        raise ValidationError.out_of_range(
            "stop",
            stop,
            f"not supported by {spec.model_id} (its chat body has no stop field)",
        )


def resolve_values(spec: ModelSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check SDK keyword parameters once, against the rules and ``spec``'s limits, and fill
    what is unset with the model's defaults: the parameters a request carries (every name)."""
    checked = _checked(values)
    _check_model_limits(spec, checked)
    get = checked.get
    return {
        "max_tokens": spec.default_max_tokens if get("max_tokens") is None else get("max_tokens"),
        "temperature": spec.default_temperature
        if get("temperature") is None
        else get("temperature"),
        "top_p": spec.default_top_p if get("top_p") is None else get("top_p"),
        "top_k": spec.default_top_k if get("top_k") is None else get("top_k"),
        "stop": list(get("stop") or ()),
    }


def resolve_params(spec: ModelSpec, values: Mapping[str, Any]) -> GenerationParams:
    """:func:`resolve_values` as :class:`GenerationParams`."""
    from bedrock_mistral.types import GenerationParams

    return GenerationParams.model_construct(**resolve_values(spec, values))  # checked already


def check_conversation(messages: Sequence[Message], *, continue_final: bool = False) -> None:
    """Refuse a conversation the model would not answer sensibly.

    The prompt template already enforces order and roles; this adds the rule that a
    request ends on the user's turn, unless the caller continues an assistant turn.
    """
    if not messages:
        raise ValidationError(
            "messages is empty; send at least one user message",
            field="messages",
            value=[],
            allowed="a non-empty list of messages ending with a user turn",
        )
    last = messages[-1]
    if last.role == "user":
        return
    if last.role == "assistant" and continue_final:
        return
    raise ValidationError(
        f"messages[{len(messages) - 1}] is a {last.role} turn; the last message must be the user's",
        field=f"messages[{len(messages) - 1}].role",
        value=last.role,
        allowed="'user' as the last role",
        fix=Fix("pass continue_final=True to continue that assistant turn", cli="")
        if last.role == "assistant"
        else None,
    )


def check_device(device: str) -> str:
    """A local model's device name, "cpu", "cuda" or "cuda:N", checked without importing
    torch (whether a GPU is there is known only when the model loads)."""
    name = device.strip()
    kind, _, index = name.partition(":")
    if name != "cpu" and not (kind == "cuda" and (not index or index.isdigit())):
        raise ValidationError.out_of_range("device", device, "cpu, cuda or cuda:N")
    return name
