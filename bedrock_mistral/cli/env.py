"""The streams a command talks to: answers on stdout, status and errors on stderr.

Both rich consoles are built with ``markup=False`` and no highlighting, so model and user
text is printed exactly as written (``[bold]`` in a reply stays ``[bold]``); styling is
added only through :class:`rich.text.Text`. rich itself honours ``NO_COLOR``,
``FORCE_COLOR``, ``TERM=dumb`` and whether each stream is a terminal.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["Env", "make_console"]


def make_console(file: TextIO) -> Console:
    """A console for ``file``; into a pipe or file, tables get room instead of 80 columns."""
    from rich.console import Console

    console = Console(file=file, markup=False, highlight=False, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


@dataclass
class Env:
    """What a command reads and writes; tests build one around their own streams."""

    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout_file: TextIO = field(default_factory=lambda: sys.stdout)
    stderr_file: TextIO = field(default_factory=lambda: sys.stderr)
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def out(self) -> Console:
        """Answers: replies, tables, JSON."""
        if self._out is None:
            self._out = make_console(self.stdout_file)
        return self._out

    @property
    def err(self) -> Console:
        """Status lines, warnings and errors."""
        if self._err is None:
            self._err = make_console(self.stderr_file)
        return self._err

    @staticmethod
    def _isatty(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def stdin_isatty(self) -> bool:
        return self._isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return self._isatty(self.stdout_file)

    @property
    def rich_stdout(self) -> bool:
        """Whether stdout can take cursor movement and styles (a real, capable terminal)."""
        return self.out.is_terminal and not self.out.is_dumb_terminal

    def write(self, text: str) -> None:
        """Raw text to stdout, unwrapped and unstyled (pipes, plain mode)."""
        self.stdout_file.write(text)
        self.stdout_file.flush()

    def print(self, renderable: RenderableType) -> None:
        self.out.print(renderable)

    def _status(self, label: str, style: str, message: str) -> None:
        from rich.text import Text

        line = Text()
        if label:
            line.append(label, style=style)
            line.append(" ")
        line.append(message)
        self.stdout_file.flush()  # keep answer and status in order on a shared terminal
        self.err.print(line, soft_wrap=not self.err.is_terminal)  # words wrap on a terminal

    def error(self, message: str) -> None:
        self._status("error:", "bold red", message)

    def warn(self, message: str) -> None:
        self._status("warning:", "bold yellow", message)

    def note(self, message: str, *, style: str = "dim") -> None:
        from rich.text import Text

        self.stdout_file.flush()
        self.err.print(Text(message, style=style), soft_wrap=not self.err.is_terminal)
