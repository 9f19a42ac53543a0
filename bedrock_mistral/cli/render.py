"""Showing a reply while it streams: live Markdown on a terminal, raw text elsewhere.

A naive ``rich.live.Live(Markdown(text))`` re-renders the whole reply on every token;
once the reply is taller than the screen, the terminal scrolls and every refresh leaves a
copy of the overflow behind (the "duplicated lines" bug), and the redraw flickers.

:class:`MarkdownView` keeps the live region small instead. Markdown is split at block
boundaries that further text cannot change (a blank line followed by a new, unindented
block; the end of a closed code fence). Finished blocks are printed once, permanently,
above the live region; only the block still being written is redrawn, and if that block
alone outgrows the screen its top lines are printed permanently too. So the live region
never exceeds the screen and nothing is ever drawn twice.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live
    from rich.segment import Segment

    from bedrock_mistral.cli.env import Env

__all__ = [
    "MarkdownView",
    "PlainView",
    "ReplyView",
    "make_view",
    "stable_prefix_end",
    "terminal_safe",
]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")  # lines split on "\n" only, ends kept
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d{1,9}[.)])(?:\s|$)")
_MARKER_CHARS = frozenset("-*+_`~0123456789")
CODE_THEME = "monokai"


# C0 controls other than tab and newline, DEL and C1 controls, shown as visible symbols:
# model text must not be able to move the cursor, clear the screen or retitle the window.
_UNSAFE = {code: chr(0x2400 + code) for code in range(0x20) if code not in (0x09, 0x0A)}
_UNSAFE.update({0x7F: "\u2421", **{code: "\ufffd" for code in range(0x80, 0xA0)}})


def terminal_safe(text: str) -> str:
    """``text`` with every terminal control character replaced by a visible symbol."""
    return text.translate(_UNSAFE)


class ReplyView(Protocol):
    """Receives a reply's text as it arrives."""

    def feed(self, text: str) -> None: ...

    def finish(self) -> None: ...


class PlainView:
    """Raw text, written as it arrives: for pipes, files, dumb terminals and ``--plain``."""

    def __init__(self, env: Env) -> None:
        self._env = env
        self._last = "\n"
        # Into a pipe or file the text goes as it is; onto a terminal, controls are defused.
        self._safe = env.stdout_isatty

    def feed(self, text: str) -> None:
        if text:
            self._env.write(terminal_safe(text) if self._safe else text)
            self._last = text[-1]

    def finish(self) -> None:
        if self._last != "\n":
            self._env.write("\n")
            self._last = "\n"


def _closes(fence: str, line: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` (same character, at least as long)."""
    match = _FENCE.match(line)
    if match is None:
        return False
    marker = match.group(1)
    return marker[0] == fence[0] and len(marker) >= len(fence) and not line[match.end() :].strip()


def stable_prefix_end(text: str) -> int:
    """Length of the longest prefix of ``text`` made of finished Markdown blocks.

    A block is finished when text after it has begun a new block that cannot belong to
    it: after a blank line, a line starting in column 0 that does not continue a list;
    or any line after a closed code fence. 0 means nothing is finished yet.
    """
    end = 0
    fence: str | None = None
    fence_closed_at = -1
    blank_seen = False
    block_has_list = False
    position = 0
    for found in _LINE.finditer(text):
        line = found.group()
        start, position = position, position + len(line)
        complete = line.endswith("\n")
        body = line.rstrip("\n")
        if fence is not None:
            if complete and _closes(fence, body):
                fence, fence_closed_at = None, position
            continue
        if not body.strip():
            if complete:
                blank_seen = True
            continue
        starts_new = fence_closed_at == start or (blank_seen and not body[0].isspace())
        # A short unfinished line may still turn into a list marker or a fence: wait for more.
        undecided = not complete and len(body) < 3 and body[0] in _MARKER_CHARS
        if starts_new and not undecided:
            continues_list = (
                bool(_LIST_ITEM.match(body)) and block_has_list and fence_closed_at != start
            )
            if not continues_list:
                end, block_has_list = start, False
        blank_seen = False
        opening = _FENCE.match(body)
        if opening:
            fence = opening.group(1)
        elif _LIST_ITEM.match(body):
            block_has_list = True
    return end


def _ends_with_rule(block: str) -> bool:
    """A thematic break (``---``) as the block's last line, not a setext underline."""
    lines = block.splitlines()
    if not lines or not _RULE.match(lines[-1]):
        return False
    return len(lines) == 1 or not lines[-2].strip()


class _Lines:
    """Pre-rendered lines as a renderable."""

    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        for line in self.lines:
            yield from line
            yield Segment.line()


class MarkdownView:
    """Live Markdown for a capable terminal; see the module docstring for the approach."""

    def __init__(self, console: Console, *, refresh_per_second: float = 12.0) -> None:
        from rich.live import Live

        self._console = console
        self._interval = 1.0 / refresh_per_second
        self._text = ""
        self._committed = 0  # characters of _text printed permanently as whole blocks
        self._blocks = 0  # finished blocks printed so far
        self._tail_printed = 0  # lines of the unfinished block already printed permanently
        self._separate = True  # whether a blank line goes before the next block
        self._last_render = 0.0
        self._live: Live = Live(
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._started = False

    def _render(self, markdown_text: str) -> list[list[Segment]]:
        """The lines of ``markdown_text`` as they follow the blocks already printed.

        rich separates top-level blocks with one blank line (none after a horizontal
        rule), and starts a lone list, table or quote with a blank line of its own; both
        are normalised here so that block-by-block output equals a one-shot render.
        """
        from rich.markdown import Markdown

        lines: list[list[Segment]] = [[]] if self._blocks and self._separate else []
        if markdown_text.strip():
            rendered = Markdown(markdown_text, code_theme=CODE_THEME, hyperlinks=True)
            body = self._console.render_lines(rendered, self._console.options, pad=False)
            while body and not "".join(segment.text for segment in body[0]):
                body.pop(0)
            lines += body
        return lines

    def _print(self, lines: list[list[Segment]]) -> None:
        if lines:
            self._console.print(_Lines(lines))

    def _commit_blocks(self) -> None:
        end = stable_prefix_end(self._text[self._committed :])
        if end == 0:
            return
        block = self._text[self._committed : self._committed + end].rstrip()
        self._print(self._render(block)[self._tail_printed :])
        self._committed += end
        self._blocks += 1
        self._tail_printed = 0
        self._separate = not _ends_with_rule(block)

    def _refresh(self) -> None:
        self._commit_blocks()
        lines = self._render(self._text[self._committed :])
        room = max(self._console.height - 3, 4)
        overflow = len(lines) - self._tail_printed - room
        if overflow > 0:
            # The unfinished block alone is taller than the screen: its top lines are final.
            self._print(lines[self._tail_printed : self._tail_printed + overflow])
            self._tail_printed += overflow
        self._live.update(_Lines(lines[self._tail_printed :]), refresh=True)
        self._last_render = time.monotonic()

    def feed(self, text: str) -> None:
        if not text:
            return
        if not self._started:
            self._live.start()
            self._started = True
        self._text += terminal_safe(text)
        if time.monotonic() - self._last_render >= self._interval:
            self._refresh()

    def finish(self) -> None:
        """Print whatever is left, permanently, and close the live region."""
        if not self._started:
            return
        try:
            self._commit_blocks()
            rest = self._text[self._committed :]
            if rest.strip():
                self._print(self._render(rest.rstrip())[self._tail_printed :])
            self._live.update(_Lines([]), refresh=True)
        finally:
            self._live.stop()
            self._started = False


def make_view(env: Env, *, plain: bool = False) -> ReplyView:
    """Markdown on a capable terminal, raw text otherwise."""
    if plain or not env.rich_stdout:
        return PlainView(env)
    return MarkdownView(env.out)
