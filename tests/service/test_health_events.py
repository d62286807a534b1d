"""End to end: camera health events. `monitor run` as a subprocess reads a looped file whose
picture freezes and then goes black, the VLM simulator answers, a real Mosquitto carries the
events to a test subscriber on `<prefix>/health`.

The clip (the quiet scene, 16 s): live until 3 s, frozen (the stream plays, the picture is
stuck) from 3 s to 7 s, live, black from 9 s to 13 s, live. With thresholds of 1.5 s each
fault starts a health event that ends when the picture comes back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from jsonschema import Draft202012Validator

from monitor.alerts.payloads import HealthEventPayload, schema_text
from monitor.sim.broker import MosquittoBroker
from monitor.sim.scenes import PRESETS, write_scene
from tests.support.processes import DaemonProcess, SimProcess, wait_for

pytestmark = [pytest.mark.e2e]


def write_config(path: Path, broker: MosquittoBroker, sim: SimProcess, clip: Path) -> None:
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[vlm]
base_url = "{sim.base_url}"
timeout_s = 10

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "monitor-health"

[defaults]
interval_s = 0.5
hazards = ["fire"]
open_timeout_s = 5
read_timeout_s = 5

[health]
frozen_after_s = 1.5
blank_after_s = 1.5

[telemetry]
enabled = false

[[cameras]]
id = "yard"
url = "{clip}"
loop = true
""")


async def watch(broker: MosquittoBroker, events: list[dict[str, Any]],
                subscribed: asyncio.Event) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="health-subscriber") as client:
        await client.subscribe("monitor/health", qos=1)
        subscribed.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            assert not message.retain
            events.append(json.loads(message.payload))


def lifecycle(events: list[dict[str, Any]], problem: str) -> list[str]:
    return [e["type"] for e in events if e["problem"] == problem]


@pytest.mark.asyncio
async def test_a_frozen_and_a_black_picture_each_start_and_end_a_health_event(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess) -> None:
    scene = dataclasses.replace(PRESETS["quiet"](), duration_s=16.0)
    clip = write_scene(scene, tmp_path / "faulty.mp4", frozen=[(3.0, 7.0)],
                       blank=[(9.0, 13.0)])
    config = tmp_path / "monitor.toml"
    write_config(config, mosquitto, sim_process, clip)
    events: list[dict[str, Any]] = []
    subscribed = asyncio.Event()
    viewer = asyncio.create_task(watch(mosquitto, events, subscribed))
    await subscribed.wait()
    try:
        async with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            def both_over() -> bool:
                return all(lifecycle(events, p)[:2] == ["start", "end"]
                           for p in ("frozen", "blank"))

            try:
                await wait_for(both_over, timeout_s=45)
            except TimeoutError:
                pytest.fail(f"no frozen and blank start+end within 45 s; health events: "
                            f"{events}; log: {daemon.log_tail()}")
            exit_code = await daemon.stop()
    finally:
        viewer.cancel()
    assert exit_code == 0, daemon.log_tail()

    validator = Draft202012Validator(json.loads(schema_text(HealthEventPayload)))
    for event in events:
        validator.validate(event)
    for problem in ("frozen", "blank"):
        start, end = [e for e in events if e["problem"] == problem][:2]
        assert start["camera"] == end["camera"] == "yard"
        assert start["id"] == end["id"]
        assert end["end_reason"] == "recovered"
        assert start["started_at"] < start["at"]  # it began its threshold before the start
    frozen_start = next(e for e in events if e["problem"] == "frozen")
    blank_start = next(e for e in events if e["problem"] == "blank")
    assert frozen_start["at"] < blank_start["at"]  # in the clip's order
    # A black picture is blank, not also frozen; a live camera raises nothing else.
    assert {e["problem"] for e in events} == {"frozen", "blank"}, events
    log_text = daemon.log_path.read_text()
    assert "health problem frozen" in log_text
