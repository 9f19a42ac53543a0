"""One factory makes every backend: built-in names, installed entry points, module:attr,
objects. Plugins here are installed for real (tests.helpers.plugins)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bedrock_mistral import MistralClient, errors
from bedrock_mistral.backends.echo import EchoBackend
from bedrock_mistral.backends.factory import (
    BUILTIN_BACKENDS,
    ENTRY_POINT_GROUP,
    create_backend,
    list_backends,
)
from tests.helpers.plugins import SHOUT_MODULE, SHOUT_SOURCE, PluginSite

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_builtins_are_declared_as_entry_points_exactly_as_the_factory_knows_them() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["entry-points"][ENTRY_POINT_GROUP] == BUILTIN_BACKENDS
    from bedrock_mistral.cli.config import BUILTIN_BACKENDS as CLI_NAMES

    assert tuple(BUILTIN_BACKENDS) == CLI_NAMES


@pytest.mark.parametrize("name", ["echo", " Echo "])
def test_builtin_names_work_without_any_installed_metadata(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])  # stale metadata
    assert isinstance(create_backend(name), EchoBackend)
    assert [info.name for info in list_backends()] == [*BUILTIN_BACKENDS]


def test_an_installed_entry_point_reaches_the_client_with_its_options(plugin: PluginSite) -> None:
    client = MistralClient(backend="shout", endpoint_url="http://127.0.0.1:9", region="x")
    reply = client.chat("make some noise")
    assert (reply.text, reply.backend) == ("MAKE SOME NOISE", "shout")
    # endpoint_url is a parameter of the plugin's class; region belongs to bedrock: ignored.
    assert client.backend.endpoint_url == "http://127.0.0.1:9"  # type: ignore[attr-defined]
    assert "".join(client.stream("streamed too")) == "STREAMED TOO"


def test_a_plugin_gets_the_extra_options_it_names_and_typos_are_refused(
    plugin: PluginSite,
) -> None:
    assert MistralClient(backend="shout", suffix=" !").chat("hey").text == "HEY !"
    with pytest.raises(errors.ConfigurationError, match=r"unknown backend option\(s\) sufix"):
        MistralClient(backend="shout", sufix="!")


def test_listing_says_where_each_backend_comes_from(plugin: PluginSite) -> None:
    infos = {info.name: info for info in list_backends()}
    assert infos["echo"].source == "built-in" and infos["echo"].usable
    assert infos["shout"].source == "entry point (bm-shout-plugin 1.0)"
    assert infos["shout"].target == f"{SHOUT_MODULE}:ShoutBackend" and infos["shout"].usable


def test_an_unknown_name_lists_what_exists_and_how_to_add_one(plugin: PluginSite) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        MistralClient(backend="sagemaker")
    message = str(info.value)
    assert "backend='sagemaker' is not allowed" in message
    assert "installed: bedrock, local, echo, openai, ollama, vllm, llamacpp, shout" in message
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in message
    assert "package.module:attribute" in message


def test_a_broken_plugin_is_one_readable_line_and_does_not_break_the_listing(
    plugin_site: PluginSite,
) -> None:
    plugin_site.install(
        "bm-broken-plugin",
        {"broken": "bm_broken_plugin:Backend", "missing": "bm_not_there:Backend"},
        {"bm_broken_plugin": "raise RuntimeError('the plugin is broken')\n"},
    )
    with pytest.raises(errors.BackendUnavailableError) as info:
        create_backend("broken")
    message = str(info.value)
    assert "\n" not in message
    assert "bm-broken-plugin 1.0" in message
    assert "RuntimeError: the plugin is broken" in message
    infos = {i.name: i for i in list_backends()}
    assert not infos["broken"].usable and "the plugin is broken" in (infos["broken"].problem or "")
    assert "no module named 'bm_not_there'" in (infos["missing"].problem or "")
    assert infos["echo"].usable


def test_a_plugin_that_fails_to_start_is_one_readable_line(plugin_site: PluginSite) -> None:
    plugin_site.install(
        "bm-crashy-plugin",
        {"crashy": "bm_crashy_plugin:make"},
        {"bm_crashy_plugin": "def make():\n    return {}['no such key']\n"},
    )
    with pytest.raises(errors.BackendUnavailableError, match="failed to start: KeyError"):
        create_backend("crashy")


def test_a_plugin_that_is_not_a_backend_says_what_is_missing(plugin_site: PluginSite) -> None:
    plugin_site.install(
        "bm-wrong-plugin", {"wrong": "bm_wrong_plugin:THING"}, {"bm_wrong_plugin": "THING = 3\n"}
    )
    with pytest.raises(errors.ConfigurationError, match="needs name, complete"):
        create_backend("wrong")


def test_a_module_attr_plugin_next_to_you_works_without_staying_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bm_here_plugin.py").write_text(SHOUT_SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    try:
        backend = create_backend("bm_here_plugin:ShoutBackend")
    finally:
        sys.modules.pop("bm_here_plugin", None)
    assert backend.name == "shout"
    assert sys.path == path_before  # later imports never find stray files in the cwd


def test_an_installed_module_wins_over_a_same_named_file_in_the_cwd(
    plugin: PluginSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "project"
    cwd.mkdir()
    impostor = SHOUT_SOURCE.replace('name = "shout"', 'name = "impostor"')
    (cwd / f"{SHOUT_MODULE}.py").write_text(impostor, encoding="utf-8")
    monkeypatch.chdir(cwd)
    assert create_backend(f"{SHOUT_MODULE}:ShoutBackend").name == "shout"
    assert MistralClient(backend=f"{SHOUT_MODULE}:ShoutBackend").backend.name == "shout"


def test_a_missing_module_attr_plugin_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.BackendUnavailableError, match="no module named 'bm_nowhere'"):
        create_backend("bm_nowhere:Backend")
    with pytest.raises(errors.ConfigurationError, match="has no attribute 'Nope'"):
        create_backend("bedrock_mistral.backends.echo:Nope")


def test_an_object_is_used_as_is_and_other_things_are_refused() -> None:
    echo = EchoBackend()
    assert create_backend(echo, {"region": "ignored"}) is echo
    with pytest.raises(errors.ConfigurationError, match="is not allowed"):
        create_backend(EchoBackend)  # type: ignore[arg-type]  # a class: name it instead
