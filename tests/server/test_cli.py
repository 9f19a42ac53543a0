"""The AWS CLI and ``bedrock-mistral serve`` itself, as separate processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.server import MISTRAL_7B, prompt, runtime_client, text_body

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_MISTRAL_"))}
    env.update(
        AWS_ACCESS_KEY_ID="AKIDTESTTESTTESTTEST",
        AWS_SECRET_ACCESS_KEY="test-secret-key",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )
    return env


def aws_invoke(url: str) -> list[str]:
    assert AWS is not None
    return [AWS, "bedrock-runtime", "invoke-model", "--endpoint-url", url, "--region", "us-east-1",
            "--model-id", MISTRAL_7B]  # fmt: skip


@pytest.mark.skipif(AWS is None, reason="the AWS CLI (awscli, a dev dependency) is not installed")
def test_aws_cli_invoke_model(echo_server: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    body = json.dumps({"prompt": prompt("hello from the cli"), "max_tokens": 20})
    command = [*aws_invoke(echo_server), "--body", body, str(out)]
    done = subprocess.run(
        command, env=cli_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == {
        "outputs": [{"text": "hello from the cli", "stop_reason": "stop"}]
    }
    assert json.loads(done.stdout)["contentType"] == "application/json"


@pytest.mark.skipif(AWS is None, reason="the AWS CLI (awscli, a dev dependency) is not installed")
def test_aws_cli_sees_bedrock_errors(echo_server: str, tmp_path: Path) -> None:
    command = [*aws_invoke(echo_server), "--body", "{}", str(tmp_path / "out.json")]
    done = subprocess.run(
        command, env=cli_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "(ValidationException)" in done.stderr
    assert "required key [prompt] not found" in done.stderr


def start_serve(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``serve --port 0``; return the process, its URL and its announcement."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bedrock_mistral", "serve", "--port", "0", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # Read the whole announcement here: communicate() later reads the raw pipe and would
    # miss lines already buffered by this text wrapper.
    lines = [process.stdout.readline() for _ in range(5)]
    match = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
    assert match, (lines, process.stderr.read() if process.poll() is not None else "")
    return process, match.group(0), "".join(lines)


def stop(process: subprocess.Popen[str]) -> str:
    """Ctrl-C the server; return its stderr (the log)."""
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=20)[1]


def test_serve_command_prints_the_url_and_serves_boto3() -> None:
    process, url, announcement = start_serve(
        "--backend", "echo", "--fault", "throttle=0", "--max-concurrency", "4"
    )
    try:
        reply = runtime_client(url).invoke_model(modelId=MISTRAL_7B, body=text_body("served"))
        assert json.loads(reply["body"].read())["outputs"][0]["text"] == "served"
    finally:
        log = stop(process)
    assert f"AWS_ENDPOINT_URL_BEDROCK_RUNTIME={url}" in announcement
    assert re.search(r"POST invoke mistral\.mistral-7b-instruct-v0:2 200 in=\d+ out=1 ", log)


def test_serve_fault_flag_injects_faults() -> None:
    process, url, _ = start_serve(
        "--backend", "echo", "--fault", "throttle=1", "--seed", "3", "--log-level", "warning"
    )
    try:
        client: Any = runtime_client(url)
        with pytest.raises(client.exceptions.ThrottlingException):
            client.invoke_model(modelId=MISTRAL_7B, body=text_body("x"))
    finally:
        stop(process)


@pytest.mark.parametrize(
    "flag", [["--fault", "explode=0.1"], ["--fault", "throttle=2"], ["--fault", "throttle"]]
)
def test_serve_rejects_bad_fault_flags(flag: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bedrock_mistral", "serve", "--backend", "echo", *flag],
        env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--fault" in done.stderr
    assert done.stderr.count("midstream, drop, stall") == 1  # the kinds, listed once


def test_an_unusable_host_is_blamed_on_host_not_port() -> None:
    from bedrock_mistral.errors import ConfigurationError
    from bedrock_mistral.server import serve_in_background

    with (
        pytest.raises(ConfigurationError) as info,
        serve_in_background(backend="echo", host="256.1.1.1"),
    ):
        pass
    assert "--host" in str(info.value) and "--port" not in str(info.value)


def test_help_imports_no_server_stack() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from bedrock_mistral.cli import cli;"
        "r = CliRunner().invoke(cli, ['serve', '--help']); assert r.exit_code == 0, r.output;"
        "assert '--max-concurrency' in r.output;"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'boto3', 'torch') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
