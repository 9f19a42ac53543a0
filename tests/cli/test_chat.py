"""``bedrock-mistral chat`` driven through piped stdin (the pseudo-terminal tests are in
test_chat_pty.py): slash commands, sessions, errors and retries."""

from __future__ import annotations

import json
import re

import pytest

import tests.helpers.cli as cli_fixtures
from bedrock_mistral import errors
from bedrock_mistral.cli.sessions import SessionStore
from bedrock_mistral.types import TextDelta
from tests.helpers.cli import CliHome, ScriptedBackend, run_cli

pytestmark = pytest.mark.usefixtures("cli_home")

SCRIPTED = ("-b", "tests.helpers.cli:SCRIPTED")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedBackend:
    backend = ScriptedBackend()
    monkeypatch.setattr(cli_fixtures, "SCRIPTED", backend)
    return backend


def _chat(*args: str, script: str):
    return run_cli("chat", *args, input=script)


def _only_session(cli_home: CliHome) -> dict:
    files = list(cli_home.sessions.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_turns_are_answered_and_saved(cli_home: CliHome) -> None:
    result = _chat("-b", "echo", "-s", "be brief", script="hello there\nsecond turn\n")
    assert result.exit_code == 0
    assert result.stdout == "hello there\nsecond turn\n"
    assert "mistral-7b · echo · " in result.stderr  # the quiet line after each reply
    saved = _only_session(cli_home)
    assert [m["content"] for m in saved["messages"]] == [
        "hello there",
        "hello there",
        "second turn",
        "second turn",
    ]
    assert saved["system"] == "be brief" and saved["backend"] == "echo"
    assert saved["messages"][1]["meta"]["output_tokens"] == 2


def test_multiline_block_is_one_message(scripted: ScriptedBackend) -> None:
    result = _chat(*SCRIPTED, script='"""\nline one\n\nline two\n"""\n')
    assert result.exit_code == 0
    assert "[INST] line one\n\nline two [/INST]" in scripted.requests[0].prompt


def test_slash_commands(cli_home: CliHome, scripted: ScriptedBackend) -> None:
    scripted.enqueue("first reply", "regenerated reply", "after switch")
    script = (
        "\n".join(
            [
                "hi",
                "/retry",
                "/set temperature 0.2",
                "/set max_tokens 64",
                "/params",
                "/system Be terse.",
                "/model mixtral-8x7b",
                "/usage",
                "/history",
                "/backend echo",
                "echo me",
                "//slash stays",
                "/save named",
                "/help",
                "/exit",
                "never read",
            ]
        )
        + "\n"
    )
    result = _chat(*SCRIPTED, script=script)
    assert result.exit_code == 0, result.stderr
    out, err = result.stdout, result.stderr
    assert "first reply" in out and "regenerated reply" in out
    assert scripted.requests[1].prompt == scripted.requests[0].prompt  # /retry resent the same turn
    assert "temperature = 0.2" in err and "max_tokens = 64" in err
    assert re.search(r"temperature\s+0\.2\s+set", out) and re.search(
        r"top_p\s+0\.9\s+model default", out
    )
    assert "model: mixtral-8x7b" in err
    assert "total" in out  # /usage table
    assert "you ›" in out and "regenerated reply" in out  # /history
    assert "echo me" in out and "/slash stays" in out
    assert "/backend" in out and "/retry" in out  # /help table
    assert "never read" not in out
    saved = json.loads((cli_home.sessions / "named.json").read_text())
    assert saved["model"] == "mixtral-8x7b" and saved["backend"] == "echo"
    assert saved["params"] == {"temperature": 0.2, "max_tokens": 64}
    assert saved["system"] == "Be terse."
    assert [m["content"] for m in saved["messages"] if m["role"] == "assistant"] == [
        "regenerated reply",
        "echo me",
        "/slash stays",
    ]
    assert not list(cli_home.sessions.glob("chat-*.json"))  # /save NAME renamed the automatic one


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/set temperature 5", "temperature"),
        ("/set colour red", "unknown parameter 'colour'; allowed: max_tokens"),
        ("/set", "usage: /set"),
        ("/model gpt-4", "unknown model"),
        ("/backend cloud", "backend"),
        ("/load nothing-here", "existing session"),
        ("/save ../x", "session name"),
        ("/frobnicate", "unknown command"),
    ],
)
def test_bad_commands_report_and_the_chat_goes_on(line: str, message: str) -> None:
    result = _chat("-b", "echo", script=f"{line}\nstill alive\n")
    assert result.exit_code == 0
    assert "still alive" in result.stdout
    assert message in result.stderr


def test_top_k_is_refused_for_a_chat_dialect_model() -> None:
    result = _chat("-b", "echo", "-m", "mistral-large-2407", script="/set top_k 10\n")
    assert "top_k" in result.stderr and "not supported" in result.stderr


def test_failed_turn_is_dropped_and_retry_resends_it(
    cli_home: CliHome, scripted: ScriptedBackend
) -> None:
    scripted.enqueue(
        errors.AccessDeniedError("AccessDeniedException: enable model access"), "second time lucky"
    )
    result = _chat(*SCRIPTED, script="important question\n/retry\n")
    assert result.exit_code == 0
    assert "AccessDeniedException" in result.stderr and "/retry sends it again" in result.stderr
    assert result.stdout == "second time lucky\n"
    assert [m["content"] for m in _only_session(cli_home)["messages"]] == [
        "important question",
        "second time lucky",
    ]


def test_interrupted_stream_keeps_the_partial_reply(
    cli_home: CliHome, scripted: ScriptedBackend, monkeypatch
) -> None:
    def broken(request):
        scripted.requests.append(request)
        yield TextDelta(text="half a")
        raise errors.ModelStreamError("modelStreamErrorException mid-stream")

    monkeypatch.setattr(scripted, "stream", broken)
    result = _chat(*SCRIPTED, script="tell me\n")
    assert result.exit_code == 0
    assert "partial reply is kept" in result.stderr
    last = _only_session(cli_home)["messages"][-1]
    assert (last["content"], last["cut"]) == ("half a", True)


def test_resume_by_name_keeps_history_and_flags_win(
    cli_home: CliHome, scripted: ScriptedBackend
) -> None:
    _chat("-b", "echo", "--session", "work", "-o", "temperature=0.3", script="turn one\n")
    scripted.enqueue("turn two reply")
    result = _chat(*SCRIPTED, "--session", "work", "-m", "mixtral-8x7b", script="turn two\n")
    assert "resumed, 1 turns" in result.stderr
    request = scripted.requests[0]
    assert "turn one [/INST] turn one</s>" in request.prompt  # history sent back
    assert request.model_id == "mistral.mixtral-8x7b-instruct-v0:1" and request.temperature == 0.3
    saved = json.loads((cli_home.sessions / "work.json").read_text())
    assert saved["backend"] == "tests.helpers.cli:SCRIPTED" and len(saved["messages"]) == 4


def test_continue_picks_the_latest_session(cli_home: CliHome) -> None:
    first = _chat("-b", "echo", "--continue", script="alpha\n")
    assert "no saved session to continue" in first.stderr
    _chat("-b", "echo", "--session", "later", script="beta\n")
    resumed = _chat("--continue", script="/history\n")
    assert "session later (resumed, 1 turns)" in resumed.stderr
    assert "beta" in resumed.stdout and "alpha" not in resumed.stdout


def test_continue_and_session_together_is_a_usage_error() -> None:
    result = _chat("--continue", "--session", "x", script="")
    assert result.exit_code == 2


def test_reset_starts_a_new_session_and_keeps_the_old(cli_home: CliHome) -> None:
    result = _chat("-b", "echo", "--session", "old", script="one\n/reset\ntwo\n")
    assert "new conversation" in result.stderr
    store = SessionStore(cli_home.sessions)
    assert [m["content"] for m in store.load("old").messages] == ["one", "one"]
    others = [info for info in store.list() if info.name != "old"]
    assert len(others) == 1 and others[0].turns == 1


def test_load_switches_conversation(cli_home: CliHome) -> None:
    _chat("-b", "echo", "--session", "first", script="from first\n")
    result = _chat("-b", "echo", script="/load\n/load first\n/history\n")
    assert "first  1 turns" in result.stderr  # /load without a name lists
    assert "loaded session first" in result.stderr
    assert "from first" in result.stdout


def test_a_chat_past_the_context_window_keeps_answering_and_says_what_it_dropped(
    cli_home: CliHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = cli_fixtures.SmallWindowEcho(window=200)  # exact counts: whitespace words
    monkeypatch.setattr(cli_fixtures, "SMALL_WINDOW", backend)
    turns = [f"turn {i}: " + " ".join(f"w{i}.{j}" for j in range(18)) for i in range(12)]
    result = _chat(
        "-b",
        "tests.helpers.cli:SMALL_WINDOW",
        "-s",
        "be brief",
        "-o",
        "max_tokens=40",
        "--session",
        "long",
        script="\n".join([*turns, "/history"]) + "\n",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[: len(turns)] == turns  # every turn was answered
    notes = re.findall(
        r"context full: dropped the (?:oldest turn|(\d+) oldest turns) from what the model "
        r"sees, to fit its 200-token window \(the saved session and /history keep them\)",
        " ".join(result.stderr.split()),
    )
    dropped = sum(int(count or 1) for count in notes)
    assert notes and dropped >= 6, result.stderr  # 12 turns of ~45 tokens in a 200-token window
    assert "conversation trimmed" not in result.stderr  # the SDK's log line is not repeated
    # Every prompt fitted; the newest turns were sent, the dropped ones no longer.
    assert len(backend.prompts) == len(turns)
    assert all(backend.count_tokens(p) + 40 <= 200 for p in backend.prompts)
    last = backend.prompts[-1]
    assert turns[-2] in last and turns[0] not in last
    assert last.startswith("<s> [INST] be brief\n\n")  # the system prompt is never dropped
    # The transcript keeps everything: the file, and /history.
    saved = json.loads((cli_home.sessions / "long.json").read_text())
    assert [m["content"] for m in saved["messages"]] == [t for t in turns for _ in "ua"]
    assert saved["context_from"] == 2 * dropped
    assert turns[0] in result.stdout.split("you ›", 1)[1]
    assert "the turns above no longer fit the context window: kept here, not sent" in " ".join(
        result.stderr.split()
    )


def test_a_resumed_long_chat_keeps_leaving_out_what_was_dropped(
    cli_home: CliHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = cli_fixtures.SmallWindowEcho(window=120)
    monkeypatch.setattr(cli_fixtures, "SMALL_WINDOW", backend)
    args = ("-b", "tests.helpers.cli:SMALL_WINDOW", "-o", "max_tokens=20", "--session", "s")
    turns = [f"t{i} " + "word " * 15 for i in range(6)]
    _chat(*args, script="\n".join(turns) + "\n")
    left_out = json.loads((cli_home.sessions / "s.json").read_text())["context_from"]
    assert left_out > 0
    backend.prompts.clear()
    again = _chat(*args, script="one more\n/retry\n")
    assert again.exit_code == 0 and again.stdout == "one more\none more\n"
    # What was dropped before the restart is still left out (not sent, nor reported again).
    assert all(t.strip() not in backend.prompts[0] for t in turns[: left_out // 2])
    assert again.stderr.count("context full") <= 1
    assert backend.prompts[0] == backend.prompts[1]  # /retry resent the same prompt
    saved = json.loads((cli_home.sessions / "s.json").read_text())
    assert saved["context_from"] >= left_out and len(saved["messages"]) == 14
