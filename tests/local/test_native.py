"""Our int8/int4 matrix-vector kernel (local_backend/native): its math against a reference
that rounds the activations the same way, its plain-C build against the AVX-512 one, the
shapes, dtypes and fused residual the decode step uses, and its fallbacks."""

from __future__ import annotations

import logging
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")

import local_backend  # noqa: E402
from local_backend import native  # noqa: E402
from local_backend.errors import LocalBackendError  # noqa: E402
from local_backend.kernels import to_kernel  # noqa: E402
from local_backend.quant import QuantData, QuantSpec, dequantize, quantize  # noqa: E402

pytestmark = pytest.mark.skipif(
    native.library() is None, reason="no C compiler here: the native kernel cannot be built"
)

SPECS = {
    "int8": QuantSpec("int8"),
    "int4-32": QuantSpec("int4", 32),
    "int4-64": QuantSpec("int4", 64),
    "int4-128": QuantSpec("int4", 128),
}
SHAPES = [(96, 80), (37, 100), (1536, 1024), (16, 32), (5, 300)]


@pytest.fixture
def fresh_native(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Forget the built library and timings before and after (tests change the environment)."""
    native.library.cache_clear()
    native.wins.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native.library.cache_clear()
    native.wins.cache_clear()


def _weight(data: QuantData, n: int, k: int, lib: object | None = None) -> native._NativeWeight:
    lib = lib or native.library()
    if data.scheme == "int8":
        return native.NativeInt8Weight(data, lib)  # type: ignore[arg-type]
    return native.NativeInt4Weight(data, n, k, lib)  # type: ignore[arg-type]


def _rounded_activations(x: torch.Tensor, levels: float) -> torch.Tensor:
    """x [M, K] as the kernel sees it: per block of 32 columns, scale = max|x| / levels and
    codes round(x / scale) (float32 arithmetic, ties to even), dequantised again."""
    m, k = x.shape
    padded = torch.nn.functional.pad(x.float(), (0, -k % 32)).view(m, -1, 32)
    scale = padded.abs().amax(-1, keepdim=True) / levels
    inv = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    codes = torch.round(padded * inv)
    return (codes.double() * scale.double()).view(m, -1)[:, :k]


def _reference(data: QuantData, x: torch.Tensor) -> torch.Tensor:
    """What the kernel computes, in float64: int8 weights meet 15-bit activations (two bytes),
    int4 weights 8-bit ones (llama.cpp's Q8_0 activations)."""
    k = x.shape[-1]
    levels = 127.0 * 128 if data.scheme == "int8" else 127.0
    return _rounded_activations(x, levels) @ dequantize(data, k).double().T


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_products_equal_the_reference_rounding(spec: QuantSpec, shape: tuple[int, int]) -> None:
    n, k = shape
    gen = torch.Generator().manual_seed(n * k)
    data = quantize(torch.randn(n, k, generator=gen) * 0.02, spec)
    weight = _weight(data, n, k)
    x = torch.randn(3, k, generator=gen)
    x[1, :7] *= 40  # an outlier block: its scale must not leak into the others
    want = _reference(data, x)
    got = weight.linear(x)
    assert got.dtype == torch.float32 and got.shape == (3, n)
    # float32 accumulation of exact integer block sums: a few ulps of the result's size
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()
    # and the rounding of the activations is what the kernel claims it is
    exact = x.double() @ dequantize(data, k).double().T
    error = (got.double() - exact).norm() / exact.norm()
    # measured at worst 1.5e-4 (int8: 15-bit activations) and 0.025 (int4: 8-bit ones), on the
    # batch with the outlier block
    assert error <= (3e-4 if spec.scheme == "int8" else 0.035), error


def test_int8_activations_are_finer_than_bf16() -> None:
    """int8 weights get 15-bit activations: closer to the float32 product than PyTorch's
    kernel, which rounds them to bf16 (8 bits of mantissa)."""
    gen = torch.Generator().manual_seed(3)
    data = quantize(torch.randn(256, 512, generator=gen), SPECS["int8"])
    x = torch.randn(4, 512, generator=gen)
    exact = x.double() @ dequantize(data, 512).double().T
    ours = to_kernel(data, out_features=256, in_features=512, kernel="native").linear(x)
    theirs = to_kernel(data, out_features=256, in_features=512, kernel="torch").linear(x)
    assert (ours.double() - exact).norm() * 20 < (theirs.double() - exact).norm()


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_dtypes_vectors_batches_and_the_fused_residual(spec: QuantSpec) -> None:
    n, k = 70, 200
    gen = torch.Generator().manual_seed(1)
    data = quantize(torch.randn(n, k, generator=gen) * 0.05, spec)
    weight = _weight(data, n, k)
    x = torch.randn(2, 3, k, generator=gen)
    full = weight.linear(x)  # a prefill's [B, S, K]
    assert full.shape == (2, 3, n) and full.dtype == torch.float32
    for row in range(3):  # every row of a batch equals its own matrix-vector product
        assert torch.equal(weight.mv(x[1, row]), full[1, row])
    xb = x.bfloat16()
    in_bf16 = weight.linear(xb)
    assert in_bf16.dtype == torch.bfloat16
    # bf16 output is the float32 result rounded once (nearest even), as .to(bfloat16) does
    assert torch.equal(in_bf16, weight.linear(xb.float()).bfloat16())
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        residual = torch.randn(n, generator=gen).to(dtype)
        got = weight.addmv(residual, x[0, 0].to(dtype), -0.5)
        want = residual.double() - 0.5 * weight.mv(x[0, 0].to(dtype)).double()
        assert got.dtype == dtype and got.shape == (n,)
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got.double(), want, atol=tol * want.abs().max(), rtol=0)


def test_thread_count_does_not_change_a_bit() -> None:
    data = quantize(torch.randn(1024, 512) * 0.02, SPECS["int4-64"])
    weight = _weight(data, 1024, 512)
    x = torch.randn(512)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = weight.mv(x)
        torch.set_num_threads(2)
        two = weight.mv(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("cc") is None,
    reason="builds the x86-64 plain-C variant",
)
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_plain_c_build_matches_the_vector_build(spec: QuantSpec, tmp_path: Path) -> None:
    """Machines without AVX-512 VNNI run the plain-C loops: same tiles, same numbers."""
    target = tmp_path / "plain.so"
    native.compile_library(shutil.which("cc") or "cc", target, march="x86-64-v2")
    plain = native.bind(target)
    assert plain.qmv_simd() == 0
    n, k = 50, 130
    data = quantize(torch.randn(n, k) * 0.03, spec)
    x = torch.randn(2, k)
    fast, slow = _weight(data, n, k).linear(x), _weight(data, n, k, plain).linear(x)
    torch.testing.assert_close(slow, fast, atol=1e-5 * fast.abs().max().item(), rtol=0)


# -- choosing and building --------------------------------------------------------------------


def test_off_falls_back_to_pytorch_kernels(fresh_native: pytest.MonkeyPatch) -> None:
    fresh_native.setenv(native.ENV_VAR, "off")
    data = quantize(torch.randn(32, 64), SPECS["int8"])
    assert native.library() is None
    assert to_kernel(data, out_features=32, in_features=64).kernel == "Int8Weight"
    with pytest.raises(LocalBackendError, match=r"could not be built here.*kernel='torch'"):
        to_kernel(data, out_features=32, in_features=64, kernel="native")


def test_bad_mode_is_one_clear_error(fresh_native: pytest.MonkeyPatch) -> None:
    fresh_native.setenv(native.ENV_VAR, "fast")
    with pytest.raises(LocalBackendError, match="BEDROCK_MISTRAL_LOCAL_NATIVE='fast': use auto"):
        native.library()


def test_a_missing_compiler_means_pytorch_kernels(
    fresh_native: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_native.setenv("CC", str(tmp_path / "no-such-cc"))
    fresh_native.setenv(native.CACHE_ENV_VAR, str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="local_backend.native"):
        assert native.library() is None
    assert "native int8/int4 kernel unavailable" in caplog.text
    data = quantize(torch.randn(32, 64), SPECS["int4-32"])
    assert to_kernel(data, out_features=32, in_features=64).kernel == "Int4Weight"


def test_build_is_cached_and_atomic(fresh_native: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fresh_native.setenv(native.CACHE_ENV_VAR, str(cache))
    assert native.library() is not None
    built = sorted(cache.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary left behind
    stamp = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library() is not None
    assert sorted(cache.iterdir()) == built and built[0].stat().st_mtime_ns == stamp


def test_auto_times_both_kernels_and_says_which_won(
    fresh_native: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_native.setenv(native.ENV_VAR, "auto")
    with caplog.at_level(logging.INFO, logger="local_backend.native"):
        won = native.wins("int4")
    assert f"int4 products: {'native' if won else 'PyTorch'} kernel" in caplog.text
    data = quantize(torch.randn(32, 64), SPECS["int4-32"])
    chosen = to_kernel(data, out_features=32, in_features=64).kernel
    assert chosen == ("NativeInt4Weight" if won else "Int4Weight")
    fresh_native.setenv(native.ENV_VAR, "on")
    native.wins.cache_clear()
    assert native.wins("int8") is True


# -- whole models -----------------------------------------------------------------------------


@pytest.fixture
def forced_native(fresh_native: pytest.MonkeyPatch) -> None:
    fresh_native.setenv(native.ENV_VAR, "on")


@pytest.mark.usefixtures("forced_native")
def test_bundled_model_through_the_native_kernel_answers_as_float32() -> None:
    """The bundled (trained) model: greedy replies of int8 and int4 through our kernel equal
    float32's on the evaluation families' held-out prompts, nearly always."""
    from bedrock_mistral.prompt import format_prompt
    from training.data import heldout

    full = local_backend.load()
    int8 = local_backend.load(quantize="int8")
    int4 = local_backend.load(quantize="int4", group_size=64)
    assert set(int8.quant_kernels()) == {"NativeInt8Weight"}
    assert set(int4.quant_kernels()) == {"NativeInt4Weight", "NativeInt8Weight"}  # int8 head
    same8 = same4 = total = 0
    for family in ("add2", "sub2", "capital", "reverse", "upper", "count"):
        for sample in heldout(family, 4):
            ids = full.tokenizer.encode_prompt(format_prompt(sample.prompt_messages))
            want = full.generate(ids, 24)
            same8 += int8.generate(ids, 24) == want
            same4 += int4.generate(ids, 24) == want
            total += 1
    # measured 23/24 for both on an AMD EPYC (one near-tied reply differs)
    assert same8 >= total - 1, f"int8: {same8}/{total}"
    assert same4 >= total - 3, f"int4: {same4}/{total}"


def test_doctor_says_which_kernel_quantised_models_get(fresh_native: pytest.MonkeyPatch) -> None:
    from tests.helpers.cli import run_cli

    out = run_cli("doctor", "-b", "local").stdout
    simd = "AVX-512 VNNI" if native.library().qmv_simd() else "plain C"  # type: ignore[union-attr]
    assert "✓ int8/int4 kernel" in out and f"ours, built for this CPU: {simd}" in out
    fresh_native.setenv(native.ENV_VAR, "off")
    native.library.cache_clear()
    out = run_cli("doctor", "-b", "local").stdout
    assert "· int8/int4 kernel" in out
    assert "ours off: quantised models use PyTorch's kernels" in out
