"""The C heap of a process with many threads: fewer glibc arenas, free pages handed back.

The daemon runs one reader thread per camera plus encoder and decoder threads. glibc gives
threads that contend for the heap arenas of their own, up to eight per core, and a page freed
inside an arena stays in the process until the arena's top is free. Under a steady load this
shows as resident memory that keeps creeping up for the first quarter of an hour (measured
with ``bench/soak.py``: +8.7 % over 30 minutes at 48 cameras, levelling off) although
Python's objects, SQLite and the decoders' pools stay flat. Two remedies, both the ones
glibc documents for long-running threaded servers:

- :func:`limit_arenas` caps the arenas (``M_ARENA_MAX``) before the threads start, so freed
  blocks are reused by the next thread instead of sitting in an idle arena;
- :func:`release_free_memory` (``malloc_trim(0)``) hands whole free pages inside every arena
  back to the kernel; the supervisor's watch calls it every :data:`TRIM_INTERVAL_S` seconds
  in a worker thread.

Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

logger = logging.getLogger(__name__)

ARENA_MAX = 2
"""Arenas glibc may create (the usual setting for threaded Python servers): Python's own
objects come from its allocator, not these heaps, and the threads that allocate here at the
same moment (readers handing packets over, the encoder pool) are few; with fewer arenas the
space one thread frees is reused by the next."""
TRIM_INTERVAL_S = 60.0
"""How often free heap pages are handed back; a trim of a few hundred MiB takes milliseconds."""
_M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number (``malloc.h``)."""


def _glibc() -> Any | None:
    """The C library, if it has glibc's allocator functions."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - raises AttributeError where there is none
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """Cap glibc's heap arenas at ``arenas``; call it before the threads start (arenas that
    exist stay). Returns whether the setting was taken."""
    if arenas < 1:
        raise ValueError(f"arenas must be at least 1, not {arenas}")
    libc = _glibc()
    if libc is None:
        logger.debug("no glibc allocator: the heap keeps its default arenas")
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Hand free pages of every heap arena back to the kernel (``malloc_trim(0)``); returns
    whether any memory was released. Blocking for milliseconds: call it in a thread."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
