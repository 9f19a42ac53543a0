"""The CLI on an OpenAI-compatible engine: ask, chat, batch, doctor, models, config.

Each command runs in-process (CliRunner) against the real loopback server of
tests/helpers/openai_server.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import CliHome, run_cli
from tests.helpers.openai_server import OpenAIServer, start_openai_server

pytest.importorskip("httpx", reason="needs the openai extra: pip install -e '.[openai]'")

MODEL = "mistral:7b-instruct"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with start_openai_server() as running:
        yield running


def engine(server: OpenAIServer, *more: str) -> list[str]:
    return ["--backend", "openai", "--base-url", server.url, "-m", MODEL, *more]


def test_ask_answers_from_the_engine(cli_home: CliHome, server: OpenAIServer) -> None:
    result = run_cli("ask", *engine(server), "hello engine")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "hello engine\n"
    assert server.generations()[0].path == "/v1/chat/completions"


def test_ask_raw_mode_sends_our_prompt(cli_home: CliHome, server: OpenAIServer) -> None:
    result = run_cli("ask", *engine(server, "--prompt-mode", "raw"), "--json", "raw please")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "openai"
    [sent] = server.generations()
    assert sent.path == "/v1/completions"
    assert sent.body is not None and sent.body["prompt"] == "<s> [INST] raw please [/INST]"


def test_chat_runs_a_conversation_on_the_engine(cli_home: CliHome, server: OpenAIServer) -> None:
    result = run_cli("chat", *engine(server), "--plain", input="first turn\n/params\nsecond\n")
    assert result.exit_code == 0, result.stderr
    assert "first turn" in result.stdout and "second" in result.stdout
    last = server.generations()[-1].body
    assert last is not None and [m["content"] for m in last["messages"]] == [
        "first turn",
        "first turn",
        "second",
    ]


def test_batch_runs_every_record_on_the_engine(
    cli_home: CliHome, server: OpenAIServer, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("alpha\nbeta gamma\n")
    out = tmp_path / "out.jsonl"
    result = run_cli("batch", str(prompts), "-o", str(out), *engine(server), "-c", "2")
    assert result.exit_code == 0, result.stderr
    texts = sorted(json.loads(line)["text"] for line in out.read_text().splitlines())
    assert texts == ["alpha", "beta gamma"]


def test_the_engine_not_running_is_one_line_with_the_url_and_how_to_start_it(
    cli_home: CliHome, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("anyone there?\n")
    out = tmp_path / "out.jsonl"
    url = "http://127.0.0.1:9/v1"
    result = run_cli(
        "batch", str(prompts), "-o", str(out), "-b", "ollama", "--base-url", url,
        "--max-attempts", "1",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"Nothing answers at {url}" in result.stderr and "ollama serve" in result.stderr
    assert "base_url" in result.stderr or "--base-url" in result.stderr


def test_wrong_key_and_unknown_model_are_setup_errors_with_their_fix(cli_home: CliHome) -> None:
    with start_openai_server(api_key="secret") as server:
        result = run_cli("ask", *engine(server), "--api-key", "wrong", "hi")
        assert result.exit_code == 3
        assert "refused the API key" in result.stderr and "--api-key" in result.stderr
        result = run_cli(
            "ask", "-b", "openai", "--base-url", server.url, "--api-key", "secret", "-m", "x:1",
            "hi",
        )  # fmt: skip
    assert result.exit_code == 3
    assert "has no model 'x:1'" in result.stderr and "mistral:7b-instruct" in result.stderr
    assert "pick one with -m" in result.stderr


def test_context_too_long_is_a_usage_error(cli_home: CliHome) -> None:
    with start_openai_server(context_window=5) as server:
        result = run_cli("ask", *engine(server), "-o", "max_tokens=4", "far too many words here")
    assert result.exit_code == 2
    assert "context" in result.stderr and "-o max_tokens=N" in result.stderr


def test_doctor_checks_the_url_and_lists_the_models(
    cli_home: CliHome, server: OpenAIServer
) -> None:
    result = run_cli("doctor", *engine(server))
    assert result.exit_code == 0, result.stdout
    assert f"{server.url} answers" in result.stdout
    assert "mistral:7b-instruct, mixtral:8x7b" in result.stdout
    missing = run_cli("doctor", "-b", "openai", "--base-url", server.url, "-m", "gone:1")
    assert missing.exit_code == 1 and "gone:1 is not among" in missing.stdout


def test_doctor_says_when_nothing_answers(cli_home: CliHome) -> None:
    result = run_cli("doctor", "-b", "vllm", "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 1
    assert "Nothing answers at http://127.0.0.1:9/v1" in result.stdout
    assert "vllm serve" in result.stdout


def test_models_lists_what_the_engine_serves(cli_home: CliHome, server: OpenAIServer) -> None:
    result = run_cli("models", "--backend", "ollama", "--base-url", server.url, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"id": "mistral:7b-instruct", "alias": "mistral-7b"},
        {"id": "mixtral:8x7b", "alias": "mixtral-8x7b"},
    ]
    table = run_cli("models", "--backend", "openai", "--base-url", server.url)
    assert "mixtral:8x7b" in table.stdout and "2 model(s) served" in table.stderr


def test_config_keeps_the_engine_url_and_masks_the_key(
    cli_home: CliHome, server: OpenAIServer
) -> None:
    assert run_cli("config", "set", "base_url", server.url).exit_code == 0
    assert run_cli("config", "set", "api_key", "sk-abcdef1234").exit_code == 0
    assert run_cli("config", "set", "backend", "openai").exit_code == 0
    shown = run_cli("config", "show", "--json")
    settings = json.loads(shown.stdout)["settings"]
    assert settings["base_url"] == {"value": server.url, "source": "config file"}
    assert settings["api_key"]["value"] == "****1234"
    result = run_cli("ask", "-m", MODEL, "from the config")
    assert result.stdout == "from the config\n", result.stderr
    assert server.requests[-1].headers["authorization"] == "Bearer sk-abcdef1234"
    refused = run_cli("config", "set", "base_url", "localhost:8000")
    assert refused.exit_code == 2 and "http(s) URL" in refused.stderr


def test_without_httpx_the_engines_say_which_extra_to_install(
    cli_home: CliHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "httpx" else find_spec(name, *a),
    )
    rows = {row["name"]: row for row in json.loads(run_cli("backends", "--json").stdout)}
    for name in ("openai", "ollama", "vllm", "llamacpp"):
        assert 'pip install "bedrock-mistral[openai]"' in rows[name]["problem"]
    result = run_cli("ask", "-b", "ollama", "hi")
    assert result.exit_code == 3 and "bedrock-mistral[openai]" in result.stderr
