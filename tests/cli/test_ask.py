"""``bedrock-mistral ask``: output modes, stdin, exit codes, the Bedrock path over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import tests.helpers.cli as cli_fixtures
from bedrock_mistral import errors
from bedrock_mistral.cli import cli
from bedrock_mistral.server.runner import serve_in_background
from tests.helpers.cli import CliHome, ScriptedBackend, fake_aws, run_cli

pytestmark = pytest.mark.usefixtures("cli_home")

SCRIPTED = ("-b", "tests.helpers.cli:SCRIPTED")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedBackend:
    backend = ScriptedBackend()
    monkeypatch.setattr(cli_fixtures, "SCRIPTED", backend)
    return backend


def test_answer_goes_to_stdout_as_plain_text_when_piped() -> None:
    result = run_cli("ask", "-b", "echo", "what", "is", "**2+2**?")
    assert result.exit_code == 0
    assert result.stdout == "what is **2+2**?\n"
    assert result.stderr == ""  # the status footer is for terminals only


def test_piped_stdin_goes_before_the_question(scripted: ScriptedBackend) -> None:
    scripted.enqueue("a summary")
    result = run_cli("ask", *SCRIPTED, "summarise this", input="line one\nline two\n")
    assert result.exit_code == 0 and result.stdout == "a summary\n"
    assert "line one\nline two\n\nsummarise this [/INST]" in scripted.requests[0].prompt


def test_stdin_alone_is_the_prompt_and_no_stdin_ignores_it(scripted: ScriptedBackend) -> None:
    run_cli("ask", *SCRIPTED, input="just the file\n")
    assert "[INST] just the file [/INST]" in scripted.requests[0].prompt
    run_cli("ask", *SCRIPTED, "--no-stdin", "question", input="ignored\n")
    assert "ignored" not in scripted.requests[1].prompt


def test_nothing_to_ask_is_a_usage_error() -> None:
    result = run_cli("ask", "-b", "echo", input="   \n")
    assert result.exit_code == 2
    assert "nothing to ask" in result.stderr


def test_json_prints_the_whole_completion(scripted: ScriptedBackend) -> None:
    scripted.enqueue("four words of reply")
    result = run_cli("ask", *SCRIPTED, "--json", "-s", "be brief", "2+2?")
    body = json.loads(result.stdout)
    assert body["text"] == "four words of reply"
    assert body["stop_reason"] == "stop"
    assert body["usage"] == {
        "input_tokens": len(scripted.requests[0].prompt.split()),
        "output_tokens": 4,
    }
    assert set(body) >= {"latency_ms", "cost_usd", "model_id", "backend"}
    assert scripted.requests[0].prompt.startswith("<s> [INST] be brief\n\n2+2?")


def test_no_stream_uses_a_single_call(scripted: ScriptedBackend, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(scripted, "stream", lambda request: calls.append("stream") or iter(()))
    scripted.enqueue("whole")
    result = run_cli("ask", *SCRIPTED, "--no-stream", "hi")
    assert result.stdout == "whole\n" and calls == []


def test_generation_options_reach_the_request(scripted: ScriptedBackend) -> None:
    run_cli(
        "ask", *SCRIPTED, "-o", "temperature=0.2", "-o", "max_tokens=33", "-o", "stop=###", "hi"
    )
    request = scripted.requests[0]
    assert (request.temperature, request.max_tokens, request.stop) == (0.2, 33, ("###",))


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        pytest.param(
            errors.ThrottledError("ThrottlingException (429) from Bedrock.", retry_after=0.0),
            4,
            ["ThrottlingException", "retried 4 times"],
            id="throttled",
        ),
        pytest.param(errors.ServiceQuotaExceededError("quota exceeded"), 4, ["quota"], id="quota"),
        pytest.param(
            errors.AccessDeniedError("AccessDeniedException: enable model access"),
            3,
            ["model access"],
            id="access-denied",
        ),
        pytest.param(
            errors.CredentialsError("No AWS credentials found"),
            3,
            ["aws configure", "--backend local"],
            id="no-credentials",
        ),
        pytest.param(
            errors.RegionError("No AWS region configured"),  # its fix is the class's
            3,
            ["--region", "--backend local"],
            id="no-region",
        ),
        pytest.param(
            errors.ModelNotFoundError("no such model"), 3, ["no such model"], id="not-found"
        ),
        pytest.param(
            errors.ServiceValidationError("Malformed input"),
            2,
            ["Malformed"],
            id="service-validation",
        ),
        pytest.param(
            errors.InternalServerError("boom", retry_after=0.0),
            1,
            ["boom", "retried 4 times"],
            id="server-error",
        ),
        pytest.param(
            errors.ModelError("the model failed"), 1, ["the model failed"], id="model-error"
        ),
        pytest.param(RuntimeError("a bug"), 1, ["unexpected RuntimeError", "--debug"], id="bug"),
    ],
)
def test_errors_become_one_line_and_an_exit_code(
    scripted: ScriptedBackend, error, code, words
) -> None:
    scripted.enqueue(*[error] * 5)
    result = run_cli("ask", *SCRIPTED, "--no-stream", "hi")
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") <= 2
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_real_exception(scripted: ScriptedBackend) -> None:
    scripted.enqueue(errors.AccessDeniedError("denied"))
    result = CliRunner().invoke(cli, ["--debug", "ask", *SCRIPTED, "hi"])
    assert isinstance(result.exception, errors.AccessDeniedError)


def test_bad_values_are_usage_errors() -> None:
    assert run_cli("ask", "-b", "echo", "-o", "temperature=9", "hi").exit_code == 2
    assert run_cli("ask", "-b", "echo", "-o", "colour=red", "hi").exit_code == 2
    unknown = run_cli("ask", "-b", "echo", "-m", "gpt-4", "hi")
    assert unknown.exit_code == 2 and "known aliases" in unknown.stderr
    too_many = run_cli("ask", "-b", "echo", "-m", "mixtral-8x7b", "-o", "max_tokens=5000", "hi")
    assert too_many.exit_code == 2 and "max_tokens" in too_many.stderr


def test_ctrl_c_keeps_the_partial_answer_and_exits_130(
    scripted: ScriptedBackend, monkeypatch
) -> None:
    def interrupted(request):
        from bedrock_mistral.types import TextDelta

        yield TextDelta(text="partial")
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread mid-stream

    monkeypatch.setattr(scripted, "stream", interrupted)
    result = run_cli("ask", *SCRIPTED, "hi")
    assert result.exit_code == 130
    assert result.stdout == "partial\n"
    assert "cut short" in result.stderr


def test_interrupted_stream_keeps_partial_text_and_fails(
    scripted: ScriptedBackend, monkeypatch
) -> None:
    def broken(request):
        from bedrock_mistral.types import TextDelta

        yield TextDelta(text="half an ")
        raise errors.ModelStreamError("modelStreamErrorException mid-stream")

    monkeypatch.setattr(scripted, "stream", broken)
    result = run_cli("ask", *SCRIPTED, "hi")
    assert result.exit_code == 1
    assert result.stdout.startswith("half an")
    assert "error:" in result.stderr and "interrupted" in result.stderr
    assert "resume=True" not in result.stderr  # an SDK argument means nothing on the CLI


# --- the Bedrock path: real boto3 against our server on loopback ----------------------


def test_ask_over_bedrock_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws(monkeypatch)
    with serve_in_background(backend="echo") as url:
        result = run_cli("ask", "--endpoint-url", url, "-m", "mixtral-8x7b", "hello from boto3")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "hello from boto3\n"
        as_json = json.loads(
            run_cli("ask", "--endpoint-url", url, "--json", "-m", "mistral-7b", "two words").stdout
        )
        assert as_json["backend"] == "bedrock" and as_json["text"] == "two words"
        assert as_json["cost_usd"] > 0
        assert url.stats.requests[-1].status == 200


def test_bedrock_errors_map_to_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws(monkeypatch)
    with serve_in_background(backend="echo", fault_script=["denied"]) as url:
        denied = run_cli("ask", "--endpoint-url", url, "hi")
    assert denied.exit_code == 3
    assert "AccessDeniedException" in denied.stderr and "Model access" in denied.stderr
    with serve_in_background(backend="echo", fault_script=["throttle"]) as url:
        recovered = run_cli("ask", "--endpoint-url", url, "--no-stream", "after a retry")
    assert recovered.exit_code == 0 and recovered.stdout == "after a retry\n"


def test_missing_credentials_suggest_the_local_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AWS_REGION", "us-east-1"
    )  # the real AWS endpoint: refused before any request
    result = run_cli("ask", "hi")
    assert result.exit_code == 3
    assert "--backend local" in result.stderr and "aws configure" in result.stderr


def test_missing_region_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    result = run_cli("ask", "hi")
    assert result.exit_code == 3
    assert "region" in result.stderr and "--region" in result.stderr


def _imports_after(
    args: list[str], env: dict[str, str]
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    code = (
        "import sys\n"
        "from bedrock_mistral.cli import main\n"
        f"sys.argv = ['bedrock-mistral', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ['boto3', 'botocore', 'torch', 'pydantic', 'rich', 'prompt_toolkit']\n"
        "print('IMPORTED', [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("IMPORTED"))
    return eval(line.removeprefix("IMPORTED ")), done


@pytest.mark.parametrize(
    "args", [["--help"], ["ask", "--help"], ["chat", "--help"], ["sessions", "--help"]]
)
def test_help_imports_neither_boto3_nor_torch(cli_home: CliHome, args: list[str]) -> None:
    imported, done = _imports_after(args, cli_home.env)
    assert "Usage:" in done.stdout
    assert "boto3" not in imported and "torch" not in imported
    if args == ["--help"]:
        assert imported == []  # not even pydantic, rich or prompt_toolkit


def test_ask_on_bedrock_never_imports_torch(
    cli_home: CliHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws(monkeypatch)
    env = {
        **cli_home.env,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
    }
    with serve_in_background(backend="echo") as url:
        imported, done = _imports_after(["ask", "--endpoint-url", url, "no torch here"], env)
    assert done.stdout == "no torch here\n", done.stderr
    assert "boto3" in imported and "torch" not in imported


def test_output_closed_early_exits_quietly(cli_home: CliHome) -> None:
    """`ask ... | head`: no error line, no traceback, exit 141 like other shell tools."""
    words = " ".join(["word"] * 30_000).encode()  # far more than a pipe buffer holds
    command = [
        sys.executable,
        "-m",
        "bedrock_mistral",
        "ask",
        "-b",
        "echo",
        "-m",
        "magistral-small",
    ]
    command += ["-o", "max_tokens=30000"]
    process = subprocess.Popen(
        command,
        env=cli_home.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(words)
    process.stdin.close()
    assert process.stdout.read(10) == b"word word "
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""


@pytest.mark.parametrize("mode", [(), ("--no-stream",)], ids=["stream", "no-stream"])
def test_the_models_leading_space_is_not_printed(
    scripted: ScriptedBackend, mode: tuple[str, ...]
) -> None:
    scripted.enqueue(" Paris")
    result = run_cli("ask", *SCRIPTED, *mode, "capital of France?")
    assert result.exit_code == 0 and result.stdout == "Paris\n"


def test_json_keeps_the_text_exactly_as_the_model_sent_it(scripted: ScriptedBackend) -> None:
    scripted.enqueue(" Paris")
    result = run_cli("ask", *SCRIPTED, "--json", "capital of France?")
    assert json.loads(result.stdout)["text"] == " Paris"
