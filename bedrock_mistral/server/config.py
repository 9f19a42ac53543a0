"""The server's knobs, checked once when the server is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bedrock_mistral.errors import ValidationError
from bedrock_mistral.models import ModelSpec
from bedrock_mistral.retry import RetryPolicy

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_WORKERS", "ServerConfig"]

DEFAULT_MAX_BODY_BYTES = 25_000_000  # InvokeModel's modeled body limit (ref section 5.1)
DEFAULT_WORKERS = 16


@dataclass(frozen=True)
class ServerConfig:
    """How the server behaves; see :func:`bedrock_mistral.server.serve_in_background`.

    ``model_ids`` None means every Mistral id in the registry; an entry may be a
    :class:`ModelSpec` for a model the registry does not list. ``workers`` None means
    the backend's ``max_parallel`` attribute if it has one, else ``DEFAULT_WORKERS``.
    ``api_key`` set: every request needs ``Authorization: Bearer <api_key>``
    (:mod:`bedrock_mistral.server.auth`). ``retry``: the policy the OpenAI face calls the
    backend under (None: the SDK's default, as ``MistralClient`` uses).
    """

    model_ids: tuple[str | ModelSpec, ...] | None = None
    max_concurrency: int | None = None
    latency_ms: float = 0.0
    faults: Mapping[str, float] = field(default_factory=dict)
    fault_script: tuple[str | None, ...] = ()
    seed: int | None = None
    midstream_after: int = 2
    stall_seconds: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    workers: int | None = None
    api_key: str | None = field(default=None, repr=False)
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        _positive("max_concurrency", self.max_concurrency)
        _positive("workers", self.workers)
        _positive("max_body_bytes", self.max_body_bytes)
        if self.latency_ms < 0:
            raise ValidationError.out_of_range(
                "latency_ms", self.latency_ms, "a number of milliseconds >= 0"
            )
        if self.stall_seconds < 0:
            raise ValidationError.out_of_range(
                "stall_seconds", self.stall_seconds, "a number of seconds >= 0"
            )
        if self.midstream_after < 0:
            raise ValidationError.out_of_range(
                "midstream_after", self.midstream_after, "an integer >= 0"
            )


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError.out_of_range(name, value, "an integer >= 1 (or None for no limit)")
