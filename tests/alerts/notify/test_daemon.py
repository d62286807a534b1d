"""The daemon with a notification channel that is down: MQTT gets the alert at once, the
notification waits in the channel's queue, survives a SIGKILL and is delivered after the
restart, followed by the end of the alert the kill left open (the webhook's Idempotency-Key
makes it exactly once for a receiver that de-duplicates);
no configured secret appears in the daemon's log."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from pathlib import Path

import pytest

from monitor.sim.broker import MosquittoBroker
from tests.alerts.notify import services as svc
from tests.alerts.notify.services import FakeServices
from tests.alerts.test_delivery import DaemonProcess
from tests.support.mqtt_client import Subscriber, wait_until
from tests.support.processes import SimProcess


def queued(path: Path) -> list[bytes]:
    """What waits in a channel's queue (read-only, while the daemon runs or after it died)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            rows = db.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []
    return [bytes(row[0]) for row in rows]


def write_config(path: Path, *, broker: MosquittoBroker, sim: SimProcess, clip: Path,
                 fake: FakeServices) -> None:
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[vlm]
base_url = "{sim.base_url}"
timeout_s = 10

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "monitor-notify"

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

[[notify]]
name = "hook"
type = "webhook"
url = "{fake.url('webhook')}"
secret = "{svc.WEBHOOK_SECRET}"
retry_cap_s = 1
timeout_s = 2
""")


@pytest.mark.asyncio
async def test_a_down_channel_keeps_its_notifications_through_a_sigkill(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess,
        scene_clips: dict[str, Path], fake: FakeServices) -> None:
    fake.then("webhook", *["5xx"] * 10_000)  # down until the script is cleared
    config = tmp_path / "monitor.toml"
    queue = tmp_path / "state" / "notify" / "hook.sqlite3"
    write_config(config, broker=mosquitto, sim=sim_process, clip=scene_clips["fire"],
                 fake=fake)
    subscriber = Subscriber(mosquitto)
    await subscriber.start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        await wait_until(lambda: any(e["type"] == "start" for e in subscriber.events()), 60,
                         "the fire start on MQTT while the channel is down")
        await wait_until(lambda: any(b'"start"' in p for p in queued(queue)), 10,
                         "the start in the channel's queue")
        assert fake.accepted == []
        await daemon.stop(signal.SIGKILL)
        start = next(e for e in subscriber.events() if e["type"] == "start")

        fake.script.clear()  # the service is back
        write_config(config, broker=mosquitto, sim=sim_process, clip=scene_clips["quiet"],
                     fake=fake)
        daemon.start()
        await wait_until(lambda: any(a.headers["Idempotency-Key"] == f"{start['id']}:1"
                                     for a in fake.accepted), 30,
                         "the queued start, then the end of the alert the kill left open")
        await wait_until(lambda: queued(queue) == [], 10, "the channel's queue emptied")
        assert await daemon.stop(signal.SIGTERM) == 0, daemon.tail()
    except AssertionError as exc:
        pytest.fail(f"{exc}; log: {daemon.tail()}")
    finally:
        daemon.reap()
        await subscriber.stop()
    keys = [a.headers["Idempotency-Key"] for a in fake.accepted]
    assert keys.count(f"{start['id']}:0") >= 1  # at least once; the key de-duplicates
    notification = next(a.data for a in fake.accepted
                        if a.headers["Idempotency-Key"] == f"{start['id']}:0")
    assert notification["event"]["camera"] == "yard"
    assert notification["event"]["hazard"] == "fire"
    # In order: the start stored before the kill, then the end the restart added.
    assert keys.index(f"{start['id']}:0") < keys.index(f"{start['id']}:1")
    end = next(a.data for a in fake.accepted
               if a.headers["Idempotency-Key"] == f"{start['id']}:1")
    assert end["event"]["end_reason"] == "restart"
    assert queued(queue) == []
    log = daemon.log.read_text()
    assert "notify hook: not delivered (HTTP 503" in log
    mqtt = b"\n".join(message.payload for message in subscriber.messages)
    for secret in (svc.WEBHOOK_SECRET, svc.WEBHOOK_TOKEN):
        assert secret not in log
        assert secret.encode() not in mqtt
