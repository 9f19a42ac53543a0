"""One reply, shown as it streams; Ctrl-C cuts it and keeps what arrived.

Shared by ``ask`` and ``chat``: :func:`show_reply` drives a
:class:`~bedrock_mistral.client.Stream` into a :class:`~bedrock_mistral.cli.render.ReplyView`,
and :func:`footer` writes the quiet status line that follows a reply.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from bedrock_mistral.cli.render import ReplyView
    from bedrock_mistral.client import MistralClient
    from bedrock_mistral.streaming import Stream
    from bedrock_mistral.types import Completion

__all__ = [
    "Reply",
    "footer",
    "format_cost",
    "ignore_sigint",
    "quiet_tty",
    "reply_meta",
    "show_reply",
    "stream_reply",
]


@dataclass
class Reply:
    """What came back: the text shown, the completion (None when cut) and how long it took."""

    text: str
    completion: Completion | None
    cut: bool
    elapsed_s: float
    model: str
    backend: str


def stream_reply(
    client: MistralClient,
    messages: Sequence[Mapping[str, str]],
    params: Mapping[str, Any],
    view: ReplyView,
    *,
    stream: bool = True,
) -> Reply:
    """Send ``messages`` and show the reply in ``view`` (see :func:`show_reply`)."""
    if stream:
        return show_reply(client, view, lambda: client.stream(list(messages), **params))
    return show_reply(client, view, lambda: client.chat(list(messages), **params))


def show_reply(
    client: MistralClient, view: ReplyView, start: Callable[[], Stream | Completion]
) -> Reply:
    """Call ``start`` (a stream, or a whole completion) and show the reply in ``view``.

    Ctrl-C while text arrives closes the stream (releasing the connection or stopping
    generation) and returns the text so far with ``cut=True``. Other errors propagate
    after the view is closed, so partial text stays on screen above the error.
    """
    from bedrock_mistral.prompt import assistant_content  # shown as it enters the history
    from bedrock_mistral.types import Completion

    started = time.monotonic()
    parts: list[str] = []
    completion: Completion | None = None
    cut = False
    try:
        source = start()
        if isinstance(source, Completion):
            completion = source
            parts.append(completion.text)
            view.feed(assistant_content(completion.text))
        else:
            with source as reply_stream:
                for delta in reply_stream:
                    # Kept before shown: Ctrl-C between the two must not lose text on screen.
                    parts.append(delta)
                    view.feed(delta if len(parts) > 1 else assistant_content(delta))
            completion = reply_stream.completion
    except KeyboardInterrupt:
        cut = True
    finally:
        with ignore_sigint():
            view.finish()
    return Reply(
        text="".join(parts),
        completion=completion,
        cut=cut,
        elapsed_s=time.monotonic() - started,
        model=client.model.alias,
        backend=client.backend.name,
    )


def reply_meta(reply: Reply) -> dict[str, Any]:
    """What a session file keeps about a reply."""
    meta: dict[str, Any] = {"model": reply.model, "backend": reply.backend}
    completion = reply.completion
    if completion is not None:
        meta.update(
            model_id=completion.model_id,
            stop_reason=completion.stop_reason,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
            cost_usd=completion.cost_usd,
            latency_ms=round(completion.latency_ms, 1),
        )
    else:
        meta["latency_ms"] = round(reply.elapsed_s * 1000.0, 1)
    return meta


def format_cost(cost: float | None) -> str:
    if cost is None:
        return ""
    if cost >= 1:
        return f"${cost:.2f}"
    text = f"{cost:.6f}".rstrip("0").rstrip(".")
    return f"${text}" if text != "0" else "$0"


def footer(reply: Reply) -> str:
    """``mistral-7b · bedrock · 12 in / 40 out · $0.00002 · 1.3 s``."""
    parts = [reply.model, reply.backend]
    completion = reply.completion
    if completion is not None:
        parts.append(f"{completion.usage.input_tokens} in / {completion.usage.output_tokens} out")
        if completion.cost_usd is not None:
            parts.append(format_cost(completion.cost_usd))
        seconds = (completion.latency_ms or reply.elapsed_s * 1000.0) / 1000.0
        parts.append(f"{seconds:.1f} s")
        if completion.stop_reason == "length":
            parts.append("stopped at max_tokens")
    else:
        parts.append(f"{reply.elapsed_s:.1f} s")
    if reply.cut:
        parts.append("cut short (Ctrl-C)")
    return " · ".join(parts)


@contextlib.contextmanager
def ignore_sigint() -> Iterator[None]:
    """Hold off Ctrl-C for a moment that must not be torn (closing a view, saving a turn)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def quiet_tty(stream: TextIO) -> Iterator[None]:
    """Stop the terminal echoing keys typed while a reply streams (they would tear the
    live display); typed-ahead text still reaches the next prompt. Ctrl-C still works."""
    try:
        import termios

        fd = stream.fileno()
        if not stream.isatty():
            raise OSError
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)
