"""A real vLLM OpenAI server on the CPU, started the way the vLLM systemd unit starts it.

The pieces, each prepared once and cached:

* vLLM's own virtualenv (``.venv-vllm``, never the daemon's ``.venv``), made by
  ``scripts/vllm-cpu-env.sh`` (``make test`` runs it before pytest). When that install failed
  it leaves the reason in ``.venv-vllm.failed``; :func:`environment_problem` turns it into the
  tests' skip message.
* A tiny random-weight Qwen2.5-VL built by ``tests/support/vllm_model.py`` inside that
  virtualenv, into ``.cache/monitor-tests/`` (:func:`ensure_tiny_model`).
* The server itself (:class:`VllmServer`): ``scripts/vllm-serve --env-file
  config/vllm.env.example`` — the launcher and settings file the unit
  ``systemd/vllm-qwen2.5-vl.service`` uses, so the flags tested are the flags shipped — with
  only the Python, the model path, the port and the sizes overridden (through the environment,
  which wins over the env file by the launcher's rules).

::

    problem = environment_problem()
    if problem:
        pytest.skip(problem)
    model = ensure_tiny_model()
    with VllmServer(model) as server:
        server.base_url  # http://127.0.0.1:PORT/v1

Exceptions::

    RuntimeError
    └── VllmServerError
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from monitor.sim.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VLLM_TEST_VENV", ROOT / ".venv-vllm"))
"""vLLM's virtualenv (the one ``scripts/vllm-cpu-env.sh`` makes)."""
VENV_PYTHON = VENV / "bin" / "python"
ENV_SCRIPT = ROOT / "scripts" / "vllm-cpu-env.sh"
LAUNCHER = ROOT / "scripts" / "vllm-serve"
ENV_FILE = ROOT / "config" / "vllm.env.example"
UNIT = ROOT / "systemd" / "vllm-qwen2.5-vl.service"
MODEL_SCRIPT = Path(__file__).resolve().with_name("vllm_model.py")
CACHE = Path(os.environ.get("MONITOR_TEST_CACHE", ROOT / ".cache" / "monitor-tests"))
TINY_MODEL = CACHE / "tiny-qwen2.5-vl"

SERVED_MODEL_NAME = "Qwen2.5-VL"
"""The unit's ``--served-model-name`` (from the env file); monitor's default ``vlm.model``."""

# The sizes overridden for a CPU with a tiny model. Everything else comes from the env file.
SIZES = {
    # The unit's context length stays: it is what the "image too large" error is about.
    "SERVE_MAX_MODEL_LEN": "4096",
    # A CPU has no GPU memory share; 128 MiB of KV cache holds a few 4096-token sequences
    # of the tiny model (2 layers, 1 KV head of 64).
    "SERVE_KV_CACHE_MEMORY_BYTES": str(128 * 1024 * 1024),
    # No graph capture: the server starts faster, and a CPU gains nothing from it here.
    "SERVE_ENFORCE_EAGER": "1",
    # The server-side pixel cap raised to Qwen's own maximum (16384 tokens) so the daemon's
    # pixel budget alone decides the image size, as it does when both are set alike; with the
    # unit's cap an over-budget image would be shrunk silently by the server and could never
    # reach the context limit the error tests need.
    "SERVE_MAX_PIXELS": str(16384 * 28 * 28),
}

START_TIMEOUT_S = 300.0
"""Measured 42-70 s from start to ``/health``; generous for a loaded CI machine."""
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 4000


class VllmServerError(RuntimeError):
    """vLLM could not be prepared or started (the message carries the reason and log tail)."""


def environment_problem() -> str | None:
    """Why the real-vLLM tests cannot run here, or ``None`` when the virtualenv is ready."""
    failed = VENV.with_name(VENV.name + ".failed")
    if failed.exists():
        reason = failed.read_text().strip()
        return (f"vLLM for the CPU could not be installed here: {reason} "
                f"(scripts/vllm-cpu-env.sh; log {VENV.name}.install.log)")
    stamp = VENV / ".monitor-vllm-stamp"
    if not stamp.exists():
        return (f"vLLM's virtualenv {VENV} is not prepared: run scripts/vllm-cpu-env.sh "
                f"(`make test` does)")
    if not LAUNCHER.exists() or not ENV_FILE.exists():
        return f"the vLLM launcher {LAUNCHER} or its env file {ENV_FILE} is missing"
    return None


def vllm_version() -> str:
    """The installed vLLM's version (from the distribution metadata; no vLLM import)."""
    result = subprocess.run(
        [str(VENV_PYTHON), "-c",
         "import importlib.metadata as m; print(m.version('vllm-cpu'), m.version('torch'))"],
        capture_output=True, text=True, check=True, timeout=60)
    vllm, torch = result.stdout.split()
    return f"vllm-cpu {vllm} (torch {torch})"


def _model_ready(directory: Path, version: int) -> bool:
    marker = directory / "monitor-tiny-model.json"
    if not marker.exists():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("build_version") == version)
    except (ValueError, OSError):
        return False


def _build_version() -> int:
    # Read from the builder's source rather than importing it: it imports transformers & co.
    for line in MODEL_SCRIPT.read_text().splitlines():
        if line.startswith("BUILD_VERSION = "):
            return int(line.split("=", 1)[1])
    raise VllmServerError(f"no BUILD_VERSION in {MODEL_SCRIPT}")


def ensure_tiny_model(directory: Path = TINY_MODEL) -> Path:
    """The tiny Qwen2.5-VL in ``directory``, built there first if missing or outdated.

    Built into a temporary sibling and renamed, so an interrupted build never leaves a
    half-written model that looks complete.
    """
    version = _build_version()
    if _model_ready(directory, version):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    try:
        result = subprocess.run(
            [str(VENV_PYTHON), str(MODEL_SCRIPT), "build", str(staging)],
            capture_output=True, text=True, timeout=600, env=_offline_env(), check=False)
        if result.returncode != 0:
            raise VllmServerError(f"building the tiny model failed: "
                                  f"{(result.stderr or result.stdout)[-LOG_TAIL_CHARS:]}")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def count_text_tokens(body: dict[str, Any], model: Path = TINY_MODEL) -> tuple[int, int]:
    """(prompt tokens with one token per image, images) of a chat request body, counted with
    the tiny model's own tokenizer and chat template (in vLLM's virtualenv, not the server)."""
    result = subprocess.run(
        [str(VENV_PYTHON), str(MODEL_SCRIPT), "count-text", str(model)],
        input=json.dumps(body), capture_output=True, text=True, timeout=120,
        env=_offline_env(), check=False)
    if result.returncode != 0:
        raise VllmServerError(f"counting tokens failed: {result.stderr[-LOG_TAIL_CHARS:]}")
    counted = json.loads(result.stdout)
    return int(counted["tokens"]), int(counted["images"])


def _offline_env() -> dict[str, str]:
    """The environment for vLLM's processes: the unit's offline settings, no stray knobs."""
    env = {k: v for k, v in os.environ.items()
           # VLLM_CPU_KVCACHE_SPACE silently overrides --kv-cache-memory-bytes (measured);
           # SERVE_* from a developer's shell would override the env file under test.
           if k != "VLLM_CPU_KVCACHE_SPACE" and not k.startswith(("SERVE_", "VIRTUAL_ENV",
                                                                   "PYTHON"))}
    # As the unit sets them (Environment= lines): local model only, no usage statistics.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1")
    return env


def launcher_argv(model: Path, port: int) -> list[str]:
    """The server's command line as the launcher builds it from the env file + overrides."""
    result = subprocess.run(
        [str(LAUNCHER), "--env-file", str(ENV_FILE), "--print-argv"],
        capture_output=True, text=True, timeout=30, check=False,
        env=_server_env(model, port))
    if result.returncode != 0:
        raise VllmServerError(f"{LAUNCHER.name} refused the settings: {result.stderr.strip()}")
    return result.stdout.splitlines()


def _server_env(model: Path, port: int) -> dict[str, str]:
    env = _offline_env()
    env.update(SIZES)
    env.update(SERVE_PYTHON=str(VENV_PYTHON), SERVE_MODEL=str(model), SERVE_PORT=str(port),
               SERVE_HOST="127.0.0.1")
    # vLLM's caches (compiled kernels, processor cache) out of the user's home directory.
    env.setdefault("VLLM_CACHE_ROOT", str(CACHE / "vllm-cache"))
    return env


class VllmServer:
    """vLLM's OpenAI server on a free loopback port, started with ``scripts/vllm-serve``.

    ``stop()`` and ``start()`` may be called again (the restart test); the port stays the same
    so a client configured with :attr:`base_url` reconnects to the new process.
    """

    def __init__(self, model: Path, *, port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.model = model
        self.port = port or free_port()
        self.log_path = log_path or CACHE / f"vllm-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: list[float] = []
        """Seconds from launch to ``/health`` 200, one entry per start."""

    @property
    def base_url(self) -> str:
        """The OpenAI API root, as monitor's ``vlm.base_url`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Launch the server and wait for ``/health``; raises :class:`VllmServerError`."""
        if self.process is not None and self.process.poll() is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log: IO[bytes]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            # Its own session: stop() signals the whole group (vLLM's engine core is a child).
            self.process = subprocess.Popen(
                [str(LAUNCHER), "--env-file", str(ENV_FILE)], stdout=log,
                stderr=subprocess.STDOUT, cwd=ROOT, env=_server_env(self.model, self.port),
                start_new_session=True)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VllmServerError(f"vLLM exited with {self.process.returncode} while "
                                      f"starting: {self.log_tail()}")
            if self.healthy():
                self.start_seconds.append(time.monotonic() - started)
                return
            time.sleep(1.0)
        self.stop()
        raise VllmServerError(f"vLLM did not answer /health within {timeout_s:g} s: "
                              f"{self.log_tail()}")

    def healthy(self) -> bool:
        """Whether ``GET /health`` answers 200 now."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after a grace period; idempotent."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # The engine core may outlive the API process by a moment; it is in the same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
