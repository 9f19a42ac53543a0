"""A conversation printed for reading back (``/history``, ``sessions show``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bedrock_mistral.cli.render import terminal_safe

if TYPE_CHECKING:
    from bedrock_mistral.cli.env import Env
    from bedrock_mistral.cli.sessions import Session

__all__ = ["print_transcript"]


def print_transcript(env: Env, session: Session, *, plain: bool = False) -> None:
    """User turns verbatim, replies as Markdown on a terminal (raw text elsewhere)."""
    from rich.markdown import Markdown
    from rich.text import Text

    rich = env.rich_stdout and not plain
    if session.system:
        _heading(env, "system", "magenta", rich)
        _body(env, session.system, rich=rich)
    for index, message in enumerate(session.messages):
        if index == session.context_from > 0:
            env.note("(the turns above no longer fit the context window: kept here, not sent)")
        if message["role"] == "user":
            _heading(env, "you", "bold cyan", rich)
            _body(env, message["content"], rich=rich)
            continue
        meta = message.get("meta") or {}
        label = str(meta.get("model") or "assistant")
        if message.get("cut"):
            label += " (cut)"
        _heading(env, label, "bold green", rich)
        if rich:
            env.out.print(Markdown(terminal_safe(message["content"])))
        else:
            _body(env, message["content"], rich=False)
    if rich:
        env.out.print(Text(""))


def _heading(env: Env, label: str, style: str, rich: bool) -> None:
    from rich.text import Text

    if rich:
        env.out.print(Text(f"{label} ›", style=style))
    else:
        env.write(f"{label} ›\n")


def _body(env: Env, text: str, *, rich: bool) -> None:
    if rich:
        from rich.text import Text

        env.out.print(Text(terminal_safe(text)))
    else:
        env.write(text if text.endswith("\n") else text + "\n")
