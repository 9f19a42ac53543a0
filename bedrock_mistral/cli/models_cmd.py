"""``bedrock-mistral models``: the registry as a table, with account access when known."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from bedrock_mistral.cli.options import current_env, settings_from

if TYPE_CHECKING:
    from bedrock_mistral.cli.access import AccessReport
    from bedrock_mistral.models import ModelSpec

__all__ = ["model_rows", "models"]

_ACCESS_STYLE = {"enabled": "green", "offered": "yellow", "not in region": "dim"}


def _tokens(count: int) -> str:
    return f"{count // 1000}K" if count % 1000 == 0 or count >= 10_000 else f"{count:,}"


def _access(spec: ModelSpec, report: AccessReport | None) -> str | None:
    if report is None or not report.checked:
        return None
    status = report.status.get(spec.model_id)
    if status is None:
        return "not in region"
    lifecycle = report.lifecycle.get(spec.model_id, "")
    return f"{status} (legacy)" if lifecycle == "LEGACY" else status


def model_rows(report: AccessReport | None = None) -> list[dict[str, Any]]:
    from bedrock_mistral.models import MODELS

    rows = []
    for spec in MODELS:
        rows.append(
            {
                "alias": spec.alias,
                "model_id": spec.model_id,
                "name": spec.name,
                "context_window": spec.context_window,
                "max_output_tokens": spec.max_output_tokens,
                "input_price_per_1m": None
                if spec.input_price_per_1k is None
                else spec.input_price_per_1k * 1000,
                "output_price_per_1m": None
                if spec.output_price_per_1k is None
                else spec.output_price_per_1k * 1000,
                "format": spec.dialect,
                "profile_only": spec.profile_only,
                "access": _access(spec, report),
            }
        )
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--check/--no-check",
    default=True,
    help="Ask the Bedrock control plane which models are enabled.",
)
@click.option(
    "--region", default=None, help="AWS region to check (default: AWS_REGION, config, profile)."
)
@click.option("--profile", default=None, help="AWS profile (default: AWS_PROFILE).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option(
    "-b",
    "--backend",
    default=None,
    help="With openai|ollama|vllm|llamacpp: list what that engine serves instead.",
)
@click.option("--base-url", default=None, help="The engine's URL (e.g. http://localhost:8000/v1).")
@click.option("--api-key", default=None, help="The engine's key.")
def models(
    check: bool,
    region: str | None,
    profile: str | None,
    as_json: bool,
    backend: str | None,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Every Mistral model on Bedrock: alias, id, limits, price, format and access.

    Prices are on-demand list prices in USD per million tokens (us-east-1); "format"
    is the InvokeModel body: text ([INST] prompt) or chat (messages). With AWS
    credentials, the access column says whether each model is enabled for your
    account in the region (Bedrock ListFoundationModels / GetFoundationModelAvailability).
    """
    env = current_env()
    from bedrock_mistral.backends.openai_presets import is_engine_backend

    settings = settings_from(
        region=region, profile=profile, backend=backend, base_url=base_url, api_key=api_key
    )
    if is_engine_backend(settings.backend):
        _engine_models(env, settings, as_json=as_json)
        return
    report = None
    if check:
        from bedrock_mistral.cli.access import check_access

        report = check_access(settings)
    rows = model_rows(report)
    if as_json:
        env.write(json.dumps(rows, indent=2) + "\n")
    else:
        with_access = any(row["access"] for row in rows)
        env.print(_table(rows, with_access=with_access, width=env.out.width))
        env.note("$ per 1M tokens in/out (on-demand, us-east-1) · * = via an inference profile")
    if report is not None and not report.checked:
        env.note(f"access not checked: {report.note} (see `bedrock-mistral doctor`)")
    elif report is not None and report.note:
        env.note(report.note)


def _engine_models(env: Any, settings: Any, *, as_json: bool) -> None:
    """The engine's own list (GET /v1/models), with the registry alias each name stands for."""
    from rich.table import Table

    from bedrock_mistral.backends.openai_presets import PRESETS
    from bedrock_mistral.cli.clients import make_client
    from bedrock_mistral.models import MODELS

    with make_client(settings) as client:
        backend: Any = client.backend
        served = backend.list_models()
    preset = PRESETS[settings.backend.strip().lower()]
    alias_of = {preset.engine_name(spec): spec.alias for spec in MODELS}
    rows = [{"id": name, "alias": alias_of.get(name)} for name in served]
    if as_json:
        env.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    table.add_column("model (use with -m)", style="bold cyan", overflow="fold")
    table.add_column("registry alias")
    for row in rows:
        table.add_row(row["id"], row["alias"] or "-")
    env.print(table)
    env.note(f"{len(rows)} model(s) served at {backend.base_url}")


def _table(rows: list[dict[str, Any]], *, with_access: bool, width: int) -> Any:
    """The registry table; under 100 columns it drops the format column and tightens up,
    so the ids (which people copy) stay on one line in an 80-column terminal."""
    from rich.table import Table
    from rich.text import Text

    wide = width >= 100 or with_access
    table = Table(box=None, padding=(0, 2 if wide else 1, 0, 0), header_style="bold")
    table.add_column("alias", style="bold cyan", no_wrap=True)
    table.add_column("Bedrock model id", overflow="fold")
    table.add_column("context" if wide else "ctx", justify="right", no_wrap=True)
    table.add_column("max out" if wide else "out", justify="right", no_wrap=True)
    table.add_column("$ in/out", justify="right", no_wrap=True)
    if wide:
        table.add_column("format")
    if with_access:
        table.add_column("access")
    for row in rows:
        price = f"{_price_m(row['input_price_per_1m'])}/{_price_m(row['output_price_per_1m'])}"
        cells: list[Any] = [
            row["alias"],
            row["model_id"] + (" *" if row["profile_only"] else ""),
            _tokens(row["context_window"]),
            _tokens(row["max_output_tokens"]),
            price,
        ]
        if wide:
            cells.append(row["format"])
        if with_access:
            access = row["access"] or ""
            cells.append(Text(access, style=_ACCESS_STYLE.get(access, "red" if access else "")))
        table.add_row(*cells)
    return table


def _price_m(per_1m: float | None) -> str:
    if per_1m is None:
        return "?"
    return (
        f"{per_1m:.3f}".rstrip("0").rstrip(".")
        if per_1m < 1
        else f"{per_1m:.2f}".rstrip("0").rstrip(".")
    )
