"""End to end with zoom-in verification: `monitor run` as a subprocess on two looping local
clips, the VLM simulator as a process, a real Mosquitto and a test subscriber.

One camera sees a worker in an orange hi-vis vest (the simulator calls it fire on the whole
frame, and a vest on the crop), the other a real fire. With fire under verification the vest
raises nothing while the fire still alerts, with its crops as evidence.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from monitor.sim.broker import MosquittoBroker
from monitor.sim.scenes import Scene, ScriptedObject, write_scene
from tests.service.test_e2e import events_of, watch
from tests.support.processes import DaemonProcess, SimProcess, wait_for

pytestmark = [pytest.mark.e2e]

FOREVER = 1e9


def clip(path: Path, *objects: ScriptedObject) -> Path:
    scene = Scene(width=640, height=360, fps=10, gop=10, duration_s=6.0, objects=objects,
                  name=path.stem)
    return write_scene(scene, path)


@pytest.mark.asyncio
async def test_zoom_in_blocks_the_vest_and_lets_the_fire_alert(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess) -> None:
    vest = clip(tmp_path / "vest.mp4",
                ScriptedObject("worker_orange_vest", 0.0, FOREVER, x=0.40, y=0.90))
    fire = clip(tmp_path / "fire.mp4", ScriptedObject("fire", 0.0, FOREVER, x=0.30, y=0.80))
    config = tmp_path / "monitor.toml"
    config.write_text(f"""
state_dir = "{tmp_path / 'state'}"

[vlm]
base_url = "{sim_process.base_url}"
timeout_s = 10
language = "en"

[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "monitor-e2e-zoom"

[defaults]
interval_s = 1.0
confirm_frames = 2
hazards = ["fire"]
change_gate = false  # every interval judged: the vest gets its chances to alert

[verification]
hazards = ["fire"]

[telemetry]
port = 0

[[cameras]]
id = "vest-cam"
url = "{vest}"
loop = true

[[cameras]]
id = "fire-cam"
url = "{fire}"
loop = true
""")
    messages: list[tuple[str, bytes, bool]] = []
    subscribed = asyncio.Event()
    viewer = asyncio.create_task(watch(mosquitto, messages, subscribed))
    await subscribed.wait()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")

    def vest_verdicts() -> list[dict[str, object]]:
        return [json.loads(p) for t, p, _ in messages if t == "monitor/vest-cam/verdict"]

    try:
        async with daemon:
            try:
                # The fire alerts, and the vest camera has had enough whole-frame "fire"
                # verdicts to have alerted without verification (confirm_frames = 2).
                await wait_for(lambda: any(e["type"] == "start" for e in events_of(messages))
                               and len(vest_verdicts()) >= 3, timeout_s=60)
            except TimeoutError:
                pytest.fail(f"no fire alert and vest verdicts within 60 s; events: "
                            f"{events_of(messages)}; log: {daemon.log_tail()}")
            exit_code = await daemon.stop()
    finally:
        viewer.cancel()
    log_text = daemon.log_path.read_text()
    assert exit_code == 0, log_text[-3000:]
    events = events_of(messages)
    assert {e["camera"] for e in events} == {"fire-cam"}, events
    start = next(e for e in events if e["type"] == "start")
    verification = start["verification"]
    assert isinstance(verification, dict)
    assert verification["outcome"] == "confirmed"
    [check] = verification["checks"]
    assert check["answer"] == "yes"
    assert Path(check["evidence"]).is_file()  # the crop, saved as evidence
    # The vest: called fire on the whole frame, rejected on the crop, every time.
    for verdict in vest_verdicts():
        assert verdict["unverified_answer"]["fire"]["answer"] == "yes"  # type: ignore[index]
        assert verdict["answer"]["fire"]["answer"] == "no"  # type: ignore[index]
        assert verdict["verification"][0]["outcome"] == "rejected"  # type: ignore[index]
    assert "zoom-in fire rejected" in log_text
