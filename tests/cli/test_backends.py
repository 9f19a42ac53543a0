"""The CLI names backends the way the SDK does: `ask -b NAME` for an installed plugin,
`bedrock-mistral backends` and `doctor` to see what is installed."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.plugins import PluginSite

pytestmark = pytest.mark.usefixtures("cli_home")


def test_ask_uses_an_installed_plugin_by_name(plugin: PluginSite) -> None:
    result = run_cli("ask", "-b", "shout", "is anyone there?")
    assert (result.exit_code, result.stdout) == (0, "IS ANYONE THERE?\n"), result.stderr


def test_config_accepts_an_installed_plugin_name_and_refuses_others(plugin: PluginSite) -> None:
    assert run_cli("config", "set", "backend", "shout").exit_code == 0
    assert run_cli("ask", "quiet please").stdout == "QUIET PLEASE\n"
    refused = run_cli("config", "set", "backend", "cloud")
    assert refused.exit_code == 2 and "bedrock-mistral backends" in refused.stderr


def test_an_unknown_backend_is_one_line_naming_what_is_installed(plugin: PluginSite) -> None:
    result = run_cli("ask", "-b", "nosuch.module:Backend", "hi")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no module named 'nosuch'" in result.stderr


def test_backends_lists_builtins_and_plugins_with_their_source(plugin: PluginSite) -> None:
    result = run_cli("backends", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == [
        "bedrock",
        "local",
        "echo",
        "openai",
        "ollama",
        "vllm",
        "llamacpp",
        "shout",
    ]
    assert rows["echo"]["source"] == "built-in" and rows["echo"]["usable"]
    assert rows["shout"]["source"] == "entry point (bm-shout-plugin 1.0)"
    table = run_cli("backends")
    assert table.exit_code == 0
    assert "shout" in table.stdout and "bm-shout-plugin" in table.stdout


def test_backends_and_doctor_say_how_to_install_the_local_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # this machine has torch; pretend it does not
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else find_spec(name, *a),
    )
    rows = {row["name"]: row for row in json.loads(run_cli("backends", "--json").stdout)}
    assert not rows["local"]["usable"]
    assert 'pip install "bedrock-mistral[local]"' in rows["local"]["problem"]
    doctor = run_cli("doctor", "-b", "echo")
    assert "backends     bedrock, echo, openai, ollama, vllm, llamacpp ready" in doctor.stdout
    assert "local (built-in): needs torch" in doctor.stdout
