"""Chat sessions: one JSON file per conversation, rewritten atomically after every turn.

Files live in ``$XDG_DATA_HOME/bedrock-mistral/sessions/NAME.json`` (0600). Because each
write replaces the whole file atomically (see :mod:`bedrock_mistral.cli.fsutil`), killing
the process at any moment leaves the last finished turn on disk and never a torn file.

>>> store = SessionStore(data_dir() / "sessions")
>>> session = store.create(model="mistral-7b", backend="bedrock")
>>> session.add_user("hi"); session.add_assistant("hello", meta={}); store.save(session)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bedrock_mistral.cli.fsutil import atomic_write_text, data_dir
from bedrock_mistral.errors import BedrockMistralError, ValidationError

__all__ = [
    "FORMAT_VERSION",
    "Session",
    "SessionError",
    "SessionInfo",
    "SessionStore",
    "check_name",
    "default_store",
]

FORMAT_VERSION = 1
_USAGE_KEYS = ("replies", "input_tokens", "output_tokens", "cost_usd", "priced")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class SessionError(BedrockMistralError):
    """A session file exists but cannot be read back."""


def check_name(name: str) -> str:
    """Session names become file names: letters, digits, ``.``, ``_`` and ``-`` only."""
    if not _NAME.match(name) or name.endswith(".json"):
        raise ValidationError.out_of_range(
            "session name",
            name,
            "1-80 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Session:
    """A conversation plus the settings it was held with.

    ``messages`` alternate user/assistant. Assistant messages carry ``meta`` (model,
    backend, usage, cost, latency, stop reason) and ``cut: true`` when the user stopped
    the reply early; only ``role`` and ``content`` are sent back to the model.

    ``messages`` is the whole transcript and is never trimmed. When the context window
    fills, the oldest turns stop being sent: ``context_from`` is the index of the first
    message the model still sees (see :meth:`in_context`).
    """

    name: str
    model: str
    backend: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    context_from: int = 0
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    # --- building the conversation ---

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def add_assistant(self, text: str, *, meta: dict[str, Any], cut: bool = False) -> None:
        from bedrock_mistral.prompt import assistant_content

        content = assistant_content(text)
        message: dict[str, Any] = {"role": "assistant", "content": content, "meta": meta}
        if cut:
            message["cut"] = True
        self.messages.append(message)

    def pop_turn(self) -> str | None:
        """Drop the last reply (if any) and the user prompt before it; return that prompt."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        prompt = None
        if self.messages and self.messages[-1]["role"] == "user":
            prompt = str(self.messages.pop()["content"])
        self.context_from = min(self.context_from, len(self.messages))
        return prompt

    def leave_out(self, count: int) -> None:
        """Stop sending the ``count`` oldest in-context messages (they stay in ``messages``)."""
        self.context_from = min(self.context_from + count, len(self.messages))

    def in_context(self) -> list[dict[str, str]]:
        """The user/assistant messages still sent to the model, as role/content pairs."""
        return [
            {"role": m["role"], "content": m["content"]} for m in self.messages[self.context_from :]
        ]

    def conversation(self) -> list[dict[str, str]]:
        """What the model sees: the system prompt, then the in-context role/content pairs."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.in_context()

    @property
    def turns(self) -> int:
        return sum(1 for message in self.messages if message["role"] == "assistant")

    def usage_totals(self) -> dict[str, dict[str, float]]:
        """Tokens and cost per ``backend/model``, plus an ``all`` row.

        ``priced`` counts the replies that had a known price (Bedrock ones).
        """
        totals: dict[str, dict[str, float]] = {}
        for message in self.messages:
            meta = message.get("meta") or {}
            if message["role"] != "assistant" or not meta:
                continue
            for key in (f"{meta.get('backend', '?')}/{meta.get('model', '?')}", "all"):
                row = totals.setdefault(key, dict.fromkeys(_USAGE_KEYS, 0.0))
                row["replies"] += 1
                row["input_tokens"] += int(meta.get("input_tokens") or 0)
                row["output_tokens"] += int(meta.get("output_tokens") or 0)
                if meta.get("cost_usd") is not None:  # local and echo replies have no price
                    row["cost_usd"] += float(meta["cost_usd"])
                    row["priced"] += 1
        return totals

    # --- serialisation ---

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "model": self.model,
            "backend": self.backend,
            "system": self.system,
            "params": self.params,
            "messages": self.messages,
            "context_from": self.context_from,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, name: str) -> Session:
        messages = data.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and m.get("role") in ("user", "assistant")
            and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError("'messages' must be a list of {role, content} objects")
        context_from = data.get("context_from", 0)
        if not isinstance(context_from, int) or not 0 <= context_from <= len(messages):
            raise ValueError("'context_from' must be an index into 'messages'")
        return cls(
            name=name,
            model=str(data.get("model") or "mistral-7b"),
            backend=str(data.get("backend") or "bedrock"),
            system=data.get("system") if isinstance(data.get("system"), str) else None,
            params=dict(data.get("params") or {}),
            messages=messages,
            context_from=context_from,
            created_at=str(data.get("created_at") or _now()),
            updated_at=str(data.get("updated_at") or _now()),
        )


@dataclass(frozen=True)
class SessionInfo:
    """One row of ``sessions list``; ``error`` is set when the file cannot be read."""

    name: str
    path: Path
    mtime: float
    turns: int = 0
    model: str = ""
    backend: str = ""
    preview: str = ""
    error: str | None = None


class SessionStore:
    """The sessions directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def new_name(self) -> str:
        base = "chat-" + datetime.now().strftime("%Y%m%d-%H%M%S")
        name, suffix = base, 2
        while self.exists(name):
            name, suffix = f"{base}-{suffix}", suffix + 1
        return name

    def create(
        self, *, model: str, backend: str, name: str | None = None, **fields: Any
    ) -> Session:
        return Session(
            name=check_name(name) if name else self.new_name(),
            model=model,
            backend=backend,
            **fields,
        )

    def save(self, session: Session) -> Path:
        session.updated_at = _now()
        path = self.path(session.name)
        atomic_write_text(path, json.dumps(session.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    def load(self, name: str) -> Session:
        path = self.path(name)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValidationError.out_of_range(
                "session", name, "an existing session (`bedrock-mistral sessions list` shows them)"
            ) from None
        try:
            return Session.from_dict(json.loads(raw), name=name)
        except ValueError as err:
            raise SessionError(
                f"session file {path} is damaged ({err}); delete it or fix it by hand"
            ) from err

    def delete(self, name: str) -> Path:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ValidationError.out_of_range(
                "session", name, "an existing session (`bedrock-mistral sessions list` shows them)"
            ) from None
        return path

    def _files(self) -> Iterator[Path]:
        if not self.directory.is_dir():
            return iter(())
        # Temporary files from an interrupted write start with a dot: never sessions.
        return (p for p in self.directory.glob("*.json") if not p.name.startswith("."))

    def list(self) -> list[SessionInfo]:
        """Every session, most recently written first."""
        infos = [self._info(path) for path in self._files()]
        return sorted(infos, key=lambda info: info.mtime, reverse=True)

    def latest(self) -> str | None:
        """The name of the session written last, if any."""
        newest = max(self._files(), key=lambda p: p.stat().st_mtime_ns, default=None)
        return newest.stem if newest else None

    def _info(self, path: Path) -> SessionInfo:
        mtime = path.stat().st_mtime
        try:
            session = Session.from_dict(
                json.loads(path.read_text(encoding="utf-8")), name=path.stem
            )
        except (OSError, ValueError) as err:
            return SessionInfo(name=path.stem, path=path, mtime=mtime, error=str(err))
        first = next((m["content"] for m in session.messages if m["role"] == "user"), "")
        return SessionInfo(
            name=path.stem,
            path=path,
            mtime=mtime,
            turns=session.turns,
            model=session.model,
            backend=session.backend,
            preview=" ".join(first.split())[:60],
        )


def default_store() -> SessionStore:
    return SessionStore(data_dir() / "sessions")


def age(mtime: float) -> str:
    """'3 min ago' style, for listings."""
    seconds = max(0.0, time.time() - mtime)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"
