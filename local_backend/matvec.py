"""Which product a dense weight's matrix-vector call uses: ``torch.mv``, ``F.linear`` or our
own kernel (:func:`local_backend.native.dense_mv`, bf16 and float32), chosen per dtype by
measurement on the running machine.

None is fastest everywhere. On an Intel CPU with AMX, bf16 ``torch.mv`` streamed weights
faster than the GEMM path; on an AMD EPYC (AVX-512 BF16, no AMX) ``F.linear`` of one row is
2-3x faster in bf16 than ``torch.mv``, and our kernel (``vdpbf16ps`` over the rows as they are
stored) about 2x faster again; in float32 ours and ``torch.mv`` are close on small matrices
(the call is most of the cost) and ours is ~1.5x faster on large ones. So the first load of a
model in a dtype times the candidates on slices of that model's own matrices (a few
milliseconds) and remembers the winner for the process; :func:`model.mv
<local_backend.model.mv>`, ``addmv`` and ``linear`` read it. All give the same numbers up to
rounding. Prefill (many rows) always goes through ``F.linear``.

The choice is per dtype, not per device: a process that runs the same dtype on the CPU and on
a GPU uses the path measured on whichever loaded first (``mv`` and ``linear`` are correct on
both; the native kernel hands anything not on the CPU to ``F.linear``).

``BEDROCK_MISTRAL_LOCAL_MATVEC=mv``, ``=linear`` or ``=native`` (CPU, where the kernel builds)
forces one path for every dtype (for benchmarks); ``auto`` (or unset) measures.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from local_backend import native
from local_backend.errors import LocalBackendError

__all__ = [
    "ENV_VAR",
    "LINEAR_DTYPES",
    "NATIVE_DTYPES",
    "PARALLEL_ENV_VAR",
    "MatvecPath",
    "choose",
    "chosen",
    "parallel_min_bytes",
    "path_for",
]

logger = logging.getLogger(__name__)

MatvecPath = Literal["mv", "linear", "native"]
ENV_VAR = "BEDROCK_MISTRAL_LOCAL_MATVEC"
# Dtypes whose dense matrix-vector products go through F.linear; read on every product, so a
# plain set (a dtype lookup costs ~60 ns, a device lookup several times that).
LINEAR_DTYPES: set[torch.dtype] = set()
# Dtypes whose dense matrix-vector products go through our kernel (local_backend.native):
# bf16 on CPUs with AVX512-BF16, float32 on AVX-512 ones, where it measured faster.
NATIVE_DTYPES: set[torch.dtype] = set()
_chosen: dict[torch.dtype, MatvecPath] = {}

PARALLEL_ENV_VAR = "BEDROCK_MISTRAL_LOCAL_PARALLEL_BYTES"
# A decode step runs its small calls on one thread and gives a product (or attention) all of
# torch's threads only when it reads at least this many bytes: on two cores an OpenMP region
# costs microseconds when both are idle and up to a time slice (0.1-0.8 ms measured) when a
# peer thread is descheduled by other work. Measured on a 2-core AMD EPYC, best case: the
# int4 kernel on 576 KiB (a 'medium' wo) takes 33 us on two threads, 59 us on one; float32
# torch.mv on 384-768 KiB (the bundled model's matrices) gains nothing from a second thread.
DEFAULT_PARALLEL_BYTES = 512 << 10

_MAX_BYTES = 2 << 20  # each timed matrix is a row slice of at most 2 MiB: a few ms in all
_ROUNDS = 5


def path_for(dtype: torch.dtype) -> MatvecPath:
    """The path products in ``dtype`` take now (``mv`` until a model in it was loaded)."""
    if dtype in NATIVE_DTYPES:
        return "native"
    return "linear" if dtype in LINEAR_DTYPES else "mv"


def chosen() -> dict[str, MatvecPath]:
    """Every choice made in this process, by dtype name (for logs and ``doctor``)."""
    return {str(dtype).removeprefix("torch."): path for dtype, path in _chosen.items()}


def choose(weights: Sequence[Tensor]) -> MatvecPath:
    """Pick (once per dtype and process) the faster path for matrices like ``weights``
    [N, K], all of one dtype and device; returns the path now in force for that dtype."""
    if not weights:
        return "mv"
    dtype = weights[0].dtype
    if dtype not in _chosen:
        forced = _forced()
        if forced == "native" and not _native_applies(weights[0]):
            logger.info("%s=native: no native kernel for %s here, it uses mv", ENV_VAR, dtype)
            forced = "mv"
        path = forced or _measure(weights)
        _chosen[dtype] = path
        LINEAR_DTYPES.discard(dtype)
        NATIVE_DTYPES.discard(dtype)
        if path == "linear":
            LINEAR_DTYPES.add(dtype)
        elif path == "native":
            NATIVE_DTYPES.add(dtype)
    return _chosen[dtype]


def _native_applies(weight: Tensor) -> bool:
    return weight.device.type == "cpu" and native.dense_available(weight.dtype)


def parallel_min_bytes() -> int | None:
    """Bytes a decode-step call must read to run on all threads (see ``decode``), or None
    to leave torch's thread count alone for every call. ``BEDROCK_MISTRAL_LOCAL_PARALLEL_BYTES``
    overrides it: a number of bytes (``0``: every product threaded), or ``off``."""
    value = os.environ.get(PARALLEL_ENV_VAR, "").strip().lower()
    if not value:
        return DEFAULT_PARALLEL_BYTES
    if value == "off":
        return None
    try:
        return max(0, int(value))
    except ValueError as err:
        raise LocalBackendError(
            f"{PARALLEL_ENV_VAR}={value!r}: use a number of bytes or off"
        ) from err


def _forced() -> MatvecPath | None:
    value = os.environ.get(ENV_VAR, "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ("mv", "linear", "native"):
        raise LocalBackendError(f"{ENV_VAR}={value!r}: use mv, linear, native or auto")
    logger.info("matrix-vector path forced by %s: %s", ENV_VAR, value)
    return "mv" if value == "mv" else "linear" if value == "linear" else "native"


def _measure(weights: Sequence[Tensor]) -> MatvecPath:
    """Best-of-rounds total time of each path over the matrices, interleaved so a busy
    machine slows both alike; ties (within 5%) keep ``mv``, one dispatch per call."""
    cases = [_slice(w) for w in weights]
    device = cases[0].device
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else _no_sync
    xs = [torch.randn(w.shape[1], dtype=w.dtype, device=device) for w in cases]
    paths: dict[MatvecPath, Callable[[Tensor, Tensor], Tensor]] = {
        "mv": torch.mv,
        "linear": lambda w, x: F.linear(x, w),
    }
    if _native_applies(cases[0]):
        paths["native"] = native.dense_mv
    best = dict.fromkeys(paths, float("inf"))
    with torch.inference_mode():
        for fn in paths.values():  # warm up: first calls pick kernels, fault pages in
            for w, x in zip(cases, xs, strict=True):
                fn(w, x)
        for _ in range(_ROUNDS):
            for name, fn in paths.items():
                sync()
                started = time.perf_counter()
                for w, x in zip(cases, xs, strict=True):
                    fn(w, x)
                sync()
                best[name] = min(best[name], time.perf_counter() - started)
    path = min(best, key=best.__getitem__)
    if best[path] >= 0.95 * best["mv"]:
        path = "mv"
    logger.info(
        "matrix-vector path for %s on %s: %s (%s)",
        str(cases[0].dtype).removeprefix("torch."),
        device.type,
        path,
        ", ".join(f"{name} {seconds * 1e6:.0f} us" for name, seconds in best.items()),
    )
    return path


def _slice(w: Tensor) -> Tensor:
    rows = max(1, min(w.shape[0], _MAX_BYTES // max(1, w.shape[1] * w.element_size())))
    return w.detach()[:rows]


def _no_sync() -> None:
    pass


def reset() -> None:
    """Forget every choice (tests; the next load measures again)."""
    _chosen.clear()
    LINEAR_DTYPES.clear()
    NATIVE_DTYPES.clear()
