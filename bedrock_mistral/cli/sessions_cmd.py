"""``bedrock-mistral sessions``: list, show and delete saved chats."""

from __future__ import annotations

import json

import click

from bedrock_mistral.cli.options import current_env

__all__ = ["sessions"]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def sessions(ctx: click.Context) -> None:
    """List, show and delete saved chat sessions (without a subcommand: list).

    Sessions are JSON files in $XDG_DATA_HOME/bedrock-mistral/sessions
    (default ~/.local/share/bedrock-mistral/sessions), one per conversation.
    Resume one with `bedrock-mistral chat --session NAME` or `--continue`.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_sessions)


@sessions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_sessions(as_json: bool = False) -> None:
    """Saved sessions, most recent first."""
    from rich.table import Table

    from bedrock_mistral.cli.sessions import age, default_store

    env = current_env()
    infos = default_store().list()
    if as_json:
        rows = [
            {
                "name": i.name,
                "turns": i.turns,
                "model": i.model,
                "backend": i.backend,
                "updated": i.mtime,
                "preview": i.preview,
                "path": str(i.path),
                "error": i.error,
            }
            for i in infos
        ]
        env.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    if not infos:
        env.note("no saved sessions yet; `bedrock-mistral chat` starts one")
        return
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    for column in ("name", "turns", "model", "backend", "updated", "first message"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "first message")
    for info in infos:
        if info.error:
            table.add_row(
                info.name, "-", "", "", age(info.mtime), f"unreadable: {info.error}", style="red"
            )
        else:
            table.add_row(
                info.name, str(info.turns), info.model, info.backend, age(info.mtime), info.preview
            )
    env.print(table)


@sessions.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the session file as JSON.")
@click.option("--plain", is_flag=True, help="Raw text, no Markdown rendering.")
def show_session(name: str, as_json: bool, plain: bool) -> None:
    """Print the conversation saved as NAME."""
    from bedrock_mistral.cli.sessions import default_store
    from bedrock_mistral.cli.transcript import print_transcript

    env = current_env()
    session = default_store().load(name)
    if as_json:
        env.write(json.dumps(session.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return
    env.note(
        f"{session.name} · {session.turns} turns · {session.model} on {session.backend} · "
        f"{session.updated_at}"
    )
    print_transcript(env, session, plain=plain)


@sessions.command("delete")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def delete_session(names: tuple[str, ...]) -> None:
    """Delete the sessions NAME...."""
    from bedrock_mistral.cli.sessions import default_store

    env = current_env()
    store = default_store()
    for name in names:
        store.delete(name)
        env.note(f"deleted session {name}", style="")


@sessions.command("path")
def sessions_path() -> None:
    """Print the directory that holds the session files."""
    from bedrock_mistral.cli.sessions import default_store

    current_env().write(f"{default_store().directory}\n")
