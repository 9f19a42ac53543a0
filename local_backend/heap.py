"""Give memory that a load has freed back to the system, where the C library keeps it.

glibc raises its mmap threshold to the size of the largest block freed (up to 32 MB), so after
the first few tensors of a load every temporary comes from the heap, and the heap is seldom
shrunk: the freed temporaries of one tensor sit under the kept results of the next, and a
GGUF load's resident memory grew by several times the file's size that nobody used (measured
in ``benchmarks/bench_gguf_memory.py``). :func:`release` calls glibc's ``malloc_trim`` once
the heap holds more than a budget of free bytes (``mallinfo2``, a few microseconds): each trim
costs page faults when the memory is next used, so not after every tensor. Elsewhere (musl,
macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = ["release"]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",  # free bytes held by the allocator
            "keepcost",
        )
    ]


@functools.cache
def _glibc() -> Any:
    """The C library, where it has ``malloc_trim`` and ``mallinfo2`` (glibc 2.33+), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, TypeError, AttributeError):  # not glibc, or an older one
        return None
    return libc


def release(budget: int) -> None:
    """Hand the heap's free memory back to the system if it holds more than ``budget`` bytes."""
    libc = _glibc()
    if libc is not None and libc.mallinfo2().fordblks > budget:
        libc.malloc_trim(0)
