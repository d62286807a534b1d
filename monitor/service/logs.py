"""Log output: readable on a terminal, no doubled timestamps under journald, JSON on request,
and a redaction filter as the last line of defence against leaked credentials.

Every stage already logs redacted URLs; the filter catches what slips through (a library's
exception text quoting a URL, a secret echoed by a server) with the process-wide redactor
(:mod:`monitor.redaction`), which masks ``user:password@`` in any URL and every configured
secret value.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from monitor.redaction import Redactor, redact, register_secrets

LogFormat = Literal["auto", "text", "json"]

_NOISY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "aiohttp.access",
                  "asyncio")
"""Loggers of the HTTP stack that log every request at INFO. The OpenAI SDK's HTTP client is
published as ``httpx2`` in some releases (its records then come from a logger of that name)."""


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with credentials masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._own = Redactor(secrets)

    def redact(self, text: str) -> str:
        """``text`` with URL passwords, this filter's secrets and every secret registered
        with the process (:func:`monitor.redaction.register_secrets`) replaced by ``***``."""
        return redact(self._own(text))

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the formatted message (and the exception text) of ``record``."""
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, redacted, so handlers print the cached text.
            formatter = logging.Formatter()
            record.exc_text = self.redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def under_journald() -> bool:
    """Whether stderr is connected to the journal (``$JOURNAL_STREAM`` names its device and
    inode), in which case journald adds timestamps itself."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def setup_logging(level: str, log_format: LogFormat = "auto",
                  secrets: Iterable[str] = ()) -> RedactingFilter:
    """Configure the root logger on stderr; returns the redaction filter (to add secrets)."""
    handler = logging.StreamHandler(sys.stderr)
    secrets = list(secrets)
    register_secrets(secrets)
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "text" or not under_journald():
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        # journald stamps each line itself; a second timestamp only adds noise.
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party clients log every request at INFO; keep ours readable.
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return redactor
