"""``local_backend`` stands on its own: it runs with ``bedrock_mistral`` made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["bedrock_mistral"] = None  # any import of it now raises ImportError
    sys.modules["training"] = None
    import local_backend
    model = local_backend.load()
    ids = model.tokenizer.encode_prompt("<s>[INST] What is the capital of France? [/INST]")
    print(model.tokenizer.decode(model.generate(ids, max_new_tokens=8)).strip())
    print(sorted(name for name in sys.modules if name.startswith(("bedrock_mistral", "training"))))
    """
)


def test_local_backend_loads_and_generates_without_bedrock_mistral() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    answer, imported = result.stdout.strip().splitlines()
    assert answer == "Paris"
    assert imported == "['bedrock_mistral', 'training']"  # only our two blockers
