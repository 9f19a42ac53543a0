"""Backends by name, imported only when chosen (boto3 for "bedrock", torch for "local").

Each built-in backend registers a loader here the same way an outside one could, with
the constructor options it understands. Options that belong to another backend are
ignored (logged), so switching backend stays a one-argument change; options no backend
knows are an error.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.errors import BackendUnavailableError, ConfigurationError, install_extra

__all__ = ["BACKENDS", "BackendEntry", "create_backend", "register_backend"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendEntry:
    """How to build one named backend: a loader and the options it accepts."""

    load: Callable[..., Backend]
    options: frozenset[str]
    extra: str | None = None  # the pip extra that provides it, for the error message


def _bedrock(**options: Any) -> Backend:
    from bedrock_mistral.backends.bedrock import BedrockBackend

    return BedrockBackend(**options)


def _by_path(module: str, name: str) -> Callable[..., Backend]:
    def load(**options: Any) -> Backend:
        backend: Backend = getattr(importlib.import_module(module), name)(**options)
        return backend

    return load


_local = _by_path("bedrock_mistral.backends.local", "LocalBackend")
_echo = _by_path("bedrock_mistral.backends.echo", "EchoBackend")


BACKENDS: dict[str, BackendEntry] = {
    "bedrock": BackendEntry(
        _bedrock,
        frozenset(
            {
                "region",
                "profile",
                "endpoint_url",
                "read_timeout",
                "connect_timeout",
                "stream_idle_timeout",
                "max_pool_connections",
                "session",
            }
        ),
    ),
    "local": BackendEntry(_local, frozenset({"model_path", "dtype"}), extra="local"),
    "echo": BackendEntry(_echo, frozenset()),
}


def register_backend(name: str, entry: BackendEntry) -> None:
    """Make ``MistralClient(backend=name)`` build ``entry``."""
    BACKENDS[name] = entry


def create_backend(name: str, options: Mapping[str, Any]) -> Backend:
    """Build backend ``name`` from the options that apply to it (``None`` values skipped)."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise ConfigurationError(
            f"backend={name!r} is not allowed: use one of {', '.join(sorted(BACKENDS))}, "
            "or pass a backend object"
        )
    known = frozenset().union(*(e.options for e in BACKENDS.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown backend option(s) {', '.join(unknown)}; backend {name!r} accepts "
            f"{', '.join(sorted(entry.options)) or 'no options'}"
        )
    chosen = {
        key: value for key, value in options.items() if key in entry.options and value is not None
    }
    ignored = sorted(
        key for key, value in options.items() if key not in entry.options and value is not None
    )
    if ignored:
        logger.debug("backend %r ignores option(s) %s", name, ", ".join(ignored))
    try:
        return entry.load(**chosen)
    except ImportError as err:
        raise BackendUnavailableError(
            f"backend {name!r} cannot be loaded here: {err}",
            fix=install_extra(entry.extra) if entry.extra else None,
        ) from err
