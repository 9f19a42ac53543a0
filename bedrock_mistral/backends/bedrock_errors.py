"""Turn botocore / urllib3 exceptions into our error tree, in one function.

:func:`map_error` returns the error to raise; callers write ``raise map_error(err, ctx) from
err`` so the original stays chained. Messages are one line: what happened, the
service's own words (truncated), the fix, and the request id when there is one.

Only imported by the Bedrock backend, after boto3 itself has been imported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import botocore.exceptions as bex
import urllib3.exceptions as uex
from botocore.eventstream import ParserError

from bedrock_mistral import errors
from bedrock_mistral.errors import Arg, Fix

__all__ = [
    "CallContext",
    "credentials_message",
    "map_error",
    "region_message",
]

logger = logging.getLogger(__name__)

_MAX_SERVICE_MESSAGE = 300

_PROFILE = Arg("profile")
_REGION = Arg("region")
_ENDPOINT_URL = Arg("endpoint_url")
_BACKEND_LOCAL = Arg("backend", "local")

CREDENTIALS_MESSAGE = "No AWS credentials found"  # the fix is CredentialsError's default
REGION_MESSAGE = "No AWS region configured"  # the fix is RegionError's default


def credentials_message() -> str:
    return CREDENTIALS_MESSAGE


def region_message() -> str:
    return REGION_MESSAGE


@dataclass(frozen=True)
class CallContext:
    """What the message writer needs to know about the failed call."""

    model_id: str
    region: str | None = None
    endpoint: str | None = None
    read_timeout: float | None = None
    stream_idle_timeout: float | None = None
    streaming: bool = False


# Error code (after normalising event-stream lowerCamel names) -> our class.
_BY_CODE: dict[str, type[errors.APIError]] = {
    "AccessDeniedException": errors.AccessDeniedError,
    "ResourceNotFoundException": errors.ModelNotFoundError,
    "ValidationException": errors.ServiceValidationError,
    "ServiceQuotaExceededException": errors.ServiceQuotaExceededError,
    "ThrottlingException": errors.ThrottledError,
    "TooManyRequestsException": errors.ThrottledError,
    "ModelNotReadyException": errors.ModelNotReadyError,
    "ModelTimeoutException": errors.ModelTimeoutError,
    "InternalServerException": errors.InternalServerError,
    "InternalFailure": errors.InternalServerError,
    "ServiceUnavailableException": errors.ServiceUnavailableError,
    "ServiceUnavailable": errors.ServiceUnavailableError,
    "ModelErrorException": errors.ModelError,
    "ModelStreamErrorException": errors.ModelStreamError,
}

# AWS refusing the credentials themselves (not the permission): a setup problem.
_BAD_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
    }
)

_BY_STATUS: dict[int, type[errors.APIError]] = {
    400: errors.ServiceValidationError,
    403: errors.AccessDeniedError,
    404: errors.ModelNotFoundError,
    408: errors.ModelTimeoutError,
    424: errors.ModelError,
    429: errors.ThrottledError,
    500: errors.InternalServerError,
    502: errors.InternalServerError,
    503: errors.ServiceUnavailableError,
    504: errors.InternalServerError,
}

_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    bex.NoCredentialsError,
    bex.PartialCredentialsError,
    bex.CredentialRetrievalError,
    bex.NoAuthTokenError,
    bex.TokenRetrievalError,
    bex.SSOError,
    bex.UnknownCredentialError,
    bex.RefreshWithMFAUnsupportedError,
)

_HINTS: dict[type[errors.APIError], str] = {
    errors.ModelNotFoundError: (
        "Check the model id (`bedrock-mistral models` lists them) and that it is offered in "
        "region {region}."
    ),
    errors.ServiceValidationError: (
        "Bedrock refused the request body; check the parameters for this model."
    ),
    errors.ServiceQuotaExceededError: (
        "Request a higher quota in the Service Quotas console of region {region}, or send less."
    ),
    errors.ThrottledError: "Slow down: lower the concurrency or request a higher quota.",
    errors.ModelNotReadyError: "The model is loading; try again shortly.",
    errors.ModelTimeoutError: "Stream the answer or ask for fewer max_tokens.",
    errors.InternalServerError: "A transient Bedrock failure; try again.",
    errors.ServiceUnavailableError: "Bedrock is unavailable for now; try again later.",
    errors.ModelError: "The model failed on this input; try again or change the input.",
    errors.ModelStreamError: "The model failed while streaming; send the request again.",
}


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SERVICE_MESSAGE else text[: _MAX_SERVICE_MESSAGE - 3] + "..."


def _normalise_code(code: str) -> str:
    # Event-stream exceptions carry lowerCamel member names (modelStreamErrorException).
    return code[:1].upper() + code[1:] if code else code


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # an HTTP date or garbage: fall back to our own backoff


def _access_denied_hint(ctx: CallContext) -> str:
    region = ctx.region or "your region"
    return (
        f"Enable model access for {ctx.model_id} in the Amazon Bedrock console of region {region} "
        "(Bedrock > Model access), and make sure your IAM identity may call "
        "bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream."
    )


def _validation_hint(message: str, ctx: CallContext) -> str:
    if "on-demand throughput" in message or "inference profile" in message:
        base = _base_model_id(ctx.model_id)
        return (
            f"{base} must be called through an inference profile; use its profile id "
            f"(for example us.{base}) or ARN."
        )
    if "too long" in message:
        return (
            "The prompt does not fit the model's context window; shorten it (a Conversation "
            "drops the oldest turns for you) or pick a model with a larger window."
        )
    if "model identifier is invalid" in message:
        # Not the body: the id itself (a typo, an alias, or a profile the model lacks).
        return (
            "Check the model id (`bedrock-mistral models` lists them; only some models have "
            f"us./eu. inference profiles) and that it is offered in region "
            f"{ctx.region or 'your region'}."
        )
    return _HINTS[errors.ServiceValidationError]


def _base_model_id(model_id: str) -> str:
    from bedrock_mistral.errors import ValidationError
    from bedrock_mistral.models import resolve_model

    try:
        return resolve_model(model_id).canonical_id
    except ValidationError:
        return model_id


def _map_client_error(error: bex.ClientError, ctx: CallContext) -> errors.BedrockMistralError:
    response: Mapping[str, Any] = error.response or {}
    info: Mapping[str, Any] = response.get("Error") or {}
    meta: Mapping[str, Any] = response.get("ResponseMetadata") or {}
    code = _normalise_code(str(info.get("Code") or ""))
    service_message = _truncate(str(info.get("Message") or response.get("message") or ""))
    status = meta.get("HTTPStatusCode")
    request_id = meta.get("RequestId") or None
    headers: Mapping[str, Any] = meta.get("HTTPHeaders") or {}
    if isinstance(error, bex.EventStreamError):
        status = None  # the HTTP status of a stream is 200; the frame is what failed

    if code in _BAD_CREDENTIAL_CODES:
        return errors.CredentialsError(
            f"AWS rejected the credentials ({code}: {service_message})",
            fix=Fix("refresh them (`aws sso login`, new access keys) or pass another {}", _PROFILE),
        )
    cls = _BY_CODE.get(code)
    if cls is None and code.isdigit():
        status = int(code)  # botocore uses the status as the code for HTML/empty 5xx bodies
    if cls is None and isinstance(status, int):
        cls = _BY_STATUS.get(status) or (errors.InternalServerError if status >= 500 else None)
    cls = cls or errors.APIError

    if cls is errors.AccessDeniedError:
        hint = _access_denied_hint(ctx)
    elif cls is errors.ServiceValidationError:
        hint = _validation_hint(service_message, ctx)
    else:
        hint = _HINTS.get(cls, "").format(region=ctx.region or "your region")
    label = code or (f"HTTP {status}" if status else "error")
    where = f" ({status})" if status and str(status) != code else ""
    text = f"{label}{where} from Bedrock for {ctx.model_id}"
    if service_message:
        text += f": {service_message.rstrip('.')}."
    else:
        text += "."
    return cls(
        text,
        code=code or None,
        status_code=status if isinstance(status, int) else None,
        request_id=request_id,
        model_id=ctx.model_id,
        retry_after=_retry_after(headers),
        fix=Fix(hint) if hint else None,
    )


def _map_connection_error(error: BaseException, ctx: CallContext) -> errors.BedrockMistralError:
    endpoint = ctx.endpoint or "the Bedrock endpoint"
    read_timeouts = (bex.ReadTimeoutError, uex.ReadTimeoutError, TimeoutError)
    if isinstance(error, read_timeouts) and ctx.streaming:
        return errors.APITimeoutError(
            f"The stream from {endpoint} sent nothing for {ctx.stream_idle_timeout:g} s "
            "(stream_idle_timeout); it was closed as stalled. Try again, or raise "
            "stream_idle_timeout."
        )
    if isinstance(error, read_timeouts):
        limit = f" within {ctx.read_timeout:g} s" if ctx.read_timeout else ""
        return errors.APITimeoutError(
            f"No answer from {endpoint}{limit} (read_timeout). Stream long answers, ask for "
            "fewer max_tokens, or raise read_timeout."
        )
    if isinstance(error, bex.ConnectTimeoutError | uex.ConnectTimeoutError):
        return errors.APITimeoutError(
            f"Could not connect to {endpoint} in time (connect_timeout)",
            fix=Fix("check the network and {}", _ENDPOINT_URL),
        )
    if isinstance(error, bex.EndpointConnectionError):
        return errors.APIConnectionError(
            f"Could not connect to {endpoint}: {_truncate(str(error))}.",
            fix=Fix(
                "check the network, {} and {} (or AWS_ENDPOINT_URL_BEDROCK_RUNTIME)",
                _REGION,
                _ENDPOINT_URL,
            ),
        )
    if isinstance(error, ParserError):
        return errors.APIConnectionError(
            f"The event stream from {endpoint} was corrupt ({type(error).__name__}: "
            f"{_truncate(str(error))}); send the request again."
        )
    what = "The connection dropped mid-stream" if ctx.streaming else "The connection failed"
    return errors.APIConnectionError(
        f"{what} ({type(error).__name__}: {_truncate(str(error))}) talking to {endpoint}; "
        "send the request again."
    )


def _map_botocore_error(error: bex.BotoCoreError, ctx: CallContext) -> errors.BedrockMistralError:
    if isinstance(error, _CREDENTIAL_ERRORS):
        detail = ""
        if not isinstance(error, bex.NoCredentialsError):
            detail = f" ({type(error).__name__}: {_truncate(str(error))})"
        if isinstance(error, bex.SSOError | bex.TokenRetrievalError):
            return errors.CredentialsError(
                f"Your AWS SSO session could not be used{detail}",
                fix=Fix(
                    "run `aws sso login` (with {} if you use one), or use {} to run without AWS",
                    _PROFILE,
                    _BACKEND_LOCAL,
                ),
            )
        return errors.CredentialsError(f"{CREDENTIALS_MESSAGE}{detail}")
    if isinstance(error, bex.NoRegionError):
        return errors.RegionError(REGION_MESSAGE)
    if isinstance(error, bex.ProfileNotFound):
        return errors.ConfigurationError(
            str(error),
            fix=Fix(
                "check {} / AWS_PROFILE against the profiles in ~/.aws/config and "
                "~/.aws/credentials",
                _PROFILE,
            ),
        )
    if isinstance(error, bex.ParamValidationError):
        return errors.ValidationError(
            f"boto3 refused the request before sending it: {_truncate(str(error))}"
        )
    if isinstance(error, bex.HTTPClientError | bex.ConnectionError | bex.IncompleteReadError):
        return _map_connection_error(error, ctx)
    return errors.ConfigurationError(
        f"boto3 could not make the call ({type(error).__name__}: {_truncate(str(error))})."
    )


def map_error(error: BaseException, ctx: CallContext) -> errors.BedrockMistralError:
    """The one mapping from anything boto3, botocore or urllib3 raise to our tree.

    Use as ``raise map_error(err, ctx) from err``.
    """
    if isinstance(error, errors.BedrockMistralError):
        return error
    if isinstance(error, bex.ClientError):  # EventStreamError included
        mapped = _map_client_error(error, ctx)
    elif isinstance(error, bex.BotoCoreError):
        mapped = _map_botocore_error(error, ctx)
    else:  # urllib3 errors, socket errors and corrupt frames inside a stream
        mapped = _map_connection_error(error, ctx)
    logger.debug("mapped %s to %s", type(error).__name__, type(mapped).__name__)
    return mapped


# What the backend catches and hands to map_error.
MAPPED_ERRORS: tuple[type[BaseException], ...] = (
    bex.ClientError,
    bex.BotoCoreError,
    uex.HTTPError,
    ParserError,
    ConnectionError,
    TimeoutError,
)
