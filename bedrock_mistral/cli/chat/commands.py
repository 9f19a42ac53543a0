"""The chat's slash commands: a table of name -> handler, each a few lines.

A handler parses its argument, calls one of the :class:`~.repl.Repl`'s verbs and reports
the result; it never assigns the Repl's state itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bedrock_mistral.cli.config import BUILTIN_BACKENDS, PARAM_KEYS, parse_param, parse_setting
from bedrock_mistral.cli.reply import format_cost

if TYPE_CHECKING:
    from bedrock_mistral.cli.chat.repl import Repl

__all__ = ["COMMANDS", "SlashCommand", "run_command"]


@dataclass(frozen=True)
class SlashCommand:
    name: str
    usage: str
    help: str
    run: Callable[[Repl, str], None]


def _help(repl: Repl, arg: str) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for command in COMMANDS.values():
        table.add_row(command.usage, command.help)
    table.add_row("//text", "send a message that starts with a slash")
    repl.env.print(table)
    repl.env.note(
        "Multi-line: paste, Esc-Enter for a new line, "
        'or open a block with """ and close it with """.'
    )
    repl.env.note(
        "Ctrl-C stops a reply (it is kept, marked as cut) or the wait for a model to load; "
        "Ctrl-C or Ctrl-D on an empty line quits."
    )


def _reset(repl: Repl, arg: str) -> None:
    old = repl.new_conversation()
    kept = f" (session {old.name} is kept)" if repl.store.exists(old.name) else ""
    repl.env.note(f"new conversation: session {repl.session.name}{kept}")


def _system(repl: Repl, arg: str) -> None:
    if not arg:
        current = repl.session.system
        repl.env.note(
            f"system prompt: {current}" if current else "no system prompt (/system TEXT sets one)"
        )
        return
    text = None if arg in ('""', "''") else arg
    repl.set_system(text)
    repl.env.note("system prompt cleared" if text is None else "system prompt set")


def _set(repl: Repl, arg: str) -> None:
    key, _, raw = arg.partition(" ")
    key = key.strip().replace("-", "_")
    if not key:
        repl.env.error(f"usage: /set PARAM VALUE, with PARAM one of {', '.join(PARAM_KEYS)}")
        return
    raw = raw.strip()
    # An unknown name gets the same message as from -o or the config file (parse_param's).
    unset = key in PARAM_KEYS and raw in ("", "default", "unset")
    value = None if unset else parse_param(key, raw)
    shown = repl.set_param(key, value)
    repl.env.note(f"{key} = {'model default' if shown is None else shown}")


def _params(repl: Repl, arg: str) -> None:
    from rich.table import Table

    effective = repl.effective_params()
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    for key in PARAM_KEYS:
        value = getattr(effective, key)
        source = "set" if key in repl.session.params else "model default"
        table.add_row(
            key,
            "-" if value in (None, [], ()) else str(value),
            source,
            style=None if source == "set" else "dim",
        )
    repl.env.print(table)


def _model(repl: Repl, arg: str) -> None:
    if not arg:
        repl.env.note(
            f"model: {repl.session.model} "
            "(/model NAME switches; `bedrock-mistral models` lists them)"
        )
        return
    spec = repl.switch_model(arg)
    repl.env.note(f"model: {spec.alias} ({spec.model_id}); the conversation continues")
    try:
        repl.effective_params()
    except ValueError as err:
        repl.env.warn(f"{err}; change it with /set")


def _backend(repl: Repl, arg: str) -> None:
    if not arg:
        repl.env.note(
            f"backend: {repl.session.backend} (/backend {'|'.join(BUILTIN_BACKENDS)} switches)"
        )
        return
    backend = parse_setting("backend", arg)
    repl.switch_backend(backend)
    repl.env.note(f"backend: {backend}; the conversation continues")


def _save(repl: Repl, arg: str) -> None:
    path = repl.save_as(arg or None)
    repl.env.note(f"saved session {repl.session.name} ({path})")


def _load(repl: Repl, arg: str) -> None:
    if not arg:
        _list_sessions(repl)
        return
    session = repl.load_session(arg)
    repl.env.note(
        f"loaded session {session.name}: {session.turns} turns, "
        f"{session.model} on {session.backend} (/history shows it)"
    )


def _list_sessions(repl: Repl) -> None:
    from bedrock_mistral.cli.sessions import age

    infos = repl.store.list()[:15]
    if not infos:
        repl.env.note("no saved sessions yet")
    for info in infos:
        repl.env.note(
            f"{info.name}  {info.turns} turns  {age(info.mtime)}  {info.preview}", style=""
        )
    repl.env.note("/load NAME opens one")


def _history(repl: Repl, arg: str) -> None:
    from bedrock_mistral.cli.transcript import print_transcript

    if not repl.session.messages:
        repl.env.note("nothing said yet")
        return
    print_transcript(repl.env, repl.session, plain=repl.plain)


def _usage(repl: Repl, arg: str) -> None:
    from rich.table import Table

    totals = repl.session.usage_totals()
    if not totals:
        repl.env.note("no replies yet")
        return
    table = Table(box=None, padding=(0, 2, 0, 0))
    for column in ("backend/model", "replies", "input tok", "output tok", "cost"):
        table.add_column(column, justify="left" if column == "backend/model" else "right")
    for key, row in sorted(totals.items(), key=lambda item: item[0] == "all"):
        table.add_row(
            "total" if key == "all" else key,
            str(int(row["replies"])),
            str(int(row["input_tokens"])),
            str(int(row["output_tokens"])),
            format_cost(row["cost_usd"]) if row["priced"] else "-",
            style="bold" if key == "all" else None,
        )
    repl.env.print(table)


def _retry(repl: Repl, arg: str) -> None:
    repl.retry()


def _exit(repl: Repl, arg: str) -> None:
    repl.quit()


COMMANDS: dict[str, SlashCommand] = {
    c.name: c
    for c in (
        SlashCommand("help", "/help", "this list", _help),
        SlashCommand(
            "reset", "/reset", "start a new conversation (the old session is kept)", _reset
        ),
        SlashCommand(
            "system",
            "/system [TEXT]",
            'show or set the system prompt (/system "" clears it)',
            _system,
        ),
        SlashCommand(
            "set", "/set PARAM VALUE", "set max_tokens, temperature, top_p, top_k or stop", _set
        ),
        SlashCommand("params", "/params", "show the generation parameters in effect", _params),
        SlashCommand("model", "/model [M]", "show or switch the model; history is kept", _model),
        SlashCommand(
            "backend",
            "/backend [B]",
            "show or switch: bedrock, local, echo; history is kept",
            _backend,
        ),
        SlashCommand("save", "/save [NAME]", "save now, or under a new name", _save),
        SlashCommand("load", "/load [NAME]", "open a saved session (no NAME: list them)", _load),
        SlashCommand("history", "/history", "show the conversation so far", _history),
        SlashCommand("retry", "/retry", "regenerate the last reply", _retry),
        SlashCommand("usage", "/usage", "tokens and cost so far", _usage),
        SlashCommand("exit", "/exit", "leave (also /quit, Ctrl-D)", _exit),
    )
}
_ALIASES = {"quit": "exit", "q": "exit", "clear": "reset", "?": "help"}


def run_command(repl: Repl, line: str) -> None:
    name, _, arg = line[1:].partition(" ")
    name = _ALIASES.get(name.lower(), name.lower())
    command = COMMANDS.get(name)
    if command is None:
        matches = [n for n in COMMANDS if n.startswith(name)] if name else []
        if len(matches) != 1:
            repl.env.error(
                f"unknown command /{name}; /help lists them "
                "(//text sends a message starting with /)"
            )
            return
        command = COMMANDS[matches[0]]
    command.run(repl, arg.strip())
