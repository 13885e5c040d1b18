"""The machine a job runs on: which device, what it is (for reports), and how its allocator behaves.

:func:`default_device` is the one place a command's ``--device`` is resolved. :func:`keep_freed_memory` is a
process-wide allocator setting for CPU work, keeping freed memory for reuse instead of unmapping it: a training step or a sampling call creates [n, V] temporaries (logits, log-probabilities and their
gradients: tens of MB each). glibc serves blocks that large with fresh ``mmap`` pages and returns them on
free, so every step pays the page faults of touching new memory again: on the 2-core AMD CPU a MiniLM
training step went from 0.76 to 0.64 s (`make bench`, docs/benchmarks.md) with the heap kept. This is what PyTorch's
CPU performance guide gets from jemalloc or tcmalloc, done with glibc's own ``mallopt``.
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
