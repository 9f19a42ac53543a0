"""Option bundles shared by the commands that talk to a model, and their resolution.

``@client_options`` adds ``--model``, ``--backend``, ``--region``, ``--profile``,
``--endpoint-url``, ``--local-model``, ``--base-url``, ``--api-key``, ``--prompt-mode``
and ``-o PARAM=VALUE``; :func:`settings_from`
merges them with the environment and the config file (flags win).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from bedrock_mistral.cli.config import (
    PARAM_KEYS,
    Settings,
    load_config,
    parse_param,
    resolve_settings,
)

__all__ = ["ParamAssignment", "client_options", "current_env", "settings_from"]

F = TypeVar("F", bound=Callable[..., Any])


class ParamAssignment(click.ParamType):  # type: ignore[type-arg]
    """``PARAM=VALUE`` for a generation parameter, typed and checked by the SDK's own rules."""

    name = "PARAM=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            self.fail(f"{value!r} is not PARAM=VALUE (e.g. temperature=0.2)", param, ctx)
        from bedrock_mistral.errors import ValidationError

        try:
            return key, parse_param(key, raw)
        except ValidationError as err:
            self.fail(str(err), param, ctx)


def client_options(func: F) -> F:
    """Decorate a command with the options that choose and tune the model."""
    options = [
        click.option(
            "-m",
            "--model",
            default=None,
            help="Model alias or Bedrock model id (see `models`); with an engine, its model name.",
        ),
        click.option(
            "-b",
            "--backend",
            default=None,
            metavar="bedrock|local|echo|openai|ollama|vllm|llamacpp",
            help="Where replies come from: Amazon Bedrock, the offline local model, "
            "echo (for tests), or an engine speaking the OpenAI API.",
        ),
        click.option(
            "--region", default=None, help="AWS region (default: AWS_REGION, config, AWS profile)."
        ),
        click.option("--profile", default=None, help="AWS profile name (default: AWS_PROFILE)."),
        click.option(
            "--endpoint-url",
            default=None,
            help="Bedrock runtime endpoint, e.g. a local `bedrock-mistral serve` URL.",
        ),
        click.option(
            "--local-model",
            default=None,
            type=click.Path(),
            help="Local model: a weights folder, a GGUF file, or ollama:NAME[:TAG] "
            "(default: the bundled model).",
        ),
        click.option(
            "--quantize",
            type=click.Choice(["int8", "int4"]),
            default=None,
            help="Quantise the local model's weights as it loads (int8: near-lossless; "
            "int4: smallest and fastest).",
        ),
        click.option(
            "--device",
            default=None,
            metavar="cpu|cuda[:N]",
            help="Where the local model runs (default: cuda when available, else cpu).",
        ),
        click.option(
            "--base-url",
            default=None,
            help="URL of an OpenAI-compatible engine for --backend openai|ollama|vllm|llamacpp "
            "(e.g. http://localhost:8000/v1).",
        ),
        click.option(
            "--api-key",
            default=None,
            help="That engine's key (default: BEDROCK_MISTRAL_OPENAI_API_KEY).",
        ),
        click.option(
            "--prompt-mode",
            type=click.Choice(["chat", "raw"]),
            default=None,
            help="chat: the engine applies its template; raw: our [INST] prompt, "
            "as Bedrock gets it.",
        ),
        click.option(
            "-o",
            "--option",
            "options",
            multiple=True,
            type=ParamAssignment(),
            help=f"Generation parameter, repeatable: {', '.join(PARAM_KEYS)}.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def current_env() -> Any:
    """The :class:`~bedrock_mistral.cli.env.Env` of the running command."""
    from bedrock_mistral.cli.env import Env

    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Env):
        root.obj = Env()
    return root.obj


def settings_from(
    *,
    model: str | None = None,
    backend: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    local_model: str | None = None,
    quantize: str | None = None,
    device: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    prompt_mode: str | None = None,
    options: Iterable[tuple[str, Any]] = (),
) -> Settings:
    """Resolve the effective settings and report ignored config keys on stderr."""
    config = load_config()
    env = current_env()
    for warning in config.warnings:
        env.warn(warning)
    flags: dict[str, Any] = {
        "model": model,
        "backend": backend,
        "region": region,
        "profile": profile,
        "endpoint_url": endpoint_url,
        "local_model": local_model,
        "quantize": quantize,
        "device": device,
        "base_url": base_url,
        "api_key": api_key,
        "prompt_mode": prompt_mode,
        "params": dict(options),
    }
    return resolve_settings(flags, config=config)
