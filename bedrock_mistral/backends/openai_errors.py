"""Turn an engine's HTTP errors and httpx's exceptions into our error tree, in one place.

Error bodies differ by engine; :func:`error_fields` reads all the shapes we know:
OpenAI and recent vLLM ``{"error": {"message", "type", "code"}}``, older vLLM
``{"object": "error", "message", ...}``, llama.cpp (``"n_prompt_tokens"``, ``"n_ctx"``
in the error) and TGI ``{"error": "...", "error_type": ...}``.

Use as ``raise map_status(...) from err`` / ``raise map_transport(err, ctx) from err``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bedrock_mistral import errors
from bedrock_mistral.backends.openai_presets import EnginePreset
from bedrock_mistral.errors import Arg, Fix

__all__ = ["CallContext", "error_fields", "map_status", "map_transport"]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 300
_BASE_URL = Arg("base_url")
_API_KEY = Arg("api_key")
_MODEL = Arg("model")

_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context length|context window|context size|too many tokens"
    r"|prompt is too long|input is too long",
    re.IGNORECASE,
)
_WINDOW = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)
# vLLM/OpenAI "(N in the messages", llama-cpp-python "(N in your prompt", TGI, others.
_PROMPT_TOKENS = re.compile(
    r"(\d+) in (?:the messages|your prompt)|(\d+) (?:input|prompt) tokens"
    r"|has (\d+) (?:input )?tokens",
    re.I,
)

_BY_STATUS: dict[int, type[errors.APIError]] = {
    400: errors.ServiceValidationError,
    404: errors.ModelNotFoundError,
    408: errors.ModelTimeoutError,
    413: errors.ServiceValidationError,
    422: errors.ServiceValidationError,
    429: errors.ThrottledError,
    500: errors.InternalServerError,
    502: errors.InternalServerError,
    503: errors.ServiceUnavailableError,
    504: errors.InternalServerError,
}


@dataclass(frozen=True)
class CallContext:
    """What the message writer needs to know about the failed call."""

    preset: EnginePreset
    base_url: str
    model: str  # the name sent to the engine
    key_sent: bool = False
    streaming: bool = False
    read_timeout: float | None = None
    stream_idle_timeout: float | None = None
    max_tokens: int = 0
    served: Callable[[], list[str] | None] = field(default=lambda: None, repr=False)


def _engine(ctx: CallContext) -> str:
    """The engine's name to open a sentence with."""
    title = ctx.preset.title
    return title[:1].upper() + title[1:]


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def error_fields(body: bytes | str) -> dict[str, Any]:
    """``message``, ``type``, ``code`` and any extra numbers, from any known error shape."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = json.loads(text)
    except ValueError:
        return {"message": text.strip()}
    if not isinstance(data, dict):
        return {"message": text.strip()}
    inner = data.get("error")
    if isinstance(inner, dict):
        return {**inner, "message": str(inner.get("message") or "")}
    if isinstance(inner, str):  # TGI
        return {"message": inner, "type": data.get("error_type")}
    fields = dict(data)
    fields["message"] = str(data.get("message") or data.get("detail") or "")
    return fields


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: our own backoff applies


def _key_fix(ctx: CallContext) -> Fix:
    variables = " or ".join(ctx.preset.key_variables)
    return Fix(f"pass the engine's key with {{}} or set {variables}", _API_KEY)


def _is_context_error(status: int, fields: Mapping[str, Any]) -> bool:
    code = str(fields.get("code") or "")
    kind = str(fields.get("type") or "")
    if code in _CONTEXT_CODES or kind in _CONTEXT_CODES:
        return True
    return status in (400, 413, 422) and bool(_CONTEXT_TEXT.search(fields["message"]))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _context_error(fields: Mapping[str, Any], ctx: CallContext) -> errors.ContextWindowError:
    message = fields["message"]
    window = _int(fields.get("n_ctx"))
    prompt = _int(fields.get("n_prompt_tokens"))
    if window is None and (match := _WINDOW.search(message)):
        window = int(match.group(1))
    if prompt is None and (match := _PROMPT_TOKENS.search(message)):
        prompt = int(next(group for group in match.groups() if group))
    return errors.ContextWindowError(
        f"{ctx.model} at {ctx.base_url} refused the prompt as too long for its context "
        f"window: {_truncate(message).rstrip('.')}.",
        prompt_tokens=prompt or 0,
        max_tokens=ctx.max_tokens,
        context_window=window or 0,
        fix=Fix(
            "shorten the conversation, lower max_tokens, or start the engine with a larger "
            "context (vLLM --max-model-len, llama.cpp -c, Ollama num_ctx)",
            cli="shorten the prompt, lower max_tokens (-o max_tokens=N), or start the engine "
            "with a larger context (vLLM --max-model-len, llama.cpp -c, Ollama num_ctx)",
        ),
    )


def _not_found(
    fields: Mapping[str, Any], ctx: CallContext, status: int
) -> errors.BedrockMistralError:
    message = fields["message"]
    about_model = ctx.model in message or "model" in message.lower()
    if not about_model:  # the path itself is missing: base_url is not an OpenAI API root
        return errors.ConfigurationError(
            f"{ctx.base_url} has no OpenAI API "
            f"(HTTP {status}: {_truncate(message) or 'not found'})",
            fix=Fix("check {}: it usually ends in /v1, e.g. http://localhost:8000/v1", _BASE_URL),
        )
    served = ctx.served()
    listing = (
        f"it serves {', '.join(served)}"
        if served
        else "it lists no models"
        if served == []
        else "its model list could not be read"
    )
    return errors.ModelNotFoundError(
        f"{_engine(ctx)} at {ctx.base_url} has no model {ctx.model!r} ({listing})",
        code=str(fields.get("code") or "") or None,
        status_code=status,
        model_id=ctx.model,
        fix=Fix("pick one of those with {} (or engine_model=...)", _MODEL, cli="pick one with -m"),
    )


def map_status(
    status: int, body: bytes, headers: Mapping[str, str], ctx: CallContext
) -> errors.BedrockMistralError:
    """The error for an HTTP error response from the engine."""
    fields = error_fields(body)
    message = _truncate(fields["message"])
    if status == 401:
        what = "refused the API key" if ctx.key_sent else "needs an API key and none was sent"
        return errors.CredentialsError(
            f"{_engine(ctx)} at {ctx.base_url} {what} (HTTP 401: {message})",
            fix=_key_fix(ctx),
        )
    if status == 403:
        return errors.AccessDeniedError(
            f"{_engine(ctx)} at {ctx.base_url} refused access (HTTP 403: {message})",
            status_code=status,
            model_id=ctx.model,
            fix=_key_fix(ctx),
        )
    if _is_context_error(status, fields):
        return _context_error(fields, ctx)
    if status == 404:
        return _not_found(fields, ctx, status)
    cls = _BY_STATUS.get(status) or (
        errors.InternalServerError if status >= 500 else errors.APIError
    )
    code = fields.get("code")
    return cls(
        f"HTTP {status} from {ctx.preset.title} at {ctx.base_url} for {ctx.model}"
        + (f": {message.rstrip('.')}." if message else "."),
        code=str(code) if code not in (None, "") else None,
        status_code=status,
        model_id=ctx.model,
        retry_after=_retry_after(headers),
        fix=Fix("slow down: lower the concurrency") if cls is errors.ThrottledError else None,
    )


def map_transport(error: Exception, ctx: CallContext) -> errors.BedrockMistralError:
    """The error for a connection that failed, stalled or broke (httpx exceptions)."""
    where = ctx.base_url
    if isinstance(error, httpx.ConnectError):
        return errors.APIConnectionError(
            f"Nothing answers at {where} ({_truncate(str(error)) or 'connection refused'}): "
            f"is {ctx.preset.title} running?",
            fix=Fix(f"{ctx.preset.start_hint}, or pass the right {{}}", _BASE_URL),
        )
    if isinstance(error, httpx.ReadTimeout) and ctx.streaming:
        return errors.APITimeoutError(
            f"The stream from {where} sent nothing for {ctx.stream_idle_timeout:g} s "
            "(stream_idle_timeout); it was closed as stalled. Try again, or raise "
            "stream_idle_timeout."
        )
    if isinstance(error, httpx.ReadTimeout):
        return errors.APITimeoutError(
            f"No answer from {where} within {ctx.read_timeout:g} s (read_timeout). Stream "
            "long answers, ask for fewer max_tokens, or raise read_timeout."
        )
    if isinstance(error, httpx.TimeoutException):  # connect, write or pool
        return errors.APITimeoutError(
            f"{where} did not accept the request in time ({type(error).__name__})",
            fix=Fix("check that the engine is up and not overloaded, and {}", _BASE_URL),
        )
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return errors.ConfigurationError(
            f"{where} is not a usable URL ({error})",
            fix=Fix("pass {} like http://localhost:8000/v1", _BASE_URL),
        )
    what = "The connection dropped mid-stream" if ctx.streaming else "The connection failed"
    return errors.APIConnectionError(
        f"{what} ({type(error).__name__}: {_truncate(str(error))}) talking to {where}; "
        "send the request again."
    )


# What the backend hands to map_transport (ValueError: a corrupt event or body).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL, ValueError)
