"""Which form a quantised matrix runs in: the one place that knows every kernel.

Each form lives with what it needs: PyTorch's CPU kernels and the dequantising fallback in
:mod:`local_backend.quant` (beside the portable data they are packed from), our own CPU kernel
in :mod:`local_backend.native`, the GPU forms in :mod:`local_backend.quant_device`. This module
picks among them, so none of those has to import another's.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from local_backend import native
from local_backend.quant import DequantWeight, Int4Weight, Int8Weight, QuantData, QuantizedWeight
from local_backend.quant_device import device_kernel

__all__ = ["Kernel", "to_kernel"]

logger = logging.getLogger(__name__)

# "auto": the fastest form for the data's device (on the CPU our native kernel or PyTorch's,
# by measurement; elsewhere local_backend.quant_device's); "native", "torch": that CPU kernel;
# "dequant": dequantise per call (CPU fallback); "portable": the device-generic forms of
# local_backend.quant_device (what CUDA runs when its fast kernel is not taken), selectable on
# the CPU so tests run that code.
Kernel = Literal["auto", "native", "torch", "dequant", "portable"]


def to_kernel(
    data: QuantData, *, out_features: int, in_features: int, kernel: Kernel = "auto"
) -> QuantizedWeight:
    """The fastest form this machine offers for ``data`` [N, K]: on the CPU our own kernel
    (:mod:`local_backend.native`) where it builds and measures faster, else PyTorch's; off the
    CPU (and for ``kernel="portable"``) the forms of :mod:`local_backend.quant_device`; the
    dequantising fallback where nothing else applies. ``kernel`` forces one (tests, benchmarks).
    """
    on_cpu = data.q.device.type == "cpu"
    if kernel == "portable" or (kernel == "auto" and not on_cpu):
        fast = () if kernel == "portable" else None
        return device_kernel(data, out_features=out_features, in_features=in_features, fast=fast)
    if on_cpu and kernel in ("auto", "native"):
        form = native.native_form(data, out_features, in_features, forced=kernel == "native")
        if form is not None:
            return form
    if on_cpu and kernel in ("auto", "torch"):
        form = torch_form(data, out_features, in_features)
        if form is not None:
            return form
    return DequantWeight(data, out_features, in_features)


def torch_form(data: QuantData, out_features: int, in_features: int) -> QuantizedWeight | None:
    """PyTorch's CPU kernel form of ``data``, or None where this build has none for it."""
    try:
        if data.scheme == "int8" and hasattr(torch, "_weight_int8pack_mm"):
            return Int8Weight(data)
        if data.scheme == "int4" and hasattr(torch, "_weight_int4pack_mm_for_cpu"):
            return Int4Weight(data, out_features, in_features)
    except RuntimeError as err:  # a build whose kernel refuses this shape
        logger.debug("no %s kernel for [%d, %d]: %s", data.scheme, out_features, in_features, err)
    return None
