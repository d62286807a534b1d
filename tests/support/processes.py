"""Child processes the tests start, and small waiting helpers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable


class SimProcess:
    """`monitor sim-vlm` running as a separate process, as a real model server would."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process

    @property
    def base_url(self) -> str:
        """The OpenAI API root."""
        return f"http://127.0.0.1:{self.port}/v1"


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
