"""The C heap's tuning (monitor/heap.py) against the real glibc of this machine."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from monitor import heap

BLOCK_BYTES = 64 * 1024
"""Below glibc's mmap threshold, so the blocks are carved from the heap."""
BLOCKS = 1600
"""About 100 MiB in all."""


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_limit_arenas_refuses_a_count_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1, not 0"):
        heap.limit_arenas(0)


def test_limit_arenas_is_taken_by_glibc() -> None:
    assert heap.limit_arenas(heap.ARENA_MAX) is True


def test_release_free_memory_hands_free_pages_inside_the_heap_back() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(BLOCKS):
        block = libc.malloc(BLOCK_BYTES)
        assert block
        ctypes.memset(block, 1, BLOCK_BYTES)  # touched, so resident
        blocks.append(block)
    # The last block stays: the heap's top is in use, so only malloc_trim's walk through the
    # free chunks (not the automatic trim of a free top) can return the pages below it.
    for block in blocks[:-1]:
        libc.free(block)
    before = _resident_bytes()
    released = heap.release_free_memory()
    after = _resident_bytes()
    libc.free(blocks[-1])
    assert released is True
    assert before - after > BLOCKS * BLOCK_BYTES // 2, (before, after)
