"""The daemon's ingest as a subscriber sees it: the retained camera status (measured fps, GOP,
decode mode) and confirm-now, with a real broker, the VLM simulator and a looping scene."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from monitor.sim.broker import MosquittoBroker
from tests.support.processes import SimProcess, clean_env

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 4.0
"""Twice the scenes' 2 s GOP: keyframes only, and confirm-now visibly faster than a tick."""


def write_config(path: Path, broker: MosquittoBroker, sim: SimProcess, clip: Path,
                 state_dir: Path) -> None:
    path.write_text(
        f'state_dir = "{state_dir}"\n'
        f'[vlm]\nbase_url = "{sim.base_url}"\ntimeout_s = 10\nmax_retries = 0\nlanguage = "en"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "ingest-test"\n'
        f"[defaults]\ninterval_s = {INTERVAL_S}\nconfirm_min_gap_s = 0.2\n"
        f"[telemetry]\nenabled = false\n"
        f'[[cameras]]\nid = "yard"\nurl = "{clip}"\nloop = true\n')


async def collect(broker: MosquittoBroker, until: Any, timeout_s: float,
                  ) -> list[tuple[str, dict[str, Any]]]:
    """JSON messages under monitor/yard/ until ``until(messages)`` holds."""
    messages: list[tuple[str, dict[str, Any]]] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="ingest-viewer") as client:
        await client.subscribe("monitor/yard/#", qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                topic = str(message.topic)
                if topic.endswith(("/status", "/verdict")):
                    payload = json.loads(bytes(message.payload))
                    messages.append((topic, payload))
                    if until(messages):
                        return messages
    return messages


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def positive_then_next(messages: list[tuple[str, dict[str, Any]]],
                       ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    verdicts = [p for t, p in messages if t.endswith("/verdict")]
    for earlier, later in itertools.pairwise(verdicts):
        if earlier["answer"]["fire"]["answer"] == "yes":
            return earlier, later
    return None


@pytest.mark.asyncio
@pytest.mark.rtsp
async def test_status_and_confirm_now(tmp_path: Path, mosquitto: MosquittoBroker,
                                      sim_process: SimProcess,
                                      scene_clips: dict[str, Path]) -> None:
    config = tmp_path / "monitor.toml"
    write_config(config, mosquitto, sim_process, scene_clips["fire"], tmp_path / "state")
    log = tmp_path / "daemon.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(config)],
                                   stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=clean_env())
    started = time.monotonic()
    try:
        messages = await collect(mosquitto, lambda m: positive_then_next(m) is not None, 40)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert time.monotonic() - started < 40, log.read_text()[-3000:]
    statuses = [p for t, p in messages if t.endswith("/status")]
    online = [s for s in statuses if s["online"]]
    assert online, (statuses, log.read_text()[-3000:])
    latest = statuses[-1]
    # The scene: 10 fps, a keyframe every 20 frames; the interval is longer than the GOP.
    assert latest["state"] == "online"
    assert latest["decode"] == "keyframes"
    assert latest["gop_frames"] == 20
    assert latest["gop_s"] == pytest.approx(2.0, abs=0.05)
    assert latest["fps"] == pytest.approx(10.0, rel=0.1)
    assert (latest["width"], latest["height"], latest["codec"]) == (640, 360, "h264")
    # Published on change, not per frame: a handful in the whole run.
    assert len(statuses) <= 6, statuses
    pair = positive_then_next(messages)
    assert pair is not None
    positive, following = pair
    gap = epoch(following["captured_at"]) - epoch(positive["captured_at"])
    # Confirm-now: the next keyframe (2 s later), not the next 4 s tick.
    assert gap < INTERVAL_S - 1.0, (gap, log.read_text()[-3000:])
