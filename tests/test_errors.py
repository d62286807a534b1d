"""Error reasons are never empty (pure logic on real exception objects)."""

from __future__ import annotations

import errno

import pytest

from monitor.errors import exception_reason


class ReadError(Exception):
    """An HTTP client's error without a message, as httpx raises around a reset."""


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    """``outer`` as if raised ``from cause``."""
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(("exc", "reason"), [
    (ConnectionResetError(), "connection reset by peer"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
     "[Errno 104] Connection reset by peer"),
    (OSError(errno.EPIPE, ""), "broken pipe"),
    (chained(ReadError(""), ConnectionResetError()), "connection reset by peer"),
    (chained(ReadError(""), OSError("no route to host")), "no route to host"),
    (ReadError(""), "ReadError"),
    (TimeoutError(), "timed out"),
    (ValueError("bad answer"), "bad answer"),
])
def test_a_reason_is_always_named(exc: BaseException, reason: str) -> None:
    assert exception_reason(exc) == reason
