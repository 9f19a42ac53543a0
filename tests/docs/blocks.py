"""Fenced code blocks of a Markdown page, with the line each one starts on.

Only what the docs use: backtick fences (three or more), optionally indented (inside list
items), with an info string such as ``python`` or ``text title="Output"``. A ``python``
block directly followed (blank lines aside) by a ``title="Output"`` block carries that
output, which the snippet test compares with what the code prints.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "Snippet", "fenced_blocks", "python_snippets"]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
_OUTPUT_TITLE = re.compile(r'\btitle="Output"')


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, full info string, body and position."""

    language: str
    info: str
    body: str
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence

    @property
    def is_output(self) -> bool:
        return bool(_OUTPUT_TITLE.search(self.info))


@dataclass(frozen=True)
class Snippet:
    """A ``python`` block to run, and the output it must print (if the page shows one)."""

    page: str
    line: int
    code: str
    output: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


class UnclosedFenceError(ValueError):
    """A fence opened and never closed: everything after it would silently not be code."""


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, in order; raises on an unclosed fence."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        closing = re.compile(rf"^ {{0,{len(indent) + 3}}}`{{{len(fence)},}}\s*$")
        for j in range(i + 1, len(lines)):
            if closing.match(lines[j]):
                break
        else:
            raise UnclosedFenceError(f"line {i + 1}: fence {fence}{info} is never closed")
        body = textwrap.dedent("\n".join(lines[i + 1 : j]))
        language = info.split()[0] if info else ""
        blocks.append(Block(language=language, info=info, body=body, line=i + 1, end=j + 1))
        i = j + 1
    return blocks


def _only_blank_between(lines: list[str], after: int, before: int) -> bool:
    return all(not line.strip() for line in lines[after : before - 1])


def python_snippets(path: Path, *, name: str) -> list[Snippet]:
    """The page's ``python`` blocks, each with the ``Output`` block that follows it, if any."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks = fenced_blocks(text)
    snippets = []
    for index, block in enumerate(blocks):
        if block.language != "python":
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        output = None
        if (
            following is not None
            and following.is_output
            and _only_blank_between(lines, block.end, following.line)
        ):
            output = following.body
        snippets.append(Snippet(page=name, line=block.line, code=block.body, output=output))
    return snippets
