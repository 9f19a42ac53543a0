"""``bedrock-mistral config``: show the effective settings and edit config.toml."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from bedrock_mistral.cli.config import PARAM_KEYS, SECRET_KEYS, SETTING_KEYS
from bedrock_mistral.cli.options import current_env

if TYPE_CHECKING:
    from bedrock_mistral.cli.config import ConfigFile

__all__ = ["config"]

_ALL_KEYS = [*SETTING_KEYS, *PARAM_KEYS]


def _key(raw: str) -> str:
    key = raw.removeprefix("params.").replace("-", "_")
    if raw.startswith("params."):
        return key  # a parameter: `set` refuses an unknown one with the SDK's message
    if key not in _ALL_KEYS:
        raise click.BadParameter(
            f"unknown key {raw!r}; use one of {', '.join(_ALL_KEYS)}", param_hint="KEY"
        )
    return key


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def config() -> None:
    """Show and change settings.

    \b
    Precedence: flags, then environment, then the config file, then defaults.
    Keys: model, backend, region, profile, endpoint_url, local_model, base_url,
    api_key, prompt_mode, and the
    generation parameters max_tokens, temperature, top_p, top_k, stop.
      bedrock-mistral config set model mixtral-8x7b
      bedrock-mistral config set temperature 0.3
    """


def _load_reporting() -> ConfigFile:
    """The config file, with the entries it ignores reported (they are kept on save)."""
    from bedrock_mistral.cli.config import load_config

    stored = load_config()
    for warning in stored.warnings:
        current_env().warn(f"{warning} (kept as is)")
    return stored


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def show(as_json: bool) -> None:
    """The effective settings and where each one comes from."""
    from rich.table import Table

    from bedrock_mistral.cli.config import config_path
    from bedrock_mistral.cli.options import settings_from

    env = current_env()
    settings = settings_from()
    rows: list[tuple[str, Any, str]] = [
        (key, _masked(key, getattr(settings, key)), settings.sources.get(key, "unset"))
        for key in SETTING_KEYS
    ]
    rows += [
        (key, settings.params.get(key), settings.sources.get(f"params.{key}", "model default"))
        for key in PARAM_KEYS
    ]
    if as_json:
        payload = {key: {"value": value, "source": source} for key, value, source in rows}
        env.write(json.dumps({"path": str(config_path()), "settings": payload}, indent=2) + "\n")
        return
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    for column in ("key", "value", "from"):
        table.add_column(column)
    for key, value, source in rows:
        shown = (
            "-" if value is None else (", ".join(value) if isinstance(value, list) else str(value))
        )
        table.add_row(key, shown, source, style="dim" if value is None else None)
    env.print(table)
    env.note(f"config file: {config_path()}")


def _masked(key: str, value: Any) -> Any:
    """A secret is shown by its last four characters only."""
    if key not in SECRET_KEYS or not value:
        return value
    return "****" + str(value)[-4:]


@config.command("set")
@click.argument("key")
@click.argument("value")
def set_value(key: str, value: str) -> None:
    """Store KEY = VALUE in the config file."""
    from bedrock_mistral.cli.config import parse_param, parse_setting, save_config

    is_param = key.startswith("params.")
    key = _key(key)
    stored = _load_reporting()
    if is_param or key in PARAM_KEYS:
        stored.params[key] = parse_param(key, value)
    else:
        stored.settings[key] = parse_setting(key, value)
    save_config(stored)
    shown = _masked(key, stored.params.get(key, stored.settings.get(key)))
    current_env().note(f"{key} = {shown!r} ({stored.path})", style="")


@config.command("unset")
@click.argument("key")
def unset_value(key: str) -> None:
    """Remove KEY from the config file (the default applies again)."""
    from bedrock_mistral.cli.config import save_config

    key = _key(key)
    stored = _load_reporting()
    stored.params.pop(key, None)
    stored.settings.pop(key, None)
    save_config(stored)
    current_env().note(f"{key} unset ({stored.path})", style="")


@config.command("path")
def path() -> None:
    """Print the config file's path (it may not exist yet)."""
    from bedrock_mistral.cli.config import config_path

    current_env().write(f"{config_path()}\n")
