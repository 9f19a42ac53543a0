"""Markers for tests that need an accelerator: they run where one is present, else skip."""

from __future__ import annotations

import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


requires_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
