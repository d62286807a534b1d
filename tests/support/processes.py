"""Child processes the tests start, and small waiting helpers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the daemon runs from it, as ``make`` would."""


class SimProcess:
    """`monitor sim-vlm` running as a separate process, as a real model server would."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process

    @property
    def base_url(self) -> str:
        """The OpenAI API root."""
        return f"http://127.0.0.1:{self.port}/v1"

    def set_behaviour(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the simulator's behaviour at run time (``POST /sim/behaviour``)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/sim/behaviour", data=json.dumps(changes).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            result: dict[str, Any] = json.loads(response.read())
            return result

    def stats(self) -> dict[str, int]:
        """Requests so far by outcome (``GET /sim/stats``)."""
        url = f"http://127.0.0.1:{self.port}/sim/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            result: dict[str, int] = json.loads(response.read())
            return result


def wait_until(predicate: Callable[[], bool], timeout_s: float,
               interval_s: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def clean_env() -> dict[str, str]:
    """The environment without MONITOR_ overrides from the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}


async def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``predicate()`` on the event loop until it is true; ``TimeoutError`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.1)


class DaemonProcess:
    """``monitor run -c CONFIG`` as a child process, as systemd would start it, its output in
    ``log_path``. As an async context manager it kills the daemon if the test left it running
    (a failed wait); :meth:`stop` is the orderly way out and returns the exit code."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        """Start the daemon (output to the log file)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "-c", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=clean_env())
        return self.process

    async def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then the exit code once it is out (``TimeoutExpired`` after
        ``timeout_s``)."""
        assert self.process is not None, "the daemon was not started"
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout_s)

    @property
    def running(self) -> bool:
        """Started and not exited yet."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the daemon's log, for a failure message."""
        return self.log_path.read_text(errors="replace")[-chars:]

    async def __aenter__(self) -> DaemonProcess:
        self.start()
        return self

    async def kill(self) -> None:
        """SIGKILL, if it still runs (a test that failed before its orderly stop)."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            await asyncio.to_thread(self.process.wait)

    async def __aexit__(self, *_exc: object) -> None:
        await self.kill()
