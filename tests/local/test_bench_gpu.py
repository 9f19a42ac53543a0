"""benchmarks/bench_gpu.py runs end to end (on the CPU here) and refuses CUDA without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
pytest.importorskip("transformers", reason="needs the dev extra (the peer of the benchmark)")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    # One thread: these tests read the table, not the speed, and on a machine whose cores are
    # busy OpenMP's spinning workers make a two-thread smoke run 2-3x slower.
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _number(cell: str) -> float:
    return float(cell.strip().strip("*").rstrip("x").replace(",", ""))


def test_a_cpu_smoke_run_prints_both_sides_for_decode_and_prefill() -> None:
    out = _bench(
        "--device", "cpu", "--configs", "bundled", "--rounds", "1",
        "--decode-tokens", "4", "--prefill-tokens", "16",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("device cpu: CPU ")
    rows = {
        cells[2]: cells
        for line in out.stdout.splitlines()
        if line.startswith("| bundled |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == {"decode, batch 1", "prefill 16 x 1"}
    for cells in rows.values():
        assert cells[1] == "float32"  # the CPU's default dtype
        ours, ref, ratio = _number(cells[3]), _number(cells[4]), _number(cells[5])
        assert ours > 0 and ref > 0
        assert ratio == pytest.approx(ours / ref, rel=0.05, abs=0.01)
        assert cells[6] == cells[7] == "–"  # peak memory is CUDA's figure


def test_quantised_rows_sit_next_to_the_plain_ones() -> None:
    out = _bench(
        "--device", "cpu", "--configs", "bundled", "--rounds", "1",
        "--decode-tokens", "2", "--prefill-tokens", "8", "--quantize", "int4",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    kinds = [
        (cells[1], cells[2])
        for line in out.stdout.splitlines()
        if line.startswith("| bundled |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    ]
    assert kinds == [
        ("float32", "decode, batch 1"),
        ("float32 + int4", "decode, batch 1"),
        ("float32", "prefill 8 x 1"),
        ("float32 + int4", "prefill 8 x 1"),
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_one_line_naming_the_cpu_flag() -> None:
    out = _bench("--device", "cuda", "--configs", "bundled")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().count("\n") == 0
    assert "sees no CUDA GPU" in out.stderr and "--device cpu" in out.stderr
