"""The C heap's tuning (monitor/heap.py) against the real glibc of this machine."""

from __future__ import annotations

import ctypes
import ctypes.util
import tracemalloc
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


def test_memory_debug_is_off_unless_the_environment_names_a_directory(tmp_path: Path) -> None:
    assert heap.memory_debug_dir({}) is None
    assert heap.memory_debug_dir({heap.MEMORY_DEBUG_ENV: "  "}) is None
    assert heap.memory_debug_dir({heap.MEMORY_DEBUG_ENV: str(tmp_path)}) == tmp_path


def test_dump_memory_writes_glibcs_arenas_that_parse_to_what_is_in_use(tmp_path: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    heap.dump_memory(tmp_path, "before")
    blocks = [libc.malloc(BLOCK_BYTES) for _ in range(BLOCKS)]
    try:
        assert all(blocks)
        written = heap.dump_memory(tmp_path, "after")
    finally:
        for block in blocks:
            libc.free(block)
    assert written == [tmp_path / "after.malloc.xml"]  # no snapshot: tracemalloc is off
    assert not list(tmp_path.glob("*.part"))
    (before, _, _), (after, _, _) = (heap.parse_malloc_info(
        (tmp_path / f"{label}.malloc.xml").read_text()) for label in ("before", "after"))
    # This (main) thread's blocks are below the mmap threshold: they are in use in arena 0.
    grown = after[0].used_bytes - before[0].used_bytes
    assert grown >= BLOCKS * BLOCK_BYTES, grown
    assert after[0].system_bytes >= after[0].used_bytes


def test_dump_memory_adds_a_tracemalloc_snapshot_while_tracing(tmp_path: Path) -> None:
    tracemalloc.start(1)
    try:
        kept = [bytes(BLOCK_BYTES) for _ in range(16)]
        written = heap.dump_memory(tmp_path, "traced")
    finally:
        tracemalloc.stop()
    assert tmp_path / "traced.tracemalloc" in written
    snapshot = tracemalloc.Snapshot.load(str(tmp_path / "traced.tracemalloc"))
    here = [s for s in snapshot.statistics("filename") if s.traceback[0].filename == __file__]
    assert sum(s.size for s in here) >= len(kept) * BLOCK_BYTES


def test_parse_malloc_info_reads_every_arena_and_the_mapped_blocks() -> None:
    xml_text = """<malloc version="1">
<heap nr="0"><sizes/><total type="fast" count="2" size="64"/>
<total type="rest" count="3" size="1000"/><system type="current" size="8192"/>
<system type="max" size="9000"/></heap>
<heap nr="1"><sizes/><total type="fast" count="0" size="0"/>
<total type="rest" count="1" size="96"/><system type="current" size="4096"/></heap>
<total type="fast" count="2" size="64"/><total type="rest" count="4" size="1096"/>
<total type="mmap" count="5" size="1310720"/><system type="current" size="12288"/>
</malloc>"""
    arenas, mapped, mapped_bytes = heap.parse_malloc_info(xml_text)
    assert arenas == [heap.ArenaUsage(0, 8192, 1064), heap.ArenaUsage(1, 4096, 96)]
    assert arenas[0].used_bytes == 8192 - 1064
    assert (mapped, mapped_bytes) == (5, 1310720)
