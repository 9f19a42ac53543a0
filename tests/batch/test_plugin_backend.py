"""`bedrock-mistral batch -b NAME` runs on an installed plugin backend."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bedrock_mistral.cli import cli
from tests.helpers.plugins import PluginSite


def test_batch_runs_on_an_installed_plugin(plugin: PluginSite, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "one"}\n{"id": "b", "prompt": "two"}\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(source), "-o", str(out), "-b", "shout"])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["id"]: line["text"] for line in lines} == {"a": "ONE", "b": "TWO"}
