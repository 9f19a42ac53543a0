"""A small but real OpenAI-compatible server for tests: an ASGI app run by uvicorn on loopback.

It speaks what vLLM, Ollama and llama.cpp's server speak: ``GET /v1/models``,
``POST /v1/chat/completions`` and ``POST /v1/completions`` (whole answers, or server-sent
events ending with ``data: [DONE]`` and, when asked, a usage chunk), ``POST /tokenize``
(vLLM's shape), OpenAI-shaped errors, an optional bearer key, and scripted faults.

The model answers by echoing: the last user message (chat), or the text of the last
``[INST] ... [/INST]`` block of the prompt (completions), minus what the prompt already
holds after ``[/INST]`` (a continuation). One word is one token; the prompt counts one
token per word too.

Every request is recorded (:attr:`OpenAIServer.requests`), so a test asserts exactly what
crossed the wire. Faults are consumed in order, one per generation request
(:meth:`OpenAIServer.script`):

- ``{"status": 429, "retry_after": "0"}``, ``{"status": 500}``, ``{"status": 503}``...
- ``{"cut_after": 2}``: stream two word chunks, then drop the connection;
- ``{"stall_after": 1, "seconds": 3}``: stream one chunk, then send nothing for 3 s;
- ``None``: no fault for that request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

__all__ = ["OpenAIServer", "RecordedRequest", "serve_asgi", "start_openai_server", "words_of"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_MODELS = ("mistral:7b-instruct", "mixtral:8x7b")
_CLOSE = " [/INST]"


class _Cut(Exception):
    """Raised inside a response to make uvicorn drop the connection mid-body."""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


def words_of(text: str) -> list[str]:
    """Pieces that join back to ``text``: each word with the whitespace before it."""
    pieces: list[str] = []
    for index, word in enumerate(text.split(" ")):
        if word == "" and pieces:
            pieces[-1] += " "
            continue
        pieces.append(word if index == 0 else " " + word)
    return [p for p in pieces if p]


def _answer_for_prompt(prompt: str) -> str:
    end = prompt.rfind(_CLOSE)
    start = prompt.rfind("[INST] ", 0, end if end >= 0 else None)
    if start < 0 or end < 0:
        return prompt.strip()
    answer = prompt[start + len("[INST] ") : end]
    done = prompt[end + len(_CLOSE) :]
    for prefix in (done, done.removeprefix(" ")):
        if prefix and answer.startswith(prefix):
            return answer[len(prefix) :]
    return answer


@dataclass
class ScriptedFaults:
    """The requests a test server saw, and the faults a test scripted for its next ones (one
    per request, in order; None: answer normally)."""

    url: str = ""  # the server's API root, ending in /v1 (set once it listens)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[dict[str, Any] | None] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def script(self, *faults: dict[str, Any] | None) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _next_fault(self) -> dict[str, Any]:
        with self._lock:
            return (self.faults.pop(0) if self.faults else None) or {}

    def generations(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("completions")]


@dataclass
class OpenAIServer(ScriptedFaults):
    """State shared by the app and the test: models, key, faults, recorded requests."""

    models: tuple[str, ...] = DEFAULT_MODELS
    api_key: str | None = None
    context_window: int = 4096
    send_usage: bool = True

    # -- the ASGI app ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = recorded(scope, await read_body(receive))
        headers, body = request.headers, request.body
        self.requests.append(request)
        try:
            await self._route(scope["method"], scope["path"], headers, body, send)
        except _Cut:
            raise RuntimeError("cut the connection (scripted fault)") from None

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: Any, send: Send
    ) -> None:
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            await _error(
                send, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
            return
        if method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "tests"} for m in self.models]
            await _json(send, 200, {"object": "list", "data": data})
        elif method == "POST" and path == "/tokenize":
            count = len((body.get("prompt") or "").split())
            await _json(send, 200, {"count": count, "max_model_len": self.context_window})
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            await self._generate(path.endswith("chat/completions"), body, send)
        else:
            await _json(send, 404, {"detail": "Not Found"})

    async def _generate(self, chat: bool, body: dict[str, Any], send: Send) -> None:
        model = body.get("model")
        if model not in self.models:
            await _error(send, 404, f"The model `{model}` does not exist.", "NotFoundError", 404)
            return
        if chat:
            prompt_words = sum(len(m["content"].split()) for m in body["messages"])
            user = [m["content"] for m in body["messages"] if m["role"] == "user"]
            answer = user[-1] if user else ""
        else:
            prompt_words = len(body["prompt"].split())
            answer = _answer_for_prompt(body["prompt"])
        max_tokens = int(body.get("max_tokens") or 16)
        if prompt_words + max_tokens > self.context_window:
            await _error(
                send,
                400,
                f"This model's maximum context length is {self.context_window} tokens. However,"
                f" you requested {prompt_words + max_tokens} tokens ({prompt_words} in the "
                f"messages, {max_tokens} in the completion). Please reduce the length of the "
                "messages or completion.",
                "BadRequestError",
                400,
            )
            return
        fault = self._next_fault()
        if "status" in fault:
            extra = {"retry-after": fault["retry_after"]} if "retry_after" in fault else {}
            await _error(
                send,
                fault["status"],
                fault.get("message", "scripted fault"),
                "server_error",
                fault["status"],
                extra,
            )
            return
        for stop in body.get("stop") or []:
            if stop and stop in answer:
                answer = answer[: answer.find(stop)]
        words = words_of(answer)
        reason = "stop"
        if len(words) > max_tokens:
            words, reason = words[:max_tokens], "length"
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": len(words),
            "total_tokens": prompt_words + len(words),
        }
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            await self._stream(chat, words, reason, usage if with_usage else None, fault, send)
            return
        text = "".join(words)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        payload: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "chat.completion" if chat else "text_completion",
            "model": body["model"],
            "choices": [choice],
        }
        if self.send_usage:
            payload["usage"] = usage
        await _json(send, 200, payload)

    async def _stream(
        self,
        chat: bool,
        words: list[str],
        reason: str,
        usage: dict[str, int] | None,
        fault: dict[str, Any],
        send: Send,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        async def event(data: Any) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {text}\n\n".encode(),
                    "more_body": True,
                }
            )

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": text} if text else {}
            else:
                choice["text"] = text
            return {"id": "cmpl-1", "object": "chunk", "choices": [choice]}

        if chat:
            await event(
                {
                    "id": "cmpl-1",
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}
                    ],
                }
            )
        await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
        for index, word in enumerate(words):
            if fault.get("cut_after") == index:
                raise _Cut
            if fault.get("stall_after") == index:
                await asyncio.sleep(float(fault.get("seconds", 3)))
            await event(chunk(word, None))
        if fault.get("cut_after") == len(words):
            raise _Cut
        await event(chunk("", reason))
        if usage is not None and self.send_usage:
            await event({"id": "cmpl-1", "object": "chunk", "choices": [], "usage": usage})
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def read_body(receive: Receive) -> bytes:
    """An ASGI request's whole body."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            return raw


def recorded(scope: Scope, raw: bytes) -> RecordedRequest:
    """The request as tests see it: method, path, lower-cased headers, the JSON body."""
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    return RecordedRequest(
        scope["method"], scope["path"], headers, json.loads(raw) if raw else None
    )


async def _json(
    send: Send, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    message: str,
    kind: str,
    code: Any,
    headers: dict[str, str] | None = None,
) -> None:
    payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    await _json(send, status, payload, headers)


@contextmanager
def serve_asgi(app: Any, what: str = "test server") -> Iterator[str]:
    """Run the ASGI ``app`` under uvicorn on 127.0.0.1 and a free port; yields its root URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the {what} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def start_openai_server(**options: Any) -> Iterator[OpenAIServer]:
    """Run an :class:`OpenAIServer` on 127.0.0.1 and a free port; ``server.url`` ends in /v1."""
    app = OpenAIServer(**options)
    with serve_asgi(app, "OpenAI test server") as root:
        app.url = f"{root}/v1"
        yield app
