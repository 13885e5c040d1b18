"""The allocator setting applies where glibc is, and is harmless to apply twice."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from diffusionbert.utils.runtime import keep_freed_memory


@pytest.mark.skipif(
    platform.system() != "Linux" or ctypes.util.find_library("c") is None, reason="glibc only"
)
def test_glibc_keeps_freed_memory_and_a_second_call_is_a_no_op():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
