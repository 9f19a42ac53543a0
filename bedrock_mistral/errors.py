"""Every error the SDK raises, in one shallow tree.

::

    BedrockMistralError
    ├── ConfigurationError                 bad setup, fix it and rerun
    │   ├── CredentialsError               no AWS credentials found
    │   ├── RegionError                    no region configured
    │   └── BackendUnavailableError        a backend's extra is not installed / model files missing
    ├── ValidationError (ValueError)       refused before anything was sent
    │   ├── PromptFormatError              conversation the template cannot express
    │   └── ContextWindowError             prompt + max_tokens do not fit the model
    ├── APIError                           the service answered with an error
    │   ├── AccessDeniedError              403: model access not granted / IAM
    │   ├── ModelNotFoundError             404: unknown model id in this region
    │   ├── ServiceValidationError         400: refused by the service (also a ValidationError)
    │   ├── ServiceQuotaExceededError      400: a quota was exceeded
    │   ├── ThrottledError *               429: too many requests or tokens
    │   ├── ModelNotReadyError *           429: model is being loaded
    │   ├── ModelTimeoutError *            408: the model took too long
    │   ├── InternalServerError *          500
    │   ├── ServiceUnavailableError *      503
    │   ├── ModelError                     424: the model failed on this input
    │   └── ModelStreamError *             424 inside a stream
    ├── APIConnectionError *               no answer: connection refused/reset, read timeout
    │   └── APITimeoutError *
    └── StreamInterrupted                  a stream ended early; ``.partial_text`` kept

``*`` marks transient errors (``retryable = True``): the shared retry policy retries
exactly these. Every error raised for a lower-level exception chains it (``__cause__``).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AccessDeniedError",
    "BackendUnavailableError",
    "BedrockMistralError",
    "ConfigurationError",
    "ContextWindowError",
    "CredentialsError",
    "InternalServerError",
    "ModelError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelStreamError",
    "ModelTimeoutError",
    "PromptFormatError",
    "RegionError",
    "ServiceQuotaExceededError",
    "ServiceUnavailableError",
    "ServiceValidationError",
    "StreamInterrupted",
    "ThrottledError",
    "ValidationError",
]

_MAX_VALUE_REPR = 80


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_REPR else text[: _MAX_VALUE_REPR - 3] + "..."


class BedrockMistralError(Exception):
    """Base of every error raised by bedrock_mistral."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # Set by the retry policy: how many attempts were made before giving up.
        self.attempts: int = 1

    def __str__(self) -> str:
        return self.message


class ConfigurationError(BedrockMistralError):
    """The SDK is not set up to make this call; the message says what to change."""


class CredentialsError(ConfigurationError):
    """No AWS credentials could be found."""


class RegionError(ConfigurationError):
    """No AWS region is configured."""


class BackendUnavailableError(ConfigurationError):
    """A backend cannot be used here (extra not installed, model files missing)."""


class ValidationError(BedrockMistralError, ValueError):
    """A request refused before anything was sent.

    ``field`` names the offending field (``"temperature"``, ``"messages[2].role"``),
    ``value`` is what was given and ``allowed`` describes what would be accepted.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = allowed

    @classmethod
    def out_of_range(cls, field: str, value: Any, allowed: str) -> ValidationError:
        return cls(
            f"{field}={_short(value)} is not allowed: {allowed}",
            field=field,
            value=value,
            allowed=allowed,
        )


class PromptFormatError(ValidationError):
    """A conversation the Mistral instruct template cannot express."""


class ContextWindowError(ValidationError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""

    def __init__(
        self, message: str, *, prompt_tokens: int, max_tokens: int, context_window: int
    ) -> None:
        super().__init__(
            message, field="messages", value=prompt_tokens, allowed=f"<= {context_window} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_window = context_window


class APIError(BedrockMistralError):
    """The service (Bedrock, or a server speaking its protocol) answered with an error."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        model_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = status_code
        self.request_id = request_id
        self.model_id = model_id
        # Seconds the server asked us to wait (Retry-After), preferred by the retry policy.
        self.retry_after = retry_after


class AccessDeniedError(APIError):
    """403: the account may not invoke this model (model access or IAM)."""


class ModelNotFoundError(APIError):
    """404: the model id does not exist in this region."""


class ServiceValidationError(APIError, ValidationError):
    """400: the service refused the request as invalid."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        APIError.__init__(self, message, **kwargs)
        self.field = None
        self.value = None
        self.allowed = None


class ServiceQuotaExceededError(APIError):
    """400: a service quota was exceeded; raise the quota or send less."""


class ThrottledError(APIError):
    """429: too many requests or tokens; slow down."""

    retryable = True


class ModelNotReadyError(APIError):
    """429: the model is not ready to serve yet."""

    retryable = True


class ModelTimeoutError(APIError):
    """408: the model took too long; stream, or ask for fewer tokens."""

    retryable = True


class InternalServerError(APIError):
    """500: the service failed."""

    retryable = True


class ServiceUnavailableError(APIError):
    """503: the service is unavailable for now."""

    retryable = True


class ModelError(APIError):
    """424: the model failed while processing this input."""


class ModelStreamError(APIError):
    """424 raised inside a response stream."""

    retryable = True


class APIConnectionError(BedrockMistralError):
    """No usable answer: connection refused or reset, or the endpoint could not be reached."""

    retryable = True


class APITimeoutError(APIConnectionError):
    """The service did not answer within the read timeout."""


class StreamInterrupted(BedrockMistralError):
    """A stream stopped before its stop reason, after text had reached the caller.

    ``partial_text`` holds everything received; ``MistralClient.stream(..., resume=True)``
    continues from it without duplicating text.
    """

    def __init__(self, message: str, *, partial_text: str, output_tokens: int = 0) -> None:
        super().__init__(message)
        self.partial_text = partial_text
        self.output_tokens = output_tokens
