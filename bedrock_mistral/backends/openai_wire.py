"""OpenAI wire format: our request -> a chat or completions body; their JSON -> our types.

Pure functions over dicts and lines, no HTTP, so the rules can be read (and tested) alone.

Which endpoint a request goes to:

- ``prompt_mode="raw"``: always ``/completions`` with ``request.prompt``, the exact
  string Bedrock would get;
- ``prompt_mode="chat"``: ``/chat/completions`` with the messages (the engine applies
  its own template), except when there are no messages (``client.complete(prompt)``) or
  the last one is an open assistant turn (a continuation, ``resume=True``): those only
  the prompt expresses, so they go to ``/completions`` as in raw mode.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bedrock_mistral.types import CompletionRequest, StopReason, Usage

__all__ = [
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "Chunk",
    "PromptMode",
    "build_body",
    "parse_chunk",
    "parse_response",
    "raw_prompt",
    "sse_data",
]

PromptMode = Literal["chat", "raw"]
CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
DONE = "[DONE]"


def _uses_chat(request: CompletionRequest, mode: PromptMode) -> bool:
    messages = request.messages
    return mode == "chat" and bool(messages) and messages[-1].role != "assistant"  # type: ignore[index]


_MARKER_SPACE = re.compile(r"(</?s>) ")


def raw_prompt(prompt: str, engine_bos: bool = False) -> str:
    """The prompt sent to ``/completions``: ours, or for an engine that writes BOS and the
    dummy-prefix space itself (llama.cpp), ours without them, so it reads the same tokens.

    >>> raw_prompt("<s> [INST] Hi [/INST] Hello</s> [INST] Bye [/INST]", engine_bos=True)
    '[INST] Hi [/INST] Hello</s>[INST] Bye [/INST]'
    """
    if not engine_bos:
        return prompt
    return _MARKER_SPACE.sub(r"\1", prompt).removeprefix("<s>")


def build_body(
    request: CompletionRequest,
    *,
    model: str,
    mode: PromptMode,
    stream: bool,
    engine_bos: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(path under base_url, JSON body) for ``request``; ``engine_bos``: see :func:`raw_prompt`;
    ``extra``: the preset's engine-specific fields, added to every body."""
    body: dict[str, Any] = {"model": model}
    if _uses_chat(request, mode):
        path = CHAT_PATH
        # Role and text only: the engine applies its own template to them.
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages or ()]
    else:
        path = COMPLETIONS_PATH
        body["prompt"] = raw_prompt(request.prompt, engine_bos)
    body["max_tokens"] = request.max_tokens
    for key in ("temperature", "top_p", "top_k"):  # top_k: vLLM, llama.cpp; Ollama ignores it
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.stop:
        body["stop"] = list(request.stop)
    body.update(extra or {})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return path, body


@dataclass(frozen=True)
class Chunk:
    """What one response (or one streamed chunk) says."""

    text: str = ""
    stop_reason: StopReason | None = None
    usage: Usage | None = None


def _stop_reason(value: Any) -> StopReason | None:
    if value is None:
        return None
    return "length" if value == "length" else "stop"  # stop, eos, content_filter...


def _usage(data: dict[str, Any]) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def _choice_text(choice: dict[str, Any]) -> str:
    # /chat/completions: message (whole) or delta (stream); /completions: text.
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, dict):
            return str(part.get("content") or "")
    return str(choice.get("text") or "")


def parse_chunk(data: dict[str, Any]) -> Chunk:
    """A response body or a streamed chunk (the first choice; we ask for one)."""
    choices = data.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    return Chunk(
        text=_choice_text(choice),
        stop_reason=_stop_reason(choice.get("finish_reason")),
        usage=_usage(data),
    )


def parse_response(data: dict[str, Any]) -> Chunk:
    chunk = parse_chunk(data)
    return Chunk(text=chunk.text, stop_reason=chunk.stop_reason or "stop", usage=chunk.usage)


def sse_data(lines: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """The JSON payload of each server-sent event; None for ``[DONE]`` (then it stops).

    Events are separated by blank lines and may span several ``data:`` lines; comments
    (``: keep-alive``) and other fields (``event:``, ``id:``) are skipped. A payload that
    is not JSON raises ValueError.
    """
    buffer: list[str] = []
    for line in itertools.chain(lines, [""]):  # lazily: events arrive one by one
        if line:
            if line.startswith("data:"):
                buffer.append(line[5:].removeprefix(" "))
            continue
        if not buffer:
            continue
        payload, buffer = "\n".join(buffer), []
        if payload.strip() == DONE:
            yield None
            return
        data = json.loads(payload)
        if isinstance(data, dict):
            yield data
