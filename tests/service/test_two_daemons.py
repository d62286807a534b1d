"""Beyond one box: two daemons on one real Mosquitto, each with its own cameras, client_id,
state directory and topic prefix (the documented way to split a site across servers), keep
their availability, retained state and Home Assistant discovery apart: starting one leaves the
other's retained topics alone, and stopping one marks only its own entities unavailable."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from monitor.sim.broker import MosquittoBroker
from tests.support.processes import DaemonProcess, SimProcess, wait_for

pytestmark = [pytest.mark.e2e]

BOXES = {"box-a": "gate", "box-b": "yard"}
"""Daemon name (also its topic prefix's last level) -> its one camera."""


def write_config(directory: Path, box: str, broker: MosquittoBroker, sim: SimProcess,
                 clip: Path) -> Path:
    camera = BOXES[box]
    directory.mkdir()
    path = directory / "monitor.toml"
    path.write_text(f"""
state_dir = "{directory / 'state'}"

[vlm]
base_url = "{sim.base_url}"
timeout_s = 10

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "monitor-{box}"
topic_prefix = "site/{box}"
discovery = true

[defaults]
interval_s = 1.0
hazards = ["fire"]
open_timeout_s = 5
read_timeout_s = 5

[telemetry]
enabled = false

[[cameras]]
id = "{camera}"
url = "{clip}"
loop = true
""")
    return path


async def follow(broker: MosquittoBroker, name: str, state: dict[str, bytes],
                 subscribed: asyncio.Event) -> None:
    """Keep ``state`` as the latest payload of every topic under site/ and homeassistant/
    (an empty retained payload deletes it), retained ones first."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=name) as client:
        await client.subscribe([("site/#", 1), ("homeassistant/#", 1)])
        subscribed.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            if message.payload:
                state[str(message.topic)] = message.payload
            else:
                state.pop(str(message.topic), None)


async def retained(broker: MosquittoBroker, name: str) -> dict[str, bytes]:
    """The retained messages under site/ and homeassistant/ now, as a new subscriber gets
    them."""
    state: dict[str, bytes] = {}
    subscribed = asyncio.Event()
    task = asyncio.create_task(follow(broker, name, state, subscribed))
    await subscribed.wait()
    await asyncio.sleep(1.0)  # retained messages arrive right after the subscription
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return state


def discovery_topic(box: str, camera: str) -> str:
    return f"homeassistant/binary_sensor/site_{box}_{camera}/fire/config"


@pytest.mark.asyncio
async def test_two_daemons_on_one_broker_keep_their_state_apart(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess,
        scene_clips: dict[str, Path]) -> None:
    configs = {box: write_config(tmp_path / box, box, mosquitto, sim_process,
                                 scene_clips["quiet"]) for box in BOXES}
    daemons = {box: DaemonProcess(configs[box], tmp_path / f"{box}.log") for box in BOXES}
    state: dict[str, bytes] = {}

    def complete(box: str, camera: str) -> bool:
        return (state.get(f"site/{box}/availability") == b"online"
                and f"site/{box}/{camera}/verdict" in state
                and discovery_topic(box, camera) in state)

    async def wait_complete(*boxes: str) -> None:
        try:
            await wait_for(lambda: all(complete(b, BOXES[b]) for b in boxes), timeout_s=40)
        except TimeoutError:
            pytest.fail(f"retained state of {boxes} incomplete: {sorted(state)}; logs: "
                        + " | ".join(daemons[b].log_tail(1500) for b in boxes))

    subscribed = asyncio.Event()
    viewer = asyncio.create_task(follow(mosquitto, "viewer", state, subscribed))
    await subscribed.wait()
    try:
        daemons["box-a"].start()
        await wait_complete("box-a")
        a_before = dict(state)
        # The second daemon's start-up reconciles only what it owns (its state directory).
        daemons["box-b"].start()
        await wait_complete("box-a", "box-b")
        state = await retained(mosquitto, "late-viewer")
        for topic in ("site/box-a/availability", "site/box-a/gate/fire",
                      discovery_topic("box-a", "gate")):
            assert state[topic] == a_before[topic], topic
        a_entity = json.loads(state[discovery_topic("box-a", "gate")])
        b_entity = json.loads(state[discovery_topic("box-b", "yard")])
        assert a_entity["availability_topic"] == "site/box-a/availability"
        assert b_entity["availability_topic"] == "site/box-b/availability"
        assert a_entity["unique_id"] != b_entity["unique_id"]
        assert a_entity["state_topic"] == "site/box-a/gate/fire"
        # No daemon published under the other's prefix or for the other's camera.
        assert not any(t.startswith(("site/box-a/yard", "site/box-b/gate")) for t in state)

        # Stopping one: only its availability goes offline; both keep their discovery.
        assert await daemons["box-a"].stop() == 0
        after = await retained(mosquitto, "viewer-after")
        assert after["site/box-a/availability"] == b"offline"
        assert after["site/box-b/availability"] == b"online"
        assert discovery_topic("box-a", "gate") in after
        assert discovery_topic("box-b", "yard") in after
        assert daemons["box-b"].running
    finally:
        viewer.cancel()
        await asyncio.gather(viewer, return_exceptions=True)
        for daemon in daemons.values():
            if daemon.running:
                try:
                    await daemon.stop(15)
                except subprocess.TimeoutExpired:
                    await daemon.kill()
