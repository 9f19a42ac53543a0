"""Fast start: loading the bundled model costs little beyond ``import torch``."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")

_SCRIPT = """
import sys
import local_backend
model = local_backend.load()
ids = model.tokenizer.encode_prompt("<s>[INST] What is the capital of France? [/INST]")
print(model.tokenizer.decode(model.generate(ids, max_new_tokens=4)).strip())
heavy = sorted(m for m in ("torch._dynamo", "sympy", "torch._inductor") if m in sys.modules)
print("heavy:", ",".join(heavy) or "none")
"""


def test_loading_and_running_the_bundled_model_imports_no_dynamo_or_sympy() -> None:
    # A fresh interpreter: the test process may have imported them for other reasons.
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    answer, heavy = done.stdout.strip().splitlines()
    assert answer.startswith("Paris")
    assert heavy == "heavy: none"


def test_a_model_built_on_the_meta_device_holds_no_initialised_values() -> None:
    from local_backend.model import Transformer
    from tests.helpers.configs import SMALL_MOE

    with torch.device("meta"):
        model = Transformer(SMALL_MOE)
    assert all(p.device.type == "meta" for p in model.parameters())
    # Built for real (training, tests), every parameter is initialised as before.
    torch.manual_seed(0)
    real = Transformer(SMALL_MOE)
    assert all(torch.isfinite(p).all() for p in real.parameters())
    assert float(real.tok_embeddings.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert float(real.blocks[0].attention.wqkv.weight.detach().std()) == pytest.approx(
        0.02, rel=0.1
    )
