"""Crash-safe batch output: one JSON line per finished record, appended as it finishes.

Why this survives ``kill -9`` without losing or duplicating work:

- Each result is one ``os.write`` of one complete line to a file opened ``O_APPEND``: no
  user-space buffer holds finished work, so once ``write`` returns the line outlives the
  process. ``fsync`` runs every ``fsync_every`` seconds and on close, bounding what a
  power cut (not a process kill) can take back.
- A run killed mid-write leaves at most one torn last line. :func:`scan_output` finds it
  (no newline, or not JSON) and :class:`ResultWriter` truncates it before appending, so the
  record is simply done again.
- The ids found by the scan are skipped on resume, so every id ends up in the file once.
- An exclusive lock (``flock``) stops two runs from writing the same file at once.

A damaged line *before* the last one is not ours to guess about: the scan refuses the
file instead of truncating real results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bedrock_mistral.errors import ConfigurationError

__all__ = ["OutputScan", "OutputStateError", "ResultWriter", "scan_output"]

logger = logging.getLogger(__name__)

DEFAULT_FSYNC_EVERY = 1.0
_LINE_BREAK_ESCAPES = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class OutputStateError(ConfigurationError):
    """The output file cannot be resumed safely (damaged, foreign, or in use)."""


@dataclass
class OutputScan:
    """What an existing output file already holds."""

    done: set[str] = field(default_factory=set)  # keys of records with a result line
    failed: set[str] = field(default_factory=set)  # the subset whose line is an error
    done_lines: set[int] = field(default_factory=set)  # id-less input problems, by line
    valid_bytes: int = 0  # length of the intact prefix
    torn_bytes: int = 0  # bytes after it (a partial last line), 0 when clean
    lines: int = 0


def _key_of(line: Mapping[str, Any]) -> tuple[str | None, int | None]:
    record_id = line.get("id")
    if isinstance(record_id, str | int) and not isinstance(record_id, bool):
        return str(record_id), None
    number = line.get("line")
    if record_id is None and isinstance(number, int):
        return None, number
    return None, None


def _parse(raw: bytes) -> Mapping[str, Any] | None:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) and "error" in value else None


def scan_output(path: str | Path) -> OutputScan:
    """Read an output file: done ids, and where its intact part ends."""
    scan = OutputScan()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return scan
    position = 0
    number = 0
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0:
            break  # no newline: a torn last line
        number += 1
        raw = data[position:end]
        if raw.strip():
            parsed = _parse(raw)
            if parsed is None:
                if b"\n" in data[position:].replace(b"\x00", b""):
                    raise OutputStateError(
                        f"{path}: line {number} is not a batch result; the file is damaged or is "
                        "not a batch output (is -o pointing at the input?). Choose another "
                        "output file, or fix that line, and rerun"
                    )
                break  # NULs left by a power cut, then at most a partial line: a torn tail
            key, line = _key_of(parsed)
            if key is not None:
                scan.done.add(key)
                if parsed.get("error") is not None:
                    scan.failed.add(key)
            elif line is not None:
                scan.done_lines.add(line)
            scan.lines += 1
        position = end + 1
    scan.valid_bytes = position
    scan.torn_bytes = len(data) - position
    return scan


def _lock(handle: BinaryIO, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run one at a time
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        raise OutputStateError(
            f"{path} is being written by another batch run; wait for it to finish or choose "
            "another output file"
        ) from err


class ResultWriter:
    """Append-only JSONL writer that owns the output file for the run.

    >>> with ResultWriter("out.jsonl") as writer:        # doctest: +SKIP
    ...     writer.scan.done                              # ids already finished
    ...     writer.write({"id": "a", "text": "hi", "error": None})
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fsync_every: float = DEFAULT_FSYNC_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync_every = fsync_every
        self._clock = clock
        # "ab" = O_APPEND; unbuffered so every line reaches the kernel in one write.
        self._handle: BinaryIO = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        try:
            _lock(self._handle, self.path)
            self.scan = scan_output(self.path)
            if self.scan.torn_bytes:
                logger.warning(
                    "%s: dropping a partial last line (%d bytes) left by an interrupted run; "
                    "that record will be done again",
                    self.path,
                    self.scan.torn_bytes,
                )
                os.truncate(self._handle.fileno(), self.scan.valid_bytes)
                os.fsync(self._handle.fileno())
        except BaseException:
            self._handle.close()
            raise
        self._last_sync = clock()
        self._unsynced = 0
        self.written = 0

    def write(self, line: Mapping[str, Any]) -> None:
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
        # Characters that str.splitlines() and some JSONL readers take as line breaks.
        text = text.translate(_LINE_BREAK_ESCAPES)
        data = (text + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            # A regular-file write is all-or-nothing unless the disk fills; loop for that case.
            count = os.write(self._handle.fileno(), view)
            view = view[count:]
        self.written += 1
        self._unsynced += 1
        if self._clock() - self._last_sync >= self._fsync_every:
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self._handle.fileno())
            self._unsynced = 0
        self._last_sync = self._clock()

    def drop_failed(self) -> int:
        """Atomically drop the error lines so those records run again; return how many."""
        kept: list[bytes] = []
        dropped = 0
        with open(self.path, "rb") as source:
            for raw in source:
                parsed = _parse(raw)
                if parsed is not None and parsed.get("error") is not None:
                    dropped += 1
                else:
                    kept.append(raw)
        if not dropped:
            return 0
        fd, temp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(self.path.parent)
        # The old handle (and its lock) now point at the replaced file: reopen.
        self._handle.close()
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
        _lock(self._handle, self.path)
        self.scan = scan_output(self.path)
        return dropped

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            self.sync()
        finally:
            self._handle.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
