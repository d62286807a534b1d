"""End to end: site rules. `monitor run` as a subprocess reads four looped synthetic clips, the
VLM simulator judges their pixels (and boxes the people without a hard hat), a real Mosquitto
carries the events to a test subscriber.

* ``brief``: a worker without a hard hat from 2 s to 4 s (2 s), ``min_duration_s = 5``:
  nothing;
* ``lasting``: the same worker from 2 s to 10 s (8 s), ``min_duration_s = 5``: one alert,
  raised at least 5 s (capture times) after he was first seen;
* ``office`` / ``yard``: a worker without a hard hat all along, standing in the left half
  (the zone ``office``, excluded) or the right half (the zone ``yard-east``): nothing from
  ``office``, one alert from ``yard`` naming ``yard-east``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from jsonschema import Draft202012Validator

from monitor.alerts.payloads import EventPayload, schema_text
from monitor.sim.broker import MosquittoBroker
from monitor.sim.scenes import Scene, ScriptedObject, write_scene
from tests.support.processes import DaemonProcess, SimProcess, wait_for

pytestmark = [pytest.mark.e2e]

OFFICE = "[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]"
YARD_EAST = "[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]"
BAREHEADED = ("some_missing", "none_worn")


def clip(directory: Path, name: str, *, start_s: float, end_s: float, x: float) -> Path:
    scene = Scene(width=640, height=360, fps=5, gop=10, duration_s=14.0, name=name, objects=(
        ScriptedObject("worker_no_helmet", start_s, end_s, x=x, y=0.86),))
    return write_scene(scene, directory / f"{name}.mp4")


def write_config(path: Path, broker: MosquittoBroker, sim: SimProcess,
                 clips: dict[str, Path]) -> None:
    duration_rule = """
[cameras.rules.no_helmet]
min_duration_s = 5
"""
    zone_rule = f"""
[cameras.zones]
office = {OFFICE}
yard-east = {YARD_EAST}
[cameras.rules.no_helmet]
exclude_zones = ["office"]
"""
    cameras = "".join(f"""
[[cameras]]
id = "{name}"
url = "{clips[name]}"
loop = true
{duration_rule if name in ("brief", "lasting") else zone_rule}""" for name in clips)
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[vlm]
base_url = "{sim.base_url}"
timeout_s = 10

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "monitor-site-rules"

[defaults]
interval_s = 0.5
confirm_frames = 2
clear_frames = 2
hazards = ["no_helmet"]
open_timeout_s = 5
read_timeout_s = 5

[telemetry]
enabled = false
{cameras}""")


async def watch(broker: MosquittoBroker, messages: list[tuple[str, dict[str, Any]]],
                subscribed: asyncio.Event) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="rules-subscriber") as client:
        await client.subscribe("monitor/events", qos=1)
        await client.subscribe("monitor/+/verdict", qos=1)
        subscribed.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            messages.append((str(message.topic), json.loads(message.payload)))


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.asyncio
async def test_durations_and_zones_decide_which_sightings_raise_an_alert(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess) -> None:
    clips = {
        "brief": clip(tmp_path, "brief", start_s=2.0, end_s=4.0, x=0.7),
        "lasting": clip(tmp_path, "lasting", start_s=2.0, end_s=10.0, x=0.7),
        "office": clip(tmp_path, "office", start_s=0.0, end_s=14.0, x=0.25),
        "yard": clip(tmp_path, "yard", start_s=0.0, end_s=14.0, x=0.75),
    }
    config = tmp_path / "monitor.toml"
    write_config(config, mosquitto, sim_process, clips)
    messages: list[tuple[str, dict[str, Any]]] = []
    subscribed = asyncio.Event()
    viewer = asyncio.create_task(watch(mosquitto, messages, subscribed))
    await subscribed.wait()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")

    def events() -> list[dict[str, Any]]:
        return [payload for topic, payload in messages if topic == "monitor/events"]

    def started(camera: str) -> list[dict[str, Any]]:
        return [e for e in events() if e["camera"] == camera and e["type"] == "start"]

    def bareheaded_verdicts(camera: str) -> list[dict[str, Any]]:
        return [p for t, p in messages if t == f"monitor/{camera}/verdict"
                and p["answer"]["helmet"]["status"] in BAREHEADED]

    def brief_sighting_over() -> bool:
        """The brief camera saw the worker and then saw him gone."""
        verdicts = [p for t, p in messages if t == "monitor/brief/verdict"]
        seen = [v["answer"]["helmet"]["status"] in BAREHEADED for v in verdicts]
        return True in seen and False in seen[seen.index(True):]

    try:
        async with daemon:
            try:
                await wait_for(lambda: bool(started("lasting") and started("yard"))
                               and brief_sighting_over(), timeout_s=45)
            except TimeoutError:
                pytest.fail(f"no start from lasting and yard within 45 s; events: {events()}; "
                            f"log: {daemon.log_tail()}")
            exit_code = await daemon.stop()
    finally:
        viewer.cancel()
    assert exit_code == 0, daemon.log_tail()

    validator = Draft202012Validator(json.loads(schema_text(EventPayload)))
    for event in events():
        validator.validate(event)
    # The model did see both short- and long-staying workers and the office worker.
    for camera in ("brief", "lasting", "office", "yard"):
        assert bareheaded_verdicts(camera), f"no bareheaded verdict from {camera}"
    assert {e["camera"] for e in events()} == {"lasting", "yard"}, events()
    [lasting] = started("lasting")
    first_seen = epoch(bareheaded_verdicts("lasting")[0]["captured_at"])
    assert epoch(lasting["started_at"]) - first_seen >= 5.0
    [yard] = started("yard")
    assert yard["zones"] == ["yard-east"]
    assert yard["missing_helmets"] == 1
