"""Reading what the user types into ``chat``.

On a terminal, prompt_toolkit gives line editing, up/down history kept across runs
(``$XDG_STATE_HOME/bedrock-mistral/history``, 0600) and multi-line input three ways:

- paste: a pasted block keeps its newlines (bracketed paste) and is sent on Enter;
- Esc then Enter (or Alt-Enter) inserts a newline;
- a line starting with ``\"\"\"`` opens a block that a line ending in ``\"\"\"`` closes.

Ctrl-C clears a half-typed line; on an empty line it (like Ctrl-D) ends the chat.
When stdin is not a terminal, lines are read plainly (same ``\"\"\"`` blocks), so a chat
can be scripted: ``printf 'hi\\n/usage\\n' | bedrock-mistral chat``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

__all__ = ["BLOCK", "LineReader", "PlainReader", "TerminalReader", "unwrap_block"]

BLOCK = '"""'


class LineReader(Protocol):
    def read(self) -> str | None:
        """The next message or command; None when the user is done."""


def unwrap_block(text: str) -> str:
    """``\"\"\"\\nline 1\\nline 2\\n\"\"\"`` -> ``line 1\\nline 2``; other text unchanged."""
    if not text.lstrip().startswith(BLOCK):
        return text
    body = text.lstrip()[len(BLOCK) :]
    stripped = body.rstrip()
    if stripped.endswith(BLOCK):
        body = stripped[: -len(BLOCK)]
    return body.strip("\n")


def _block_open(text: str) -> bool:
    """True while a ``\"\"\"`` block has been opened and not yet closed."""
    stripped = text.strip()
    if not stripped.startswith(BLOCK):
        return False
    return stripped == BLOCK or not stripped[len(BLOCK) :].endswith(BLOCK)


class PlainReader:
    """Lines from a non-terminal stdin."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def read(self) -> str | None:
        line = self._stream.readline()
        if not line:
            return None
        text = line.rstrip("\n")
        while _block_open(text):
            more = self._stream.readline()
            if not more:
                break
            text += "\n" + more.rstrip("\n")
        return unwrap_block(text)


def _private_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    os.close(fd)
    return path


class TerminalReader:
    """prompt_toolkit input with persistent history; see the module docstring."""

    def __init__(self, history_path: Path, *, prompt: str = "› ") -> None:
        self._prompt = prompt
        self._session = self._build(history_path)

    def _build(self, history_path: Path) -> PromptSession[str]:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
        from prompt_toolkit.styles import Style

        bindings = KeyBindings()

        @Condition
        def in_block() -> bool:
            return _block_open(self._session.default_buffer.text)

        @bindings.add("enter", filter=~in_block)
        def _accept(event: KeyPressEvent) -> None:
            event.current_buffer.validate_and_handle()

        @bindings.add("enter", filter=in_block)
        @bindings.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.newline(copy_margin=False)

        @bindings.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if buffer.text:
                buffer.reset()
            else:
                event.app.exit(exception=KeyboardInterrupt())

        try:
            history: FileHistory | InMemoryHistory = FileHistory(str(_private_file(history_path)))
        except OSError:
            history = InMemoryHistory()  # an unwritable state dir must not stop the chat
        return PromptSession(
            history=history,
            key_bindings=bindings,
            multiline=True,
            prompt_continuation=lambda width, line, wrap: "… ".rjust(width),
            style=Style.from_dict(
                {"prompt": "bold ansicyan", "prompt-continuation": "ansibrightblack"}
            ),
            enable_open_in_editor=True,
        )

    def read(self) -> str | None:
        try:
            text = self._session.prompt([("class:prompt", self._prompt)])
        except (EOFError, KeyboardInterrupt):
            return None
        return unwrap_block(text)
