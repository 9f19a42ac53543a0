"""Our own CPU matrix-vector kernels (``native/qmv.c``), compiled on the running machine.

At batch 1 a product is a stream of weights from memory. PyTorch's weight-only int8/int4
kernels widen each weight to bf16 and multiply in floating point, and its bf16 product converts
as it goes: both read well under the memory's speed. ``qmv.c`` has (1) int8/int4 products that
round the activations to integers in blocks of 32 and run integer dot products of bytes
(AVX-512 VNNI) over 16-row weight tiles, as llama.cpp does for its Q8_0/Q4_0 files, and (2) a
dense bf16 product (AVX512-BF16 ``vdpbf16ps``) over rows as the model stores them, a candidate
of :mod:`local_backend.matvec`'s measured choice. It is C with no PyTorch headers, built with
the system's C compiler (``-O3 -march=native -fopenmp``: the machine that runs it is the one
that builds it) in about a second, cached by source, compiler and CPU, and called through
ctypes (which releases the GIL); its OpenMP threads are PyTorch's (same libgomp), so
``torch.set_num_threads`` applies.

Where it runs: :func:`library` returns None (and PyTorch's kernels are used) when there is no
compiler, the build fails, or ``BEDROCK_MISTRAL_LOCAL_NATIVE=off``. Where it does build,
:func:`wins` times the int8/int4 kernel against PyTorch's on one matrix of each scheme, once per
process, and it is used only where it is faster (``=on`` skips the timing). On a CPU without
AVX-512 VNNI the library is plain C, which the timing will usually reject.

Numerics: int4 weights meet 8-bit activations (llama.cpp's Q4_0 x Q8_0: about 0.5% relative
error of a product, small beside int4's own); int8 weights meet 15-bit activations (a high and
a low byte), closer to the float32 product than PyTorch's kernel with bf16 activations.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from local_backend.errors import LocalBackendError
from local_backend.quant import (
    Int4Weight,
    Int8Weight,
    QuantData,
    QuantizedWeight,
    padded_int4_rows,
)

__all__ = [
    "CACHE_ENV_VAR",
    "ENV_VAR",
    "NativeInt4Weight",
    "NativeInt8Weight",
    "bind",
    "compile_library",
    "dense_available",
    "dense_mv",
    "library",
    "mode",
    "native_form",
    "wins",
]

logger = logging.getLogger(__name__)

ENV_VAR = "BEDROCK_MISTRAL_LOCAL_NATIVE"
CACHE_ENV_VAR = "BEDROCK_MISTRAL_NATIVE_CACHE"
SOURCE = Path(__file__).with_name("native") / "qmv.c"
Mode = Literal["auto", "on", "off"]

_i64, _int, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def mode() -> Mode:
    """``BEDROCK_MISTRAL_LOCAL_NATIVE``: auto (build, time, use where faster), on, off."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in ("auto", "on", "off"):
        raise LocalBackendError(f"{ENV_VAR}={value!r}: use auto, on or off")
    return value  # type: ignore[return-value]


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel library, built on first use; None where it cannot be built."""
    if mode() == "off":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        logger.info("no C compiler found: int8/int4 products use PyTorch's kernels")
        return None
    try:
        lib = bind(_build(compiler))
    except (OSError, subprocess.SubprocessError) as err:
        logger.info("native int8/int4 kernel unavailable (%s): using PyTorch's kernels", err)
        return None
    logger.info("native int8/int4 kernel built (AVX-512 VNNI: %s)", bool(lib.qmv_simd()))
    return lib


def _build(compiler: str) -> Path:
    """Compile ``qmv.c`` into the cache, once per source, compiler and CPU."""
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    key = SOURCE.read_bytes() + version.encode() + _cpu_flags().encode()
    target = _cache_dir() / f"qmv-{hashlib.sha256(key).hexdigest()[:16]}.so"
    if not target.is_file():
        compile_library(compiler, target)
    return target


def compile_library(compiler: str, target: Path, march: str = "native") -> None:
    """``qmv.c`` -> the shared library ``target``, atomically (a reader never sees half a
    file); ``march`` other than native builds for another CPU (tests build the plain-C path)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    flags = ["-O3", f"-march={march}", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
    try:
        done = subprocess.run(
            [compiler, *flags, "-o", tmp, str(SOURCE), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["failed"]
            raise subprocess.SubprocessError(f"{compiler} {SOURCE.name}: {last[0]}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def bind(path: Path) -> ctypes.CDLL:
    """Load a compiled library and declare its functions' C types."""
    lib = ctypes.CDLL(str(path))
    out: list[type[ctypes._SimpleCData[Any]]] = [_ptr, _int, _ptr, ctypes.c_float]
    # ... y, y is bf16, residual or None, alpha
    lib.qmv_int8.argtypes = [_ptr, _ptr, _i64, _i64, _i64, _ptr, _int, _i64, *out]
    lib.qmv_int8.restype = _int
    lib.qmv_int4.argtypes = [_ptr, _ptr, _ptr, _i64, _i64, _i64, _int, _ptr, _int, _i64, *out]
    lib.qmv_int4.restype = _int
    lib.qmv_simd.restype = _int
    lib.qmv_dense_bf16.argtypes = [_ptr, _i64, _i64, _ptr, _int, *out]
    lib.qmv_dense_bf16.restype = _int
    lib.qmv_dense_simd.restype = _int
    lib.qmv_dense_f32.argtypes = [_ptr, _i64, _i64, _ptr, _ptr, _ptr, ctypes.c_float]
    lib.qmv_dense_f32.restype = _int
    lib.qmv_dense_f32_simd.restype = _int
    return lib


def _cache_dir() -> Path:
    if env := os.environ.get(CACHE_ENV_VAR):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bedrock-mistral" / "native"


def _cpu_flags() -> str:
    """What -march=native sees, so a cache shared between machines never mixes builds."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return sys.platform


# -- kernel forms -----------------------------------------------------------------------------


def _padded(t: Tensor, rows: int, cols: int) -> Tensor:
    """``t`` [N, C] padded with zeros to [rows, cols]."""
    pad_rows, pad_cols = rows - t.shape[0], cols - t.shape[1]
    return F.pad(t, (0, pad_cols, 0, pad_rows)) if pad_rows or pad_cols else t


def _tiles(t: Tensor, word_bytes: int) -> Tensor:
    """Bytes [Np, Kp'] -> [Np/16, blocks, words, 16, 4]: per tile of 16 rows and block of
    ``word_bytes`` bytes, 32-bit word j of every row side by side (the kernel's layout)."""
    rows, cols = t.shape
    words = word_bytes // 4
    tiled = t.reshape(rows // TILE, TILE, cols // word_bytes, words, 4)
    return tiled.permute(0, 2, 3, 1, 4).contiguous()


def _row_tiles(t: Tensor) -> Tensor:
    """[Np, G] -> [Np/16, G, 16]: a tile's 16 rows' values of one group side by side."""
    rows, groups = t.shape
    return t.reshape(rows // TILE, TILE, groups).transpose(1, 2).contiguous()


TILE = 16  # rows per tile (qmv.c's TILE)


class _NativeWeight(QuantizedWeight):
    """What both native forms share: one C call per product, with the weight's own arguments
    bound once (a decode step makes dozens of these calls per token, so the Python around
    each is kept to a few attribute reads)."""

    _fn: Callable[..., int]
    _before: tuple[int, ...]  # the C function's arguments that precede x
    in_features: int
    out_features: int

    def _run(
        self, x: Tensor, y: Tensor, residual: Tensor | None = None, alpha: float = 1.0
    ) -> Tensor:
        """Fill ``y`` [M, N] (float32 or bf16) with ``x @ W.T`` (plus ``alpha`` times that added
        to ``residual``, which has y's dtype and shape)."""
        if x.dtype is torch.bfloat16:
            x_bf16 = 1
        elif x.dtype is torch.float32:
            x_bf16 = 0
        else:
            x, x_bf16 = x.float(), 0
        if not x.is_contiguous():
            x = x.contiguous()
        status = self._fn(
            *self._before,
            x.data_ptr(),
            x_bf16,
            x.numel() // self.in_features,
            y.data_ptr(),
            int(y.dtype is torch.bfloat16),
            None if residual is None else residual.data_ptr(),
            alpha,
        )
        if status:
            raise MemoryError(f"native {type(self).__name__} product: out of memory")
        return y

    def _mm(self, x: Tensor) -> Tensor:
        return self._run(x, torch.empty(x.shape[0], self.out_features))

    def linear(self, x: Tensor) -> Tensor:
        y = torch.empty(*x.shape[:-1], self.out_features, dtype=_out_dtype(x.dtype))
        return self._run(x, y).to(x.dtype)

    def mv(self, x: Tensor) -> Tensor:
        y = self._run(x, torch.empty(self.out_features, dtype=_out_dtype(x.dtype)))
        return y if y.dtype is x.dtype else y.to(x.dtype)

    def addmv(self, residual: Tensor, x: Tensor, alpha: float = 1.0) -> Tensor:
        dtype = residual.dtype
        if dtype in _KERNEL_DTYPES and residual.is_contiguous():
            return self._run(x, torch.empty_like(residual), residual, alpha)
        return torch.add(residual, self.mv(x).to(dtype), alpha=alpha)


_KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # what the kernel reads and writes


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _KERNEL_DTYPES else torch.float32


class NativeInt8Weight(_NativeWeight):
    """int8 per-channel weights for ``qmv_int8``: ``w + 128`` as bytes in 16-row tiles."""

    scheme = "int8"

    def __init__(self, data: QuantData, lib: ctypes.CDLL) -> None:
        self.out_features, self.in_features = data.q.shape
        self.k_padded = -(-self.in_features // 32) * 32
        rows = -(-self.out_features // TILE) * TILE
        self.wu = _tiles(_padded(data.q.view(torch.uint8), rows, self.k_padded), 32)
        self.wu ^= 0x80  # w + 128, the kernel's unsigned operand (in place: one copy at a time)
        self.scale = _padded(data.scale.float().view(-1, 1), rows, 1).view(-1).contiguous()
        self._fn = lib.qmv_int8
        self._before = (
            self.wu.data_ptr(),
            self.scale.data_ptr(),
            self.out_features,
            self.in_features,
            self.k_padded,
        )


class NativeInt4Weight(_NativeWeight):
    """Group-wise int4 weights for ``qmv_int4``: the portable nibbles in 16-row tiles."""

    scheme = "int4"

    def __init__(
        self, data: QuantData, out_features: int, in_features: int, lib: ctypes.CDLL
    ) -> None:
        self.out_features, self.in_features = out_features, in_features
        self.group_size = data.group_size
        self.k_padded = 2 * data.q.shape[1]  # whole groups already
        q, scale, zero = padded_int4_rows(data, -(-out_features // TILE) * TILE)
        self.q = _tiles(q, 16)
        self.scale = _row_tiles(_bf16_bits(scale))
        self.zero = _row_tiles(_bf16_bits(zero))
        self._fn = lib.qmv_int4
        self._before = (
            self.q.data_ptr(),
            self.scale.data_ptr(),
            self.zero.data_ptr(),
            self.out_features,
            self.in_features,
            self.k_padded,
            self.group_size,
        )


def _bf16_bits(t: Tensor) -> Tensor:
    """bf16 values as their 16-bit patterns (what the kernel reads)."""
    return t.to(torch.bfloat16).view(torch.int16)


def native_form(
    data: QuantData, out_features: int, in_features: int, *, forced: bool = False
) -> QuantizedWeight | None:
    """``data`` [N, K] in the native kernel's form, or None where that kernel is not the one
    to use on this machine (see :func:`wins`); ``forced`` skips the timing, not the build."""
    lib = library()
    if lib is None or data.q.device.type != "cpu":
        if forced:
            raise LocalBackendError(
                "the native int8/int4 kernel could not be built here (no C compiler, or "
                f"{ENV_VAR}=off): use PyTorch's kernels (kernel='torch')"
            )
        return None
    if not forced and not wins(data.scheme):
        return None
    if data.scheme == "int8":
        return NativeInt8Weight(data, lib)
    return NativeInt4Weight(data, out_features, in_features, lib)


@functools.cache
def wins(scheme: str) -> bool:
    """Whether the native kernel beats PyTorch's for ``scheme`` here, timed once per process on
    a random [2048, 2048] matrix at the current thread count (``on`` skips the timing)."""
    lib = library()
    if lib is None:
        return False
    if mode() == "on":
        return True
    n = k = 2048
    data = _random_weights(scheme, n, k)
    ours: QuantizedWeight = (
        NativeInt8Weight(data, lib) if scheme == "int8" else NativeInt4Weight(data, n, k, lib)
    )
    theirs = Int8Weight(data) if scheme == "int8" else Int4Weight(data, n, k)
    x = torch.randn(k)
    best = {"native": float("inf"), "torch": float("inf")}
    with torch.inference_mode():
        for _ in range(3):
            ours.mv(x), theirs.mv(x)
        for _ in range(7):
            for name, w in (("native", ours), ("torch", theirs)):
                started = time.perf_counter()
                for _ in range(4):
                    w.mv(x)
                best[name] = min(best[name], time.perf_counter() - started)
    won = best["native"] < best["torch"]
    logger.info(
        "%s products: %s kernel (native %.0f us, PyTorch %.0f us per [2048, 2048])",
        scheme,
        "native" if won else "PyTorch",
        best["native"] / 4 * 1e6,
        best["torch"] / 4 * 1e6,
    )
    return won


def _random_weights(scheme: str, n: int, k: int, group: int = 64) -> QuantData:
    """Random codes and scales (the timing needs their size, not a quantiser's search)."""
    gen = torch.Generator().manual_seed(0)
    scale = (torch.rand(n, generator=gen) / 100).to(torch.bfloat16)
    if scheme == "int8":
        q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
        return QuantData("int8", q, scale)
    codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    scales = scale.view(n, 1).expand(n, k // group).contiguous()
    return QuantData("int4", codes, scales, torch.zeros_like(scales), group)


# -- dense matrix-vector products (see matvec.py, which measures when to use them) ---------


def dense_available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether the dense kernel for ``dtype`` (bf16: AVX512-BF16; float32: AVX-512) is built
    with its vector instructions here: a plain-C fallback is never faster than PyTorch, so it
    is not even timed."""
    lib = library()
    if lib is None:
        return False
    if dtype is torch.bfloat16:
        return bool(lib.qmv_dense_simd())
    return dtype is torch.float32 and bool(lib.qmv_dense_f32_simd())


def dense_mv(
    weight: Tensor, x: Tensor, residual: Tensor | None = None, alpha: float = 1.0
) -> Tensor:
    """``weight @ x`` (or ``residual + alpha * weight @ x``) for a row-major bf16 or float32
    weight [N, K] on the CPU and a vector x [K]; anything else goes to ``F.linear``. The result
    has x's dtype (residual's, when given)."""
    lib = library()
    out_dtype = x.dtype if residual is None else residual.dtype
    usable = (
        lib is not None
        and weight.is_cpu
        and weight.is_contiguous()
        and (residual is None or residual.is_contiguous())
        and (
            (weight.dtype is torch.bfloat16 and x.dtype in _KERNEL_DTYPES)
            or (weight.dtype is torch.float32 and x.dtype is torch.float32)
        )
        and out_dtype in _KERNEL_DTYPES
        and (weight.dtype is torch.bfloat16 or out_dtype is torch.float32)
    )
    if not usable:
        y = F.linear(x, weight)
        return y if residual is None else torch.add(residual, y.to(out_dtype), alpha=alpha)
    assert lib is not None
    x = x.contiguous()
    n, k = weight.shape
    y = torch.empty(n, dtype=out_dtype)
    extra = None if residual is None else residual.data_ptr()
    if weight.dtype is torch.float32:
        status = lib.qmv_dense_f32(
            weight.data_ptr(), n, k, x.data_ptr(), y.data_ptr(), extra, alpha
        )
    else:
        status = lib.qmv_dense_bf16(
            weight.data_ptr(),
            n,
            k,
            x.data_ptr(),
            int(x.dtype is torch.bfloat16),
            y.data_ptr(),
            int(out_dtype is torch.bfloat16),
            extra,
            alpha,
        )
    if status:
        raise MemoryError("native matrix-vector product: out of memory")
    return y
