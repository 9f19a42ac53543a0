"""Where the CLI keeps its files (XDG base directories) and how it writes them safely.

Every file the CLI owns is replaced atomically: a temporary file in the same directory is
written, flushed and fsynced, renamed over the target with ``os.replace`` and the
directory is fsynced, so a crash or ``kill -9`` leaves either the old file or the new
one, never a torn mix. Files are private (0600) because sessions hold user text.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "APP_NAME",
    "atomic_write_text",
    "config_dir",
    "data_dir",
    "ensure_private_dir",
    "state_dir",
]

APP_NAME = "bedrock-mistral"


def _xdg(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    # The XDG spec says relative values are invalid and must be ignored.
    value = env.get(variable, "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / fallback
    return base / APP_NAME


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/bedrock-mistral`` (default ``~/.config/bedrock-mistral``)."""
    return _xdg(os.environ if env is None else env, "XDG_CONFIG_HOME", ".config")


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/bedrock-mistral`` (default ``~/.local/share/bedrock-mistral``)."""
    return _xdg(os.environ if env is None else env, "XDG_DATA_HOME", ".local/share")


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/bedrock-mistral`` (default ``~/.local/state/bedrock-mistral``).

    Holds the chat input history.
    """
    return _xdg(os.environ if env is None else env, "XDG_STATE_HOME", ".local/state")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; the leaf is 0700 when we create it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable. Some platforms cannot open directories: skip there.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably, as a 0600 file."""
    directory = ensure_private_dir(path.parent)
    # mkstemp creates the file 0600 and in the target directory, so os.replace never crosses
    # a filesystem boundary.
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)
