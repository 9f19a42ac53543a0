"""Checks that run before anything is sent, against the chosen model's limits."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bedrock_mistral.errors import ValidationError
from bedrock_mistral.models import MAX_STOP_SEQUENCES, TOP_K_RANGE, UNIT_RANGE, ModelSpec
from bedrock_mistral.types import GenerationParams, Message

__all__ = ["check_conversation", "resolve_params"]


def _check_unit(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValidationError.out_of_range(name, value, "a number from 0 to 1")
    low, high = UNIT_RANGE
    if not low <= value <= high:
        raise ValidationError.out_of_range(name, value, f"a number from {low:g} to {high:g}")


def _check_int(name: str, value: int | None, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError.out_of_range(name, value, f"an integer from {low} to {high}")


def _check_stop(stop: Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if len(stop) > MAX_STOP_SEQUENCES:
        raise ValidationError.out_of_range(
            "stop", list(stop), f"at most {MAX_STOP_SEQUENCES} stop sequences (got {len(stop)})"
        )
    for index, item in enumerate(stop):
        if not isinstance(item, str) or not item:
            raise ValidationError.out_of_range(f"stop[{index}]", item, "a non-empty string")
    return tuple(stop)


def resolve_params(spec: ModelSpec, params: GenerationParams) -> GenerationParams:
    """Check ``params`` against ``spec`` and fill what is unset with the model's defaults."""
    _check_int("max_tokens", params.max_tokens, 1, spec.max_output_tokens)
    _check_unit("temperature", params.temperature)
    _check_unit("top_p", params.top_p)
    low_k, high_k = TOP_K_RANGE
    _check_int("top_k", params.top_k, low_k, high_k)
    if params.top_k is not None and not spec.supports_top_k:
        raise ValidationError.out_of_range(
            "top_k", params.top_k, f"not supported by {spec.model_id} (its chat body has no top_k)"
        )
    stop = _check_stop(params.stop)
    if stop and not spec.supports_stop:
        raise ValidationError.out_of_range(
            "stop",
            list(stop),
            f"not supported by {spec.model_id} (its chat body has no stop field)",
        )
    return GenerationParams(
        max_tokens=params.max_tokens if params.max_tokens is not None else spec.default_max_tokens,
        temperature=params.temperature
        if params.temperature is not None
        else spec.default_temperature,
        top_p=params.top_p if params.top_p is not None else spec.default_top_p,
        top_k=params.top_k if params.top_k is not None else spec.default_top_k,
        stop=list(stop),
    )


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
    hint = (
        " (pass continue_final=True to continue that assistant turn)"
        if last.role == "assistant"
        else ""
    )
    raise ValidationError(
        f"messages[{len(messages) - 1}] is a {last.role} turn; the last message must be the "
        f"user's{hint}",
        field=f"messages[{len(messages) - 1}].role",
        value=last.role,
        allowed="'user' as the last role",
    )
