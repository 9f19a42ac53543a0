"""``bedrock-mistral serve``: the Bedrock runtime protocol and the OpenAI API on a local port.

Imports of the server stack (uvicorn, the backends) happen inside the command,
so ``bedrock-mistral --help`` stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

import click

__all__ = ["serve"]

_FAULT_KINDS = (
    "throttle, internal, unavailable, timeout, not_ready, denied, not_found, quota, "
    "model_error, validation, midstream, drop, stall"
)


class FaultParam(click.ParamType[tuple[str, float], str]):
    """``KIND=RATE`` -> ``(kind, rate)``."""

    name = "KIND=RATE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        from bedrock_mistral.errors import ValidationError
        from bedrock_mistral.server.faults import parse_fault

        try:
            return parse_fault(str(value))
        except ValidationError as err:
            kinds = "" if _FAULT_KINDS in str(err) else f" (kinds: {_FAULT_KINDS})"
            self.fail(f"{value!r}: {err}{kinds}", param, ctx)


@click.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (loopback by default).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port; 0 picks a free one.",
)
@click.option(
    "--backend",
    default=None,
    help="What answers: 'local' (default: the bundled model, or --local-model), 'echo' "
    "(repeats the last user turn; for tests), or any backend `bedrock-mistral backends` "
    "lists (a plugin's name, or package.module:attribute).",
)
@click.option(
    "--local-model",
    type=click.Path(),
    envvar="BEDROCK_MISTRAL_LOCAL_MODEL",
    help="Model for --backend local: a folder, a GGUF file, or ollama:NAME[:TAG].",
)
@click.option(
    "--device",
    default=None,
    metavar="cpu|cuda[:N]",
    envvar="BEDROCK_MISTRAL_LOCAL_DEVICE",
    help="Where --backend local runs (default: cuda when available, else cpu).",
)
@click.option(
    "--model-id",
    "model_ids",
    multiple=True,
    help="A Bedrock model id to answer (repeatable; default: every Mistral id).",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    help="Beyond N requests in flight, answer ThrottlingException.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0,
    help="Extra latency added to every request.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    type=FaultParam(),
    help=f"Inject a fault at a rate, e.g. throttle=0.1 (repeatable). Kinds: {_FAULT_KINDS}.",
)
@click.option("--seed", type=int, help="Seed for the fault draws, for repeatable runs.")
@click.option(
    "--api-key",
    envvar="BEDROCK_MISTRAL_SERVE_API_KEY",
    help="Require KEY on every request: OpenAI clients send it as their api_key (a bearer "
    "token), Bedrock clients as AWS_ACCESS_KEY_ID. Needed to listen beyond loopback. "
    "[env: BEDROCK_MISTRAL_SERVE_API_KEY]",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Listen on a non-loopback --host without an API key (only on a network that is "
    "already private).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Log level; info logs one line per request.",
)
def serve(
    host: str,
    port: int,
    backend: str | None,
    local_model: str | None,
    device: str | None,
    model_ids: tuple[str, ...],
    max_concurrency: int | None,
    latency_ms: float,
    faults: tuple[tuple[str, float], ...],
    seed: int | None,
    api_key: str | None,
    insecure_no_auth: bool,
    log_level: str,
) -> None:
    """Serve Mistral models over the Bedrock runtime protocol and the OpenAI API, locally.

    \b
    bedrock-mistral serve --backend echo --port 8000
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:8000 python my_bedrock_app.py
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused python my_openai_app.py
    """
    from bedrock_mistral.server.auth import check_exposure

    # Before the backend is built or anything binds: a refusal costs nothing.
    check_exposure(host, api_key, insecure_no_auth=insecure_no_auth)
    from bedrock_mistral.server.app import BedrockApp
    from bedrock_mistral.server.config import ServerConfig
    from bedrock_mistral.server.runner import run_server
    from bedrock_mistral.server.stats import ServerStats

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    totals: dict[str, float] = {}
    for kind, rate in faults:
        totals[kind] = rate
    config = ServerConfig(
        model_ids=model_ids or None,
        max_concurrency=max_concurrency,
        latency_ms=latency_ms,
        faults=totals,
        seed=seed,
        api_key=api_key or None,
    )
    chosen = _backend(backend, local_model, device)
    app = BedrockApp(chosen, config, stats=ServerStats(max_records=10_000))
    run_server(
        app,
        host=host,
        port=port,
        log_level=log_level,
        on_ready=lambda url: _announce(url, chosen.name, keyed=bool(api_key)),
        insecure_no_auth=insecure_no_auth,
    )


def _backend(choice: str | None, local_model: str | None, device: str | None = None) -> Any:
    """The explicit choice, or 'local' falling back to echo when it is not installed."""
    from bedrock_mistral.backends.factory import create_backend
    from bedrock_mistral.errors import BackendUnavailableError

    options = {"model_path": local_model, "device": device}
    if choice is not None or device is not None:  # a device asks for the local model itself
        return _warm(create_backend(choice or "local", options))
    try:
        return _warm(create_backend("local", options))
    except BackendUnavailableError as err:
        click.echo(f"warning: {err}; serving the echo backend instead", err=True)
        return create_backend("echo")


def _warm(backend: Any) -> Any:
    """Load a lazily loaded model now, so a broken install fails here, not on request one."""
    if isinstance(getattr(type(backend), "model", None), property):
        backend.model  # noqa: B018 - the property loads the model
    return backend


def _announce(url: str, backend_name: str, *, keyed: bool = False) -> None:
    click.echo(f"Bedrock runtime ({backend_name} backend) listening on {url}")
    click.echo("Point any Bedrock client at it, e.g.:")
    click.echo(f"  export AWS_ENDPOINT_URL_BEDROCK_RUNTIME={url}")
    click.echo(
        "  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1"
    )
    if keyed:
        click.echo("  (with --api-key: AWS_ACCESS_KEY_ID=<the key>)")
    click.echo(f"OpenAI API: base_url={url}/v1 (chat/completions, completions, models)")
    click.echo("Press Ctrl-C to stop.")
