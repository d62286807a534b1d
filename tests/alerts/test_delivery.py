"""Durable delivery with a real Mosquitto: broker restarts mid-alert, and the daemon SIGKILLed
with events in its outbox and restarted (broker started after the daemon)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.outbox import Outbox
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent, HazardTracker, TrackerSettings
from monitor.config import MqttConfig
from monitor.model.answer import Answer, Hazard
from monitor.sim.broker import MosquittoBroker, free_port
from tests.conftest import ROOT
from tests.support.mqtt_client import Subscriber, dedupe, retained, running, wait_until
from tests.support.processes import SimProcess, clean_env


def answer(fire: str = "no", smoke: str = "no", helmet: str = "all_worn",
           missing: int = 0) -> Answer:
    return Answer.model_validate({
        "fire": {"answer": fire}, "smoke": {"answer": smoke},
        "helmet": {"status": helmet, "missing_count": missing}})


@pytest.mark.asyncio
async def test_broker_restarts_while_three_hazards_start_and_end(tmp_path: Path) -> None:
    """Two cameras, three hazards; the broker is stopped and started twice while alerts start,
    update and end. After de-duplication by (id, revision) the subscriber has every event
    exactly once, in order per camera, and the retained state matches the trackers."""
    broker = MosquittoBroker(persistence_dir=tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker)
    publisher = MqttPublisher(
        MqttConfig(host=broker.host, port=broker.port, client_id="monitor-delivery"),
        Outbox(tmp_path / "outbox.sqlite3"), rng=random.Random(5))
    rules = TrackerSettings(confirm_frames=2, clear_frames=2)
    trackers = {"cam-a": HazardTracker("cam-a", [Hazard.FIRE, Hazard.SMOKE], rules),
                "cam-b": HazardTracker("cam-b", [Hazard.NO_HELMET], rules)}
    published: list[AlertEvent] = []
    clock = 1_700_000_000.0

    def feed(camera: str, verdict: Answer, times: int = 2) -> None:
        nonlocal clock
        for _ in range(times):
            clock += 1
            for alert in trackers[camera].update(verdict, clock):
                publisher.publish_event(alert)
                published.append(alert)

    try:
        await subscriber.start()
        async with running(publisher):
            feed("cam-a", answer(fire="yes"))                        # fire starts
            feed("cam-b", answer(helmet="some_missing", missing=1))  # no_helmet starts
            await asyncio.to_thread(broker.stop)                     # --- broker down
            feed("cam-a", answer(fire="yes", smoke="yes"))           # smoke starts
            feed("cam-b", answer(helmet="some_missing", missing=2))  # no_helmet update
            feed("cam-a", answer(smoke="yes"))                       # fire ends
            await asyncio.to_thread(broker.start)                    # --- broker back
            feed("cam-a", answer())                                  # smoke ends
            await wait_until(lambda: publisher.pending == 0, 30, "the outbox to drain")
            await asyncio.to_thread(broker.stop)                     # --- down again
            feed("cam-b", answer())                                  # no_helmet ends
            feed("cam-a", answer(fire="yes"))                        # a second fire
            await asyncio.sleep(0.3)
            assert publisher.pending > 0  # waiting in the outbox
            await asyncio.to_thread(broker.start)                    # --- back
            expected = len(published)
            await wait_until(lambda: len(dedupe(subscriber.events())) >= expected, 30,
                             f"{expected} distinct events")
        await subscriber.stop()
        received = dedupe(subscriber.events())
        assert len(received) == expected == 8
        for camera in ("cam-a", "cam-b"):
            sent = [(e.event_id, e.revision, e.type.value) for e in published
                    if e.camera_id == camera]
            got = [(e["id"], e["revision"], e["type"]) for e in received
                   if e["camera"] == camera]
            assert got == sent  # every event once, in order per camera
        state = await retained(broker, "monitor/+/+")
        for camera, tracker in trackers.items():
            for hazard in tracker.watched:
                wanted = b"ON" if tracker.is_active(hazard) else b"OFF"
                assert state[f"monitor/{camera}/{hazard.value}"] == wanted
        assert publisher.dropped == 0
    finally:
        await subscriber.stop()
        broker.stop()


def outbox_events(path: Path) -> list[bytes]:
    """Event payloads in a daemon's outbox (read-only, while it runs or after it died)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            rows = db.execute("SELECT payload FROM outbox WHERE topic = 'monitor/events' "
                              "ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # the daemon is still creating the schema
            return []
    return [bytes(row[0]) for row in rows]


def daemon_config(path: Path, *, port: int, sim: SimProcess, clip: Path) -> None:
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[vlm]
base_url = "{sim.base_url}"
timeout_s = 10

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "monitor-sigkill"

[defaults]
interval_s = 0.5
confirm_frames = 2
clear_frames = 2

[telemetry]
enabled = false

[[cameras]]
id = "yard"
url = "{clip}"
loop = true
""")


class DaemonProcess:
    """``monitor run`` as a child process, its output appended to one log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "-c", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=clean_env())

    async def stop(self, signum: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return await asyncio.to_thread(self.process.wait, 20)

    def reap(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


@pytest.mark.asyncio
async def test_sigkilled_daemon_delivers_its_outbox_after_restart(
        tmp_path: Path, sim_process: SimProcess, scene_clips: dict[str, Path]) -> None:
    """The daemon runs before the broker exists; a fire alert starts and waits in the
    outbox; SIGKILL. Restarted (the fire is out by then), again before the broker, it delivers
    the stored start once the broker is up and ends the alert it can no longer track, leaving
    the retained state OFF."""
    port = free_port()
    config = tmp_path / "monitor.toml"
    outbox = tmp_path / "state" / "outbox.sqlite3"
    daemon_config(config, port=port, sim=sim_process, clip=scene_clips["fire"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        await wait_until(lambda: any(b'"start"' in p for p in outbox_events(outbox)), 60,
                         "a fire start in the outbox")
        await daemon.stop(signal.SIGKILL)
    except AssertionError:
        pytest.fail(f"no start event stored; log: {daemon.tail()}")
    finally:
        daemon.reap()
    assert any(b'"start"' in p for p in outbox_events(outbox))

    # Reality has changed: the camera now shows a quiet scene. The subscriber's persistent
    # session is made first (a broker with persistence), then the broker goes away again and
    # the daemon starts before it.
    daemon_config(config, port=port, sim=sim_process, clip=scene_clips["quiet"])
    broker = MosquittoBroker(port=port, persistence_dir=tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker)
    try:
        await subscriber.start()
        await asyncio.to_thread(broker.stop)
        first_run = len(daemon.log.read_bytes())
        daemon.start()
        try:
            await wait_until(lambda: b"reconnecting in" in daemon.log.read_bytes()[first_run:],
                             30, "the restarted daemon to miss the broker")
            await asyncio.to_thread(broker.start)
            await wait_until(lambda: any(e["type"] == "end" for e in subscriber.events()), 30,
                             "the stale alert's end")
            assert await daemon.stop(signal.SIGTERM) == 0, daemon.tail()
        except AssertionError as exc:
            pytest.fail(f"{exc}; events: {subscriber.events()}; log: {daemon.tail()}")
        finally:
            daemon.reap()
        check_stale_alert_ended(dedupe(subscriber.events()))
        state = await retained(broker, "monitor/#")
        assert state["monitor/yard/fire"] == b"OFF"  # no stale ON
        assert state["monitor/yard/fire/snapshot"][:2] == b"\xff\xd8"  # the JPEG, retained
        assert state["monitor/availability"] == b"offline"
        assert outbox_events(outbox) == []  # everything was acknowledged
    finally:
        await subscriber.stop()
        broker.stop()


def check_stale_alert_ended(events: list[dict[str, Any]]) -> None:
    """The start stored before the SIGKILL arrived, then its end (reason: restart)."""
    start = next(e for e in events if e["type"] == "start")
    end = next(e for e in events if e["type"] == "end")
    assert start["id"] == end["id"]
    assert (start["camera"], start["hazard"]) == ("yard", "fire")
    assert end["end_reason"] == "restart"
    assert events.index(start) < events.index(end)
    # The evidence: the frame that started it, saved under the state directory.
    snapshot = start["snapshot"]
    assert snapshot["topic"] == "monitor/yard/fire/snapshot"
    assert Path(snapshot["path"]).read_bytes()[:2] == b"\xff\xd8"
    assert start["model"]
    assert start["confirming_verdicts"] == 2


@pytest.mark.asyncio
async def test_reconnect_never_replays_a_stale_on(tmp_path: Path) -> None:
    """After a reconnect the publisher sends its acknowledged retained state again (a broker
    without persistence lost it), but not where a newer value waits in the outbox: an alert
    that ended during the outage never flashes ON again."""
    broker = MosquittoBroker(persistence_dir=tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker, "monitor/cam/#")
    publisher = MqttPublisher(MqttConfig(host=broker.host, port=broker.port,
                                         client_id="monitor-replay"),
                              Outbox(tmp_path / "outbox.sqlite3"), rng=random.Random(2))
    try:
        await subscriber.start()
        async with running(publisher):
            publisher.set_hazard_state("cam", Hazard.SMOKE, on=True)
            publisher.set_hazard_state("cam", Hazard.FIRE, on=True)
            await wait_until(lambda: publisher.pending == 0 and publisher.connected, 10,
                             "the ON states acknowledged")
            await asyncio.to_thread(broker.stop)
            seen_before = len(subscriber.messages)
            publisher.set_hazard_state("cam", Hazard.FIRE, on=False)  # ends during the outage
            await asyncio.to_thread(broker.start)
            await wait_until(lambda: b"OFF" in [m.payload for m in
                                                subscriber.on("monitor/cam/fire")], 30,
                             "the OFF after the outage")
            await wait_until(lambda: publisher.pending == 0, 10, "the outbox to drain")
        await subscriber.stop()
        after = [m for m in subscriber.messages[seen_before:] if m.topic == "monitor/cam/fire"]
        assert [m.payload for m in after if not m.retain] == [b"OFF"]  # no ON in between
        # The unchanged state is sent again live (the retained copy on resubscribe aside).
        assert [m.payload for m in subscriber.messages[seen_before:]
                if m.topic == "monitor/cam/smoke" and not m.retain] == [b"ON"]
    finally:
        await subscriber.stop()
        broker.stop()
