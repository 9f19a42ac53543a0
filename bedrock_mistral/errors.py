"""Every error the SDK raises, in one shallow tree.

::

    BedrockMistralError
    ├── ConfigurationError                 bad setup, fix it and rerun
    │   ├── CredentialsError               no AWS credentials found
    │   ├── RegionError                    no region configured
    │   └── BackendUnavailableError        a backend's extra is not installed / model files missing
    ├── ValidationError (ValueError)       refused before anything was sent
    │   ├── PromptFormatError              conversation the template cannot express
    │   ├── ContextWindowError             prompt + max_tokens do not fit the model
    │   ├── ToolsUnsupportedError          tools or images for a model/backend without them
    │   └── ToolSchemaError                a tool whose JSON schema cannot be derived
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
    ├── StreamInterrupted                  a stream ended early; ``.partial_text`` kept
    ├── ParseError                         no valid structured answer, even after one repair
    ├── ToolCallError                      a tool call naming no tool, or arguments off its schema
    └── ToolRoundsError                    run_tools hit max_rounds; ``.transcript`` kept

``*`` marks transient errors (``retryable = True``): the shared retry policy retries
exactly these. Every error raised for a lower-level exception chains it (``__cause__``).

An error that has a fix carries it as data, ``error.fix`` (a :class:`Fix`): one wording
whose options render as Python arguments in ``str(error)`` and as flags on the command
line (``error.render("cli")``), so no surface rewrites another's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AccessDeniedError",
    "Arg",
    "BackendUnavailableError",
    "BedrockMistralError",
    "ConfigurationError",
    "ContextWindowError",
    "CredentialsError",
    "Fix",
    "InternalServerError",
    "ModelError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelStreamError",
    "ModelTimeoutError",
    "ParseError",
    "PromptFormatError",
    "RegionError",
    "ServiceQuotaExceededError",
    "ServiceUnavailableError",
    "ServiceValidationError",
    "StreamInterrupted",
    "Surface",
    "ThrottledError",
    "ToolCallError",
    "ToolRoundsError",
    "ToolSchemaError",
    "ToolsUnsupportedError",
    "ValidationError",
    "install_extra",
]

_MAX_VALUE_REPR = 80


# Where an error is shown: Python code, a command line, or the chat REPL (/commands).
Surface = Literal["sdk", "cli", "chat"]
# Options the chat REPL can change in place, with a /command of the same name.
_CHAT_COMMANDS = frozenset({"backend", "model", "system"})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_REPR else text[: _MAX_VALUE_REPR - 3] + "..."


@dataclass(frozen=True)
class Arg:
    """An option a fix asks for: a keyword argument in Python, a flag on the command line.

    >>> Arg("backend", "local").render("sdk"), Arg("backend", "local").render("cli")
    ('backend="local"', '--backend local')
    >>> Arg("endpoint_url").render("sdk"), Arg("endpoint_url").render("cli")
    ('endpoint_url=...', '--endpoint-url')
    >>> Arg("backend", "local").render("chat"), Arg("region").render("chat")
    ('/backend local', '--region')
    """

    name: str  # the SDK keyword argument, e.g. "endpoint_url"
    value: str | None = None  # a value to suggest; None leaves it to the reader

    def render(self, surface: Surface) -> str:
        if surface == "chat" and self.name in _CHAT_COMMANDS:
            return f"/{self.name}" if self.value is None else f"/{self.name} {self.value}"
        if surface != "sdk":  # the chat takes other options as flags when it starts
            flag = "--" + self.name.replace("_", "-")
            return flag if self.value is None else f"{flag} {self.value}"
        return f"{self.name}=..." if self.value is None else f'{self.name}="{self.value}"'


@dataclass(frozen=True, init=False)
class Fix:
    """What to do about an error: one clause, with ``{}`` where each :class:`Arg` goes.

    ``cli`` replaces the wording on the command line where it differs beyond the flags;
    ``cli=""`` means the fix does not apply there (an SDK-only argument such as resume).

    >>> fix = Fix("pass {} or set AWS_REGION", Arg("region"))
    >>> fix.render("sdk"), fix.render("cli")
    ('pass region=... or set AWS_REGION', 'pass --region or set AWS_REGION')
    """

    text: str
    args: tuple[Arg, ...]
    cli: str | None

    def __init__(self, text: str, *args: Arg, cli: str | None = None) -> None:
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "cli", cli)

    def render(self, surface: Surface) -> str:
        """The fix worded for ``surface``; "" when it does not apply there."""
        text = self.cli if surface != "sdk" and self.cli is not None else self.text
        return text.format(*(arg.render(surface) for arg in self.args)) if text else ""


def install_extra(extra: str) -> Fix:
    """The fix for a missing optional dependency: install the extra that brings it."""
    return Fix(f'pip install "bedrock-mistral[{extra}]"')


def _with_fix(message: str, fix: str) -> str:
    if not fix:
        return message
    if message.endswith("."):  # a sentence: the fix is the next one
        return f"{message} {fix[:1].upper()}{fix[1:]}{'' if fix.endswith('.') else '.'}"
    return f"{message}; {fix}"


class BedrockMistralError(Exception):
    """Base of every error raised by bedrock_mistral.

    ``message`` says what happened; ``fix`` (or the class's ``default_fix``) what to do.
    """

    retryable: ClassVar[bool] = False
    default_fix: ClassVar[Fix | None] = None

    def __init__(self, message: str, *, fix: Fix | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix: Fix | None = fix if fix is not None else self.default_fix
        # Set by the retry policy: how many attempts were made before giving up.
        self.attempts: int = 1

    def render(self, surface: Surface = "sdk") -> str:
        """The one line to show: the message, then the fix worded for ``surface``."""
        return _with_fix(self.message, self.fix.render(surface) if self.fix else "")

    def __str__(self) -> str:
        return self.render("sdk")


class ConfigurationError(BedrockMistralError):
    """The SDK is not set up to make this call; the fix says what to change."""


class CredentialsError(ConfigurationError):
    """No AWS credentials could be found, or AWS refused them."""

    default_fix = Fix(
        "run `aws configure` (or `aws sso login`), set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass {}; to run without AWS, use {}",
        Arg("profile"),
        Arg("backend", "local"),
    )


class RegionError(ConfigurationError):
    """No AWS region is configured."""

    default_fix = Fix(
        "pass {}, set AWS_REGION or AWS_DEFAULT_REGION, or add `region = ...` to your AWS "
        "profile in ~/.aws/config (the profile comes from {} or AWS_PROFILE); to run "
        "without AWS, use {}",
        Arg("region"),
        Arg("profile"),
        Arg("backend", "local"),
    )


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
        fix: Fix | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
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
        self,
        message: str,
        *,
        prompt_tokens: int,
        max_tokens: int,
        context_window: int,
        fix: Fix | None = None,
    ) -> None:
        super().__init__(
            message,
            field="messages",
            value=prompt_tokens,
            allowed=f"<= {context_window} tokens",
            fix=fix,
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
        fix: Fix | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
        self.code = code
        self.status_code = status_code
        self.request_id = request_id
        self.model_id = model_id
        # Seconds the server asked us to wait (Retry-After), preferred by the retry policy.
        self.retry_after = retry_after

    def render(self, surface: Surface = "sdk") -> str:
        """The message and fix, then the request id (what AWS support asks for)."""
        text = super().render(surface)
        return f"{text} (request id {self.request_id})" if self.request_id else text


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

    def __init__(
        self, message: str, *, partial_text: str, output_tokens: int = 0, fix: Fix | None = None
    ) -> None:
        super().__init__(message, fix=fix)
        self.partial_text = partial_text
        self.output_tokens = output_tokens


class ToolsUnsupportedError(ValidationError):
    """Tools (or images) asked of a model or backend that cannot take them; nothing was sent."""


class ToolSchemaError(ValidationError):
    """A tool whose JSON schema cannot be derived; ``field`` names the tool and parameter."""


class ParseError(BedrockMistralError):
    """The model's answer did not fit the schema, even after one repair request.

    ``raw_text`` is the last answer (with any prefilled opening brace); ``errors`` the
    validation errors it got, one line each.
    """

    default_fix = Fix(
        "raise max_tokens if the answer was cut off, simplify the schema, or use a larger model"
    )

    def __init__(
        self, message: str, *, raw_text: str, errors: list[str], fix: Fix | None = None
    ) -> None:
        super().__init__(message, fix=fix)
        self.raw_text = raw_text
        self.errors = errors


class ToolCallError(BedrockMistralError):
    """A tool call that cannot run: no tool by that name, or arguments off the tool's schema.

    ``run_tools`` sends ``str(error)`` back to the model as an error result instead of
    calling the function.
    """

    def __init__(self, message: str, *, call: Any, errors: list[str]) -> None:
        super().__init__(message)
        self.call = call  # the ToolCall (typed Any: errors.py imports no types)
        self.errors = errors


class ToolRoundsError(BedrockMistralError):
    """``run_tools`` reached ``max_rounds`` with the model still calling tools."""

    default_fix = Fix("raise {}, or check the tools' results", Arg("max_rounds"))

    def __init__(self, message: str, *, transcript: list[Any], fix: Fix | None = None) -> None:
        super().__init__(message, fix=fix)
        self.transcript = transcript
