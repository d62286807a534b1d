"""End to end: `monitor run` as a subprocess, a real RTSP server with synthetic scenes, the VLM
simulator as a process, a real Mosquitto and a test subscriber.

The fire scene has no hazard for 4 s, fire from 4 s to 14 s, then nothing (24 s loop); each
RTSP client gets its own media from the file's start, so the timeline starts when the daemon
connects.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from monitor.sim.broker import MosquittoBroker
from tests.support.processes import DaemonProcess, SimProcess, wait_for
from tests.support.rtsp import RtspServer, rtsp_server_available

pytestmark = [pytest.mark.e2e, pytest.mark.rtsp]

RTSP_USER = "viewer"
RTSP_PASSWORD = "s3cret-Cam-pw"  # must never show up in logs or MQTT payloads


@pytest.fixture
def rtsp(scene_clips: dict[str, Path]) -> RtspServer:
    available, reason = rtsp_server_available()
    if not available:
        pytest.fail(f"RTSP test server unavailable ({reason}); `make test` installs it")
    return RtspServer({"fire": scene_clips["fire"], "quiet": scene_clips["quiet"]},
                      user=RTSP_USER, password=RTSP_PASSWORD)


def write_config(path: Path, broker: MosquittoBroker, sim: SimProcess, rtsp: RtspServer) -> None:
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[vlm]
base_url = "{sim.base_url}"
timeout_s = 10
language = "zh"

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "monitor-e2e"

[defaults]
interval_s = 1.0
confirm_frames = 2
clear_frames = 2
open_timeout_s = 5
read_timeout_s = 5

[telemetry]
port = 0

[logging]
level = "DEBUG"

[[cameras]]
id = "fire-cam"
url = "{rtsp.url('fire')}"
username = "{RTSP_USER}"
password = "{RTSP_PASSWORD}"

[[cameras]]
id = "quiet-cam"
url = "{rtsp.url('quiet')}"
username = "{RTSP_USER}"
password = "{RTSP_PASSWORD}"

[[cameras]]
id = "wrong-pw"
url = "rtsp://{RTSP_USER}:{RTSP_PASSWORD}-typo@127.0.0.1:{rtsp.port}/fire"
""")


async def watch(broker: MosquittoBroker, messages: list[tuple[str, bytes, bool]],
                subscribed: asyncio.Event) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="e2e-subscriber") as client:
        await client.subscribe("monitor/#", qos=1)
        subscribed.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            messages.append((str(message.topic), message.payload, message.retain))


def events_of(messages: list[tuple[str, bytes, bool]]) -> list[dict[str, object]]:
    return [json.loads(payload) for topic, payload, _ in messages if topic == "monitor/events"]


@pytest.mark.asyncio
async def test_fire_appears_and_goes(tmp_path: Path, mosquitto: MosquittoBroker,
                                     sim_process: SimProcess, rtsp: RtspServer) -> None:
    config = tmp_path / "monitor.toml"
    messages: list[tuple[str, bytes, bool]] = []
    subscribed = asyncio.Event()
    with rtsp:
        write_config(config, mosquitto, sim_process, rtsp)
        viewer = asyncio.create_task(watch(mosquitto, messages, subscribed))
        await subscribed.wait()
        async with DaemonProcess(config, tmp_path / "daemon.log") as daemon:
            def fire_events() -> list[dict[str, object]]:
                return [e for e in events_of(messages) if e["hazard"] == "fire"]

            try:
                await wait_for(lambda: len(fire_events()) >= 2, timeout_s=60)
            except TimeoutError:
                pytest.fail(f"no fire start+end within 60 s; events: {events_of(messages)}; "
                            f"log: {daemon.log_tail()}")
            exit_code = await daemon.stop()
        await asyncio.sleep(0.5)
        viewer.cancel()

    log_text = daemon.log_path.read_text()
    assert exit_code == 0, log_text[-3000:]
    check_fire_lifecycle(messages)
    check_other_cameras(messages)
    await check_offline_retained(mosquitto)
    # Secrets: the camera password is in no log line and no MQTT payload.
    assert RTSP_PASSWORD not in log_text
    assert not any(RTSP_PASSWORD.encode() in payload for _, payload, _ in messages)
    assert "***" in log_text  # the wrong-password camera's URL was logged, redacted


def check_fire_lifecycle(messages: list[tuple[str, bytes, bool]]) -> None:
    fire_events = [e for e in events_of(messages) if e["hazard"] == "fire"]
    start, end = fire_events[:2]
    assert start["type"] == "start"
    assert end["type"] == "end"
    assert start["camera"] == end["camera"] == "fire-cam"
    assert start["id"] == end["id"]
    assert start["confirming_verdicts"] == 2
    # Retained ON while burning, OFF after, in that order.
    states = [p for t, p, _ in messages if t == "monitor/fire-cam/fire"]
    assert b"ON" in states
    assert states[states.index(b"ON"):][-1] == b"OFF"


def check_other_cameras(messages: list[tuple[str, bytes, bool]]) -> None:
    # The quiet scene and the camera with the wrong password raise nothing.
    cameras_with_events = {e["camera"] for e in events_of(messages)}
    assert cameras_with_events <= {"fire-cam"}, events_of(messages)
    statuses = [json.loads(p) for t, p, _ in messages if t == "monitor/wrong-pw/status"]
    assert statuses
    assert not any(status["online"] for status in statuses)
    assert any(status["last_error"] for status in statuses)
    # A retained verdict per working camera.
    assert any(t == "monitor/quiet-cam/verdict" for t, _, _ in messages)


async def check_offline_retained(broker: MosquittoBroker) -> None:
    # The daemon's last word is a retained offline.
    async with aiomqtt.Client(broker.host, broker.port, identifier="late") as client:
        await client.subscribe("monitor/availability", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert message.retain
                assert message.payload == b"offline"
                break
