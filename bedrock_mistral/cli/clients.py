"""Settings -> :class:`~bedrock_mistral.client.MistralClient`, the only way commands get one.

Plugin backends are named ``package.module:attribute``; the attribute is a backend
object, or a class or function that makes one when called without arguments. The module
is looked up on ``sys.path`` and then in the current directory.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from bedrock_mistral.cli.config import BUILTIN_BACKENDS, Settings
from bedrock_mistral.errors import ConfigurationError

if TYPE_CHECKING:
    from bedrock_mistral.backends.base import Backend
    from bedrock_mistral.client import MistralClient

__all__ = ["load_plugin_backend", "make_client"]


def load_plugin_backend(spec: str) -> Backend:
    from bedrock_mistral.backends.base import Backend

    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # like uvicorn's "module:app": a plugin next to you works
    try:
        target: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigurationError(
            f"cannot load backend {spec!r} ({err}); "
            "check the module is importable and the name is right"
        ) from err
    # A class passes the Protocol's attribute check, so test for it first.
    make = isinstance(target, type) or (callable(target) and not isinstance(target, Backend))
    backend = target() if make else target
    if not isinstance(backend, Backend):
        raise ConfigurationError(
            f"backend {spec!r} is not a backend: "
            "it needs name, complete(request) and stream(request)"
        )
    return backend


def make_client(settings: Settings) -> MistralClient:
    """A client for the settings' model and backend (Bedrock options only for Bedrock)."""
    from bedrock_mistral.client import MistralClient

    backend: str | Backend = settings.backend
    if settings.backend not in BUILTIN_BACKENDS:
        backend = load_plugin_backend(settings.backend)
    return MistralClient(
        model=settings.model,
        backend=backend,
        region=settings.region,
        profile=settings.profile,
        endpoint_url=settings.endpoint_url,
        local_model=settings.local_model,
    )
