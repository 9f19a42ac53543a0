"""Session files (atomic, private, resumable) and ``bedrock-mistral sessions``."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from bedrock_mistral.cli.fsutil import atomic_write_text
from bedrock_mistral.cli.sessions import SessionError, SessionStore, check_name
from bedrock_mistral.errors import ValidationError
from tests.helpers.cli import CliHome, run_cli

pytestmark = pytest.mark.usefixtures("cli_home")


def _store(cli_home: CliHome) -> SessionStore:
    return SessionStore(cli_home.sessions)


def _two_turns(store: SessionStore, name: str = "demo") -> None:
    session = store.create(name=name, model="mistral-7b", backend="echo", system="be brief")
    session.add_user("first question")
    session.add_assistant(
        "first **answer**",
        meta={
            "model": "mistral-7b",
            "backend": "echo",
            "input_tokens": 3,
            "output_tokens": 2,
            "cost_usd": 0.001,
        },
    )
    session.add_user("second question")
    session.add_assistant("partial", meta={"model": "mixtral-8x7b", "backend": "bedrock"}, cut=True)
    store.save(session)


def test_saved_sessions_are_private_and_round_trip(cli_home: CliHome) -> None:
    store = _store(cli_home)
    _two_turns(store)
    path = store.path("demo")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load("demo")
    assert loaded.turns == 2
    assert loaded.conversation()[0] == {"role": "system", "content": "be brief"}
    assert loaded.conversation()[-1] == {"role": "assistant", "content": "partial"}
    assert loaded.messages[-1]["cut"] is True
    totals = loaded.usage_totals()
    assert totals["all"]["replies"] == 2 and totals["all"]["input_tokens"] == 3
    assert totals["echo/mistral-7b"]["cost_usd"] == pytest.approx(0.001)


def test_atomic_write_leaves_old_content_when_the_write_fails(
    cli_home: CliHome, monkeypatch
) -> None:
    target = cli_home.root / "file.json"
    atomic_write_text(target, "old")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]  # the temp file is gone


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", ".hidden", "", "x" * 81, "name.json", "sp ace"]
)
def test_session_names_cannot_escape_the_directory(name: str) -> None:
    with pytest.raises(ValidationError, match="session name"):
        check_name(name)


def test_latest_is_the_last_written_and_temp_files_are_ignored(cli_home: CliHome) -> None:
    store = _store(cli_home)
    _two_turns(store, "older")
    time.sleep(0.01)
    _two_turns(store, "newer")
    (cli_home.sessions / ".newer.json.abc.tmp").write_text("{torn")
    assert store.latest() == "newer"
    assert [info.name for info in store.list()] == ["newer", "older"]


def test_damaged_file_is_reported_not_fatal(cli_home: CliHome) -> None:
    store = _store(cli_home)
    _two_turns(store)
    (cli_home.sessions / "broken.json").write_text("{not json")
    with pytest.raises(SessionError, match="damaged"):
        store.load("broken")
    listing = run_cli("sessions", "list")
    assert listing.exit_code == 0
    assert "unreadable" in listing.stdout and "demo" in listing.stdout
    shown = run_cli("sessions", "show", "broken")
    assert shown.exit_code == 1
    assert "damaged" in shown.stderr


def test_sessions_commands(cli_home: CliHome) -> None:
    store = _store(cli_home)
    assert "no saved sessions" in run_cli("sessions").stderr
    _two_turns(store)
    listing = json.loads(run_cli("sessions", "list", "--json").stdout)
    assert [(row["name"], row["turns"], row["preview"]) for row in listing] == [
        ("demo", 2, "first question")
    ]
    shown = run_cli("sessions", "show", "demo")
    assert shown.exit_code == 0
    for text in ("first question", "first **answer**", "second question", "(cut)", "be brief"):
        assert text in shown.stdout
    assert (
        json.loads(run_cli("sessions", "show", "demo", "--json").stdout)["messages"][0]["content"]
        == "first question"
    )
    assert run_cli("sessions", "path").stdout.strip() == str(cli_home.sessions)
    deleted = run_cli("sessions", "delete", "demo")
    assert deleted.exit_code == 0 and not store.exists("demo")


@pytest.mark.parametrize("command", [("show", "nope"), ("delete", "nope"), ("show", "../x")])
def test_missing_or_bad_session_names_are_usage_errors(command) -> None:
    result = run_cli("sessions", *command)
    assert result.exit_code == 2
    assert "session" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reply_is_stored_without_the_models_leading_space(cli_home: CliHome) -> None:
    store = _store(cli_home)
    session = store.create(name="spaces", model="mistral-7b", backend="local")
    session.add_user("capital of France?")
    session.add_assistant(" Paris", meta={})
    store.save(session)
    assert store.load("spaces").conversation()[-1] == {"role": "assistant", "content": "Paris"}
