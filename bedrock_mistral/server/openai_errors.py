"""Errors in the OpenAI API's shape: a status and ``{"error": {message, type, param, code}}``.

The official clients pick their exception class from the status alone (400
``BadRequestError``, 401 ``AuthenticationError``, 404 ``NotFoundError``, 429
``RateLimitError``, 5xx ``InternalServerError``) and retry 408, 429 and 5xx, so the
status is what matters most; ``type`` and ``code`` say the rest:

======  ========================  =================================================
status  type                      when
======  ========================  =================================================
400     invalid_request_error     our validation (``param`` names the field);
                                  ``code: context_length_exceeded`` when it is too long
401     authentication_error      missing or wrong bearer key (``code: invalid_api_key``)
403     permission_error          the backend was refused access (Bedrock's 403)
404     not_found_error           an unknown model (``code: model_not_found``) or URL
429     rate_limit_error          throttled: the fault plan, ``--max-concurrency``, or
                                  the backend after our retries (``rate_limit_exceeded``)
429     insufficient_quota        a service quota was exceeded
5xx     server_error              the backend failed (500), is unavailable or not ready
                                  (503), or timed out (504)
======  ========================  =================================================

Any other error goes through the Bedrock face's mapping first (one table of what a
backend error means, :func:`~bedrock_mistral.server.handlers.to_bedrock_error`), then
through :data:`_BY_BEDROCK_CODE`, so both faces agree on what failed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bedrock_mistral.errors import ContextWindowError, ServiceValidationError, ValidationError
from bedrock_mistral.server.errors import BedrockError
from bedrock_mistral.server.handlers import to_bedrock_error

__all__ = ["OpenAIError", "model_not_found", "openai_error", "too_large", "unknown_url"]

# Bedrock's error code -> (HTTP status, OpenAI error type, OpenAI error code).
_BY_BEDROCK_CODE: dict[str, tuple[int, str, str | None]] = {
    "ValidationException": (400, "invalid_request_error", None),
    "AccessDeniedException": (403, "permission_error", None),
    "ThrottlingException": (429, "rate_limit_error", "rate_limit_exceeded"),
    "ModelNotReadyException": (503, "server_error", "model_not_ready"),
    "ModelTimeoutException": (504, "server_error", "timeout"),
    "ServiceUnavailableException": (503, "server_error", "service_unavailable"),
    "InternalServerException": (500, "server_error", None),
    "ModelErrorException": (500, "server_error", "model_error"),
    "ModelStreamErrorException": (500, "server_error", "model_stream_error"),
    "ResourceNotFoundException": (404, "not_found_error", "model_not_found"),
    "ServiceQuotaExceededException": (429, "insufficient_quota", "insufficient_quota"),
    "UnknownOperationException": (404, "not_found_error", "unknown_url"),
}


class OpenAIError(Exception):
    """An error the OpenAI face answers with.

    >>> OpenAIError(429, "Slow down.", type="rate_limit_error").body()
    b'{"error":{"message":"Slow down.","type":"rate_limit_error","param":null,"code":null}}'
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    @property
    def name(self) -> str:
        """What the stats record and the log line call it."""
        return self.code or self.type

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False).encode()

    def headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
        if self.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="bedrock-mistral"'))
        return headers

    def event(self) -> bytes:
        """This error as a server-sent event, for a stream that has already started."""
        return b"data: " + self.body() + b"\n\n"


def openai_error(err: BaseException, *, params: Mapping[str, str] | None = None) -> OpenAIError:
    """Any error met while serving an OpenAI request, as the error its client should see.

    ``params`` renames our field names to the ones the request used (``max_tokens`` was
    sent as ``max_completion_tokens``; ``messages`` is ``prompt`` for /v1/completions).
    """
    if isinstance(err, OpenAIError):
        return err
    renamed = params or {}
    if isinstance(err, ContextWindowError):
        return OpenAIError(
            400,
            f"{err.message}. Shorten the {renamed.get('messages', 'messages')} or lower "
            "max_tokens.",
            type="invalid_request_error",
            param=renamed.get("messages", "messages"),
            code="context_length_exceeded",
        )
    if isinstance(err, ValidationError) and not isinstance(err, ServiceValidationError):
        field = err.field
        return OpenAIError(
            400,
            err.message,
            type="invalid_request_error",
            param=renamed.get(field, field) if field is not None else None,
        )
    bedrock = err if isinstance(err, BedrockError) else to_bedrock_error(err)
    status, kind, code = _BY_BEDROCK_CODE[bedrock.code]
    return OpenAIError(status, bedrock.message, type=kind, code=code)


def model_not_found(model: object, served: list[str]) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model {model!r} is not served here. Served models: {', '.join(served)} (their "
        "aliases work too; GET /v1/models lists both).",
        type="not_found_error",
        param="model",
        code="model_not_found",
    )


def unknown_url(method: str, path: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"Invalid URL ({method} {path}): this server answers POST /v1/chat/completions, "
        "POST /v1/completions and GET /v1/models.",
        type="not_found_error",
        code="unknown_url",
    )


def too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )
