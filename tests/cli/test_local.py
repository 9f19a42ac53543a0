"""``bedrock-mistral local route`` on a tiny real checkpoint."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from bedrock_mistral.cli.local_cmd import grid, one_layer, piece_text
from tests.helpers.cli import run_cli, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("cli_home")
pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_route_one_layer_as_json(checkpoint: Path) -> None:
    result = run_cli(
        "local",
        "route",
        "--local-model",
        str(checkpoint),
        "--json",
        "-l",
        "1",
        "The quick brown fox",
    )
    assert result.exit_code == 0, result.stderr
    trace = json.loads(result.stdout)
    assert (
        trace["tokens"][0] == "<s>"
        and "".join(trace["tokens"][1:]).replace("▁", " ").strip() == "The quick brown fox"
    )
    assert trace["layers"] == [1] and len(trace["experts"]) == 1
    assert len(trace["experts"][0]) == len(trace["tokens"])
    for chosen in trace["experts"][0]:
        assert (
            len(chosen) == 2
            and len(set(chosen)) == 2
            and all(0 <= e < trace["num_experts"] for e in chosen)
        )


def test_route_plain_output_names_each_tokens_expert(checkpoint: Path) -> None:
    result = run_cli("local", "route", "--local-model", str(checkpoint), "-l", "0", "hello world")
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(r"<s>\[\d\]( ?\w+\[\d\])+", first)
    assert re.sub(r"\[\d\]", "", first) == "<s> hello world"
    assert f"layer 0, {first.count('[')} tokens" in result.stdout


def test_route_grid_has_a_row_per_token_and_a_column_per_layer(checkpoint: Path) -> None:
    result = run_cli("local", "route", "--local-model", str(checkpoint), "--chat", "Hi")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["token", "0", "1"]
    rows = [line for line in lines[1:] if re.search(r"\s\d\s+\d\s*$", line)]
    assert rows[0].startswith("<s>") and any("INST" in row for row in rows)
    assert len(rows) == len(
        [line for line in lines[1:] if line.strip() and not line.startswith("experts")]
    )
    assert "all 2 layers" in result.stdout


def test_colours_follow_the_first_choice_expert(checkpoint: Path) -> None:
    import local_backend

    trace = local_backend.load(checkpoint).route("<s>colour me")
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=80)
    console.print(one_layer(trace, 0))
    console.print(grid(trace))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    used = {chosen[0] for chosen in trace.experts[0]}
    assert output.count("\x1b[") > len(trace.pieces)  # styled
    assert len(used) >= 1 and "colour" in output.replace("▁", " ")


@pytest.mark.parametrize(
    ("piece", "text"), [("▁fox", " fox"), ("<0x0A>", "↵"), ("<0x41>", "<0x41>"), ("ab", "ab")]
)
def test_piece_text(piece: str, text: str) -> None:
    assert piece_text(piece) == text


def test_bad_layer_and_missing_model(checkpoint: Path, tmp_path: Path) -> None:
    bad = run_cli("local", "route", "--local-model", str(checkpoint), "-l", "7", "x")
    assert bad.exit_code == 2 and "layers 0 to 1" in bad.stderr
    (tmp_path / "empty").mkdir()
    missing = run_cli("local", "route", "--local-model", str(tmp_path / "empty"), "x")
    assert missing.exit_code == 3
    assert "cannot be loaded" in missing.stderr and "Traceback" not in missing.stderr
