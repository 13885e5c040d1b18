"""Process-wide memory allocator setting for CPU work: keep freed memory for reuse instead of unmapping it.

A training step or a sampling call creates [n, V] temporaries (logits, log-probabilities and their
gradients: tens of MB each). glibc serves blocks that large with fresh ``mmap`` pages and returns them on
free, so every step pays the page faults of touching new memory again: on the 2-core AMD CPU a MiniLM
training step went from 0.76 to 0.64 s (`make bench`, docs/benchmarks.md) with the heap kept. This is what PyTorch's
CPU performance guide gets from jemalloc or tcmalloc, done with glibc's own ``mallopt``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it (glibc only; elsewhere a no-op). True if applied.

    The process then keeps its peak memory until it exits, which suits a training or sampling job.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # C int max
