"""One set of parameter rules: a bad value is refused with the same message everywhere.

The same values go through every surface that takes generation parameters: the SDK
(``client.chat``), ``ask -o``, ``config set``, loading ``config.toml`` and the chat's
``/set``. Each surface is driven the way a user drives it, and the messages must match
the SDK's word for word.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import tomli_w

import tests.helpers.cli as cli_fixtures
from bedrock_mistral import MistralClient
from bedrock_mistral.cli.config import load_config
from bedrock_mistral.errors import ValidationError
from tests.helpers.cli import CliHome, ScriptedBackend, run_cli

pytestmark = pytest.mark.usefixtures("cli_home")

ELEVEN = [f"s{i}" for i in range(11)]


def _last_error(stderr: str) -> str:
    """The message of the error line a command printed, without click's or our prefix."""
    line = [line for line in stderr.splitlines() if line.strip()][-1]
    for prefix in ("Error: Invalid value for '-o' / '--option': ", "error: "):
        if line.startswith(prefix):
            return line.removeprefix(prefix)
    raise AssertionError(f"no error line in {stderr!r}")


def via_sdk(model: str, name: str, text: str, value: Any) -> str:
    with pytest.raises(ValidationError) as info:
        MistralClient(model=model, backend="echo").chat("hi", **{name: value})
    return str(info.value)


def via_ask_option(model: str, name: str, text: str, value: Any) -> str:
    result = run_cli("ask", "-b", "echo", "-m", model, "-o", f"{name}={text}", "hi")
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    return _last_error(result.stderr)


def via_config_set(model: str, name: str, text: str, value: Any) -> str:
    result = run_cli("config", "set", "--", f"params.{name}", text)
    assert result.exit_code == 2, result.stderr
    return _last_error(result.stderr)


def via_config_file(model: str, name: str, text: str, value: Any, *, home: CliHome) -> str:
    home.config_file.parent.mkdir(parents=True, exist_ok=True)
    home.config_file.write_text(tomli_w.dumps({"params": {name: value}}))
    config = load_config(home.config_file)
    assert name not in config.params
    (warning,) = config.warnings
    prefix = f"{home.config_file}: ignored params.{name}: "
    assert warning.startswith(prefix)
    return warning.removeprefix(prefix)


def via_chat_set(model: str, name: str, text: str, value: Any) -> str:
    result = run_cli("chat", "-b", "echo", "-m", model, input=f"/set {name} {text}\n")
    assert result.exit_code == 0, result.stderr  # the chat goes on after a refused /set
    return _last_error(result.stderr)


Surface = Callable[..., str]
EVERY_SURFACE: dict[str, Surface] = {
    "ask -o": via_ask_option,
    "config set": via_config_set,
    "config.toml": via_config_file,
    "/set": via_chat_set,
}
# Surfaces that know the model, so they also apply its own limits.
MODEL_SURFACES: dict[str, Surface] = {"ask -o": via_ask_option, "/set": via_chat_set}

# (name, as typed on the command line, as a Python / TOML value)
BAD_EVERYWHERE: list[Any] = [
    pytest.param("temperature", "1.5", 1.5, id="temperature-above-1"),
    pytest.param("temperature", "abc", "abc", id="temperature-not-a-number"),
    pytest.param("top_p", "-0.5", -0.5, id="top_p-negative"),
    pytest.param("top_k", "0", 0, id="top_k-0"),
    pytest.param("top_k", "1.5", 1.5, id="top_k-not-an-integer"),
    pytest.param("max_tokens", "0", 0, id="max_tokens-0"),
    pytest.param("max_tokens", "nan", float("nan"), id="max_tokens-nan"),
    pytest.param("stop", ",".join(ELEVEN), ELEVEN, id="stop-11-sequences"),
    pytest.param("stop", '["ok", ""]', ["ok", ""], id="stop-empty-item"),
    pytest.param("seed", "1", 1, id="unknown-parameter"),
]

# (model, name, text, value): refused by this model only.
BAD_FOR_THE_MODEL: list[Any] = [
    pytest.param("mistral-7b", "max_tokens", "9000", 9000, id="max_tokens-over-model-max"),
    pytest.param("mistral-large-2407", "top_k", "5", 5, id="top_k-on-chat-body-model"),
    pytest.param("mistral-large-2407", "stop", "END", "END", id="stop-on-chat-body-model"),
]


@pytest.mark.parametrize(("name", "text", "value"), BAD_EVERYWHERE)
@pytest.mark.parametrize("surface", EVERY_SURFACE)
def test_a_bad_value_is_refused_with_the_sdk_message(
    surface: str, name: str, text: str, value: Any, cli_home: CliHome
) -> None:
    expected = via_sdk("mistral-7b", name, text, value)
    assert expected.startswith(f"{name}") or expected.startswith("unknown parameter")
    check = EVERY_SURFACE[surface]
    extra = {"home": cli_home} if check is via_config_file else {}
    assert check("mistral-7b", name, text, value, **extra) == expected


@pytest.mark.parametrize(("model", "name", "text", "value"), BAD_FOR_THE_MODEL)
@pytest.mark.parametrize("surface", MODEL_SURFACES)
def test_a_value_the_model_refuses_gets_the_same_message(
    surface: str, model: str, name: str, text: str, value: Any
) -> None:
    expected = via_sdk(model, name, text, value)
    assert "mistral." in expected  # the message names the model whose limit it is
    assert MODEL_SURFACES[surface](model, name, text, value) == expected


def test_the_model_limit_waits_for_the_model(cli_home: CliHome) -> None:
    # The config file does not fix the model, so a max_tokens only some models allow is
    # kept, and the model in use refuses it with the SDK's message.
    assert run_cli("config", "set", "max_tokens", "6000").exit_code == 0
    result = run_cli("ask", "-b", "echo", "-m", "mixtral-8x7b", "hi")
    assert result.exit_code == 2
    assert _last_error(result.stderr) == via_sdk("mixtral-8x7b", "max_tokens", "6000", 6000)
    assert run_cli("ask", "-b", "echo", "-m", "mistral-7b", "hi").exit_code == 0


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("temperature", "0.25", 0.25),
        ("top_k", "40", 40),
        ("max_tokens", "8192", 8192),
        ("stop", "###,END", ["###", "END"]),
    ],
)
def test_a_good_value_reaches_the_request_the_same_from_every_surface(
    name: str, text: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ScriptedBackend()
    monkeypatch.setattr(cli_fixtures, "SCRIPTED", backend)
    scripted = ("-b", "tests.helpers.cli:SCRIPTED", "--no-stream")
    expected = getattr(
        MistralClient(model="mistral-7b", backend="echo").prepare("hi", **{name: value}), name
    )
    assert run_cli("ask", *scripted, "-o", f"{name}={text}", "hi").exit_code == 0
    assert run_cli("config", "set", name, text).exit_code == 0
    assert run_cli("ask", *scripted, "hi").exit_code == 0
    assert [getattr(request, name) for request in backend.requests] == [expected, expected]
