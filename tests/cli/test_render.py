"""Streaming Markdown: replayed through a terminal emulator, every line appears exactly once."""

from __future__ import annotations

import io

import pyte
import pytest
from rich.console import Console

from bedrock_mistral.cli.render import MarkdownView, stable_prefix_end
from bedrock_mistral.cli.reply import Reply, footer, format_cost
from tests.helpers.cli import markdown_lines

LONG_REPLY = (
    """# Plan

First paragraph, long enough to wrap across a couple of lines on a narrow terminal so that
wrapping is exercised while text streams in.

1. one
2. two

3. three, after a blank line: still the same list

```python
def greet(name: str) -> str:
    return f"hello {name}"
```
Text right after the fence.

| a | b |
|---|---|
| 1 | 2 |
| 3 | 4 |

"""
    + "\n".join(f"- item {i} of a long list that is taller than the screen" for i in range(16))
    + """

> quoted
> text

---
After a rule.

Setext heading
--------------
The end.
"""
)


def _terminal(width: int, height: int) -> Console:
    return Console(
        file=io.StringIO(),
        force_terminal=True,
        width=width,
        height=height,
        color_system="256",
        legacy_windows=False,
        markup=False,
        highlight=False,
    )


def _screen_lines(raw: str, width: int, height: int) -> list[str]:
    screen = pyte.HistoryScreen(width, height, history=10_000)
    stream = pyte.Stream(screen)
    stream.feed(raw.replace("\n", "\r\n"))
    top = ["".join(line[x].data for x in range(width)).rstrip() for line in screen.history.top]
    lines = top + [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("chunk", [4, 64], ids=["chars", "burst"])
def test_streamed_markdown_matches_one_shot_render_with_no_duplicates(chunk: int) -> None:
    width, height = 60, 12
    console = _terminal(width, height)
    view = MarkdownView(console, refresh_per_second=1e9)  # redraw on every piece: the worst case
    live_heights: list[int] = []
    original = view._live.update

    def spy(renderable, *, refresh=False):  # the live region must always fit the screen
        live_heights.append(len(getattr(renderable, "lines", [])))
        original(renderable, refresh=refresh)

    view._live.update = spy  # type: ignore[method-assign]
    for start in range(0, len(LONG_REPLY), chunk):
        view.feed(LONG_REPLY[start : start + chunk])
    view.finish()
    shown = _screen_lines(console.file.getvalue(), width, height)  # type: ignore[attr-defined]
    assert shown == markdown_lines(LONG_REPLY, width)
    assert max(live_heights) <= height - 3


def test_finish_without_text_prints_nothing() -> None:
    console = _terminal(40, 10)
    view = MarkdownView(console)
    view.finish()
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "stable"),
    [
        pytest.param("one paragraph", "", id="nothing-finished"),
        pytest.param("para one\n\npara", "para one\n\n", id="blank-then-new-block"),
        pytest.param("para one\n\n", "", id="blank-but-nothing-after"),
        pytest.param("para one\n\n  indented", "", id="indented-continuation"),
        pytest.param("- a\n\n- b", "", id="loose-list-continues"),
        pytest.param("- a\n\nafter", "- a\n\n", id="list-then-paragraph"),
        pytest.param("```\ncode\n\nmore\n", "", id="blank-inside-open-fence"),
        pytest.param("```\ncode\n```\nafter", "```\ncode\n```\n", id="closed-fence"),
        pytest.param("~~~~\n```\n~~~~\nxyz", "~~~~\n```\n~~~~\n", id="fence-needs-same-char"),
        pytest.param("a\n\nb\n\nc", "a\n\nb\n\n", id="last-boundary-wins"),
        pytest.param("a\n\n1", "", id="too-short-to-tell"),
    ],
)
def test_stable_prefix_end(text: str, stable: str) -> None:
    assert text[: stable_prefix_end(text)] == stable


def _reply(**kwargs) -> Reply:
    from bedrock_mistral.types import Completion, Usage

    completion = kwargs.pop("completion", None)
    if completion is None and not kwargs.get("cut"):
        completion = Completion(
            text="x",
            stop_reason=kwargs.pop("stop_reason", "stop"),
            usage=Usage(input_tokens=12, output_tokens=40),
            model_id="m",
            backend="bedrock",
            latency_ms=1300.0,
            cost_usd=0.0000265,
        )
    return Reply(
        text="x",
        completion=completion,
        cut=kwargs.get("cut", False),
        elapsed_s=0.5,
        model="mistral-7b",
        backend="bedrock",
    )


def test_footer_lines() -> None:
    assert footer(_reply()) == "mistral-7b · bedrock · 12 in / 40 out · $0.000027 · 1.3 s"
    assert footer(_reply(stop_reason="length")).endswith("stopped at max_tokens")
    assert footer(_reply(cut=True)) == "mistral-7b · bedrock · 0.5 s · cut short (Ctrl-C)"


@pytest.mark.parametrize(
    ("cost", "text"),
    [(None, ""), (0.0, "$0"), (0.00003, "$0.00003"), (0.5, "$0.5"), (12.345, "$12.35")],
)
def test_format_cost(cost, text) -> None:
    assert format_cost(cost) == text


def test_model_text_cannot_drive_the_terminal() -> None:
    from bedrock_mistral.cli.render import terminal_safe

    hostile = "ok\x1b[2J\x1b]0;pwned\x07\rback\x08\x9b31m\ttab\nline"
    safe = terminal_safe(hostile)
    assert "\x1b" not in safe and "\x07" not in safe and "\r" not in safe and "\x9b" not in safe
    assert safe.endswith("\ttab\nline") and "␛[2J" in safe
    console = _terminal(40, 10)
    view = MarkdownView(console)
    view.feed(hostile)
    view.finish()
    assert "\x1b[2J" not in console.file.getvalue()  # type: ignore[attr-defined]
