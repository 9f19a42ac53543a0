"""Third-party backends installed for real: a ``*.dist-info`` with ``entry_points.txt`` and
the plugin's module, written into a directory put on ``sys.path``, which is all
``importlib.metadata`` needs to find an installed distribution's entry points.

The ``plugin`` fixture installs ``bm-shout-plugin``, which registers the backend
``shout``: the echo backend, upper-cased, so a test can tell who answered.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SHOUT_MODULE = "bm_shout_plugin"
SHOUT_SOURCE = '''
"""A plugin backend: the echo backend, shouting."""

from bedrock_mistral.backends.echo import EchoBackend


class ShoutBackend(EchoBackend):
    name = "shout"
    made: list["ShoutBackend"] = []  # every instance, so tests can see the options it got

    def __init__(self, endpoint_url=None, *, suffix=""):
        self.endpoint_url = endpoint_url
        self.suffix = suffix
        ShoutBackend.made.append(self)

    def _plan(self, request):
        words, stop_reason = super()._plan(request)
        shouted = [word.upper() for word in words]
        return shouted + ([self.suffix] if self.suffix else []), stop_reason
'''


@dataclass
class PluginSite:
    """A directory on ``sys.path`` that distributions can be installed into."""

    path: Path
    modules: list[str]

    def install(
        self,
        dist: str,
        entry_points: Mapping[str, str],
        modules: Mapping[str, str],
        *,
        version: str = "1.0",
    ) -> None:
        """Write ``dist``'s metadata, its backend entry points and its modules."""
        info = self.path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(
            f"[bedrock_mistral.backends]\n{lines}", encoding="utf-8"
        )
        for module, source in modules.items():
            (self.path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            self.modules.append(module)
        importlib.invalidate_caches()


def forget_modules(names: list[str]) -> None:
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture(name="plugin_site")
def plugin_site_fixture(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PluginSite]:
    """An empty site directory on sys.path; its modules are forgotten afterwards."""
    site = PluginSite(tmp_path_factory.mktemp("site-packages"), [])
    monkeypatch.syspath_prepend(str(site.path))
    yield site
    forget_modules(site.modules)


@pytest.fixture(name="plugin")
def plugin_fixture(plugin_site: PluginSite) -> PluginSite:
    """``bm-shout-plugin`` installed: the backend ``shout`` (module ``bm_shout_plugin``)."""
    plugin_site.install(
        "bm-shout-plugin",
        {"shout": f"{SHOUT_MODULE}:ShoutBackend"},
        {SHOUT_MODULE: SHOUT_SOURCE},
    )
    return plugin_site
