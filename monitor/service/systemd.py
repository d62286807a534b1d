"""systemd's notify protocol (``sd_notify``) without libsystemd: one datagram per message.

``Type=notify`` services tell systemd ``READY=1`` when they serve, ``WATCHDOG=1`` periodically
while they make progress (``WatchdogSec=``), ``STATUS=...`` for ``systemctl status`` and
``STOPPING=1`` on shutdown. The protocol is a datagram to the Unix socket named in
``$NOTIFY_SOCKET`` (an abstract socket when it starts with ``@``); see sd_notify(3).
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``, if set."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._socket: socket.socket | None = None
        if self._address:
            if self._address.startswith("@"):
                self._address = "\0" + self._address[1:]
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """Whether systemd listens."""
        return self._socket is not None

    def watchdog_interval_s(self) -> float | None:
        """Half of ``WatchdogSec=`` (from ``$WATCHDOG_USEC``), the ping period systemd advises;
        ``None`` when the watchdog is off or meant for another process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message."""
        if self._socket is None or self._address is None:
            return
        message = "\n".join(fields).encode()
        try:
            self._socket.sendto(message, self._address)
        except OSError as exc:
            # systemd may be restarting; a lost notification is not worth crashing for.
            logger.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        """``READY=1`` with a status line."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Update the status line shown by ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Prove liveness (only call it when the daemon really made progress)."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd the shutdown has begun."""
        self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
