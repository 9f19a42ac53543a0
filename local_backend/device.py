"""Where a model runs: ``"cpu"``, ``"cuda"`` / ``"cuda:N"``, or None for the best one here."""

from __future__ import annotations

import torch

from local_backend.errors import DeviceError

__all__ = ["CUDA_DTYPE", "resolve_device"]

CUDA_DTYPE = "bfloat16"  # dtype None on a GPU: half the bytes of float32, float32's range


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None = CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"device={device!r} is not a device: use 'cpu', 'cuda' or None") from err
    if where.type not in ("cpu", "cuda"):
        raise DeviceError(f"device={device!r}: the local model runs on 'cpu' or 'cuda'")
    if where.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device={device!r} but this PyTorch sees no CUDA GPU: use device='cpu' (or None)"
        )
    return where
