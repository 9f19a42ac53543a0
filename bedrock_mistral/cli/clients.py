"""Settings -> :class:`~bedrock_mistral.client.MistralClient`, the only way commands get one.

The backend setting is whatever :func:`~bedrock_mistral.backends.factory.create_backend`
accepts: a built-in name, a name registered as an entry point, or
``package.module:attribute``; the client hands it to that one factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bedrock_mistral.cli.config import Settings

if TYPE_CHECKING:
    from bedrock_mistral.client import MistralClient

__all__ = ["make_client"]


def make_client(settings: Settings, **backend_options: Any) -> MistralClient:
    """A client for the settings' model and backend (Bedrock options only for Bedrock)."""
    from bedrock_mistral.client import MistralClient

    return MistralClient(
        model=settings.model,
        backend=settings.backend,
        region=settings.region,
        profile=settings.profile,
        endpoint_url=settings.endpoint_url,
        local_model=settings.local_model,
        quantize=settings.quantize,
        device=settings.device,
        base_url=settings.base_url,
        api_key=settings.api_key,
        prompt_mode=settings.prompt_mode,
        **backend_options,
    )
