"""map_error: every botocore / urllib3 failure shape lands on one class of our tree.

The HTTP-level mapping is also exercised end to end in test_sdk_bedrock_http.py; this
file covers the shapes our server does not produce (HTML 5xx bodies, credential codes,
Retry-After, SSO, corrupt frames, ...), using botocore's own exception classes.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions as bex
import pytest
import urllib3.exceptions as uex
from botocore.eventstream import ChecksumMismatch

from bedrock_mistral import errors
from bedrock_mistral.backends.bedrock_errors import CallContext, map_error

CTX = CallContext(
    model_id="mistral.mistral-7b-instruct-v0:2",
    region="eu-west-3",
    endpoint="https://bedrock-runtime.eu-west-3.amazonaws.com",
    read_timeout=900,
    stream_idle_timeout=60,
)
STREAM_CTX = CallContext(**{**CTX.__dict__, "streaming": True})


def client_error(
    code: str, status: int, message: str = "service says no", **headers: str
) -> bex.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": "req-123",
            "HTTPHeaders": headers,
        },
    }
    return bex.ClientError(response, "InvokeModel")


def stream_error(member: str, message: str = "in-stream failure") -> bex.EventStreamError:
    response: Any = {"Error": {"Code": member, "Message": message}, "ResponseMetadata": {}}
    return bex.EventStreamError(response, "InvokeModelWithResponseStream")


CODES = [
    ("AccessDeniedException", 403, errors.AccessDeniedError),
    ("ResourceNotFoundException", 404, errors.ModelNotFoundError),
    ("ValidationException", 400, errors.ServiceValidationError),
    ("ServiceQuotaExceededException", 400, errors.ServiceQuotaExceededError),
    ("ThrottlingException", 429, errors.ThrottledError),
    ("TooManyRequestsException", 429, errors.ThrottledError),
    ("ModelNotReadyException", 429, errors.ModelNotReadyError),
    ("ModelTimeoutException", 408, errors.ModelTimeoutError),
    ("InternalServerException", 500, errors.InternalServerError),
    ("ServiceUnavailableException", 503, errors.ServiceUnavailableError),
    ("ModelErrorException", 424, errors.ModelError),
    ("ModelStreamErrorException", 424, errors.ModelStreamError),
]


@pytest.mark.parametrize(("code", "status", "cls"), CODES, ids=[c[0] for c in CODES])
def test_client_error_codes(code: str, status: int, cls: type[errors.APIError]) -> None:
    mapped = map_error(client_error(code, status), CTX)
    assert type(mapped) is cls
    assert (mapped.code, mapped.status_code, mapped.request_id) == (code, status, "req-123")
    assert mapped.model_id == CTX.model_id
    text = str(mapped)
    assert text.startswith(f"{code} ({status}) from Bedrock for {CTX.model_id}: service says no.")
    assert "(request id req-123)" in text and "\n" not in text


STREAM_MEMBERS = [
    ("modelStreamErrorException", errors.ModelStreamError),
    ("internalServerException", errors.InternalServerError),
    ("validationException", errors.ServiceValidationError),
    ("throttlingException", errors.ThrottledError),
    ("modelTimeoutException", errors.ModelTimeoutError),
    ("serviceUnavailableException", errors.ServiceUnavailableError),
]


@pytest.mark.parametrize(("member", "cls"), STREAM_MEMBERS, ids=[m[0] for m in STREAM_MEMBERS])
def test_event_stream_errors_use_lower_camel_names(member: str, cls: type[errors.APIError]) -> None:
    mapped = map_error(stream_error(member), STREAM_CTX)
    assert type(mapped) is cls
    assert mapped.code == member[0].upper() + member[1:]
    assert mapped.status_code is None  # the HTTP status of a stream is 200; the frame failed


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("503", 503, errors.ServiceUnavailableError),  # HTML / empty 5xx body: code is the status
        ("502", 502, errors.InternalServerError),
        ("599", 599, errors.InternalServerError),
        ("SomethingNew", 429, errors.ThrottledError),
        ("SomethingNew", 403, errors.AccessDeniedError),
        ("SomethingNew", 404, errors.ModelNotFoundError),
        ("SomethingNew", 408, errors.ModelTimeoutError),
        ("SomethingNew", 400, errors.ServiceValidationError),
        ("SomethingNew", 409, errors.APIError),
    ],
)
def test_unknown_codes_fall_back_on_the_status(
    code: str, status: int, cls: type[errors.APIError]
) -> None:
    assert type(map_error(client_error(code, status), CTX)) is cls


@pytest.mark.parametrize(
    "code", ["UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"]
)
def test_rejected_credentials_are_a_configuration_problem(code: str) -> None:
    mapped = map_error(
        client_error(code, 403, "The security token included in the request is invalid."), CTX
    )
    assert type(mapped) is errors.CredentialsError
    assert code in str(mapped) and "aws sso login" in str(mapped)


def test_access_denied_tells_how_to_enable_model_access() -> None:
    message = str(map_error(client_error("AccessDeniedException", 403), CTX))
    assert "Enable model access for mistral.mistral-7b-instruct-v0:2" in message
    assert "Amazon Bedrock console of region eu-west-3" in message
    assert "bedrock:InvokeModel" in message


def test_profile_only_models_get_an_inference_profile_hint() -> None:
    text = (
        "Invocation of model ID mistral.pixtral-large-2502-v1:0 with on-demand throughput "
        "isn\u2019t supported. Retry your request with the ID or ARN of an inference profile "
        "that contains this model."
    )
    ctx = CallContext(model_id="mistral.pixtral-large-2502-v1:0", region="us-east-1")
    message = str(map_error(client_error("ValidationException", 400, text), ctx))
    assert "us.mistral.pixtral-large-2502-v1:0" in message
    # Called by its foundation-model ARN: the example is still a profile id, not "us.arn:...".
    arn = "arn:aws:bedrock:us-east-1::foundation-model/mistral.pixtral-large-2502-v1:0"
    message = str(map_error(client_error("ValidationException", 400, text), CallContext(arn)))
    assert "for example us.mistral.pixtral-large-2502-v1:0)" in message
    assert "us.arn:" not in message


def test_input_too_long_says_to_shorten_the_prompt() -> None:
    error = client_error("ValidationException", 400, "Input is too long for requested model.")
    message = str(map_error(error, CTX))
    assert "request body" not in message and "context window" in message


def test_an_invalid_model_identifier_points_at_the_model_id_not_the_body() -> None:
    error = client_error("ValidationException", 400, "The provided model identifier is invalid.")
    message = str(map_error(error, CTX))
    assert "request body" not in message
    assert "bedrock-mistral models" in message and "eu-west-3" in message


@pytest.mark.parametrize(
    ("header", "expected"), [("3", 3.0), ("0.25", 0.25), ("Wed, 21 Oct 2015 07:28:00 GMT", None)]
)
def test_retry_after_header_is_kept_for_the_policy(header: str, expected: float | None) -> None:
    mapped = map_error(client_error("ThrottlingException", 429, **{"retry-after": header}), CTX)
    assert isinstance(mapped, errors.APIError) and mapped.retry_after == expected


def test_long_service_messages_are_truncated_to_one_line() -> None:
    mapped = map_error(client_error("ValidationException", 400, "bad\n" * 500), CTX)
    assert "\n" not in str(mapped) and len(str(mapped)) < 600


CONNECTION_ERRORS: list[Any] = [
    (
        bex.EndpointConnectionError(endpoint_url="https://x"),
        CTX,
        errors.APIConnectionError,
        "Could not connect",
    ),
    (
        bex.ConnectTimeoutError(endpoint_url="https://x"),
        CTX,
        errors.APITimeoutError,
        "connect_timeout",
    ),
    (
        bex.ReadTimeoutError(endpoint_url="https://x"),
        CTX,
        errors.APITimeoutError,
        "within 900 s (read_timeout)",
    ),
    (
        bex.ReadTimeoutError(endpoint_url="https://x"),
        STREAM_CTX,
        errors.APITimeoutError,
        "stream_idle_timeout",
    ),
    (
        uex.ReadTimeoutError(None, "https://x", "Read timed out."),
        STREAM_CTX,
        errors.APITimeoutError,  # type: ignore[arg-type]
        "sent nothing for 60 s",
    ),
    (
        uex.ProtocolError("Connection broken: IncompleteRead"),
        STREAM_CTX,
        errors.APIConnectionError,
        "mid-stream",
    ),
    (
        bex.ConnectionClosedError(endpoint_url="https://x"),
        CTX,
        errors.APIConnectionError,
        "connection failed",
    ),
    (
        bex.ResponseStreamingError(error="reset"),
        STREAM_CTX,
        errors.APIConnectionError,
        "mid-stream",
    ),
    (
        ConnectionResetError(104, "reset by peer"),
        STREAM_CTX,
        errors.APIConnectionError,
        "mid-stream",
    ),
    (ChecksumMismatch(1, 2), STREAM_CTX, errors.APIConnectionError, "corrupt"),
]


@pytest.mark.parametrize(
    ("error", "ctx", "cls", "fragment"),
    CONNECTION_ERRORS,
    ids=[type(c[0]).__name__ + ("-stream" if c[1].streaming else "") for c in CONNECTION_ERRORS],
)
def test_connection_failures(
    error: Exception, ctx: CallContext, cls: type[Exception], fragment: str
) -> None:
    mapped = map_error(error, ctx)
    assert type(mapped) is cls
    assert mapped.retryable
    assert fragment in str(mapped)


SETUP_ERRORS: list[Any] = [
    (bex.NoCredentialsError(), errors.CredentialsError, 'backend="local"'),
    (
        bex.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        errors.CredentialsError,
        "AWS_SECRET_ACCESS_KEY",
    ),
    (
        bex.CredentialRetrievalError(provider="sso", error_msg="expired"),
        errors.CredentialsError,
        "expired",
    ),
    (bex.UnauthorizedSSOTokenError(), errors.CredentialsError, "aws sso login"),
    (
        bex.TokenRetrievalError(provider="sso", error_msg="no token"),
        errors.CredentialsError,
        "aws sso login",
    ),
    (bex.NoRegionError(), errors.RegionError, "AWS_DEFAULT_REGION"),
    (bex.ProfileNotFound(profile="dev"), errors.ConfigurationError, "dev"),
    (
        bex.ParamValidationError(report="modelId too long"),
        errors.ValidationError,
        "modelId too long",
    ),
]


@pytest.mark.parametrize(
    ("error", "cls", "fragment"), SETUP_ERRORS, ids=[type(c[0]).__name__ for c in SETUP_ERRORS]
)
def test_setup_failures(error: Exception, cls: type[Exception], fragment: str) -> None:
    mapped = map_error(error, CTX)
    assert type(mapped) is cls
    assert not mapped.retryable
    assert fragment in str(mapped)


def test_our_own_errors_pass_through_unchanged() -> None:
    error = errors.ThrottledError("already ours")
    assert map_error(error, CTX) is error
