"""Bedrock backend configuration: endpoint, region, credentials, botocore settings, factory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from bedrock_mistral import MistralClient, RetryPolicy, errors
from bedrock_mistral.backends.bedrock import BedrockBackend
from bedrock_mistral.backends.echo import EchoBackend
from tests.helpers.backends import GreedyBackend, SleepRecorder


def _requests(server: Any) -> int:
    return sum(1 for r in server.stats.requests if r.operation is not None)


def test_endpoint_comes_from_aws_endpoint_url_bedrock_runtime(
    echo_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", str(echo_server))
    before = _requests(echo_server)
    assert MistralClient(backend="bedrock").chat("via env").text == "via env"
    assert _requests(echo_server) == before + 1


@pytest.mark.parametrize(
    ("env", "explicit", "expected"),
    [
        ({"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "us-east-1"}, None, "eu-west-3"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, None, "ap-south-1"),
        ({"AWS_REGION": "eu-west-3"}, "us-west-2", "us-west-2"),
    ],
)
def test_region_precedence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], explicit: str | None, expected: str
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    backend = BedrockBackend(region=explicit)
    assert backend.region == expected
    assert backend.endpoint == f"https://bedrock-runtime.{expected}.amazonaws.com"


def test_region_and_endpoint_from_a_profile(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, echo_server: Any, no_aws_region: None
) -> None:
    config = isolated_env / ".aws" / "config"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[profile work]\nregion = eu-central-1\n")
    backend = BedrockBackend(profile="work", endpoint_url=str(echo_server))
    assert backend.region == "eu-central-1"
    client = MistralClient(backend="bedrock", profile="work", endpoint_url=str(echo_server))
    assert client.chat("from a profile").text == "from a profile"


def test_missing_region_names_every_source(no_aws_region: None, sleeps: SleepRecorder) -> None:
    client = MistralClient(backend="bedrock", retry=RetryPolicy(sleep=sleeps))  # lazy: nothing yet
    with pytest.raises(errors.RegionError) as info:
        client.chat("hello")
    message = str(info.value)
    for source in ("region=", "AWS_REGION", "AWS_DEFAULT_REGION", "profile", "~/.aws/config"):
        assert source in message
    assert info.value.attempts == 1 and sleeps.delays == []


def test_missing_credentials_say_how_to_configure_them(
    no_aws_credentials: None, sleeps: SleepRecorder
) -> None:
    # The real AWS endpoint: botocore fails while signing, before any connection is made.
    client = MistralClient(backend="bedrock", region="us-east-1", retry=RetryPolicy(sleep=sleeps))
    for call in (lambda: client.chat("hello"), lambda: list(client.stream("hello"))):
        with pytest.raises(errors.CredentialsError) as info:
            call()
        message = str(info.value)
        assert (
            "aws configure" in message
            and "AWS_ACCESS_KEY_ID" in message
            and "AWS_PROFILE" in message
        )
        assert 'backend="local"' in message
        assert "\n" not in message
        assert isinstance(info.value.__cause__, botocore.exceptions.NoCredentialsError)
    assert sleeps.delays == []


def test_unknown_profile_is_a_configuration_error() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        MistralClient(backend="bedrock", profile="nope").chat("hello")
    assert "nope" in str(info.value) and "AWS_PROFILE" in str(info.value)
    assert isinstance(info.value.__cause__, botocore.exceptions.ProfileNotFound)


def test_loopback_endpoint_needs_no_region_and_no_credentials(
    echo_server: Any, no_aws_region: None, no_aws_credentials: None
) -> None:
    client = MistralClient(backend="bedrock", endpoint_url=str(echo_server))
    assert client.chat("offline").text == "offline"
    assert "".join(client.stream("still offline")) == "still offline"


@pytest.mark.parametrize(
    ("model", "region", "sent"),
    [
        ("pixtral-large", "us-east-1", "us.mistral.pixtral-large-2502-v1:0"),
        ("mistral.pixtral-large-2502-v1:0", "eu-west-3", "eu.mistral.pixtral-large-2502-v1:0"),
        ("eu.mistral.pixtral-large-2502-v1:0", "us-east-1", "eu.mistral.pixtral-large-2502-v1:0"),
        ("mistral-7b", "us-east-1", "mistral.mistral-7b-instruct-v0:2"),
    ],
    ids=["alias", "bare-id-eu", "explicit-profile-kept", "on-demand-model"],
)
def test_profile_only_models_go_through_the_regions_inference_profile(
    echo_server: Any, model: str, region: str, sent: str
) -> None:
    client = MistralClient(
        model=model, backend="bedrock", endpoint_url=str(echo_server), region=region
    )
    assert client.chat("a picture").text == "a picture"
    assert "".join(client.stream("streamed too")) == "streamed too"
    assert [r.model_id for r in echo_server.stats.requests[-2:]] == [sent, sent]


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_an_endpoint_that_is_not_a_url_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "environment":
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "localhost8000")
        client = MistralClient(backend="bedrock", region="us-east-1")
    else:
        client = MistralClient(backend="bedrock", region="us-east-1", endpoint_url="localhost8000")
    with pytest.raises(errors.ConfigurationError) as info:
        client.chat("hello")
    assert "localhost8000" in str(info.value) and "http://127.0.0.1:8000" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_botocore_retries_are_off(
    make_server: Any, monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder
) -> None:
    # Even a shell that asks botocore for retries must not multiply our attempts.
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    server = make_server("echo", faults={"throttle": 1.0})
    client = MistralClient(
        backend="bedrock", endpoint_url=str(server), retry=RetryPolicy(max_attempts=2, sleep=sleeps)
    )
    with pytest.raises(errors.ThrottledError):
        client.chat("hello")
    with pytest.raises(errors.ThrottledError):
        list(client.stream("hello"))
    assert _requests(server) == 4
    backend = client.backend
    assert isinstance(backend, BedrockBackend)
    clients = backend._get_clients()
    for boto_client in (clients.invoke, clients.stream):
        assert boto_client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}


def test_timeouts_and_pool_reach_botocore() -> None:
    backend = BedrockBackend(
        read_timeout=321, connect_timeout=7, stream_idle_timeout=12.5, max_pool_connections=33
    )
    clients = backend._get_clients()
    assert clients.invoke.meta.config.read_timeout == 321
    assert (
        clients.stream.meta.config.read_timeout == 12.5
    )  # the idle timeout bounds gaps in a stream
    for boto_client in (clients.invoke, clients.stream):
        assert boto_client.meta.config.connect_timeout == 7
        assert boto_client.meta.config.max_pool_connections == 33


@pytest.mark.parametrize(
    "kwargs",
    [
        {"read_timeout": 0},
        {"connect_timeout": -1},
        {"stream_idle_timeout": "60"},
        {"max_pool_connections": 0},
    ],
    ids=str,
)
def test_bad_backend_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError):
        BedrockBackend(**kwargs)


def test_import_is_lazy_and_boto3_arrives_with_the_first_call(echo_server: Any) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import bedrock_mistral
        from bedrock_mistral import MistralClient, Message, errors
        assert "boto3" not in sys.modules and "torch" not in sys.modules, "import"
        assert "httpx" not in sys.modules and "openai" not in sys.modules, "import"
        client = MistralClient(backend="bedrock", endpoint_url={str(echo_server)!r})
        assert "boto3" not in sys.modules, "constructor"
        assert client.chat("lazy").text == "lazy"
        assert "boto3" in sys.modules and "torch" not in sys.modules, "call"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# -- backend factory -------------------------------------------------------------------------


def test_switching_backend_is_one_argument(echo_server: Any) -> None:
    options: dict[str, Any] = {
        "model": "mixtral-8x7b",
        "region": "us-east-1",
        "endpoint_url": str(echo_server),
        "read_timeout": 30,
        "stream_idle_timeout": 5,
    }
    on_bedrock = MistralClient(backend="bedrock", **options)
    on_echo = MistralClient(backend="echo", **options)
    assert isinstance(on_echo.backend, EchoBackend)
    assert on_bedrock.chat("same answer").text == on_echo.chat("same answer").text == "same answer"


def test_environment_picks_model_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDROCK_MISTRAL_MODEL", "mixtral-8x7b")
    monkeypatch.setenv("BEDROCK_MISTRAL_BACKEND", "echo")
    client = MistralClient()
    assert client.model_id == "mistral.mixtral-8x7b-instruct-v0:1"
    assert client.backend.name == "echo"
    assert (
        MistralClient(model="mistral-7b", backend="bedrock").backend.name == "bedrock"
    )  # arguments win


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backend": "sagemaker"}, "backend='sagemaker' is not allowed"),
        ({"backend": "bedrock", "read_timout": 5}, "unknown backend option(s) read_timout"),
        ({"backend": object()}, "is not allowed"),
        ({"max_attempts": 3, "retry": RetryPolicy(max_attempts=4)}, "pass only one of them"),
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"retry": 3}, "a RetryPolicy"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_client_configuration_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        MistralClient(**kwargs)
    assert fragment in str(info.value)


def test_any_object_with_the_protocol_is_a_backend() -> None:
    backend = GreedyBackend(answer=" custom")
    client = MistralClient(backend=backend, region="ignored-for-objects")
    assert client.backend is backend
    reply = client.chat("hi")
    assert reply.text == " custom" and reply.backend == "greedy"
    assert reply.cost_usd is None  # list prices apply to Bedrock only


def test_client_is_a_context_manager_that_releases_connections(echo_server: Any) -> None:
    with MistralClient(backend="bedrock", endpoint_url=str(echo_server)) as client:
        client.chat("x")
        backend = client.backend
        assert isinstance(backend, BedrockBackend) and backend._clients is not None
    assert backend._clients is None
    assert client.chat("again").text == "again"  # recreated on demand
