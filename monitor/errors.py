"""Error texts for log lines and statuses that always name a reason.

Some exceptions carry no message: ``ConnectionResetError()`` raised by asyncio, or an HTTP
client's ``ReadError('')`` wrapping it, print as an empty string, and a line such as
``cannot connect ()`` says nothing. :func:`exception_reason` looks down the chain of causes
for the first text and otherwise names the error in words.
"""

from __future__ import annotations

import os

_WORDS: dict[type[BaseException], str] = {
    ConnectionResetError: "connection reset by peer",
    ConnectionAbortedError: "connection aborted",
    ConnectionRefusedError: "connection refused",
    BrokenPipeError: "broken pipe (the other side closed the connection)",
    TimeoutError: "timed out",
    EOFError: "the connection closed early",
}


def exception_reason(exc: BaseException) -> str:
    """A non-empty reason for ``exc``: its own text, else its causes' (``raise ... from``,
    then the exception it was raised while handling), else its errno's, else its kind in
    words (the class name for kinds without words)."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno and not current.strerror:
            return os.strerror(current.errno).lower()  # str() would be "[Errno 32] "
        text = str(current).strip()
        if text:
            return text
        current = current.__cause__ or current.__context__
    current = exc
    seen.clear()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for kind, words in _WORDS.items():
            if isinstance(current, kind):
                return words
        current = current.__cause__ or current.__context__
    return type(exc).__name__
