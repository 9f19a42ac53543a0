"""``bedrock-mistral backends``: every backend that can be named, where it comes from, and
whether it runs here. The listing is :func:`bedrock_mistral.backends.factory.list_backends`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from bedrock_mistral.cli.options import current_env

if TYPE_CHECKING:
    from bedrock_mistral.backends.factory import BackendInfo

__all__ = ["backends"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def backends(as_json: bool) -> None:
    """The backends you can pass to --backend: built-ins and installed plugins.

    \b
    A plugin registers under the entry-point group "bedrock_mistral.backends" in its
    pyproject.toml, then `pip install` makes it appear here:
      [project.entry-points."bedrock_mistral.backends"]
      mine = "my_package.backend:MyBackend"
    Any backend can also be named as package.module:attribute without registering it.
    """
    from bedrock_mistral.backends.factory import list_backends

    env = current_env()
    infos = list_backends()
    if as_json:
        rows = [{**asdict(info), "usable": info.usable} for info in infos]
        env.write(json.dumps(rows, indent=2) + "\n")
        return
    env.print(_table(infos))
    env.note("use one with --backend NAME (or `bedrock-mistral config set backend NAME`)")


def _table(infos: list[BackendInfo]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("status", overflow="fold")
    for info in infos:
        status = (
            Text("ready", style="green")
            if info.usable
            else Text(info.problem or "", style="yellow")
        )
        table.add_row(info.name, f"{info.source}: {info.target}", status)
    return table
