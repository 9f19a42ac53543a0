"""The chat REPL on a real pseudo-terminal (pexpect), as a person would use it.

What the user sees is checked by replaying the child's output through a terminal
emulator (pyte), so "the reply is on screen exactly once" is tested, not guessed from
escape codes.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import stat
import time
from typing import Any

import pexpect
import pyte
import pytest

from tests.helpers.cli import CliHome, markdown_lines, spawn_cli

pytestmark = [pytest.mark.usefixtures("cli_home"), pytest.mark.slow]

ROWS, COLS = 40, 100
UP = "\x1b[A"
ESC_ENTER = "\x1b\r"
PROMPT_DONE = "\x1b[?2004l"  # prompt_toolkit turns bracketed paste off once a line is accepted


class Terminal:
    """A chat child process plus everything it printed."""

    def __init__(self, home: CliHome, *args: str, **env: str) -> None:
        self.child: Any = spawn_cli(home, *args, rows=ROWS, cols=COLS, extra_env=env)
        self.raw = io.StringIO()
        self.child.logfile_read = self.raw

    def expect(self, pattern: str, timeout: float = 20) -> None:
        self.child.expect_exact(pattern, timeout=timeout)

    def prompt(self) -> None:
        self.expect("› ")

    def send(self, line: str) -> None:
        self.child.send(line + "\r")

    def reply(self, line: str, timeout: float = 20) -> None:
        """Send a message and wait until its status line is printed."""
        self.send(line)
        self.expect(" in / ", timeout=timeout)
        self.prompt()

    def command(self, line: str, shows: str) -> None:
        self.send(line)
        self.expect(shows)
        self.prompt()

    def screen(self) -> list[str]:
        screen = pyte.HistoryScreen(COLS, ROWS, history=5000)
        pyte.Stream(screen).feed(self.raw.getvalue())
        top = ["".join(line[x].data for x in range(COLS)).rstrip() for line in screen.history.top]
        return top + [line.rstrip() for line in screen.display]

    def finish(self) -> int:
        self.child.expect(pexpect.EOF, timeout=20)
        self.child.close()
        return int(self.child.exitstatus)


def _session(home: CliHome, name: str) -> dict[str, Any]:
    return json.loads((home.sessions / f"{name}.json").read_text())


def test_streamed_reply_slash_commands_ctrl_c_switch_save_load(cli_home: CliHome) -> None:
    term = Terminal(cli_home, "chat", "-b", "echo", "--session", "main", CLI_TEST_DELAY="0.15")
    term.expect("session main (new)")
    term.prompt()
    term.reply("Hello **bold** world")
    shown = term.screen()
    assert sum("Hello bold world" in line for line in shown) == 1  # rendered Markdown, once
    assert any("mistral-7b · echo · " in line for line in shown)

    term.command("/help", "/retry")
    term.command("/system Answer briefly.", "system prompt set")
    term.command("/set temperature 0.2", "temperature = 0.2")
    term.command("/params", "model default")
    term.command("/model mixtral-8x7b", "model: mixtral-8x7b")
    term.command("/backend tests.helpers.cli:SlowEcho", "backend: tests.helpers.cli:SlowEcho")

    # Ctrl-C in the middle of a slow reply: the reply stops, is kept, and the prompt returns.
    term.send("one two three four five six seven eight nine ten eleven twelve")
    term.expect(PROMPT_DONE)
    term.expect("two")  # now in the reply, not in the typed line
    term.child.sendintr()
    term.expect("cut short (Ctrl-C)")
    term.prompt()
    cut = _session(cli_home, "main")["messages"][-1]
    assert (
        cut["cut"] is True
        and cut["content"].startswith("one two")
        and "twelve" not in cut["content"]
    )

    term.command("/history", "mixtral-8x7b (cut)")
    term.command("/backend echo", "backend: echo")
    term.send("/retry")  # regenerates the cut reply, now in full, on the echo backend
    term.expect("twelve")
    term.prompt()
    term.command("/usage", "total")
    term.command("/save kept", "saved session kept")
    term.command("/reset", "new conversation")
    term.command("/load kept", "loaded session kept: 2 turns")
    term.send("/exit")
    assert term.finish() == 0

    saved = _session(cli_home, "kept")
    assert stat.S_IMODE((cli_home.sessions / "kept.json").stat().st_mode) == 0o600
    assert saved["system"] == "Answer briefly." and saved["params"] == {"temperature": 0.2}
    assert [m["content"] for m in saved["messages"]][-1].endswith("twelve")
    assert not saved["messages"][-1].get("cut")


def test_kill_minus_9_then_continue_loses_no_finished_turn(cli_home: CliHome) -> None:
    term = Terminal(cli_home, "chat", "-b", "tests.helpers.cli:SlowEcho", CLI_TEST_DELAY="0.02")
    term.prompt()
    term.reply("first finished turn")
    term.reply("second finished turn")
    term.send("a third turn that is still streaming when the process dies " + "word " * 200)
    term.expect(PROMPT_DONE)
    term.expect("still streaming")
    os.kill(term.child.pid, signal.SIGKILL)
    term.child.expect(pexpect.EOF)
    term.child.close()
    assert term.child.signalstatus == signal.SIGKILL

    files = [p for p in cli_home.sessions.iterdir() if p.suffix == ".json"]
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    contents = [m["content"] for m in json.loads(files[0].read_text())["messages"]]
    assert contents == ["first finished turn"] * 2 + ["second finished turn"] * 2

    again = Terminal(cli_home, "chat", "--continue")
    again.expect("(resumed, 2 turns)")
    again.prompt()
    again.command("/history", "second finished turn")
    again.reply("third turn")
    again.child.sendcontrol("d")
    assert again.finish() == 0
    resumed = [m["content"] for m in json.loads(files[0].read_text())["messages"]]
    assert resumed[-2:] == ["third turn", "third turn"] and len(resumed) == 6


def test_history_multiline_and_exit_keys(cli_home: CliHome) -> None:
    term = Terminal(cli_home, "chat", "-b", "echo")
    term.prompt()
    term.reply("remember this line")
    term.child.sendcontrol("c")  # Ctrl-C on an empty prompt quits cleanly
    assert term.finish() == 0

    term = Terminal(cli_home, "chat", "-b", "echo", "--session", "multi")
    term.prompt()
    term.child.send(UP)  # history survives across runs
    term.expect("remember this line")
    term.child.send("\r")
    term.expect(" in / ")
    term.prompt()
    term.child.send("typed then abandoned")
    term.child.sendcontrol("c")  # Ctrl-C on a non-empty line only clears it (nothing is sent)
    term.child.send('"""\r' + "block line one\r" + "block line two\r" + '"""\r')
    term.expect(" in / ")
    term.prompt()
    term.child.send("first half" + ESC_ENTER + "second half\r")
    term.expect(" in / ")
    term.prompt()
    term.child.send("\x1b[200~pasted one\npasted two\x1b[201~\r")  # a bracketed paste
    term.expect(" in / ")
    term.prompt()
    term.child.sendcontrol("d")
    assert term.finish() == 0
    users = [m["content"] for m in _session(cli_home, "multi")["messages"] if m["role"] == "user"]
    assert users == [
        "remember this line",
        "block line one\nblock line two",
        "first half\nsecond half",
        "pasted one\npasted two",
    ]
    assert stat.S_IMODE((cli_home.state / "bedrock-mistral" / "history").stat().st_mode) == 0o600


def test_long_markdown_reply_is_drawn_once(cli_home: CliHome) -> None:
    paragraphs = [f"Paragraph {i}: " + "words " * 25 for i in range(12)]
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(20)) + "\n```"
    text = "\n\n".join([*paragraphs[:6], code, *paragraphs[6:]])
    term = Terminal(
        cli_home, "chat", "-b", "tests.helpers.cli:SlowEcho", "-s", "sys", CLI_TEST_DELAY="0.001"
    )
    term.prompt()
    term.send('"""')
    for line in text.split("\n"):
        term.child.send(line + "\r")
        time.sleep(0.005)
    term.send('"""')
    term.expect(" in / ", timeout=60)
    term.prompt()
    term.child.sendcontrol("d")
    assert term.finish() == 0
    shown = term.screen()
    start = max(i for i, line in enumerate(shown) if line == '… """') + 1
    end = next(i for i, line in enumerate(shown) if line.startswith("mistral-7b · slow-echo"))
    # The reply, taller than the 40-row screen, is on screen once and exactly as a one-shot render.
    assert shown[start:end] == markdown_lines(text.strip(), COLS)


def test_ctrl_c_while_the_backend_loads_cancels_and_the_chat_goes_on(cli_home: CliHome) -> None:
    # The plugin's first use imports a slow module that, like torch, breaks for good if
    # Ctrl-C cuts its import short; the chat must never let that happen.
    term = Terminal(
        cli_home, "chat", "-b", "tests.helpers.cli:SlowLoadingEcho", "--session", "s",
        CLI_TEST_LOAD_DELAY="4",
    )  # fmt: skip
    term.prompt()
    term.send("first message")
    term.expect(PROMPT_DONE)
    time.sleep(1.0)  # well inside the 4-second import
    term.child.sendintr()
    term.expect("stopped waiting for the tests.helpers.cli:SlowLoadingEcho backend to load")
    term.expect("/retry sends your message again")
    term.prompt()
    term.send("/retry")  # waits for the load still running in the background, then answers
    term.expect(" in / ", timeout=30)
    term.prompt()
    term.reply("second message")
    term.child.sendcontrol("d")
    assert term.finish() == 0
    shown = "\n".join(term.screen())
    assert "SystemError" not in shown and "unexpected" not in shown
    contents = [m["content"] for m in _session(cli_home, "s")["messages"]]
    assert contents == ["first message"] * 2 + ["second message"] * 2


def test_quitting_while_the_backend_loads_does_not_wait_for_it(cli_home: CliHome) -> None:
    term = Terminal(
        cli_home, "chat", "-b", "tests.helpers.cli:SlowLoadingEcho", CLI_TEST_LOAD_DELAY="30"
    )
    term.prompt()
    term.send("hello")
    term.expect(PROMPT_DONE)
    time.sleep(1.0)  # past the prompt's own Ctrl-C handling, into the load
    term.child.sendintr()
    term.expect("stopped waiting")
    term.prompt()
    started = time.monotonic()
    term.child.sendcontrol("d")
    assert term.finish() == 0
    assert time.monotonic() - started < 10


def test_ctrl_c_while_the_local_model_loads_leaves_the_chat_usable(cli_home: CliHome) -> None:
    # The fault as found: Ctrl-C during the first reply of `chat --backend local` left torch
    # half-imported, and the next message failed with "unexpected SystemError".
    pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
    term = Terminal(cli_home, "chat", "-b", "local", "-o", "max_tokens=8", "--session", "l")
    term.prompt()
    term.send("Say something")
    term.expect("loading the local model")
    time.sleep(0.3)  # importing torch takes seconds
    term.child.sendintr()
    term.expect("stopped waiting for the local backend to load", timeout=30)
    term.prompt()
    term.reply("Say something else", timeout=180)
    term.child.sendcontrol("d")
    assert term.finish() == 0
    shown = "\n".join(term.screen())
    assert "unexpected" not in shown and "partially initialized" not in shown
    messages = _session(cli_home, "l")["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Say something else"]
    assert messages[-1]["meta"]["backend"] == "local" and messages[-1]["meta"]["output_tokens"]


def test_local_backend_chat_and_switch_to_echo(cli_home: CliHome, tmp_path) -> None:
    pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
    from tests.helpers.cli import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    term = Terminal(
        cli_home,
        "chat",
        "-b",
        "local",
        "--local-model",
        str(checkpoint),
        "-o",
        "max_tokens=8",
        "--session",
        "offline",
    )
    term.prompt()
    term.reply("Say something", timeout=180)  # imports torch and loads the model first
    assert any(" · local · " in line and " out " in line for line in term.screen())
    term.command("/backend echo", "backend: echo")
    term.reply("now echoed")
    term.child.sendcontrol("d")
    assert term.finish() == 0
    messages = _session(cli_home, "offline")["messages"]
    assert [m["meta"]["backend"] for m in messages if m["role"] == "assistant"] == ["local", "echo"]
    assert messages[-1]["content"] == "now echoed"
    assert messages[1]["meta"]["output_tokens"] <= 8


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
def test_ask_renders_markdown_on_a_terminal_and_keeps_brackets_literal(
    cli_home: CliHome, no_color: bool
) -> None:
    env = {"NO_COLOR": "1"} if no_color else {}
    term = Terminal(
        cli_home, "ask", "-b", "echo", "-s", "sys", "Use `pip` [bold red]now[/bold red]", **env
    )
    assert term.finish() == 0
    shown = term.screen()
    assert (
        "Use pip [bold red]now[/bold red]" in shown
    )  # Markdown rendered, rich markup not interpreted
    assert any(
        line.startswith("mistral-7b · echo · ") for line in shown
    )  # the status line on stderr
    colours = re.findall(r"\x1b\[[0-9;]*?(?:3[0-7]|4[0-7]|[34]8;[0-9;]+)m", term.raw.getvalue())
    assert (colours == []) is no_color  # inline code is coloured, unless NO_COLOR
