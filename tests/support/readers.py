"""Helpers for tests that run camera readers: poll for a condition, run and stop a reader."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest

from monitor.ingest.reader import CameraReader


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, fail after the timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - start


def stopped(reader: CameraReader) -> None:
    """Stop the reader; fail unless its thread ends within 5 s and says it stopped."""
    reader.stop()
    assert reader.join(5), "reader thread did not end within 5 s of stop()"
    assert reader.status.state == "stopped"


@contextlib.contextmanager
def running(reader: CameraReader) -> Iterator[CameraReader]:
    """The reader started for the block, and :func:`stopped` on the way out."""
    reader.start()
    try:
        yield reader
    finally:
        stopped(reader)
