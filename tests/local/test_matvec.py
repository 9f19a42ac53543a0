"""The measured choice between ``torch.mv`` and ``F.linear`` for dense matrix-vector products."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import torch

import local_backend
from local_backend import matvec
from local_backend.decode import decode_step
from local_backend.errors import LocalBackendError
from local_backend.model import Transformer, addmv, linear, mv
from tests.helpers.configs import SMALL_MOE, small_moe


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test measures or forces anew; later tests measure again on their first load."""
    monkeypatch.delenv(matvec.ENV_VAR, raising=False)
    matvec.reset()
    yield
    matvec.reset()


def _force(monkeypatch: pytest.MonkeyPatch, path: str, weight: torch.Tensor) -> None:
    monkeypatch.setenv(matvec.ENV_VAR, path)
    matvec.reset()
    assert matvec.choose([weight]) == path
    assert matvec.path_for(weight.dtype) == path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_paths_give_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    w, x, r = (
        torch.randn(96, 64, dtype=dtype),
        torch.randn(64, dtype=dtype),
        torch.randn(96, dtype=dtype),
    )
    results = {}
    for path in ("mv", "linear"):
        _force(monkeypatch, path, w)
        results[path] = (mv(w, x), addmv(r, w, x, 0.25), linear(x[None, None], w))
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.02}
    for a, b in zip(results["mv"], results["linear"], strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("config", [SMALL_MOE, small_moe(moe=None)], ids=["moe", "dense"])
def test_decode_steps_agree_on_both_paths(monkeypatch: pytest.MonkeyPatch, config: object) -> None:
    torch.manual_seed(0)
    model = Transformer(config).eval()  # type: ignore[arg-type]
    logits = {}
    for path in ("mv", "linear"):
        _force(monkeypatch, path, model.output.weight)
        with torch.inference_mode():
            cache = model.new_cache(1)
            model.forward_last(torch.tensor([[1, 5, 9]]), cache)
            logits[path] = torch.stack([decode_step(model, t, cache) for t in (3, 7, 11)])
    torch.testing.assert_close(logits["mv"], logits["linear"], atol=1e-4, rtol=1e-4)


def test_the_choice_is_measured_once_per_dtype_and_inspectable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="local_backend.matvec"):
        model = local_backend.load()
        again = local_backend.load()
    assert model.matvec_path in ("mv", "linear")
    assert matvec.chosen() == {"float32": model.matvec_path}
    assert again.matvec_path == model.matvec_path
    lines = [r.getMessage() for r in caplog.records if "matrix-vector path" in r.getMessage()]
    assert len(lines) == 1  # measured at the first load only
    assert lines[0].startswith(f"matrix-vector path for float32 on cpu: {model.matvec_path} (mv ")


def test_the_environment_variable_forces_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(matvec.ENV_VAR, "linear")
    assert local_backend.load().matvec_path == "linear"
    assert torch.float32 in matvec.LINEAR_DTYPES
    monkeypatch.setenv(matvec.ENV_VAR, "gemv")
    matvec.reset()
    with pytest.raises(LocalBackendError, match="BEDROCK_MISTRAL_LOCAL_MATVEC='gemv': use mv"):
        local_backend.load()


def test_measuring_large_matrices_stays_cheap() -> None:
    # 'medium' Mixtral shapes in bf16: each timed matrix is a slice of at most 2 MiB.
    shapes = [(1536, 1024), (7168, 1024), (1024, 3584), (32000, 1024)]
    weights = [torch.zeros(n, k, dtype=torch.bfloat16) for n, k in shapes]
    assert all(matvec._slice(w).nbytes <= 2 << 20 for w in weights)
    small = torch.zeros(8, 16)
    assert matvec._slice(small).shape == small.shape
    started = time.perf_counter()
    matvec.choose(weights)
    assert time.perf_counter() - started < 2.0  # ~10 ms on a quiet 2-core machine


# -- threads of a decode step -----------------------------------------------------------------


@pytest.mark.parametrize(
    "min_bytes", ["0", "", str(1 << 40), "off"], ids=["all", "default", "none", "off"]
)
def test_decode_step_threads_change_no_numbers_and_are_restored(
    monkeypatch: pytest.MonkeyPatch, min_bytes: str
) -> None:
    torch.manual_seed(0)
    model = Transformer(SMALL_MOE).eval()
    before = torch.get_num_threads()
    with torch.inference_mode():
        cache = model.new_cache(1)
        model.forward_last(torch.tensor([[1, 5, 9]]), cache)
        reference = torch.stack([decode_step(model, t, cache) for t in (3, 7)])
        monkeypatch.setenv(matvec.PARALLEL_ENV_VAR, min_bytes)
        torch.set_num_threads(2)
        try:
            cache = model.new_cache(1)
            model.forward_last(torch.tensor([[1, 5, 9]]), cache)
            logits = torch.stack([decode_step(model, t, cache) for t in (3, 7)])
            assert torch.get_num_threads() == 2  # the caller's count, back after every step
        finally:
            torch.set_num_threads(before)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def test_a_failing_decode_step_restores_the_thread_count() -> None:
    model = Transformer(SMALL_MOE).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode(), pytest.raises(IndexError):
            decode_step(model, SMALL_MOE.vocab_size + 5, model.new_cache(1))  # no such token
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_parallel_threshold_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(matvec.PARALLEL_ENV_VAR, raising=False)
    assert matvec.parallel_min_bytes() == matvec.DEFAULT_PARALLEL_BYTES == 512 << 10
    monkeypatch.setenv(matvec.PARALLEL_ENV_VAR, "4096")
    assert matvec.parallel_min_bytes() == 4096
    monkeypatch.setenv(matvec.PARALLEL_ENV_VAR, "OFF")
    assert matvec.parallel_min_bytes() is None
    monkeypatch.setenv(matvec.PARALLEL_ENV_VAR, "lots")
    with pytest.raises(LocalBackendError, match="BEDROCK_MISTRAL_LOCAL_PARALLEL_BYTES='lots'"):
        matvec.parallel_min_bytes()
