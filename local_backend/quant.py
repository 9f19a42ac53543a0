"""Weight-only quantisation: int8 (symmetric, per output channel) and int4 (group-wise).

Two forms of every quantised matrix ``W [N, K]`` (``y = W x``):

* the **portable** form (:class:`QuantData`), plain tensors that any machine reads the same
  way and that the quantised checkpoint stores:

  - int8: ``q`` int8 [N, K] in -127..127 and ``scale`` [N]; ``W = q * scale``.
  - int4: ``q`` uint8 [N, Kp/2], two 4-bit codes per byte (column 2j in the low nibble, 2j+1
    in the high one), ``scale`` and ``zero`` [N, Kp/g]; ``W = (q - 8) * scale + zero`` within
    each group of ``g`` columns (``zero`` is the value of code 8). ``Kp`` is K rounded up to a
    whole group; the padding columns are zero.

  Rows are independent, so matrices quantised one by one can be stacked along N (q, k and v
  into ``wqkv``). llama.cpp's 4-bit blocks keep their codes (group 32, scales rounded to
  bf16): Q4_0 is ``scale = d, zero = 0``, Q4_1 ``scale = d, zero = m + 8 d``, a Q4_K
  sub-block ``scale = d sc, zero = 8 d sc - dmin m``. Q8_0, Q5_K and Q6_K have per-block
  scales that per-channel int8 cannot hold: they dequantise and re-quantise, one tensor at
  a time.

  int4 picks each group's range by search (:data:`_CLIPS`): the min..max range, or one
  narrowed by up to 25%, whichever reconstructs the group with the least squared error.

* the **kernel** form, repacked once at load (never written to disk): on the CPU our own
  kernel's 16-row tiles (:mod:`local_backend.native`, int8 activations and integer dot
  products, compiled on the machine) where it builds and times faster, else PyTorch's
  ``_weight_int8pack_mm`` / ``_weight_int4pack_mm_for_cpu`` (:class:`Int8Weight`,
  :class:`Int4Weight`); off the CPU the forms of :mod:`local_backend.quant_device`. Where
  nothing else applies, :class:`DequantWeight` dequantises on every call (slow but exact).

PyTorch's kernels get bf16 activations: on the AVX-512 AMD EPYC we measured (2 threads), one
'medium' decode step's products take 7.4 ms (int8) and 6.4 ms (int4) with bf16 activations,
97 and 198 ms with float32 ones, against 37 ms for bf16 ``torch.mv`` and 520-980 ms for
dequantise-then-product (``benchmarks/bench_quant.py``); each of their products casts its
input to bf16 and its output back. The native kernel reads float32 or bf16 as it is and is
1.6-2.3x faster again in a decode (``benchmarks/RESULTS.md``).

What is quantised: every attention and feed-forward matrix, experts included, and the output
head (int8 in both schemes: its error goes straight into the logits). The embedding (a row
lookup, never a product), the norms and the MoE router (E rows, and routing is sensitive)
stay in the model dtype, as llama.cpp keeps its router.

>>> spec = QuantSpec("int4", group_size=64)
>>> data = quantize(torch.randn(128, 256), spec)               # doctest: +SKIP
>>> from local_backend.kernels import to_kernel  # picks the form (ours, PyTorch's, GPU)
>>> weight = to_kernel(data, out_features=128, in_features=256)  # doctest: +SKIP
>>> weight.mv(torch.randn(256)).shape                          # doctest: +SKIP
torch.Size([128])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from local_backend.errors import CheckpointError

__all__ = [
    "COMPUTE_DTYPE",
    "GROUP_SIZES",
    "SCHEMES",
    "DequantWeight",
    "Int4Weight",
    "Int8Weight",
    "QuantData",
    "QuantSpec",
    "QuantizedLinear",
    "QuantizedWeight",
    "Scheme",
    "dequantize",
    "quantize",
]


Scheme = Literal["int8", "int4"]
SCHEMES: tuple[Scheme, ...] = ("int8", "int4")
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
COMPUTE_DTYPE = torch.bfloat16  # activations of the quantised products (measured, see above)
SCALE_DTYPE = torch.bfloat16  # scales and zeros are rounded to this before the codes are chosen


@dataclass(frozen=True)
class QuantSpec:
    """How to quantise: ``int8`` per output channel, or ``int4`` in groups of ``group_size``."""

    scheme: Scheme
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise CheckpointError(f"unknown quantisation {self.scheme!r}: use int8 or int4")
        if self.group_size not in GROUP_SIZES:
            raise CheckpointError(
                f"group size {self.group_size} is not supported: use one of "
                f"{', '.join(map(str, GROUP_SIZES))}"
            )

    @classmethod
    def parse(cls, scheme: str, group_size: int | None = None) -> QuantSpec:
        """From user input; ``group_size`` only means something for int4."""
        if scheme not in SCHEMES:
            raise CheckpointError(f"unknown quantisation {scheme!r}: use int8 or int4")
        if scheme == "int8" and group_size is not None:
            raise CheckpointError("--group-size applies to int4 only: int8 is per output channel")
        return cls(scheme, group_size or DEFAULT_GROUP_SIZE)

    @property
    def head(self) -> QuantSpec:
        """The output head's spec: int8 in both schemes."""
        return QuantSpec("int8", self.group_size)


@dataclass(frozen=True)
class QuantData:
    """The portable form of one matrix, or of a stack of experts (leading axis E)."""

    scheme: Scheme
    q: Tensor
    scale: Tensor
    zero: Tensor | None = None  # int4 only
    group_size: int = 0  # int4 only

    def tensors(self) -> dict[str, Tensor]:
        """The tensors to store, by suffix."""
        out = {"q": self.q, "scale": self.scale}
        if self.zero is not None:
            out["zero"] = self.zero
        return out

    def expert(self, e: int) -> QuantData:
        """Expert ``e`` of a stacked [E, ...] tensor (views, no copy)."""
        zero = None if self.zero is None else self.zero[e]
        return QuantData(self.scheme, self.q[e], self.scale[e], zero, self.group_size)


def portable_shapes(
    spec: QuantSpec, lead: tuple[int, ...], n: int, k: int
) -> dict[str, tuple[int, ...]]:
    """The shapes of the stored tensors of a [*lead, N, K] matrix quantised with ``spec``."""
    if spec.scheme == "int8":
        return {"q": (*lead, n, k), "scale": (*lead, n)}
    groups = -(-k // spec.group_size)
    return {
        "q": (*lead, n, groups * spec.group_size // 2),
        "scale": (*lead, n, groups),
        "zero": (*lead, n, groups),
    }


# -- quantise / dequantise (portable form) ----------------------------------------------------


def quantize(w: Tensor, spec: QuantSpec) -> QuantData:
    """Quantise ``w`` [..., N, K] (any float dtype); scales are rounded before codes are chosen,
    so dequantising reproduces exactly what the kernels compute with."""
    w32 = w.detach().float()
    if spec.scheme == "int8":
        scale = (w32.abs().amax(-1) / 127).clamp(min=1e-10).to(SCALE_DTYPE)
        q = torch.round(w32 / scale.float().unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
        return QuantData("int8", q, scale)
    pad = -w32.shape[-1] % spec.group_size
    rows = (F.pad(w32, (0, pad)) if pad else w32).reshape(-1, w32.shape[-1] + pad)  # [R, Kp]
    parts = [_int4_rows(rows[i : i + _ROWS], spec.group_size) for i in range(0, len(rows), _ROWS)]
    lead = w32.shape[:-1]
    q, scale, zero = (torch.cat(t).reshape(*lead, -1) for t in zip(*parts, strict=True))
    return QuantData("int4", q, scale, zero, spec.group_size)


_ROWS = 1024  # int4 quantises this many rows at a time: the range search needs a few copies
_CLIPS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)  # shrink factors of each group's range tried


def _int4_rows(rows: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
    """Nibbles, scales, zeros of rows [R, Kp]. Each group keeps the narrowed range (min, max
    times a factor of :data:`_CLIPS`) with the least squared error: clipping a rare outlier
    buys finer steps for the rest, which on the bundled model lifts int4's top-1 agreement."""
    grouped = rows.reshape(rows.shape[0], -1, g)  # [R, G, g]
    lo, hi = grouped.amin(-1), grouped.amax(-1)
    best_err = best_scale = best_zero = None
    for clip in _CLIPS:
        scale = ((hi - lo) * clip / 15).clamp(min=1e-10).to(SCALE_DTYPE).float()
        zero = ((lo + hi) / 2 - (hi - lo) * clip / 2 + 8 * scale).to(SCALE_DTYPE).float()
        t = _code_space(grouped, scale, zero)  # w in units of steps, code 8 at zero
        err = t.round().clamp_(0, 15).sub_(t).pow_(2).sum(-1) * scale.square()
        if best_err is None or best_scale is None or best_zero is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    assert best_scale is not None and best_zero is not None
    codes = _code_space(grouped, best_scale, best_zero).round_().clamp_(0, 15)
    codes8 = codes.to(torch.uint8).flatten(1)  # [R, Kp]
    packed = codes8[:, 0::2] | (codes8[:, 1::2] << 4)
    return packed, best_scale.to(SCALE_DTYPE), best_zero.to(SCALE_DTYPE)


def _code_space(grouped: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """``(w - zero) / scale + 8`` in one fused pass over the weights."""
    inv = 1 / scale
    return torch.addcmul((8 - zero * inv)[..., None], grouped, inv[..., None])


def unpack_int4(q: Tensor) -> Tensor:
    """Nibbles [..., N, Kp/2] -> codes [..., N, Kp] (uint8, 0..15)."""
    return torch.stack([q & 0x0F, q >> 4], dim=-1).flatten(-2)


def dequantize(data: QuantData, in_features: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The matrix [..., N, K] the quantised form stands for."""
    if data.scheme == "int8":
        return (data.q.float() * data.scale.float().unsqueeze(-1)).to(dtype)
    assert data.zero is not None
    codes = unpack_int4(data.q).float()
    codes = codes.reshape(*codes.shape[:-1], -1, data.group_size)  # [..., N, G, g]
    w = (codes - 8) * data.scale.float().unsqueeze(-1) + data.zero.float().unsqueeze(-1)
    out: Tensor = w.flatten(-2)[..., :in_features].to(dtype)
    return out


# -- kernel forms -----------------------------------------------------------------------------


class QuantizedWeight:
    """A packed matrix ``W [N, K]`` that ``model.linear``/``mv``/``addmv`` hand products to.

    Plain attributes (not an nn.Module): a decode step reads them dozens of times per token.
    """

    out_features: int
    in_features: int
    scheme: Scheme

    @property
    def kernel(self) -> str:
        """Which form this is (its class name), for logs and reports."""
        return type(self).__name__

    @property
    def nbytes(self) -> int:
        """Bytes a product reads (codes, scales and zeros): what decides its threading."""
        tensors = [t for t in vars(self).values() if isinstance(t, Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def linear(self, x: Tensor) -> Tensor:
        """x [..., K] -> [..., N] in x's dtype."""
        flat = x.reshape(-1, self.in_features)
        return self._mm(flat).to(x.dtype).view(*x.shape[:-1], self.out_features)

    def mv(self, x: Tensor) -> Tensor:
        """x [K] -> [N]."""
        return self._mm(x.view(1, -1)).view(-1).to(x.dtype)

    def addmv(self, residual: Tensor, x: Tensor, alpha: float = 1.0) -> Tensor:
        """``residual + alpha * W x`` for vectors (the add promotes back to residual's dtype)."""
        return torch.add(residual, self._mm(x.view(1, -1)).view(-1), alpha=alpha)

    def _mm(self, x: Tensor) -> Tensor:
        """x [M, K] (any dtype) -> [M, N] in the kernel's dtype."""
        raise NotImplementedError


def _aligned(t: Tensor) -> Tensor:
    """``t``, copied if it does not start on a 64-byte boundary: the int8 kernel's vector loads
    crash on weights that do not (safetensors aligns tensors in a file to 8 bytes only)."""
    if t.is_contiguous() and t.data_ptr() % 64 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


class Int8Weight(QuantizedWeight):
    """``_weight_int8pack_mm``: int8 [N, K] with per-row scales, bf16 activations. The kernel
    crashes on K not a multiple of 16 (a segfault on 4 x 36 with torch 2.13), so such a K gets
    zero columns and x is padded per call; real models have none."""

    scheme = "int8"

    def __init__(self, data: QuantData) -> None:
        self.out_features, self.in_features = data.q.shape
        self.k_pad = -self.in_features % 16
        q = F.pad(data.q, (0, self.k_pad)) if self.k_pad else data.q
        self.q = _aligned(q)
        self.scale = _aligned(data.scale.to(COMPUTE_DTYPE))

    def _mm(self, x: Tensor) -> Tensor:
        x = x.to(COMPUTE_DTYPE)
        if self.k_pad:
            x = F.pad(x, (0, self.k_pad))
        return torch._weight_int8pack_mm(x, self.q, self.scale)


class Int4Weight(QuantizedWeight):
    """``_weight_int4pack_mm_for_cpu`` over the kernel's tile layout, bf16 activations.

    The kernel wants N a multiple of 16 and K a multiple of the group: other shapes get zero
    rows (sliced off the result) and zero columns (x is padded per call); real models have none.
    """

    scheme = "int4"

    def __init__(self, data: QuantData, out_features: int, in_features: int) -> None:
        n_pad = -out_features % 16
        q, scale, zero = padded_int4_rows(data, out_features + n_pad)
        self.packed = _int4pack(q)
        # [G, Np, 2]: the kernel's scale-and-zero table, in the activations' dtype
        self.scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).to(COMPUTE_DTYPE)
        self.scale_zero = self.scale_zero.contiguous()
        self.group_size = data.group_size
        self.out_features, self.in_features = out_features, in_features
        self.k_pad = 2 * q.shape[1] - in_features
        self.n_padded = n_pad > 0

    def _mm(self, x: Tensor) -> Tensor:
        x = x.to(COMPUTE_DTYPE)
        if self.k_pad:
            x = F.pad(x, (0, self.k_pad))
        out = torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group_size, self.scale_zero)
        return out[:, : self.out_features] if self.n_padded else out


def padded_int4_rows(data: QuantData, rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Codes, scales and zeros of int4 ``data`` [N, ...] with rows of zero weight (code 8,
    scale and zero 0) added up to ``rows``: kernels that work on blocks of rows want whole
    blocks."""
    assert data.zero is not None
    q, scale, zero = data.q, data.scale, data.zero
    n_pad = rows - q.shape[0]
    if n_pad:
        q = F.pad(q, (0, 0, 0, n_pad), value=0x88)  # code 8 in both nibbles
        scale, zero = F.pad(scale, (0, 0, 0, n_pad)), F.pad(zero, (0, 0, 0, n_pad))
    return q, scale, zero


def _int4pack(q: Tensor) -> Tensor:
    """Nibbles [Np, Kp/2] -> the CPU kernel's tile layout, 64 rows at a time or more: the kernel
    wants int32 codes (8 bytes a weight), which for a whole expert of a large model would be
    hundreds of MB at once. Its tiles are 64 rows tall, so packing blocks of 64 rows gives the
    same bytes as packing the whole matrix (checked in tests/local/test_quant.py)."""
    n, half = q.shape
    step = max(64, (_PACK_VALUES // (2 * half)) // 64 * 64)
    if n <= step:
        return torch._convert_weight_to_int4pack_for_cpu(unpack_int4(q).to(torch.int32), 8)
    out = torch.empty(n, half, dtype=torch.uint8)
    for s in range(0, n, step):
        codes = unpack_int4(q[s : s + step]).to(torch.int32)
        out[s : s + step] = torch._convert_weight_to_int4pack_for_cpu(codes, 8)
    return out


_PACK_VALUES = 1 << 21  # weights repacked at a time: 8 MB of int32 codes (much less is slower)


class DequantWeight(QuantizedWeight):
    """Fallback without a kernel: dequantise on every call, then a plain product."""

    def __init__(self, data: QuantData, out_features: int, in_features: int) -> None:
        self.data = data
        self.scheme = data.scheme
        self.out_features, self.in_features = out_features, in_features

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.data.tensors().values())

    def _mm(self, x: Tensor) -> Tensor:
        return F.linear(x, dequantize(self.data, self.in_features, x.dtype))


class QuantizedLinear(nn.Module):
    """Stands where an ``nn.Linear`` was; its ``weight`` is a :class:`QuantizedWeight`."""

    def __init__(self, weight: QuantizedWeight) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.linear(x)

    def extra_repr(self) -> str:
        w = self.weight
        return f"{type(w).__name__}(in_features={w.in_features}, out_features={w.out_features})"
