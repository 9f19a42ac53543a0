"""The measured choice between ``torch.mv``, ``F.linear`` and our bf16 kernel for dense
matrix-vector products."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import local_backend
from local_backend import matvec, native
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


# the paths to compare, per dtype: ours for bf16 where this machine has AVX512-BF16
PATHS = {
    dtype: ("mv", "linear", "native") if native.dense_available(dtype) else ("mv", "linear")
    for dtype in (torch.float32, torch.bfloat16)
}


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
    for path in PATHS[dtype]:
        _force(monkeypatch, path, w)
        results[path] = (mv(w, x), addmv(r, w, x, 0.25), linear(x[None, None], w))
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.02}
    for path in PATHS[dtype][1:]:
        for a, b in zip(results["mv"], results[path], strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype == dtype
            torch.testing.assert_close(a, b, **tol)


def test_the_native_bf16_product_is_the_float32_product_rounded() -> None:
    """Our bf16 kernel: float32 sums of exact bf16 products, one rounding at the end; odd
    shapes (K not a multiple of the vector), a fused residual, and what it hands to F.linear."""
    if not native.dense_available():
        pytest.skip("no AVX512-BF16 build of the native kernel here")
    gen = torch.Generator().manual_seed(5)
    for n, k in ((96, 64), (37, 100), (300, 1000), (5, 7)):
        w = torch.randn(n, k, generator=gen).bfloat16()
        x = torch.randn(k, generator=gen).bfloat16()
        exact = w.double() @ x.double()
        got = native.dense_mv(w, x)
        assert got.dtype == torch.bfloat16 and got.shape == (n,)
        assert (got.double() - exact).abs().max() <= 2**-8 * exact.abs().max()  # bf16 rounding
        in_f32 = native.dense_mv(w, x.float())  # float32 x is rounded to bf16 first
        assert in_f32.dtype == torch.float32
        torch.testing.assert_close(
            in_f32.double(), exact, atol=1e-5 * float(exact.abs().max()), rtol=0
        )
        r = torch.randn(n, generator=gen)
        fused = native.dense_mv(w, x.float(), r, -0.5)
        torch.testing.assert_close(fused, r - 0.5 * in_f32, atol=1e-5, rtol=1e-5)
        strided = torch.randn(k, n, generator=gen).bfloat16().T  # not row-major: F.linear's
        torch.testing.assert_close(native.dense_mv(strided, x), F.linear(x, strided))


def test_native_forced_where_there_is_no_kernel_keeps_mv(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(matvec.ENV_VAR, "native")
    with caplog.at_level(logging.INFO, logger="local_backend.matvec"):
        assert matvec.choose([torch.randn(8, 8, dtype=torch.float16)]) == "mv"
    assert "native: no native kernel for torch.float16 here, it uses mv" in caplog.text


def test_the_native_float32_product_sums_in_float32() -> None:
    if not native.dense_available(torch.float32):
        pytest.skip("no AVX-512 build of the native kernel here")
    gen = torch.Generator().manual_seed(6)
    for n, k in ((384, 256), (37, 100), (5, 7), (300, 1000)):
        w, x = torch.randn(n, k, generator=gen), torch.randn(k, generator=gen)
        exact = w.double() @ x.double()
        got = native.dense_mv(w, x)
        assert got.dtype == torch.float32 and got.shape == (n,)
        torch.testing.assert_close(
            got.double(), exact, atol=1e-5 * float(exact.abs().max()), rtol=0
        )
        r = torch.randn(n, generator=gen)
        torch.testing.assert_close(native.dense_mv(w, x, r, 0.5), r + 0.5 * got)


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


@pytest.mark.parametrize("config", [SMALL_MOE, small_moe(moe=None)], ids=["moe", "dense"])
def test_bf16_decode_steps_agree_on_every_path(
    monkeypatch: pytest.MonkeyPatch, config: object
) -> None:
    torch.manual_seed(0)
    model = Transformer(config).eval().to(torch.bfloat16)  # type: ignore[arg-type]
    logits = {}
    for path in PATHS[torch.bfloat16]:
        _force(monkeypatch, path, model.output.weight)
        with torch.inference_mode():
            cache = model.new_cache(1)
            full = model(torch.tensor([[1, 5, 9, 3, 7, 11]]))[0, 3:]
            model.forward_last(torch.tensor([[1, 5, 9]]), cache)
            logits[path] = torch.stack([decode_step(model, t, cache) for t in (3, 7, 11)])
        # each path's decode steps agree with the full forward (F.linear) within bf16 rounding
        torch.testing.assert_close(logits[path].float(), full.float(), atol=0.05, rtol=0.05)


def test_the_choice_is_measured_once_per_dtype_and_inspectable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="local_backend.matvec"):
        model = local_backend.load()
        again = local_backend.load()
    assert model.matvec_path in PATHS[torch.float32]
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
