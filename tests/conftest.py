"""Shared fixtures: real Mosquitto, the VLM simulator as a process, synthetic scene clips."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.broker import BrokerError, MosquittoBroker, free_port, wait_for_port
from monitor.sim.scenes import PRESETS, write_scene
from tests.support.processes import SimProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A private Mosquitto broker on a free port (fails, not skips, when it is missing:
    `make test` installs it)."""
    broker = MosquittoBroker()
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[SimProcess]:
    """The VLM simulator on a free port, started with the `monitor sim-vlm` command."""
    port = free_port()
    log = (tmp_path / "sim.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "sim-vlm", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    log.close()
    try:
        if not wait_for_port("127.0.0.1", port, 20):
            pytest.fail(f"simulator did not start: {(tmp_path / 'sim.log').read_text()[-2000:]}")
        yield SimProcess(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def scene_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The preset scenes as H.264 MP4 files (640x360, 10 fps, GOP 20), written once."""
    directory = tmp_path_factory.mktemp("scenes")
    clips = {}
    for name in ("fire", "quiet", "no_helmet"):
        path = directory / f"{name}.mp4"
        write_scene(PRESETS[name](), path)
        clips[name] = path
    return clips
