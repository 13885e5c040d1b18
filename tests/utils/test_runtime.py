"""The allocator settings apply where glibc is: kept freed memory, released on request, resident memory read."""

from __future__ import annotations

import ctypes.util
import platform

import pytest
import torch

from diffusionbert.utils.runtime import keep_freed_memory, release_freed_memory, resident_memory_mb


@pytest.mark.skipif(
    platform.system() != "Linux" or ctypes.util.find_library("c") is None, reason="glibc only"
)
def test_glibc_keeps_freed_memory_and_a_second_call_is_a_no_op():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_stay_resident_until_released():
    """With the heap kept, 256 MB of freed tensors stay in the process; releasing hands them back."""
    keep_freed_memory()
    before = resident_memory_mb()
    blocks = [torch.ones(2**20 + 4096 * i, dtype=torch.uint8) for i in range(256)]  # ~256 MB, touched
    del blocks
    kept = resident_memory_mb()
    assert kept - before > 200
    assert release_freed_memory() is True
    assert kept - resident_memory_mb() > 200


def test_resident_memory_is_read_where_the_system_tells_it():
    mb = resident_memory_mb()
    if platform.system() == "Linux":
        assert mb is not None and 10 < mb < 2**20
    else:
        assert mb is None
