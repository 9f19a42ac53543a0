"""Errors in Bedrock's shape: HTTP status, ``x-amzn-ErrorType`` header, JSON ``message``.

botocore takes the error code from the ``x-amzn-ErrorType`` header (cut at the first
``:``), the message from the body, and copies modeled extra members (for example
``originalStatusCode``) to the top of ``e.response`` (ref section 5.4). Inside an event
stream the same error travels as an exception frame named in lowerCamel case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from bedrock_mistral.server.eventstream import error_frame, exception_frame

__all__ = [
    "STATUS",
    "BedrockError",
    "ErrorCode",
    "error_body",
    "error_headers",
    "invalid_model",
    "malformed",
]

ErrorCode = Literal[
    "AccessDeniedException",
    "ValidationException",
    "ThrottlingException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelErrorException",
    "ModelStreamErrorException",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "UnknownOperationException",
]

STATUS: dict[str, int] = {
    "AccessDeniedException": 403,
    "ValidationException": 400,
    "ThrottlingException": 429,
    "ModelTimeoutException": 408,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 400,
    "UnknownOperationException": 404,
}

_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


class BedrockError(Exception):
    """An error the server answers exactly as Bedrock would.

    >>> BedrockError("ThrottlingException", "Too many requests.").status
    429
    """

    def __init__(
        self, code: ErrorCode, message: str, *, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.extra = dict(extra or {})

    @property
    def status(self) -> int:
        return STATUS[self.code]

    @property
    def name(self) -> str:
        """What the stats record and the log line call it."""
        return self.code

    def headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        return error_headers(self.code, request_id)

    @property
    def stream_member(self) -> str:
        """The lowerCamel event-stream member name (``throttlingException``)."""
        return self.code[0].lower() + self.code[1:]

    def body(self) -> bytes:
        return error_body(self.message, self.extra)

    def frame(self, members: frozenset[str]) -> bytes:
        """This error as an event-stream frame for a stream whose members are ``members``."""
        if self.stream_member in members:
            return exception_frame(self.stream_member, {"message": self.message, **self.extra})
        return error_frame(self.code, self.message)


def error_body(message: str, extra: Mapping[str, Any] | None = None) -> bytes:
    return json.dumps({"message": message, **(extra or {})}).encode("utf-8")


def error_headers(code: str, request_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"x-amzn-errortype", (code + _TYPE_SUFFIX).encode("ascii")),
        (b"x-amzn-requestid", request_id.encode("ascii")),
    ]


def malformed(detail: str | None = None) -> BedrockError:
    """Bedrock's JSON-schema ValidationException for a model body."""
    if detail is None:
        return BedrockError(
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        )
    return BedrockError(
        "ValidationException",
        f"Malformed input request: {detail}, please reformat your input and try again.",
    )


def invalid_model() -> BedrockError:
    return BedrockError("ValidationException", "The provided model identifier is invalid.")
