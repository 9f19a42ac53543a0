"""Quantised products off the CPU: portable forms any device runs, and PyTorch's CUDA int4
kernel, used only after it agreed with them on the matrix it is about to serve.

Two kinds of code, kept apart so that every line CUDA runs is either tested on the CPU or
checked at run time before it is trusted:

* **portable forms** (:class:`DeviceInt8Weight`, :class:`DeviceInt4Weight`), written only
  with device-generic tensor ops. On the CPU
  ``local_backend.kernels.to_kernel(..., kernel="portable")`` selects them, so the tests run
  exactly the code a GPU runs when no fast kernel is taken.

  - int8: ``y = (x @ q.T) * scale`` with ``q`` cast to bf16 per call (every int8 code is
    exact in bf16) and the per-row scale applied to the product, not to the weights.
  - int4: the codes are dequantised straight to bf16, ``(q - 8) * scale + zero`` in one
    ``addcmul`` per call (one rounding, as the CUDA kernel's bf16 fma), then a bf16 product.

* **a fast form** (:class:`CudaInt4Weight`): ``torch._weight_int4pack_mm`` (PyTorch's
  "tinygemm", tensor cores, sm80+), over ``torch._convert_weight_to_int4pack``'s tile layout.
  Facts it relies on, from PyTorch's ``aten/src/ATen/native/cuda/int4mm.cu``: the packer
  takes uint8 [N, K/2] with column 2j in the *high* nibble (ours keeps it in the low one, so
  the bytes are swapped first) and ``innerKTiles`` 2, 4 or 8 (K a multiple of 16 x that);
  the product takes bf16 activations [M, K] (contiguous), groups of 32/64/128/256, and a
  bf16 scale-and-zero table [K/g, N, 2], N a multiple of 8; it dequantises
  ``(q - 8) * scale + zero``, our portable formula.

Before a fast form serves a matrix, :func:`verify` builds it and the portable form on the
matrix's first rows and compares their products on a random input (1 and 17 rows, relative
RMS error at most :data:`TOLERANCE`). A failure (an exception, a wrong layout, a GPU without
the kernel) is logged once with its reason and the portable form is used; the verdict is
kept per kernel, device and shape class (K, group, N mod 8) for the process.

No figures here: this code has not been timed on a GPU by us (no GPU was available).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from local_backend.quant import COMPUTE_DTYPE, QuantData, QuantizedWeight, padded_int4_rows

__all__ = [
    "FAST_KERNELS",
    "PROBE_ROWS",
    "TOLERANCE",
    "CudaInt4Weight",
    "DeviceInt4Weight",
    "DeviceInt8Weight",
    "FastKernel",
    "device_kernel",
    "portable_kernel",
    "reset",
    "to_device",
    "verify",
]

logger = logging.getLogger(__name__)

PROBE_ROWS = 64  # rows of the real matrix both forms are built on for the check
PROBE_INPUTS = (1, 17)  # activation rows checked: a decode step, and more than one M tile
TOLERANCE = 0.02  # relative RMS difference allowed (bf16 rounding gives ~0.003; a wrong layout ~1)


def to_device(data: QuantData, device: torch.device) -> QuantData:
    """``data`` with each tensor copied to ``device`` (one at a time; a no-op where it is)."""
    zero = None if data.zero is None else data.zero.to(device)
    return QuantData(data.scheme, data.q.to(device), data.scale.to(device), zero, data.group_size)


def _rows(data: QuantData, n: int) -> QuantData:
    """The first ``n`` rows of a single matrix (views)."""
    zero = None if data.zero is None else data.zero[:n]
    return QuantData(data.scheme, data.q[:n], data.scale[:n], zero, data.group_size)


# -- portable forms (device-generic ops only; CPU-tested) -------------------------------------


class DeviceInt8Weight(QuantizedWeight):
    """int8 [N, K] cast to bf16 per call; the per-row scale multiplies the product [M, N]."""

    scheme = "int8"

    def __init__(self, data: QuantData) -> None:
        self.q = data.q.contiguous()
        self.scale = data.scale.to(COMPUTE_DTYPE)
        self.out_features, self.in_features = self.q.shape

    def _mm(self, x: Tensor) -> Tensor:
        return F.linear(x.to(COMPUTE_DTYPE), self.q.to(COMPUTE_DTYPE)) * self.scale


class DeviceInt4Weight(QuantizedWeight):
    """int4 nibbles dequantised to a bf16 [N, Kp] per call, then one bf16 product; x is
    padded to Kp with zeros rather than the weight sliced to K (no second copy)."""

    scheme = "int4"

    def __init__(self, data: QuantData, out_features: int, in_features: int) -> None:
        assert data.zero is not None
        self.q = data.q.contiguous()
        self.scale = data.scale.to(COMPUTE_DTYPE).unsqueeze(-1)  # [N, G, 1]
        self.zero = data.zero.to(COMPUTE_DTYPE).unsqueeze(-1)
        self.group_size = data.group_size
        self.out_features, self.in_features = out_features, in_features
        self.k_pad = 2 * self.q.shape[1] - in_features

    def weight(self) -> Tensor:
        """The bf16 matrix [N, Kp] (padding columns included)."""
        n, half = self.q.shape
        codes = torch.stack([self.q & 0x0F, self.q >> 4], dim=-1).to(COMPUTE_DTYPE)
        grouped = codes.view(n, -1, self.group_size).sub_(8)  # [N, G, g], exact in bf16
        return torch.addcmul(self.zero, grouped, self.scale).view(n, 2 * half)

    def _mm(self, x: Tensor) -> Tensor:
        x = x.to(COMPUTE_DTYPE)
        if self.k_pad:
            x = F.pad(x, (0, self.k_pad))
        return F.linear(x, self.weight())


def portable_kernel(data: QuantData, out_features: int, in_features: int) -> QuantizedWeight:
    """The portable form of ``data`` [N, K] on whatever device its tensors are."""
    if data.scheme == "int8":
        return DeviceInt8Weight(data)
    return DeviceInt4Weight(data, out_features, in_features)


# -- the CUDA int4 kernel (runs only on a GPU; verified before use) ---------------------------


class CudaInt4Weight(QuantizedWeight):
    """``torch._weight_int4pack_mm`` over ``_convert_weight_to_int4pack``'s layout (see the
    module doc for the layout facts); N is padded to a multiple of 8 with zero rows, K to
    the group (already so in the portable form)."""

    scheme = "int4"

    def __init__(self, data: QuantData, out_features: int, in_features: int) -> None:
        n_pad = -out_features % 8
        q, scale, zero = padded_int4_rows(data, out_features + n_pad)
        kp = 2 * q.shape[1]
        self.inner_k_tiles = next(t for t in (8, 4, 2) if kp % (16 * t) == 0)
        swapped = ((q << 4) | (q >> 4)).contiguous()  # column 2j to the high nibble
        self.packed = torch._convert_weight_to_int4pack(swapped, self.inner_k_tiles)
        # [G, Np, 2]: the kernel's scale-and-zero table, bf16
        self.scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).to(COMPUTE_DTYPE)
        self.scale_zero = self.scale_zero.contiguous()
        self.group_size = data.group_size
        self.out_features, self.in_features = out_features, in_features
        self.k_pad = kp - in_features
        self.n_padded = n_pad > 0

    def _mm(self, x: Tensor) -> Tensor:
        x = x.to(COMPUTE_DTYPE)
        if self.k_pad:
            x = F.pad(x, (0, self.k_pad))
        out = torch._weight_int4pack_mm(
            x.contiguous(), self.packed, self.group_size, self.scale_zero
        )
        return out[:, : self.out_features] if self.n_padded else out


def _tinygemm_applies(data: QuantData) -> str | None:
    """None when the CUDA int4 kernel may serve ``data``, else why not."""
    device = data.q.device
    if data.scheme != "int4":
        return "it is an int4 kernel"
    if device.type != "cuda":
        return f"it runs on CUDA, not {device.type}"
    if data.group_size not in (32, 64, 128, 256):
        return f"group size {data.group_size} is not one of its 32, 64, 128, 256"
    if torch.version.hip is None and torch.cuda.get_device_capability(device) < (8, 0):
        major, minor = torch.cuda.get_device_capability(device)
        return f"it needs compute capability 8.0 or newer (this GPU has {major}.{minor})"
    return None


Builder = Callable[[QuantData, int, int], QuantizedWeight]


@dataclass(frozen=True)
class FastKernel:
    """A kernel form that is faster where it works: ``applies`` says why not (or None),
    ``build`` makes it from the portable data [N, K] already on its device."""

    name: str
    applies: Callable[[QuantData], str | None]
    build: Builder


FAST_KERNELS: tuple[FastKernel, ...] = (
    FastKernel("cuda-int4-tinygemm", _tinygemm_applies, CudaInt4Weight),
)


# -- the check --------------------------------------------------------------------------------


def verify(build: Builder, data: QuantData, out_features: int, in_features: int) -> str | None:
    """None when ``build``'s form computes what the portable form does on the first rows of
    ``data`` (random bf16 inputs of 1 and 17 rows), else a sentence saying how it did not.

    The probe keeps N's remainder mod 8 (so row padding is exercised) and every column."""
    rows = min(out_features, PROBE_ROWS + out_features % 8)
    probe = _rows(data, rows)
    device = data.q.device
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(max(PROBE_INPUTS), in_features, generator=gen, device=device)
    reference = portable_kernel(probe, rows, in_features)
    try:
        fast = build(probe, rows, in_features)
        pairs = [(fast.linear(x[:m]), reference.linear(x[:m])) for m in PROBE_INPUTS]
    except RuntimeError as err:  # NotImplementedError too: a build without the kernel
        return f"it failed: {_first_sentence(err)}"
    for got, want in pairs:
        if got.shape != want.shape:
            return f"it returned shape {list(got.shape)}, not {list(want.shape)}"
        diff = float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30))
        if not diff <= TOLERANCE:  # also catches NaN
            return (
                f"its product differs from the portable form's by {diff:.3g} (relative RMS) "
                f"on {got.shape[0]} input row(s), more than {TOLERANCE}"
            )
    return None


def _first_sentence(err: BaseException) -> str:
    """The start of an error's message (PyTorch's dispatcher errors run to a page)."""
    text = str(err).strip().split(". ")[0].splitlines()
    return text[0][:300] if text else type(err).__name__


_verdicts: dict[tuple[str, str, int, int, int], str | None] = {}


def device_kernel(
    data: QuantData,
    *,
    out_features: int,
    in_features: int,
    fast: Sequence[FastKernel] | None = None,
) -> QuantizedWeight:
    """The first of ``fast`` (default :data:`FAST_KERNELS`) that applies to ``data`` and
    passed :func:`verify` for its shape class, else the portable form; ``data`` is already on
    its device."""
    for kernel in FAST_KERNELS if fast is None else fast:
        why_not = kernel.applies(data)
        key = (kernel.name, str(data.q.device), data.group_size, in_features, out_features % 8)
        if why_not is None:
            if key not in _verdicts:
                _verdicts[key] = verify(kernel.build, data, out_features, in_features)
                _report(kernel.name, data, in_features, _verdicts[key])
            why_not = _verdicts[key]
        if why_not is None:
            try:
                return kernel.build(data, out_features, in_features)
            except RuntimeError as err:
                _verdicts[key] = f"it failed on the whole matrix: {_first_sentence(err)}"
                _report(kernel.name, data, in_features, _verdicts[key])
    return portable_kernel(data, out_features, in_features)


def _report(name: str, data: QuantData, in_features: int, why_not: str | None) -> None:
    what = f"{data.scheme} (K={in_features}, group {data.group_size}) on {data.q.device}"
    if why_not is None:
        logger.info("%s verified against the portable form for %s: using it", name, what)
    else:
        logger.warning("%s not used for %s: %s; using the portable form", name, what, why_not)


def reset() -> None:
    """Forget every verdict (tests; the next load checks again)."""
    _verdicts.clear()
