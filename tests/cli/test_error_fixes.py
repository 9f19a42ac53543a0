"""Errors carry their fix as data: the SDK words it as arguments, the CLI as flags.

Each error is made by the code that raises it (botocore's own exceptions through
``map_error``, the real Bedrock backend, the batch job's AWS setup), then read both ways:
``str(error)`` for a Python caller and ``describe(error)`` for the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bex
import pytest

from bedrock_mistral import MistralClient, errors
from bedrock_mistral.backends.bedrock_errors import CallContext, map_error
from bedrock_mistral.backends.echo import EchoBackend
from bedrock_mistral.cli.exits import ExitStatus, describe
from bedrock_mistral.types import CompletionRequest, StreamEnd, TextDelta
from tests.helpers.cli import CliHome, run_cli

pytestmark = pytest.mark.usefixtures("cli_home")

CTX = CallContext(model_id="mistral.mistral-7b-instruct-v0:2", region="us-east-1")


def _client_error(code: str, status: int) -> bex.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "nope"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-9"},
    }
    return bex.ClientError(response, "InvokeModel")


def _raised(call: Callable[[], object]) -> errors.BedrockMistralError:
    with pytest.raises(errors.BedrockMistralError) as info:
        call()
    return info.value


def _batch_job_without_region() -> errors.BedrockMistralError:
    from bedrock_mistral.batch.jobaws import JobAWS

    return _raised(lambda: JobAWS(region=None, session=boto3.session.Session()))


def _bad_endpoint() -> errors.BedrockMistralError:
    client = MistralClient(backend="bedrock", endpoint_url="not a url", region="us-east-1")
    return _raised(lambda: client.chat("hi"))


def _conversation_ending_on_the_assistant() -> errors.BedrockMistralError:
    client = MistralClient(backend="echo")
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    return _raised(lambda: client.chat(turns))


class _BreaksMidStream(EchoBackend):
    """The echo backend whose stream fails after its first word."""

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        yield TextDelta(text="half ")
        raise errors.ModelStreamError("modelStreamErrorException mid-stream")


def _interrupted_stream() -> errors.BedrockMistralError:
    client = MistralClient(backend=_BreaksMidStream(), max_attempts=1)
    return _raised(lambda: list(client.stream("hi")))


# (make the error, words only str(error) has, words only the CLI line has)
FIXES: list[Any] = [
    pytest.param(
        lambda: map_error(bex.NoCredentialsError(), CTX),
        ["profile=...", 'backend="local"'],
        ["--profile", "--backend local"],
        id="no-credentials",
    ),
    pytest.param(
        lambda: map_error(bex.TokenRetrievalError(provider="sso", error_msg="expired"), CTX),
        ["with profile=... if", 'backend="local"'],
        ["with --profile if", "--backend local"],
        id="sso-expired",
    ),
    pytest.param(
        lambda: map_error(_client_error("ExpiredTokenException", 403), CTX),
        ["another profile=..."],
        ["another --profile"],
        id="credentials-rejected",
    ),
    pytest.param(
        lambda: map_error(bex.NoRegionError(), CTX),
        ["pass region=...", 'backend="local"'],
        ["pass --region", "--backend local"],
        id="no-region",
    ),
    pytest.param(
        lambda: map_error(bex.ProfileNotFound(profile="nope"), CTX),
        ["check profile=..."],
        ["check --profile"],
        id="profile-not-found",
    ),
    pytest.param(
        lambda: map_error(bex.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), CTX),
        ["region=...", "endpoint_url=..."],
        ["--region", "--endpoint-url"],
        id="endpoint-unreachable",
    ),
    pytest.param(
        _bad_endpoint, ["check endpoint_url=..."], ["check --endpoint-url"], id="endpoint-invalid"
    ),
    pytest.param(
        _batch_job_without_region, ["pass region=..."], ["pass --region"], id="batch-no-region"
    ),
    pytest.param(_interrupted_stream, ["pass resume=True"], [], id="resume-is-sdk-only"),
    pytest.param(
        _conversation_ending_on_the_assistant,
        ["pass continue_final=True"],
        [],
        id="continue-final-is-sdk-only",
    ),
]


@pytest.mark.parametrize(("make", "sdk_words", "cli_words"), FIXES)
def test_the_fix_is_worded_for_each_surface(
    make: Callable[[], errors.BedrockMistralError], sdk_words: list[str], cli_words: list[str]
) -> None:
    error = make()
    assert error.fix is not None
    sdk = str(error)
    status, cli = describe(error)
    assert status in (ExitStatus.SETUP, ExitStatus.ERROR, ExitStatus.USAGE)
    assert "\n" not in sdk and "\n" not in cli
    assert sdk.startswith(error.message) and cli.startswith(error.message)
    for word in sdk_words:
        assert word in sdk and word not in cli
    for word in cli_words:
        assert word in cli and word not in sdk


def test_a_fix_renders_its_arguments_and_flags() -> None:
    fix = errors.Fix(
        "pass {} or set X; or use {}", errors.Arg("endpoint_url"), errors.Arg("backend", "local")
    )
    assert fix.render("sdk") == 'pass endpoint_url=... or set X; or use backend="local"'
    assert fix.render("cli") == "pass --endpoint-url or set X; or use --backend local"
    assert errors.Fix("pass resume=True", cli="").render("cli") == ""
    worded = errors.Fix("stream it", cli="use ask --stream")
    assert (worded.render("sdk"), worded.render("cli")) == ("stream it", "use ask --stream")


def test_an_error_without_a_fix_reads_as_its_message() -> None:
    error = errors.ModelError("ModelErrorException from Bedrock: bad input")
    assert error.fix is None
    assert str(error) == describe(error)[1] == "ModelErrorException from Bedrock: bad input"


def test_a_class_fix_applies_unless_the_raise_site_gives_its_own() -> None:
    plain = errors.RegionError("No AWS region configured")
    assert plain.fix is errors.RegionError.default_fix
    own = errors.RegionError("no region", fix=errors.Fix("pass {}", errors.Arg("region")))
    assert (str(own), own.render("cli")) == (
        "no region; pass region=...",
        "no region; pass --region",
    )


def test_a_sentence_message_gets_its_fix_as_the_next_sentence() -> None:
    mapped = map_error(_client_error("ThrottlingException", 429), CTX)
    assert str(mapped) == (
        "ThrottlingException (429) from Bedrock for mistral.mistral-7b-instruct-v0:2: nope. "
        "Slow down: lower the concurrency or request a higher quota. (request id req-9)"
    )


# --- end to end: the command line shows flags, never Python arguments ---------------------


@pytest.mark.parametrize(
    ("args", "flag", "argument"),
    [
        (
            ["--endpoint-url", "not a url", "--region", "us-east-1"],
            "--endpoint-url",
            "endpoint_url=",
        ),
        (["--profile", "nope"], "--profile", "profile="),
        (["--region", "us-east-1"], "--backend local", 'backend="local"'),
        ([], "--region", "region="),
    ],
    ids=["invalid-endpoint", "unknown-profile", "no-credentials", "no-region"],
)
def test_ask_prints_the_fix_as_flags(
    cli_home: CliHome, args: list[str], flag: str, argument: str
) -> None:
    result = run_cli("ask", *args, "hi")
    assert result.exit_code == ExitStatus.SETUP, result.stderr
    assert result.stdout == ""
    assert flag in result.stderr and argument not in result.stderr


def test_a_missing_bundled_model_names_the_option_that_points_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
    import bedrock_mistral.backends.local
    import local_backend.runtime
    from bedrock_mistral.backends.local import shared_model

    monkeypatch.setattr(local_backend.runtime, "BUNDLED_WEIGHTS", tmp_path / "not-installed")
    monkeypatch.setattr(bedrock_mistral.backends.local, "_models", {})  # none loaded yet
    error = _raised(lambda: shared_model(None, None))
    assert isinstance(error, errors.BackendUnavailableError)
    assert "pass local_model=... or set BEDROCK_MISTRAL_LOCAL_MODEL" in str(error)
    assert describe(error) == (
        ExitStatus.SETUP,
        f"{error.message}; pass --local-model or set BEDROCK_MISTRAL_LOCAL_MODEL",
    )


def test_the_chat_words_a_fix_as_the_command_that_applies_it(cli_home: CliHome) -> None:
    """In the chat, "use the local backend" is /backend local; options it cannot change
    in place stay flags for the next start."""
    result = run_cli("chat", "--region", "us-east-1", input="hi\n")
    assert "/backend local" in result.stderr and "--backend local" not in result.stderr
    assert 'backend="local"' not in result.stderr
    region_fix = describe(errors.RegionError("No AWS region configured"), "chat")[1]
    assert "--region" in region_fix and "/backend local" in region_fix


def test_a_prompt_too_long_names_the_sdk_remedy_only_in_python(cli_home: CliHome) -> None:
    long_prompt = "word " * 40_000  # well past mistral-7b's 32K-token window
    error = _raised(lambda: MistralClient(backend="echo").chat(long_prompt))
    assert isinstance(error, errors.ContextWindowError)
    assert "use a Conversation" in str(error)
    result = run_cli("ask", "-b", "echo", long_prompt)
    assert result.exit_code == ExitStatus.USAGE
    assert "-o max_tokens=N" in result.stderr and "Conversation" not in result.stderr
