"""The append-only output: what a rerun finds, torn tails, damage it refuses, the run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bedrock_mistral.batch.output import OutputStateError, ResultWriter, scan_output


def ok(record_id: object) -> dict[str, object]:
    return {"id": record_id, "text": f"answer {record_id}", "error": None}


def failed(record_id: object, **extra: object) -> dict[str, object]:
    return {
        "id": record_id,
        "text": None,
        "error": {"type": "ThrottledError", "message": "x"},
        **extra,
    }


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_written_lines_are_on_disk_at_once_and_scanned_back(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    with ResultWriter(out) as writer:
        assert writer.scan.done == set()
        writer.write(ok("a"))
        writer.write(ok(2))
        # No buffering: another reader sees both lines before close.
        assert len(out.read_bytes().splitlines()) == 2
        writer.write(failed("b"))
        writer.write(failed(None, line=9))
    scan = scan_output(out)
    assert scan.done == {"a", "2", "b"}
    assert scan.failed == {"b"}
    assert scan.done_lines == {9}
    assert scan.lines == 4 and scan.torn_bytes == 0


def test_unicode_and_newlines_in_text_stay_on_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultWriter(out) as writer:
        writer.write({"id": "x", "text": "line one\nline two — ünïcode\u2028", "error": None})
    (line,) = lines(out)
    assert line["text"] == "line one\nline two — ünïcode\u2028"


@pytest.mark.parametrize(
    "tail",
    [b'{"id": "c", "text": "half', b"\x00\x00\x00\x00", b'\x00\x00\x00{"id"'],
    ids=["partial-line", "nul-bytes", "nul-then-partial"],
)
def test_a_torn_tail_is_dropped_before_appending(tmp_path: Path, tail: bytes) -> None:
    out = tmp_path / "out.jsonl"
    good = (json.dumps(ok("a")) + "\n" + json.dumps(ok("b")) + "\n").encode()
    out.write_bytes(good + tail)
    scan = scan_output(out)
    assert scan.done == {"a", "b"}
    assert scan.valid_bytes == len(good) and scan.torn_bytes == len(tail)
    with ResultWriter(out) as writer:
        writer.write(ok("c"))
    assert [line["id"] for line in lines(out)] == ["a", "b", "c"]


def test_a_damaged_line_before_good_ones_is_refused_not_truncated(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    content = json.dumps(ok("a")) + "\n" + "garbage\n" + json.dumps(ok("b")) + "\n"
    out.write_text(content)
    with pytest.raises(OutputStateError, match="line 2 is not a batch result"):
        ResultWriter(out)
    assert out.read_text() == content  # untouched


def test_pointing_output_at_an_input_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "prompt": "keep me"}) + "\n")
    with pytest.raises(OutputStateError, match="is -o pointing at the input"):
        ResultWriter(source)
    assert "keep me" in source.read_text()


def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultWriter(out):
        # flock is per open file description, so check from another process.
        code = (
            "import sys; from bedrock_mistral.batch.output import ResultWriter, OutputStateError\n"
            "try:\n    ResultWriter(sys.argv[1])\nexcept OutputStateError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        child = subprocess.run(
            [sys.executable, "-c", code, str(out)], capture_output=True, text=True
        )
        assert child.returncode == 3, child.stderr
        assert "another batch run" in child.stdout
    with ResultWriter(out):  # released on close
        pass


def test_drop_failed_rewrites_atomically_and_keeps_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultWriter(out) as writer:
        for item in (ok("a"), failed("b"), ok("c"), failed(None, line=4)):
            writer.write(item)
        assert writer.drop_failed() == 2
        assert writer.scan.done == {"a", "c"} and writer.scan.done_lines == set()
        writer.write(ok("b"))
        leftovers = [name for name in os.listdir(tmp_path) if name != "out.jsonl"]
        assert leftovers == []
    assert [line["id"] for line in lines(out)] == ["a", "c", "b"]


def test_fsync_runs_on_an_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    now = [0.0]
    with ResultWriter(tmp_path / "out.jsonl", fsync_every=1.0, clock=lambda: now[0]) as writer:
        writer.write(ok(1))
        writer.write(ok(2))
        assert synced == []
        now[0] = 1.5
        writer.write(ok(3))
        assert len(synced) == 1
        writer.write(ok(4))
    assert len(synced) == 2  # close syncs what is left
