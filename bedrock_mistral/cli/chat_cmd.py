"""``bedrock-mistral chat``: the click command; the REPL is in :mod:`bedrock_mistral.cli.chat`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bedrock_mistral.cli.options import client_options, current_env, settings_from

if TYPE_CHECKING:
    from bedrock_mistral.cli.config import Settings
    from bedrock_mistral.cli.env import Env
    from bedrock_mistral.cli.line_input import LineReader
    from bedrock_mistral.cli.sessions import Session, SessionStore

__all__ = ["chat", "open_session"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@client_options
@click.option("-s", "--system", default=None, help="System prompt for the conversation.")
@click.option(
    "--session",
    "session_name",
    default=None,
    metavar="NAME",
    help="Open (or create) the session NAME.",
)
@click.option("-c", "--continue", "continue_", is_flag=True, help="Resume the most recent session.")
@click.option("--plain", is_flag=True, help="Print replies as raw text (no Markdown rendering).")
def chat(
    system: str | None, session_name: str | None, continue_: bool, plain: bool, **client_flags: Any
) -> None:
    """Chat in the terminal, with replies streamed as Markdown.

    \b
    Enter sends; Esc-Enter (or a block between \"\"\" lines, or a paste) makes
    multi-line messages; up/down recall earlier input. Ctrl-C stops a reply and
    keeps it; Ctrl-C or Ctrl-D on an empty line quits. Type /help for commands:
    /reset /system /set /params /model /backend /save /load /history /retry /usage /exit.
    When the model's context window fills, the oldest turns stop being sent
    (the chat says so); the saved session keeps them.

    \b
    Every turn is saved as it finishes (`bedrock-mistral sessions list`):
      bedrock-mistral chat --continue            # pick up where you left off
      bedrock-mistral chat --session work -m mixtral-8x7b -o temperature=0.2
    """
    if continue_ and session_name:
        raise click.UsageError("use --continue or --session NAME, not both")
    env = current_env()
    settings = settings_from(**client_flags)

    from bedrock_mistral.cli.chat.repl import Repl
    from bedrock_mistral.cli.sessions import default_store

    store = default_store()
    if continue_:
        session_name = store.latest()
        if session_name is None:
            env.note("no saved session to continue; starting a new one")
    session, resumed = open_session(store, settings, name=session_name, system=system)
    repl = Repl(
        env,
        store=store,
        session=session,
        settings=settings,
        reader=_reader(env),
        plain=plain,
        resumed=resumed,
    )
    repl.run()


def open_session(
    store: SessionStore, settings: Settings, *, name: str | None, system: str | None
) -> tuple[Session, bool]:
    """Resume ``name`` if it exists (flags given on this run win over what it stored),
    otherwise start a new session with the effective settings."""
    if name is not None and store.exists(name):
        session = store.load(name)
        if settings.sources.get("model") == "flag":
            session.model = settings.model
        if settings.sources.get("backend") == "flag":
            session.backend = settings.backend
        flagged = {
            k: v
            for k, v in settings.params.items()
            if settings.sources.get(f"params.{k}") == "flag"
        }
        session.params = {**session.params, **flagged}
        if system is not None:
            session.system = system or None
        return session, True
    session = store.create(
        name=name,
        model=settings.model,
        backend=settings.backend,
        system=system or None,
        params=dict(settings.params),
    )
    return session, False


def _reader(env: Env) -> LineReader:
    from bedrock_mistral.cli.line_input import PlainReader, TerminalReader

    if env.stdin_isatty and env.stdout_isatty:
        from bedrock_mistral.cli.fsutil import state_dir

        return TerminalReader(state_dir() / "history")
    return PlainReader(env.stdin)
