"""Child processes the tests start, and small waiting helpers."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any


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
