"""Quantised weights off the CPU (local_backend.quant_device).

On the CPU: the portable forms CUDA runs, against dequantize() + a float32 product; the
run-time check that stands between PyTorch's CUDA int4 kernel and a model (a kernel that
agrees is taken, a wrong or missing one falls back and is logged); the CUDA form's shapes
against the kernels' own shape rules (PyTorch's meta functions, on fake CUDA tensors); and
whole quantised models through the portable forms against the CPU kernels. With a GPU
(``requires_cuda``): load(device="cuda") of quantised, pre-quantised and GGUF models
against the same models on the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import local_backend  # noqa: E402
from local_backend import quant_checkpoint as qc  # noqa: E402
from local_backend import quant_device as qd  # noqa: E402
from local_backend.config import ModelConfig, MoeConfig  # noqa: E402
from local_backend.decode import decode_step  # noqa: E402
from local_backend.errors import TokenizerError  # noqa: E402
from local_backend.kernels import to_kernel  # noqa: E402
from local_backend.model import Transformer  # noqa: E402
from local_backend.quant import (  # noqa: E402
    Int4Weight,
    QuantData,
    QuantizedWeight,
    QuantSpec,
    dequantize,
    quantize,
)
from local_backend.runtime import LocalModel  # noqa: E402
from tests.helpers.checkpoints import random_checkpoints  # noqa: E402
from tests.helpers.configs import QUANT_CONFIGS, small_moe  # noqa: E402
from tests.helpers.devices import requires_cuda  # noqa: E402

SPECS = {
    "int8": QuantSpec("int8"),
    "int4-32": QuantSpec("int4", 32),
    "int4-64": QuantSpec("int4", 64),
    "int4-128": QuantSpec("int4", 128),
}
# N not a multiple of 8 or 16, K not a multiple of any group, and a tidy real-model shape
SHAPES = [(37, 100), (130, 200), (5, 40), (96, 256)]
CONFIGS = {name: QUANT_CONFIGS[name] for name in ("moe", "dense")}
GGUF_CONFIG = ModelConfig(
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=128,
    vocab_size=64,
    moe=MoeConfig(num_experts=4, num_experts_per_tok=2),
)


@pytest.fixture(autouse=True)
def _fresh_verdicts() -> None:
    qd.reset()  # each test sees the check run, not a verdict another test left


def _matrix(shape: tuple[int, int], spec: QuantSpec, seed: int = 0) -> QuantData:
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02
    return quantize(w, spec)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


# -- the portable forms -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_portable_forms_compute_the_dequantised_product(
    spec: QuantSpec, shape: tuple[int, int]
) -> None:
    n, k = shape
    data = _matrix(shape, spec)
    weight = to_kernel(data, out_features=n, in_features=k, kernel="portable")
    assert weight.kernel == ("DeviceInt8Weight" if spec.scheme == "int8" else "DeviceInt4Weight")
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(1))
    want = x @ dequantize(data, k).T  # float32 reference
    got = weight.linear(x)
    assert got.dtype == torch.float32 and got.shape == (3, n)
    # bf16 activations and a bf16 result: measured 0.0026-0.0035 relative RMS
    assert _relative(got, want) <= 0.006
    torch.testing.assert_close(got, want, atol=0.01 * float(want.abs().max()), rtol=0)
    torch.testing.assert_close(weight.mv(x[0]), got[0], atol=1e-6, rtol=1e-2)
    residual = torch.ones(n)
    torch.testing.assert_close(weight.addmv(residual, x[0], 0.5), residual + 0.5 * got[0])
    in_bf16 = weight.linear(x.bfloat16().view(1, 3, k))  # a bf16 model's [B, S, K]
    assert in_bf16.dtype == torch.bfloat16 and in_bf16.shape == (1, 3, n)
    # codes and scales, not a dequantised copy, are what the form keeps
    assert weight.nbytes <= sum(t.numel() * t.element_size() for t in data.tensors().values()) * 2


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_dequantises_straight_to_bf16_with_one_rounding(group: int) -> None:
    data = _matrix((37, 200), QuantSpec("int4", group))
    weight = qd.DeviceInt4Weight(data, 37, 200)
    kp = 2 * data.q.shape[1]
    exact = dequantize(data, kp)  # float32, [N, Kp]
    got = weight.weight()
    assert got.dtype == torch.bfloat16 and got.shape == exact.shape
    # (q - 8) * scale is exact in float32; only the final add rounds, once, to bf16
    torch.testing.assert_close(got.float(), exact, atol=0, rtol=2**-8)


# -- the run-time check -----------------------------------------------------------------------


def _nibbles_swapped(data: QuantData, n: int, k: int) -> QuantizedWeight:
    """The mistake the CUDA layout invites: codes of columns 2j and 2j+1 exchanged."""
    q = (data.q << 4) | (data.q >> 4)
    return qd.DeviceInt4Weight(QuantData("int4", q, data.scale, data.zero, data.group_size), n, k)


def _cpu_int4(data: QuantData, n: int, k: int) -> QuantizedWeight:
    return Int4Weight(data, n, k)


def _always(data: QuantData) -> str | None:
    return None


def test_a_kernel_that_agrees_is_verified_and_used(caplog: pytest.LogCaptureFixture) -> None:
    # PyTorch's CPU int4 kernel stands in for a fast kernel: a different code path, same math
    fast = qd.FastKernel("cpu-int4", _always, _cpu_int4)
    data = _matrix((130, 256), QuantSpec("int4", 64))
    assert qd.verify(_cpu_int4, data, 130, 256) is None
    with caplog.at_level(logging.INFO, logger="local_backend.quant_device"):
        weight = qd.device_kernel(data, out_features=130, in_features=256, fast=[fast])
    assert isinstance(weight, Int4Weight)
    assert "cpu-int4 verified against the portable form" in caplog.text


def test_a_wrong_kernel_falls_back_to_the_portable_form_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = qd.FastKernel("swapped", _always, _nibbles_swapped)
    data = _matrix((130, 256), QuantSpec("int4", 64))
    why = qd.verify(_nibbles_swapped, data, 130, 256)
    assert why is not None and "differs from the portable form" in why
    with caplog.at_level(logging.WARNING, logger="local_backend.quant_device"):
        first = qd.device_kernel(data, out_features=130, in_features=256, fast=[wrong])
        # a second matrix of the same shape class reuses the verdict: one warning in all
        again = qd.device_kernel(
            _matrix((130, 256), QuantSpec("int4", 64), seed=5),
            out_features=130,
            in_features=256,
            fast=[wrong],
        )
    assert type(first) is type(again) is qd.DeviceInt4Weight
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "swapped not used for int4 (K=256, group 64) on cpu" in warnings[0].getMessage()
    assert "using the portable form" in warnings[0].getMessage()


def test_the_cuda_kernel_where_pytorch_cannot_run_it_falls_back_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The real CUDA form, forced onto CPU tensors: the op refuses them, as a build or GPU
    # without the kernel would; nothing is mocked.
    forced = qd.FastKernel("cuda-int4-tinygemm", _always, qd.CudaInt4Weight)
    data = _matrix((37, 100), QuantSpec("int4", 32))
    with caplog.at_level(logging.WARNING, logger="local_backend.quant_device"):
        weight = qd.device_kernel(data, out_features=37, in_features=100, fast=[forced])
    assert isinstance(weight, qd.DeviceInt4Weight)
    assert "it failed: Could not run 'aten::_convert_weight_to_int4pack'" in caplog.text


def test_the_cuda_kernel_applies_only_to_int4_on_cuda() -> None:
    (tinygemm,) = qd.FAST_KERNELS
    assert tinygemm.applies(_matrix((8, 64), QuantSpec("int8"))) == "it is an int4 kernel"
    assert tinygemm.applies(_matrix((8, 64), QuantSpec("int4", 32))) == "it runs on CUDA, not cpu"
    # so on the CPU "auto" never reaches it: the CPU kernels serve
    on_cpu = to_kernel(_matrix((16, 64), QuantSpec("int4", 32)), out_features=16, in_features=64)
    assert on_cpu.kernel in {"Int4Weight", "NativeInt4Weight"}


@pytest.mark.parametrize(
    ("n", "k", "group"), [(37, 100, 32), (130, 200, 64), (4096, 4096, 128), (8, 64, 64)]
)
def test_the_cuda_int4_form_fits_the_kernels_shape_rules(n: int, k: int, group: int) -> None:
    """Fake tensors run PyTorch's meta functions for the two CUDA ops, which state the
    kernels' rules (uint8 [N, K/2] in, int32 [N/8, K/(16 t), 32, t/2] out; 2-D activations):
    the packing, padding and table shapes are checked here, the numbers only on a GPU."""
    g = -(-k // group)
    with FakeTensorMode():  # tensors with a device, shape and dtype, and no values
        data = QuantData(
            "int4",
            torch.empty(n, g * group // 2, dtype=torch.uint8, device="meta"),
            torch.empty(n, g, dtype=torch.bfloat16, device="meta"),
            torch.empty(n, g, dtype=torch.bfloat16, device="meta"),
            group,
        )
        weight = qd.CudaInt4Weight(data, n, k)
        n8, kp = -(-n // 8) * 8, 2 * data.q.shape[1]
        t = weight.inner_k_tiles
        assert kp % (16 * t) == 0 and t in (2, 4, 8)
        assert tuple(weight.packed.shape) == (n8 // 8, kp // (16 * t), 32, t // 2)
        assert weight.packed.dtype == torch.int32
        assert tuple(weight.scale_zero.shape) == (kp // group, n8, 2)
        assert weight.scale_zero.dtype == torch.bfloat16 and weight.scale_zero.is_contiguous()
        x = torch.empty(5, k, device="meta")
        out = weight.linear(x)
        assert tuple(out.shape) == (5, n) and out.dtype == torch.float32
        assert tuple(weight.mv(x[0]).shape) == (n,)


# -- whole models through the portable forms --------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return random_checkpoints(tmp_path_factory, CONFIGS)


def _prompts(vocab: int, n: int, length: int = 10) -> list[list[int]]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(3, vocab, (length,), generator=gen).tolist() for _ in range(n)]


def _as_local(model: Transformer) -> LocalModel:
    return LocalModel(model, TokenizerError("token-level test"))


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_portable_forms_decode_greedily_as_the_cpu_kernels(
    checkpoints: dict[str, Path], scheme: str
) -> None:
    spec = QuantSpec.parse(scheme, None)
    runs = equal = 0
    for path in checkpoints.values():
        # PyTorch's CPU kernels: bf16 activations, as the portable forms (ours round them to
        # integers, see test_native.py)
        cpu = _as_local(qc.load_quantizing(path, spec, kernel="torch"))
        portable = _as_local(qc.load_quantizing(path, spec, kernel="portable"))
        assert set(portable.quant_kernels()) <= {"DeviceInt8Weight", "DeviceInt4Weight"}
        assert "DeviceInt8Weight" not in cpu.quant_kernels()
        for ids in _prompts(cpu.config.vocab_size, n=12):
            want, got = cpu.forward(ids)[0], portable.forward(ids)[0]
            # same codes and scales, both in bf16: only the products' rounding differs (the
            # portable int8 form rounds twice, product then scale; the CPU kernel once)
            torch.testing.assert_close(got, want, atol=0.02 * float(want.abs().max()), rtol=0)
            same = cpu.generate(ids, 32, stop_at_eos=False) == portable.generate(
                ids, 32, stop_at_eos=False
            )
            runs, equal = runs + 1, equal + same
    # Random weights give flat logits, where a rounding difference can flip a near tie and
    # the runs part; measured 19/24 (79%, int8) and 21/24 (88%, int4). The runs are
    # deterministic (fixed seeds), so the bound guards against a drift, not against chance.
    assert equal / runs >= 0.7, f"{equal}/{runs} greedy runs equal for 32 tokens"


def test_portable_decode_steps_equal_the_full_forward() -> None:
    config = small_moe(sliding_window=5)
    torch.manual_seed(3)
    source = Transformer(config)
    items = qc.quantize_state(source.state_dict().items(), config, QuantSpec("int4", 32))
    model = qc.build(config, items, "portable")
    tokens = torch.randint(0, config.vocab_size, (12,), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = model(tokens[None])[0]
        cache = model.new_cache(1)
        first = model(tokens[None, :2], cache)[0]
        steps = [decode_step(model, int(t), cache) for t in tokens[2:]]
    got = torch.cat([first, torch.stack(steps)])
    torch.testing.assert_close(got, expected, atol=2**-8 * float(expected.abs().max()), rtol=0)


def test_the_load_reports_which_kernels_serve_the_matrices(
    checkpoints: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="local_backend.runtime"):
        model = local_backend.load(checkpoints["moe"], quantize="int4")
    config = CONFIGS["moe"]
    assert config.moe is not None
    experts = 2 * config.moe.num_experts * config.n_layers
    # on the CPU the form is ours or PyTorch's, whichever this process measured faster
    int4, int8 = (
        to_kernel(
            quantize(torch.randn(16, 64), QuantSpec(scheme, 32)), out_features=16, in_features=64
        ).kernel
        for scheme in ("int4", "int8")
    )
    # every attention matrix, every expert, and the int8 head
    assert model.quant_kernels() == {int4: 2 * config.n_layers + experts, int8: 1}
    assert f"quantised products on cpu: {int4} x{4 + experts}, {int8} x1" in caplog.text
    assert local_backend.load(checkpoints["moe"]).quant_kernels() == {}


def test_a_gguf_file_through_the_portable_forms_matches_the_cpu_kernels(tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="needs the dev extra (gguf writes the test files)")
    from local_backend.gguf import load_gguf
    from tests.helpers.gguf_files import write_random_gguf

    for mix in ("Q4_0", "Q8_0"):
        file = write_random_gguf(tmp_path / f"{mix}.gguf", GGUF_CONFIG, mix)
        exact = _as_local(load_gguf(file, "float32", kernel="dequant")[0])  # float32 products
        cpu = _as_local(load_gguf(file, "float32", kernel="torch")[0])  # bf16 activations too
        portable = _as_local(load_gguf(file, "float32", kernel="portable")[0])
        assert set(portable.quant_kernels()) <= {"DeviceInt8Weight", "DeviceInt4Weight"}
        for ids in _prompts(GGUF_CONFIG.vocab_size, n=6):
            ref = exact.forward(ids)[0]
            by_cpu = _relative(cpu.forward(ids)[0], ref)
            by_portable = _relative(portable.forward(ids)[0], ref)
            # As close to the float32 products as the CPU kernels are. These random blocks
            # amplify bf16 rounding: measured 0.4-0.5% (Q4_0) and 1.3-15% (Q8_0, a near-tied
            # expert choice flipping) for both forms alike; a wrong form would be ~100%.
            assert by_portable <= 1.5 * by_cpu + 0.02, (mix, by_portable, by_cpu)


# -- on a GPU ---------------------------------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _gpu_int4_kernel_expected() -> bool:
    return torch.version.hip is None and torch.cuda.get_device_capability() >= (8, 0)


@requires_cuda
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_cuda_quantised_logits_match_the_cpu(checkpoints: dict[str, Path], scheme: str) -> None:
    for path in checkpoints.values():
        cpu = local_backend.load(path, quantize=scheme, device="cpu", dtype="bfloat16")
        gpu = local_backend.load(path, quantize=scheme, device="cuda")
        assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
        kernels = gpu.quant_kernels()
        assert "DeviceInt8Weight" in kernels  # the int8 head (and every int8 matrix)
        if scheme == "int4" and _gpu_int4_kernel_expected():
            assert "CudaInt4Weight" in kernels, kernels  # verified and taken on sm80+
        for ids in _prompts(cpu.config.vocab_size, n=4):
            want, got = cpu.forward(ids)[0].float(), gpu.forward(ids)[0].float().cpu()
            assert _cosine(got, want) >= 0.999
            torch.testing.assert_close(got, want, atol=2**-5 * float(want.abs().max()), rtol=0)


@requires_cuda
def test_cuda_quantised_checkpoint_and_decode_steps(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = qc.save_quantized(checkpoints["moe"], tmp_path / "q", QuantSpec("int4", 32))
    cpu = local_backend.load(out, device="cpu", dtype="bfloat16")
    gpu = local_backend.load(out, device="cuda")
    ids = _prompts(cpu.config.vocab_size, n=1, length=14)[0]
    want, got = cpu.forward(ids)[0].float(), gpu.forward(ids)[0].float().cpu()
    assert _cosine(got, want) >= 0.999
    with torch.inference_mode():  # the KV cache and the decode step on the GPU
        cache = gpu.model.new_cache(1)
        first = gpu.model(torch.tensor([ids[:3]], device="meta"), cache)[0]
        steps = [decode_step(gpu.model, t, cache) for t in ids[3:]]
    stepped = torch.cat([first, torch.stack(steps)]).float().cpu()
    full = gpu.forward(ids)[0].float().cpu()
    torch.testing.assert_close(stepped, full, atol=2**-6 * float(full.abs().max()), rtol=0)
    assert len(gpu.generate(ids, 8, stop_at_eos=False)) == 8


@requires_cuda
@pytest.mark.parametrize("mix", ["Q4_0", "Q8_0"])
def test_cuda_gguf_matches_the_cpu(tmp_path: Path, mix: str) -> None:
    pytest.importorskip("gguf", reason="needs the dev extra (gguf writes the test files)")
    from tests.helpers.gguf_files import write_random_gguf

    file = write_random_gguf(tmp_path / f"{mix}.gguf", GGUF_CONFIG, mix)
    cpu = local_backend.load(file, device="cpu")
    gpu = local_backend.load(file, device="cuda")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    if mix == "Q4_0" and _gpu_int4_kernel_expected():
        assert "CudaInt4Weight" in gpu.quant_kernels()
    for ids in _prompts(GGUF_CONFIG.vocab_size, n=3):
        want, got = cpu.forward(ids)[0].float(), gpu.forward(ids)[0].float().cpu()
        assert _cosine(got, want) >= 0.999
