"""The machine a job runs on: which device, what it is (for reports), and how its allocator behaves.

:func:`default_device` is the one place a command's ``--device`` is resolved. :func:`keep_freed_memory` is a
process-wide allocator setting for CPU work, keeping freed memory for reuse instead of unmapping it: a training step or a sampling call creates [n, V] temporaries (logits, log-probabilities and their
gradients: tens of MB each). glibc serves blocks that large with fresh ``mmap`` pages and returns them on
free, so every step pays the page faults of touching new memory again: on the 2-core AMD CPU a MiniLM
training step went from 0.76 to 0.64 s (`make bench`, docs/benchmarks.md) with the heap kept. This is what PyTorch's
CPU performance guide gets from jemalloc or tcmalloc, done with glibc's own ``mallopt``.

A heap that is never trimmed keeps every block a batch of a new shape left behind, and glibc's default
(large blocks mapped and unmapped, the top trimmed past a threshold) fragments the same way: a MiniLM training
run on E2E with length-bucketed batches grew from 1.8 to 3.3 GB in 80 steps either way. Releasing every 10 steps
still let the peaks climb (2.5 to 3.3 GB in 60 steps); releasing after every step kept them flat (1.9 to 2.3 GB
over 120 steps) at 40-140 ms a release. So the trainer calls :func:`release_freed_memory` (glibc's
``malloc_trim``) after every step, and ``serve`` after every request. :func:`resident_memory_mb` reads what
the process holds, for the logs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
from pathlib import Path

import torch

from ..errors import ConfigError

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (musl and macOS have neither ``mallopt`` nor ``malloc_trim``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@functools.cache
def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it (glibc only; elsewhere a no-op). True if applied.

    Freed memory then stays in the process until :func:`release_freed_memory` hands it back.
    """
    libc = _libc()
    if libc is None:  # not glibc: nothing to tune
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # int max


def release_freed_memory() -> bool:
    """Return the heap's free pages to the system (glibc's ``malloc_trim(0)``; elsewhere a no-op). True if
    any memory was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def resident_memory_mb() -> float | None:
    """The process's resident memory in MiB (``/proc/self/statm``), or None where there is no such file."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def default_device(requested: str | torch.device | None = None) -> torch.device:
    """The device a command runs its model on: ``requested`` when given (checked), else CUDA when present.

    ``requested`` is what ``--device`` takes: ``cpu``, ``cuda`` or ``cuda:N`` (a device that holds no data,
    such as ``meta``, or one this build cannot run, such as ``mps`` without it, is a one-line error).
    """
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={requested!r} is not valid; allowed: cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={requested!r} is not valid; allowed: cpu, cuda, cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"device={requested!r} is not available: this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device={requested!r} is not available; allowed: cuda:0..cuda:{count - 1}")
    return device


def machine_description() -> str:
    """The device, CPU model and thread count, and torch version, for reports."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f"{torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    return f"{gpu}{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously), so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
