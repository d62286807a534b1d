"""A private Mosquitto broker on a free loopback port, for the demo, tests and benchmarks.

It is the real broker users run (Debian's ``mosquitto``), started as a child process with a
configuration of our own, so nothing depends on a system-wide broker being set up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    """Mosquitto is not installed or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """A TLS listener: the broker's certificate and key, the CA that checks clients."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_client_certificate: bool = False


class MosquittoBroker:
    """``with MosquittoBroker() as broker:`` a broker on ``broker.port`` until the block ends.

    ``password_file`` (made with ``mosquitto_passwd``) turns anonymous access off; ``tls``
    makes the listener TLS-only; ``persistence_dir`` keeps retained messages and sessions
    across ``stop()``/``start()`` (a broker restart), like a production broker.
    """

    def __init__(self, port: int | None = None, *, password_file: Path | None = None,
                 extra_config: str = "", tls: BrokerTls | None = None,
                 persistence_dir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._password_file = password_file
        self._extra_config = extra_config
        self._tls = tls
        self._persistence_dir = persistence_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto is not installed (Debian/Ubuntu: apt-get install "
                              "mosquitto; `make demo` and `make test` do that when run as root)")
        self._workdir = tempfile.TemporaryDirectory(prefix="monitor-mosquitto-")
        conf = Path(self._workdir.name) / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}"]
        if self._tls is not None:
            lines += [f"cafile {self._tls.ca_file}", f"certfile {self._tls.cert_file}",
                      f"keyfile {self._tls.key_file}",
                      f"require_certificate {str(self._tls.require_client_certificate).lower()}"]
        if self._persistence_dir is not None:
            self._persistence_dir.mkdir(parents=True, exist_ok=True)
            lines += ["persistence true", f"persistence_location {self._persistence_dir}/"]
        else:
            lines += ["persistence false"]
        lines += ["log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            # As root, mosquitto switches to the `mosquitto` user, which cannot read files in
            # our private temp directories; a private test broker has no reason to switch.
            lines += ["user root"]
        if self._password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self._password_file}"]
        else:
            lines += ["allow_anonymous true"]
        conf.write_text("\n".join(lines) + "\n" + self._extra_config)
        log = (Path(self._workdir.name) / "mosquitto.log").open("wb")
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own config file
            [binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_for_port(self.host, self.port, START_TIMEOUT_S):
            output = self.log_tail()
            self.stop()
            raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within "
                              f"{START_TIMEOUT_S:g} s: {output}")

    def reload(self) -> None:
        """SIGHUP: the broker reads its password file again (existing clients stay)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGHUP)

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the broker's log (for error messages)."""
        if self._workdir is None:
            return ""
        path = Path(self._workdir.name) / "mosquitto.log"
        return path.read_text(errors="replace")[-limit:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
