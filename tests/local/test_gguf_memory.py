"""Memory while loading a GGUF file: the peak resident memory of a load, measured in a fresh
process, stays within 1.5x the file's size; the file is read, not left mapped; the 4-bit codes
are repacked byte-wise exactly as unpacking and packing them would; the int4 kernel layout is
built in blocks of rows with the same bytes as in one go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
gguf = pytest.importorskip("gguf", reason="needs the dev extra (gguf writes the test files)")

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402

import local_backend  # noqa: E402
from local_backend import quant  # noqa: E402
from local_backend.config import ModelConfig, MoeConfig  # noqa: E402
from local_backend.gguf_blocks import BLOCK_TYPES, int4_codes  # noqa: E402
from local_backend.gguf_file import GGUFFile  # noqa: E402
from local_backend.quant import Int4Weight, QuantSpec, quantize  # noqa: E402
from tests.helpers.gguf_files import random_blocks, write_random_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# ~55 MB of Q4_0, mostly expert matrices as in real Mixtral files (a small vocabulary: the
# embedding, kept in bfloat16, would otherwise weigh more than in any real model): big enough
# that the bound is about the weights rather than fixed costs, small enough to load in seconds.
CONFIG = ModelConfig(
    dim=512,
    n_layers=8,
    n_heads=8,
    n_kv_heads=4,
    hidden_dim=1792,
    vocab_size=2000,
    moe=MoeConfig(num_experts=4, num_experts_per_tok=2),
)
# What a load may hold on top of 1.5x the file whatever the file's size: one conversion step's
# temporaries, which do not grow with the file (the int4 kernel layout is built 2M codes at a
# time: 8 MB as int32; blocks are decoded 1M values at a time: 4 MB as float32).
ALLOWANCE = 8 * 2**20
# Measured on this 52 MB file: 70 MB (1.35x); the loader before (file left mapped and resident,
# whole-expert int32 codes, freed temporaries kept by glibc) 295 MB (5.7x).

_CHILD = r"""
import gc, json, sys
import local_backend

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

local_backend.load(sys.argv[2])  # a tiny file first: lazy one-time set-up is not the load's
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS
model = local_backend.load(sys.argv[1])
print(json.dumps({"before": before, "peak": status("VmHWM"), "module": local_backend.__file__}))
"""


def _peak_increase(file: Path, warm: Path) -> int:
    """Peak resident memory of loading ``file`` in a fresh process, less what it had before,
    with the ``local_backend`` this test imported."""
    src = Path(local_backend.__file__).resolve().parent.parent
    path = os.pathsep.join([str(src), str(ROOT), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(file), str(warm)],
        cwd=src,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["module"]).resolve().parent.parent == src
    return int(result["peak"]) - int(result["before"])


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs"
)
def test_peak_memory_of_a_q4_0_load_stays_within_1_5x_the_file(tmp_path: Path) -> None:
    file = write_random_gguf(tmp_path / "m.gguf", CONFIG, "Q4_0")
    tiny = ModelConfig(dim=64, n_layers=1, n_heads=4, hidden_dim=64, vocab_size=64, moe=CONFIG.moe)
    warm = write_random_gguf(tmp_path / "tiny.gguf", tiny, "Q4_0")
    size = file.stat().st_size
    assert size > 50 * 2**20
    increase = _peak_increase(file, warm)
    assert increase <= 1.5 * size + ALLOWANCE, (
        f"loading a {size / 2**20:.0f} MB Q4_0 file raised resident memory by "
        f"{increase / 2**20:.0f} MB ({increase / size:.2f}x the file)"
    )


def test_the_file_is_read_not_left_mapped(tmp_path: Path) -> None:
    tiny = ModelConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=64, moe=CONFIG.moe)
    file = write_random_gguf(tmp_path / "t.gguf", tiny, "Q4_0")
    f = GGUFFile(file)
    try:
        maps = Path("/proc/self/maps")
        if maps.exists():
            assert str(file) not in maps.read_text()  # the header's mapping is gone
        whole = f.raw("blk.1.ffn_up_exps.weight")
        assert whole.shape == (4, 64, 64 // 32 * 18)
        for e in range(4):
            assert np.array_equal(f.raw("blk.1.ffn_up_exps.weight", e), whole[e])
        whole[0, 0, 0] ^= 0xFF  # its own memory: writable, and the file does not change
        assert not np.array_equal(f.raw("blk.1.ffn_up_exps.weight", 0), whole[0])
    finally:
        f.close()
    with pytest.raises(ValueError, match="closed"):
        f.raw("token_embd.weight")


@pytest.mark.parametrize("qt", [QT.Q4_0, QT.Q4_1, QT.Q4_K])
def test_4_bit_codes_are_repacked_as_unpacking_and_packing_them_would(qt: QT) -> None:
    from local_backend.gguf_blocks import int4_packed

    t = BLOCK_TYPES[int(qt)]
    raw = random_blocks((48, 512), qt, seed=3)
    codes, scale, zero = int4_codes(raw, t)
    packed, scale2, zero2 = int4_packed(raw, t)
    assert np.array_equal(packed, codes[:, 0::2] | (codes[:, 1::2] << 4))
    assert np.array_equal(scale, scale2) and np.array_equal(zero, zero2)


@pytest.mark.skipif(
    not hasattr(torch, "_convert_weight_to_int4pack_for_cpu"), reason="no int4 CPU kernel"
)
@pytest.mark.parametrize("n", [1040, 100])  # 64-row blocks and a tail; padded to 16 rows
def test_int4_kernel_layout_packed_in_row_blocks_is_the_same(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = torch.randn(n, 256, generator=torch.Generator().manual_seed(1))
    data = quantize(weights, QuantSpec("int4", 32))
    whole = Int4Weight(data, n, 256)
    monkeypatch.setattr(quant, "_PACK_VALUES", 64 * 256)  # blocks of 64 rows
    blocks = Int4Weight(data, n, 256)
    assert torch.equal(whole.packed, blocks.packed)
    x = torch.randn(3, 256)
    assert torch.equal(whole.linear(x), blocks.linear(x))
