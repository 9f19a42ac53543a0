"""Exit codes, and the one place that turns an exception into one readable line.

======  ==================================================================================
code    meaning
======  ==================================================================================
0       success
1       failure: the service or model failed, the connection dropped, anything unexpected
2       usage: a bad flag, parameter value, model name or session name; nothing was sent
3       setup or access: no credentials or region, access denied, model not in region,
        backend not installed
4       throttled: Bedrock kept refusing for rate or quota reasons after the retries
130     interrupted with Ctrl-C
141     the reader of our output went away (``| head``); nothing is reported
======  ==================================================================================
"""

from __future__ import annotations

from enum import IntEnum

from bedrock_mistral import errors

__all__ = ["ExitStatus", "describe"]


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    SETUP = 3
    THROTTLED = 4
    INTERRUPTED = 130
    BROKEN_PIPE = 141


# First match wins, so subclasses come before their bases.
_STATUS: tuple[tuple[type[BaseException], ExitStatus], ...] = (
    (errors.ThrottledError, ExitStatus.THROTTLED),
    (errors.ServiceQuotaExceededError, ExitStatus.THROTTLED),
    (errors.ModelNotReadyError, ExitStatus.THROTTLED),
    (errors.AccessDeniedError, ExitStatus.SETUP),
    (errors.ModelNotFoundError, ExitStatus.SETUP),
    (errors.ConfigurationError, ExitStatus.SETUP),
    (errors.ServiceValidationError, ExitStatus.USAGE),
    (errors.ValidationError, ExitStatus.USAGE),
)


def exit_status(error: BaseException) -> ExitStatus:
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return ExitStatus.ERROR


def describe(error: BaseException, surface: errors.Surface = "cli") -> tuple[ExitStatus, str]:
    """The exit status and the one line to show for ``error``, its fix worded as flags
    (or, in the chat, as /commands where one exists)."""
    status = exit_status(error)
    if isinstance(error, errors.BedrockMistralError):
        message = " ".join(error.render(surface).split())
        retried = error.attempts - 1
        if retried > 0 and "retried" not in message:
            times = "once" if retried == 1 else f"{retried} times"
            message = f"{message.rstrip('.')}. (retried {times})"
        return status, message
    if isinstance(error, KeyboardInterrupt):
        return status, "interrupted"
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return status, f"{error.strerror}{where}"
    name = type(error).__name__
    return status, f"unexpected {name}: {error} (rerun with --debug for the traceback)"
