"""Fault injection: a typed, seeded plan of which request fails and how.

A :class:`FaultPlan` hands out one decision per model request: first the scripted
entries in order (``None`` = serve normally), then a draw from the per-kind rates using a
seeded RNG, so a run with the same seed fails the same requests.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from bedrock_mistral.errors import ValidationError
from bedrock_mistral.server.errors import BedrockError, ErrorCode

__all__ = ["FAULT_KINDS", "HTTP_FAULTS", "FaultKind", "FaultPlan", "fault_error", "parse_fault"]

FaultKind = Literal[
    "throttle",
    "internal",
    "unavailable",
    "timeout",
    "not_ready",
    "denied",
    "not_found",
    "quota",
    "model_error",
    "validation",
    "midstream",
    "drop",
    "stall",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
# Kinds answered as an HTTP error before any generation happens.
HTTP_FAULTS: frozenset[FaultKind] = frozenset(FAULT_KINDS) - {"midstream", "drop", "stall"}


_FAULT_ERRORS: dict[str, tuple[ErrorCode, str]] = {
    "throttle": ("ThrottlingException", "Too many requests, please wait before trying again."),
    "internal": (
        "InternalServerException",
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    "unavailable": ("ServiceUnavailableException", "Bedrock is unable to process your request."),
    "timeout": (
        "ModelTimeoutException",
        "Model has timed out in processing the request. Try your request again.",
    ),
    "not_ready": (
        "ModelNotReadyException",
        "Model is not ready to serve inference requests. The AWS SDK will automatically retry "
        "the operation up to 5 times.",
    ),
    "denied": (
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    "not_found": (
        "ResourceNotFoundException",
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    "quota": (
        "ServiceQuotaExceededException",
        "Your request exceeds the service quota for your account. You can view your quotas at "
        "https://console.aws.amazon.com/servicequotas/.",
    ),
    "model_error": (
        "ModelErrorException",
        "Received server error (500) from model. See the model logs for more details.",
    ),
    "validation": (
        "ValidationException",
        "Malformed input request, please reformat your input and try again.",
    ),
}


def fault_error(kind: FaultKind, model_id: str) -> BedrockError:
    """The error an HTTP-level fault answers with, worded as Bedrock words it."""
    code, message = _FAULT_ERRORS[kind]
    extra = None
    if kind == "model_error":
        arn = f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}"
        extra = {"originalStatusCode": 500, "resourceName": arn}
    return BedrockError(code, message, extra=extra)


def midstream_error() -> BedrockError:
    return BedrockError(
        "ModelStreamErrorException",
        "The model failed while streaming its response. Retry your request.",
        extra={"originalStatusCode": 500, "originalMessage": "injected midstream fault"},
    )


def parse_fault(text: str) -> tuple[FaultKind, float]:
    """``"throttle=0.2"`` -> ``("throttle", 0.2)``; the CLI's ``--fault`` syntax."""
    kind, sep, rate_text = text.partition("=")
    kind = kind.strip()
    try:
        rate = float(rate_text) if sep else float("nan")
    except ValueError:
        rate = float("nan")
    if not 0.0 <= rate <= 1.0:
        raise ValidationError.out_of_range(
            "fault", text, "KIND=RATE with RATE from 0 to 1, e.g. throttle=0.2"
        )
    return _checked_kind(kind), rate


def _checked_kind(kind: object) -> FaultKind:
    if kind not in FAULT_KINDS:
        raise ValidationError.out_of_range("fault kind", kind, f"one of {', '.join(FAULT_KINDS)}")
    return kind


class FaultPlan:
    """Which requests fail: a script consumed in order, then seeded random rates.

    >>> plan = FaultPlan(script=["throttle", None], rates={"internal": 0.0}, seed=1)
    >>> plan.next(), plan.next(), plan.next()
    ('throttle', None, None)
    """

    def __init__(
        self,
        *,
        script: Sequence[str | None] = (),
        rates: Mapping[str, float] | None = None,
        seed: int | None = None,
    ) -> None:
        self._script: list[FaultKind | None] = [
            None if item is None else _checked_kind(item) for item in script
        ]
        self._rates: list[tuple[FaultKind, float]] = []
        for kind, rate in sorted((rates or {}).items()):
            if (
                isinstance(rate, bool)
                or not isinstance(rate, int | float)
                or not 0.0 <= rate <= 1.0
            ):
                raise ValidationError.out_of_range(f"faults[{kind!r}]", rate, "a rate from 0 to 1")
            self._rates.append((_checked_kind(kind), float(rate)))
        total = sum(rate for _, rate in self._rates)
        if total > 1.0 + 1e-9:
            raise ValidationError.out_of_range(
                "faults", dict(rates or {}), f"rates that sum to at most 1 (got {total:g})"
            )
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def next(self) -> FaultKind | None:
        """The fault for the next request (``None``: serve it normally)."""
        with self._lock:
            if self._script:
                return self._script.pop(0)
            if not self._rates:
                return None
            draw = self._rng.random()
            for kind, rate in self._rates:
                if draw < rate:
                    return kind
                draw -= rate
            return None
