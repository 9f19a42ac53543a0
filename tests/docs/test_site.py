"""The documentation site builds with ``mkdocs build --strict``: no broken link or anchor.

Needs the docs extra (``pip install -e '.[docs]'``); without MkDocs the test is skipped
with that reason. The build reads only files of this repository (no network).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="needs the docs extra: pip install -e '.[docs]'")
pytest.importorskip("material", reason="needs the docs extra: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    pages = {path.parent.name for path in site.glob("*/index.html")}
    assert {"sdk", "cli", "local", "bundled-model", "serve", "batch"} <= pages
    assert {"configuration", "development", "benchmarks"} <= pages
    # benchmarks/RESULTS.md is included into the benchmarks page, not linked out of the site.
    assert "bench_server.py" in (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
