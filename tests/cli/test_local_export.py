"""``bedrock-mistral local export --gguf``: the summary, the sliding-window note, and one line
with its fix (exit 2) for each bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("cli_home")
torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")

from local_backend.gguf_file import GGUFFile  # noqa: E402
from tests.helpers.cli import run_cli  # noqa: E402


def test_export_writes_the_bundled_model_and_says_what_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "bundled.gguf"
    result = run_cli("local", "export", "--gguf", str(out), "--type", "Q8_0")
    assert result.exit_code == 0, result.stderr
    size = out.stat().st_size / 1e6
    assert result.stdout == f"wrote {out} (42 tensors: 13 F32, 29 Q8_0; {size:.1f} MB)\n"
    note = " ".join(result.stderr.split())
    assert "sliding window of 64 tokens" in note and "llama.cpp" in note and "ignores it" in note
    f = GGUFFile(out)
    assert f.metadata["general.file_type"] == 7 and len(f.tensors) == 42
    f.close()


def test_export_of_a_gguf_source_to_f32(tmp_path: Path) -> None:
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    assert run_cli("local", "export", "--gguf", str(first), "--type", "q4_0").exit_code == 0
    result = run_cli("local", "export", str(first), "--gguf", str(second), "--type", "f32")
    assert result.exit_code == 0, result.stderr
    assert "(42 tensors: 42 F32;" in result.stdout


@pytest.mark.parametrize(
    ("args", "message", "fix"),
    [
        (["--type", "q5_k"], "--type q5_k is not a type we write", "one of f32, f16, q8_0, q4_0"),
        (["./no-such-folder"], "cannot export ./no-such-folder", "SOURCE is a checkpoint folder"),
    ],
)
def test_bad_input_is_one_line_with_its_fix(
    tmp_path: Path, args: list[str], message: str, fix: str
) -> None:
    result = run_cli("local", "export", "--gguf", str(tmp_path / "m.gguf"), *args)
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert message in line and fix in line
    assert not list(tmp_path.glob("*m.gguf*"))


def test_missing_output_folder(tmp_path: Path) -> None:
    result = run_cli("local", "export", "--gguf", str(tmp_path / "no" / "m.gguf"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "create the folder" in result.stderr


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    out.write_text("mine")
    result = run_cli("local", "export", "--gguf", str(out), "--type", "q4_0")
    assert result.exit_code == 2
    assert f"{out} exists" in result.stderr and "pass --force" in result.stderr
    assert out.read_text() == "mine"
    forced = run_cli("local", "export", "--gguf", str(out), "--type", "q4_0", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert out.read_bytes()[:4] == b"GGUF"


def test_help_imports_no_torch() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from bedrock_mistral.cli import cli; "
        "r = CliRunner().invoke(cli, ['local', 'export', '--help']); "
        "assert r.exit_code == 0 and '--gguf' in r.output and 'q8_0' in r.output, r.output; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
