"""A deterministic backend that answers with the last user turn, word by word.

For tests and demos: no model, no randomness, so a test can predict every byte. The
reply is the text of the last user turn, recovered from the ``[INST]`` prompt (or taken
from ``request.messages`` when the caller kept them). A prompt that continues an answer
(``stream(..., resume=True)``) gets only the rest of it, so resumed text is never doubled.
Token counts are whitespace words, never fewer than a real tokenizer could produce
(:func:`~bedrock_mistral.tokens.min_tokens`), so a huge one-word prompt is still too long.

Tools, for running the whole tool loop offline. When a request offers tools:

- each line of the last user turn of the form ``call NAME {json}`` (or ``call NAME``),
  NAME an offered tool, becomes a tool call with those arguments (ids ``echo00001``,
  ``echo00002``, ... counted over the conversation), and the reply stops with
  ``"tool_use"``; the arguments are not checked against the tool's schema;
- when the conversation ends with tool results, the reply is their text, one per line.

>>> from bedrock_mistral.types import CompletionRequest
>>> request = CompletionRequest(model_id="m", prompt="<s> [INST] Hi there [/INST]", max_tokens=9)
>>> EchoBackend().complete(request).text
'Hi there'
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bedrock_mistral.prompt import BOS, EOS, INST_CLOSE, INST_OPEN
from bedrock_mistral.tokens import min_tokens
from bedrock_mistral.types import (
    Completion,
    CompletionRequest,
    StopReason,
    StreamEnd,
    TextDelta,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from bedrock_mistral.backends.aio import InlineBackend

__all__ = ["EchoBackend", "echo_reply", "echo_tool_calls", "last_user_text", "split_words"]

_WORD = re.compile(r"\s*\S+")
_OPEN = f"{INST_OPEN} "
_CLOSE = f" {INST_CLOSE}"
_CALL = re.compile(r"^call\s+(?P<name>[a-zA-Z0-9_-]{1,64})(?:\s+(?P<args>\{.*\}))?\s*$")


def split_words(text: str) -> list[str]:
    """Pieces that concatenate back to ``text``: each word with the whitespace before it."""
    pieces = _WORD.findall(text)
    tail = text[sum(len(piece) for piece in pieces) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces.append(tail)
    return pieces


def last_user_text(request: CompletionRequest) -> str:
    """The last user turn's text, verbatim.

    From ``request.messages`` when the caller kept them; otherwise from the prompt: the
    text between the last ``[INST] `` and the following `` [/INST]``. (A system message
    shares the first ``[INST]`` block with the user text, so a text prompt cannot tell
    them apart: the whole block is echoed.)
    """
    if request.messages:
        for message in reversed(request.messages):
            if message.role == "user":
                return message.content
    prompt = request.prompt
    start = prompt.rfind(_OPEN)
    if start < 0:
        return prompt.removeprefix(BOS).strip()
    body_start = start + len(_OPEN)
    end = prompt.find(_CLOSE, body_start)
    return prompt[body_start:] if end < 0 else prompt[body_start:end]


def answer_prefix(request: CompletionRequest) -> str:
    """Assistant text the prompt already holds after the last ``[/INST]`` (a continuation)."""
    if request.messages:
        last = request.messages[-1]
        return last.content if last.role == "assistant" else ""
    end = request.prompt.rfind(_CLOSE)
    if end < 0:
        return ""
    tail = request.prompt[end + len(_CLOSE) :]
    return "" if EOS in tail else tail


def echo_tool_calls(request: CompletionRequest) -> tuple[ToolCall, ...]:
    """The tool calls the echo makes: ``call NAME {json}`` lines naming an offered tool."""
    turns = request.messages or ()
    if not request.tools or not turns or turns[-1].role != "user":
        return ()
    offered = {tool.name for tool in request.tools}
    made = sum(len(m.tool_calls) for m in turns)
    calls: list[ToolCall] = []
    for line in turns[-1].content.splitlines():
        match = _CALL.match(line.strip())
        if match is None or match["name"] not in offered:
            continue
        try:
            arguments = json.loads(match["args"] or "{}")
        except json.JSONDecodeError:
            continue
        call_id = f"echo{made + len(calls) + 1:05d}"
        calls.append(ToolCall(id=call_id, name=match["name"], arguments=arguments))
    return tuple(calls)


def _tool_results(request: CompletionRequest) -> str | None:
    """The text of the trailing tool results, when the conversation ends with them."""
    results: list[str] = []
    for message in reversed(request.messages or ()):
        if message.role != "tool":
            break
        results.insert(0, message.content)
    return "\n".join(results) if results else None


def echo_reply(request: CompletionRequest) -> str:
    """The echo's answer: the last user text, minus what a continued answer already holds."""
    results = _tool_results(request)
    if results is not None:
        return results
    text = last_user_text(request)
    prefix = answer_prefix(request)
    for done in (prefix, prefix[1:] if prefix.startswith(" ") else None):
        if done and text.startswith(done):
            return text[len(done) :]
    return text


class EchoBackend:
    """Replies with the last user turn; honours ``max_tokens`` (words) and ``stop``."""

    name = "echo"
    accepts_tools = True  # see the tool rule in the module docstring

    def count_tokens(self, prompt: str) -> int:
        # Words are predictable in tests; the floor keeps a word of millions of characters
        # from counting as one token (Bedrock refuses such a prompt as too long).
        return max(len(prompt.split()), min_tokens(prompt))

    @property
    def context_window(self) -> int | None:
        return None

    def async_backend(self) -> InlineBackend:
        """For the async client: pure computation, so it runs on the loop, no thread."""
        from bedrock_mistral.backends.aio import InlineBackend

        return InlineBackend(self)

    def _plan(self, request: CompletionRequest) -> tuple[list[str], StopReason]:
        text = echo_reply(request)
        stop_reason: StopReason = "stop"
        # An empty stop sequence matches nothing (it would otherwise cut every reply to "").
        cut = min((text.find(stop) for stop in request.stop if stop and stop in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        words = split_words(text)
        if len(words) > request.max_tokens:
            words, stop_reason = words[: request.max_tokens], "length"
        return words, stop_reason

    def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        calls = echo_tool_calls(request)
        words: list[str]
        stop_reason: StopReason
        if calls:
            words, stop_reason = [], "tool_use"
            output_tokens = sum(len(json.dumps(call.arguments).split()) + 1 for call in calls)
        else:
            words, stop_reason = self._plan(request)
            output_tokens = len(words)
        return Completion(
            text="".join(words),
            stop_reason=stop_reason,
            usage=Usage(
                input_tokens=self.count_tokens(request.prompt), output_tokens=output_tokens
            ),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            tool_calls=calls,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        started = time.perf_counter()
        words, stop_reason = self._plan(request)
        for word in words:
            yield TextDelta(text=word)
        elapsed = (time.perf_counter() - started) * 1000.0
        yield StreamEnd(
            stop_reason=stop_reason,
            usage=Usage(input_tokens=self.count_tokens(request.prompt), output_tokens=len(words)),
            latency_ms=elapsed,
            first_byte_latency_ms=elapsed,
        )
