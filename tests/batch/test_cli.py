"""``bedrock-mistral batch`` on the command line: refusals, exit codes, retries, progress."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bedrock_mistral.batch.progress import make_progress
from bedrock_mistral.batch.result import BatchStats
from bedrock_mistral.cli import cli


def jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_duplicate_ids_exit_2_and_touch_nothing(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out), "-b", "echo"])
    assert result.exit_code == 2
    assert "duplicate record ids: id 'a' on lines 1, 2" in result.stderr
    assert not out.exists()


def test_bad_lines_are_reported_with_line_numbers_and_exit_1(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": 1, "prompt": "fine"}\nnot json\n{"id": 3, "prompt": "x", "top_k": 999}\n'
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out), "-b", "echo"])
    assert result.exit_code == 1
    assert "line 2: InputError: not valid JSON" in result.stderr
    assert "line 3 (id 3): ValidationError: top_k=999" in result.stderr
    assert "--retry-failed" in result.stderr
    lines = read(out)
    assert {(line["id"], line.get("line"), line["error"] is None) for line in lines} == {
        (None, 2, False),
        (1, None, True),
        (3, 3, False),
    }
    assert result.stdout == ""  # no --json: answers go to the file, status to stderr


def test_default_params_from_flags_and_config_records_win(tmp_path: Path) -> None:
    source = jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "prompt": "one two three four"},
            {"id": "b", "prompt": "one two three four", "max_tokens": 3},
        ],
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli, ["batch", str(source), "-o", str(out), "-b", "echo", "-p", "max_tokens=1"]
    )
    assert result.exit_code == 0, result.output
    texts = {line["id"]: line["text"] for line in read(out)}
    assert texts == {"a": "one", "b": "one two three"}


def test_retry_failed_runs_only_the_failed_records_again(
    make_server: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"p {i}"} for i in range(30)])
    out = tmp_path / "out.jsonl"
    flaky = make_server("echo", faults={"model_error": 0.3}, seed=2)  # 424: not retried
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", flaky)
    first = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out)])
    failed = {line["id"] for line in read(out) if line["error"]}
    assert first.exit_code == 1 and failed

    healthy = make_server("echo")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", healthy)
    plain_rerun = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out)])
    assert plain_rerun.exit_code == 1 and not healthy.stats.requests  # failures stay failures
    second = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out), "--retry-failed"])

    assert second.exit_code == 0, second.output
    assert len(healthy.stats.requests) == len(failed)
    lines = read(out)
    assert sorted(line["id"] for line in lines) == list(range(30))
    assert all(line["error"] is None and line["text"] == f"p {line['id']}" for line in lines)


def test_job_mode_needs_its_s3_and_role_flags(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    result = CliRunner().invoke(
        cli, ["batch", str(source), "-o", str(tmp_path / "o.jsonl"), "--mode", "job"]
    )
    assert result.exit_code == 2
    assert "--mode job needs --role-arn, --s3-input, --s3-output" in result.output


def test_progress_bar_only_on_a_terminal() -> None:
    from rich.console import Console

    stats = BatchStats(total=10, done=4, failed=1, input_tokens=1200, output_tokens=30_000)
    plain = io.StringIO()
    with make_progress(Console(file=plain), total=10) as bar:
        bar.update(stats, limit=8)
    assert plain.getvalue() == ""

    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=160, color_system=None)
    with make_progress(console, total=10) as bar:
        bar.update(stats, limit=8)
    shown = terminal.getvalue()
    for piece in ("5/10", "/s", "1200/30.0k tok", "$0.0000", "1 failed", "in flight ≤8", "eta"):
        assert piece in shown, piece


def test_the_command_module_imports_only_click() -> None:
    code = (
        "import sys, bedrock_mistral.cli.batch_cmd\n"
        "heavy = ('boto3', 'botocore', 'pydantic', 'rich', 'torch')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == ""


@pytest.mark.skipif(os.name != "posix", reason="needs SIGINT delivery to a child")
def test_ctrl_c_stops_cleanly_with_a_resume_hint(
    make_server: Callable[..., Any], tmp_path: Path
) -> None:
    server = make_server("echo", latency_ms=50)
    source = jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"p {i}"} for i in range(400)])
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": server}
    child = subprocess.Popen(
        [sys.executable, "-m", "bedrock_mistral", "batch", str(source), "-o", str(out), "-c", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    written = read(out)  # every line whole
    assert 0 < len(written) < 400
