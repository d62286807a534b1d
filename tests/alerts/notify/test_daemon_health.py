"""The daemon notifies a camera health problem: a camera whose stream cannot be reached goes
``offline`` on ``<prefix>/health`` and to the webhook channel that takes ``health``, not to the
one that takes alerts only."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from monitor.sim.broker import MosquittoBroker, free_port
from tests.alerts.notify import services as svc
from tests.alerts.notify.services import FakeServices
from tests.alerts.test_delivery import DaemonProcess
from tests.support.mqtt_client import Subscriber, wait_until
from tests.support.processes import SimProcess


def channel(name: str, events: str, fake: FakeServices) -> str:
    return f"""
[[notify]]
name = "{name}"
type = "webhook"
url = "{fake.url('webhook')}"
secret = "{svc.WEBHOOK_SECRET}"
headers = {{ X-Tenant = "{name}" }}
events = {events}
retry_cap_s = 1
timeout_s = 2
"""


@pytest.mark.asyncio
async def test_an_unreachable_camera_is_notified_as_offline(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess,
        fake: FakeServices) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(f"""
state_dir = "{tmp_path / 'state'}"

[vlm]
base_url = "{sim_process.base_url}"

[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "monitor-notify-health"

[telemetry]
enabled = false

[health]
offline_after_s = 1

[[cameras]]
id = "gate"
url = "rtsp://127.0.0.1:{free_port()}/nothing-listens"
""" + channel("maintenance", '["health"]', fake) + channel("alerts", '["start", "end"]', fake))
    subscriber = Subscriber(mosquitto)
    await subscriber.start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()

    def notified() -> list[dict[str, object]]:
        return [a.data["notification"] for a in fake.accepted
                if a.headers.get("X-Tenant") == "maintenance"]

    def any_notified() -> bool:
        return bool(notified())

    try:
        await wait_until(any_notified, 60, "the offline camera's notification")
        assert await daemon.stop(signal.SIGTERM) == 0, daemon.tail()
    except AssertionError as exc:
        pytest.fail(f"{exc}; log: {daemon.tail()}")
    finally:
        daemon.reap()
        await subscriber.stop()
    first = notified()[0]
    assert first["kind"] == "health_start"
    assert first["problem"] == "offline"
    assert first["camera"] == "gate"
    assert first["title"] == "Camera problem: camera gate offline"
    published = [m for m in subscriber.messages if m.topic.endswith("/health")]
    assert published, "the same event on MQTT"
    assert not any(a.headers.get("X-Tenant") == "alerts" for a in fake.accepted)
