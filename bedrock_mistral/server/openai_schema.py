"""OpenAI request bodies in, our parameters out; our answers out as OpenAI's JSON.

Which body fields do what (the same for /v1/chat/completions and /v1/completions):

- mapped to ours: ``model``, ``messages`` / ``prompt``, ``max_tokens`` and
  ``max_completion_tokens`` (the same thing; both given and different is an error),
  ``temperature``, ``top_p``, ``stop`` (a string or a list), ``top_k`` (an extension, as
  vLLM takes it), ``stream``, ``stream_options.include_usage``, ``n`` (only 1).
  Their values are then checked by our rules (:mod:`bedrock_mistral.validation`, the
  model's limits), so ``temperature=1.5`` is refused as the SDK refuses it.
- accepted and ignored, because they do not change the answer: ``user``, ``metadata``,
  ``store``, ``service_tier``, ``seed`` (sampling here is not seeded), ``safety_identifier``,
  ``prompt_cache_key``, ``parallel_tool_calls``.
- features we do not have (tools, logprobs, penalties, logit bias, JSON mode, ``echo``,
  ``suffix``, ``best_of``, audio): accepted at their "off" value (what clients send by
  default), refused with a 400 naming the field otherwise. Silently ignoring them would
  hand back an answer that is not what was asked for.
- anything else: refused as OpenAI refuses it, ``Unrecognized request argument supplied``,
  so a misspelt ``max_token`` is an error rather than a default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bedrock_mistral.server.bodies import chat_usage
from bedrock_mistral.server.openai_errors import OpenAIError
from bedrock_mistral.types import Completion, StopReason, Usage

__all__ = [
    "ChunkWriter",
    "Kind",
    "OpenAIRequest",
    "completion_body",
    "models_body",
    "parse_request",
]

Kind = Literal["chat", "text"]

_MAPPED = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "n",
    }
)
_IGNORED = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "seed",
        "safety_identifier",
        "prompt_cache_key",
        "parallel_tool_calls",
    }
)


def _off(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == [] or value == {}


# Features we cannot honour, with the values that mean "not used".
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": _off,
    "functions": _off,
    "tool_choice": lambda value: value is None or value == "none",
    "function_call": lambda value: value is None or value == "none",
    "logprobs": _off,
    "top_logprobs": _off,
    "presence_penalty": _off,
    "frequency_penalty": _off,
    "logit_bias": _off,
    "response_format": lambda value: value is None or value == {"type": "text"},
    "modalities": lambda value: value is None or value == ["text"],
    "audio": _off,
    "prediction": _off,
    "reasoning_effort": _off,
    "web_search_options": _off,
    "echo": _off,
    "suffix": lambda value: value is None or value == "",
    "best_of": lambda value: value is None or value == 1,
}


@dataclass(frozen=True)
class OpenAIRequest:
    """One request, read: what to answer, with which of our parameters."""

    kind: Kind
    model: str
    messages: list[Any] = field(default_factory=list)
    prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    continue_final: bool = False
    # Our field name -> the one the request used, for error messages' ``param``.
    renamed: dict[str, str] = field(default_factory=dict)


def _invalid(message: str, param: str | None) -> OpenAIError:
    return OpenAIError(400, message, type="invalid_request_error", param=param)


def _check_fields(body: Mapping[str, Any], own: str) -> None:
    for key, value in body.items():
        if key == own or key in _MAPPED or key in _IGNORED:
            continue
        is_off = _UNSUPPORTED.get(key)
        if is_off is None:
            raise _invalid(f"Unrecognized request argument supplied: {key}", key)
        if not is_off(value):
            raise _invalid(
                f"{key} is not supported by this server (bedrock-mistral serve answers with "
                f"text only); remove {key} or leave it at its default",
                key,
            )


def _params(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Our generation parameters (None = the model's default), and their request names."""
    renamed: dict[str, str] = {}
    max_tokens = body.get("max_tokens")
    newer = body.get("max_completion_tokens")
    if newer is not None:
        if max_tokens is not None and max_tokens != newer:
            raise _invalid(
                f"max_tokens={max_tokens!r} and max_completion_tokens={newer!r} disagree; "
                "send one of them",
                "max_tokens",
            )
        max_tokens, renamed["max_tokens"] = newer, "max_completion_tokens"
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid(
            f"n={n!r} is not supported: this server generates one choice per request "
            "(send n requests instead)",
            "n",
        )
    params = {
        "max_tokens": max_tokens,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "top_k": body.get("top_k"),
        "stop": body.get("stop"),
    }
    return {name: value for name, value in params.items() if value is not None}, renamed


def _streaming(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid(f"stream={stream!r} is not allowed: true or false", "stream")
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    if not isinstance(options, dict) or not options.keys() <= {
        "include_usage",
        "include_obfuscation",
    }:
        raise _invalid(
            f"stream_options={options!r} is not allowed: an object with include_usage",
            "stream_options",
        )
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise _invalid(
            f"stream_options.include_usage={include!r} is not allowed: true or false",
            "stream_options.include_usage",
        )
    return True, bool(include)


def _content(content: Any, index: int) -> Any:
    """A string, or the text of a list of text parts; anything else is left for our check."""
    if not isinstance(content, list):
        return content
    texts: list[str] = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise _invalid(
                f"messages[{index}].content has a {kind!r} part; this server takes text parts only",
                f"messages[{index}].content",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid(
                f"messages[{index}].content has a text part without a string 'text'",
                f"messages[{index}].content",
            )
        texts.append(text)
    return "".join(texts)


_MESSAGE_KEYS = frozenset({"role", "content", "name", "prefix"})


def _messages(items: Any) -> tuple[list[Any], bool]:
    """OpenAI messages -> our role/content dicts, and whether to continue the last one.

    ``developer`` is OpenAI's newer name for ``system``. A final assistant message with
    ``"prefix": true`` (Mistral's API convention) is continued rather than answered.
    Roles, order and content types are then checked by the prompt template's own rules.
    """
    if not isinstance(items, list) or not items:
        raise _invalid("messages must be a non-empty list of messages", "messages")
    messages: list[Any] = []
    continue_final = False
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            messages.append(item)  # the template's check names the position and the type
            continue
        extra = (
            []
            if _MESSAGE_KEYS.issuperset(item)
            else sorted(key for key in item if key not in _MESSAGE_KEYS and not _off(item[key]))
        )
        if extra:
            raise _invalid(
                f"messages[{index}].{extra[0]} is not supported by this server (text chat only)",
                f"messages[{index}].{extra[0]}",
            )
        role = item.get("role")
        if item.get("prefix"):
            if role != "assistant" or index != len(items) - 1:
                raise _invalid(
                    "prefix is allowed only on the last message, an assistant one",
                    f"messages[{index}].prefix",
                )
            continue_final = True
        messages.append(
            {
                "role": "system" if role == "developer" else role,
                "content": _content(item.get("content"), index),
            }
        )
    return messages, continue_final


def _prompt(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list):
        raise _invalid(
            "prompt must be one string: several prompts (or token ids) in one request are not "
            "supported; send one request per prompt",
            "prompt",
        )
    return value  # a non-string is refused by our check, naming the value


def parse_request(kind: Kind, body: Any) -> OpenAIRequest:
    """Read a decoded JSON body; raises :class:`OpenAIError` for what OpenAI would refuse."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.", None)
    own = "messages" if kind == "chat" else "prompt"
    for required in ("model", own):
        if required not in body:
            raise _invalid(f"Missing required parameter: '{required}'.", required)
    _check_fields(body, own)
    params, renamed = _params(body)
    stream, include_usage = _streaming(body)
    model = body["model"]
    if not isinstance(model, str):
        raise _invalid(f"model={model!r} is not allowed: a model id or alias", "model")
    if kind == "chat":
        messages, continue_final = _messages(body["messages"])
        return OpenAIRequest(
            kind,
            model,
            messages=messages,
            params=params,
            stream=stream,
            include_usage=include_usage,
            continue_final=continue_final,
            renamed=renamed,
        )
    return OpenAIRequest(
        kind,
        model,
        prompt=_prompt(body["prompt"]),
        params=params,
        stream=stream,
        include_usage=include_usage,
        renamed={**renamed, "messages": "prompt"},
    )


# -- answers -------------------------------------------------------------------------------


def _head(kind: Kind, ident: str, model: str, created: int, *, chunk: bool) -> dict[str, Any]:
    if kind == "chat":
        obj = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        obj = "text_completion"
    return {"id": ident, "object": obj, "created": created, "model": model}


def completion_body(kind: Kind, ident: str, model: str, completion: Completion) -> dict[str, Any]:
    """The non-streaming answer."""
    body = _head(kind, ident, model, int(time.time()), chunk=False)
    choice: dict[str, Any] = {"index": 0}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": completion.text}
    else:
        choice["text"] = completion.text
    choice["logprobs"] = None
    choice["finish_reason"] = completion.stop_reason
    body["choices"] = [choice]
    body["usage"] = chat_usage(completion.usage)
    return body


class ChunkWriter:
    """The chunks of one streamed answer, in OpenAI's order.

    Chat: a first chunk with ``delta.role``, one per text delta, one with
    ``finish_reason`` and an empty delta. With ``include_usage`` every chunk carries
    ``"usage": null`` and one more, with no choices, carries the usage. Then ``[DONE]``.
    """

    def __init__(self, kind: Kind, ident: str, model: str, *, include_usage: bool) -> None:
        self.kind = kind
        self.include_usage = include_usage
        self._head = _head(kind, ident, model, int(time.time()), chunk=True)

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        chunk = {**self._head, "choices": [{"index": 0, **choice}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _choice(self, text: str | None, reason: StopReason | None) -> dict[str, Any]:
        if self.kind == "chat":
            delta = {} if text is None else {"content": text}
            return {"delta": delta, "logprobs": None, "finish_reason": reason}
        return {"text": text or "", "logprobs": None, "finish_reason": reason}

    def opening(self) -> list[dict[str, Any]]:
        if self.kind != "chat":
            return []
        return [
            self._chunk(
                {
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            )
        ]

    def delta(self, text: str) -> dict[str, Any]:
        return self._chunk(self._choice(text, None))

    def closing(self, reason: StopReason, usage: Usage) -> list[dict[str, Any]]:
        chunks = [self._chunk(self._choice(None, reason))]
        if self.include_usage:
            chunks.append({**self._head, "choices": [], "usage": chat_usage(usage)})
        return chunks


def models_body(entries: list[tuple[str, list[str]]], *, created: int) -> dict[str, Any]:
    """``GET /v1/models``: one entry per served model id, with the aliases it answers to."""
    return {
        "object": "list",
        "data": [
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": "mistralai",
                "aliases": aliases,
            }
            for model_id, aliases in entries
        ],
    }
