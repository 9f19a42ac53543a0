"""Settings precedence, the config file, and ``bedrock-mistral config``."""

from __future__ import annotations

import json
import stat
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bedrock_mistral.cli.config import (
    ConfigFile,
    dump_toml,
    load_config,
    parse_param,
    resolve_settings,
)
from bedrock_mistral.errors import ConfigurationError, ValidationError
from tests.helpers.cli import CliHome, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.usefixtures("cli_home")


def _config(tmp_path, **settings) -> ConfigFile:
    params = settings.pop("params", {})
    return ConfigFile(path=tmp_path / "c.toml", settings=settings, params=params)


@pytest.mark.parametrize(
    ("flags", "env", "file", "expected_model", "expected_source"),
    [
        pytest.param(
            {"model": "mixtral-8x7b"},
            {"BEDROCK_MISTRAL_MODEL": "mistral-small"},
            {"model": "mistral-large"},
            "mixtral-8x7b",
            "flag",
            id="flag-beats-env-and-file",
        ),
        pytest.param(
            {},
            {"BEDROCK_MISTRAL_MODEL": "mistral-small"},
            {"model": "mistral-large"},
            "mistral-small",
            "env BEDROCK_MISTRAL_MODEL",
            id="env-beats-file",
        ),
        pytest.param(
            {},
            {},
            {"model": "mistral-large"},
            "mistral-large",
            "config file",
            id="file-beats-default",
        ),
        pytest.param({}, {}, {}, "mistral-7b", "default", id="default"),
        pytest.param(
            {"model": None},
            {"BEDROCK_MISTRAL_MODEL": "  "},
            {},
            "mistral-7b",
            "default",
            id="blank-env-ignored",
        ),
    ],
)
def test_model_precedence(tmp_path, flags, env, file, expected_model, expected_source) -> None:
    settings = resolve_settings(flags, env=env, config=_config(tmp_path, **file))
    assert settings.model == expected_model
    assert settings.sources["model"] == expected_source


def test_region_endpoint_profile_and_backend_come_from_their_variables(tmp_path) -> None:
    env = {
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_PROFILE": "work",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://127.0.0.1:9",
        "BEDROCK_MISTRAL_BACKEND": "echo",
        "BEDROCK_MISTRAL_LOCAL_MODEL": "/models/tiny",
    }
    settings = resolve_settings({}, env=env, config=_config(tmp_path, region="us-west-2"))
    assert (settings.region, settings.profile, settings.endpoint_url) == (
        "eu-west-3",
        "work",
        "http://127.0.0.1:9",
    )
    assert (settings.backend, settings.local_model) == ("echo", "/models/tiny")
    # AWS_REGION wins over AWS_DEFAULT_REGION, as in the AWS CLI.
    assert (
        resolve_settings(
            {}, env={**env, "AWS_REGION": "us-east-2"}, config=_config(tmp_path)
        ).region
        == "us-east-2"
    )
    ignored = resolve_settings(
        {}, env={**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, config=_config(tmp_path)
    )
    assert ignored.endpoint_url is None


def test_params_merge_key_by_key(tmp_path) -> None:
    config = _config(tmp_path, params={"temperature": 0.1, "max_tokens": 300})
    settings = resolve_settings({"params": {"temperature": 0.9}}, env={}, config=config)
    assert settings.params == {"temperature": 0.9, "max_tokens": 300}
    assert settings.sources["params.temperature"] == "flag"
    assert settings.sources["params.max_tokens"] == "config file"


def test_bad_backend_from_env_is_a_validation_error(tmp_path) -> None:
    with pytest.raises(ValidationError, match="backend"):
        resolve_settings({}, env={"BEDROCK_MISTRAL_BACKEND": "cloud"}, config=_config(tmp_path))


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        ("temperature", "0.25", 0.25),
        ("top_p", "1", 1.0),
        ("top_k", "40", 40),
        ("max_tokens", "4096", 4096),
        ("stop", "###,END", ["###", "END"]),
        ("stop", '["a,b", "c"]', ["a,b", "c"]),
    ],
)
def test_parse_param_accepts(key, raw, value) -> None:
    assert parse_param(key, raw) == value


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("temperature", "1.5"),
        ("temperature", "nan"),
        ("top_k", "0"),
        ("top_k", "2.5"),
        ("max_tokens", "0"),
        ("max_tokens", "many"),
        ("stop", "[1, 2]"),
        ("seed", "1"),
    ],
)
def test_parse_param_refuses_with_the_field_named(key, raw) -> None:
    with pytest.raises(ValidationError) as info:
        parse_param(key, raw)
    assert key in str(info.value) or "parameter" in str(info.value)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: s.strip()
)


@given(
    model=_text,
    region=_text,
    temperature=st.floats(min_value=0, max_value=1),
    stop=st.lists(_text, max_size=3),
)
def test_dump_toml_round_trips(
    model: str, region: str, temperature: float, stop: list[str]
) -> None:
    settings = {"model": model, "region": region}
    params = {"temperature": temperature, "stop": stop}
    assert tomllib.loads(dump_toml(settings, params)) == {**settings, "params": params}


def test_broken_file_is_a_setup_error_naming_the_file(cli_home: CliHome) -> None:
    cli_home.config_file.parent.mkdir(parents=True)
    cli_home.config_file.write_text("model = \n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(cli_home.config_file)
    result = run_cli("ask", "-b", "echo", "hi")
    assert result.exit_code == 3
    assert "config.toml is not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_set_show_unset_path(cli_home: CliHome) -> None:
    assert run_cli("config", "path").stdout.strip() == str(cli_home.config_file)
    assert run_cli("config", "set", "model", "mixtral-8x7b").exit_code == 0
    assert run_cli("config", "set", "params.temperature", "0.3").exit_code == 0
    assert run_cli("config", "set", "stop", "###").exit_code == 0
    assert tomllib.loads(cli_home.config_file.read_text()) == {
        "model": "mixtral-8x7b",
        "params": {"temperature": 0.3, "stop": ["###"]},
    }
    assert stat.S_IMODE(cli_home.config_file.stat().st_mode) == 0o600
    shown = json.loads(run_cli("config", "show", "--json").stdout)["settings"]
    assert shown["model"] == {"value": "mixtral-8x7b", "source": "config file"}
    assert shown["temperature"] == {"value": 0.3, "source": "config file"}
    assert shown["backend"] == {"value": "bedrock", "source": "default"}
    table = run_cli("config", "show").stdout
    assert "mixtral-8x7b" in table and "config file" in table
    assert run_cli("config", "unset", "temperature").exit_code == 0
    assert "temperature" not in cli_home.config_file.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("config", "set", "colour", "blue"), "unknown key"),
        (("config", "set", "temperature", "7"), "temperature"),
        (("config", "set", "backend", "cloud"), "backend"),
        (("config", "set", "model", "gpt"), "unknown model"),
    ],
    ids=["unknown-key", "out-of-range", "bad-backend", "unknown-model"],
)
def test_config_set_refuses_bad_values_with_exit_2(cli_home: CliHome, args, message) -> None:
    result = run_cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not cli_home.config_file.exists()


def test_config_set_keeps_entries_it_does_not_understand(cli_home: CliHome) -> None:
    cli_home.config_file.parent.mkdir(parents=True)
    cli_home.config_file.write_text('colour = "blue"\n[params]\nseed = 7\n')
    result = run_cli("config", "set", "region", "eu-west-3")
    assert result.exit_code == 0
    assert "ignored colour" in result.stderr and "ignored params.seed" in result.stderr
    assert tomllib.loads(cli_home.config_file.read_text()) == {
        "region": "eu-west-3",
        "colour": "blue",
        "params": {"seed": 7},
    }


def test_config_set_rewrites_the_file_through_a_real_toml_writer(cli_home: CliHome) -> None:
    # Keys that need quoting, control characters and dates survive a rewrite unchanged.
    cli_home.config_file.parent.mkdir(parents=True)
    cli_home.config_file.write_text(
        '"odd key" = "tab\\there \\"quoted\\""\nsince = 2024-01-02\n[params]\nstop = ["\\n\\n"]\n'
    )
    before = tomllib.loads(cli_home.config_file.read_text())
    assert run_cli("config", "set", "temperature", "0.3").exit_code == 0
    after = tomllib.loads(cli_home.config_file.read_text())
    assert after == {**before, "params": {"stop": ["\n\n"], "temperature": 0.3}}


def test_flags_beat_env_beat_file_end_to_end(
    cli_home: CliHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli("config", "set", "model", "mistral-large")
    run_cli("config", "set", "backend", "echo")
    assert (
        json.loads(run_cli("ask", "--json", "hi").stdout)["model_id"]
        == "mistral.mistral-large-2402-v1:0"
    )
    monkeypatch.setenv("BEDROCK_MISTRAL_MODEL", "mistral-small")
    assert (
        json.loads(run_cli("ask", "--json", "hi").stdout)["model_id"]
        == "mistral.mistral-small-2402-v1:0"
    )
    flagged = run_cli("ask", "--json", "-m", "mixtral-8x7b", "hi")
    assert json.loads(flagged.stdout)["model_id"] == "mistral.mixtral-8x7b-instruct-v0:1"
