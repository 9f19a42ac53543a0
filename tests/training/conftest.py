"""Every test here runs the PyTorch model: without the ``local`` extra the folder is skipped."""

import pytest

pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
