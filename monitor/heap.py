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
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

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


# --- Diagnostics (opt-in): what grows, for ``bench/soak.py --memory-debug``. ------------------

MEMORY_DEBUG_ENV = "MONITOR_MEMDEBUG_DIR"
"""Where the daemon writes memory dumps on ``SIGUSR2`` when this environment variable names a
directory (unset in production: no handler, no cost). With ``PYTHONTRACEMALLOC=<frames>`` set
too, each dump includes a ``tracemalloc`` snapshot of Python's allocations."""


def memory_debug_dir(environ: Mapping[str, str]) -> Path | None:
    """The dump directory :data:`MEMORY_DEBUG_ENV` names (``None``: diagnostics off)."""
    value = environ.get(MEMORY_DEBUG_ENV, "").strip()
    return Path(value) if value else None


def dump_memory(directory: Path, label: str) -> list[Path]:
    """Write ``<label>.malloc.xml`` (glibc's ``malloc_info``: per arena the bytes in use and
    free, the mapped blocks) and, while ``tracemalloc`` traces, ``<label>.tracemalloc`` (a
    snapshot of Python's allocations) into ``directory``; each file appears whole (written
    under a temporary name, then renamed), the XML last. Returns the files written. Blocks for
    as long as the snapshot takes (seconds with tracing on): a debugging aid only."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if tracemalloc.is_tracing():
        snapshot_path = directory / f"{label}.tracemalloc"
        partial = snapshot_path.with_suffix(".part")
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(snapshot_path)
        written.append(snapshot_path)
    libc = _glibc()
    if libc is not None and hasattr(libc, "malloc_info"):
        info_path = directory / f"{label}.malloc.xml"
        partial = info_path.with_suffix(".part")
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        stream = libc.fopen(bytes(partial), b"w")
        if stream:
            libc.malloc_info(0, stream)
            libc.fclose(stream)
            partial.rename(info_path)
            written.append(info_path)
    return written


@dataclass(frozen=True, slots=True)
class ArenaUsage:
    """One glibc arena as ``malloc_info`` describes it."""

    number: int
    system_bytes: int
    """Taken from the kernel for this arena (resident or not)."""
    free_bytes: int
    """Free chunks inside it (fast bins and the rest): space a fragmented heap cannot return."""

    @property
    def used_bytes(self) -> int:
        """Handed out to the program."""
        return self.system_bytes - self.free_bytes


def parse_malloc_info(xml_text: str) -> tuple[list[ArenaUsage], int, int]:
    """(arenas, mapped blocks, their bytes) from ``malloc_info``'s XML."""
    root = ElementTree.fromstring(xml_text)  # noqa: S314 - glibc's own output, not a stranger's
    arenas = []
    for arena in root.findall("heap"):
        free = sum(int(total.get("size", "0")) for total in arena.findall("total")
                   if total.get("type") in {"fast", "rest"})
        system = next((int(s.get("size", "0")) for s in arena.findall("system")
                       if s.get("type") == "current"), 0)
        arenas.append(ArenaUsage(int(arena.get("nr", "0")), system, free))
    mapped = next((t for t in root.findall("total") if t.get("type") == "mmap"), None)
    if mapped is None:
        return arenas, 0, 0
    return arenas, int(mapped.get("count", "0")), int(mapped.get("size", "0"))
