"""One redactor for every exit: a secret a server quotes back never leaves the process.

The model server here is a real HTTP gateway that answers 401 and quotes the API key it was
sent in its error body; the daemon runs in-process against a real Mosquitto broker and serves
/readyz over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from monitor.alerts.outbox import Outbox
from monitor.alerts.publisher import MqttPublisher
from monitor.config import MqttConfig, config_from_mapping
from monitor.redaction import REDACTED, Redactor, register_secrets
from monitor.service.supervisor import Supervisor
from monitor.sim.broker import MosquittoBroker, free_port
from monitor.sim.scenes import PRESETS, render_frame
from monitor.tools.cli import main
from tests.support.echo_gateway import EchoingGateway
from tests.support.mqtt_client import Subscriber, running, wait_until

API_KEY = "sk-live-4f9c2b7e"


# --- The redactor itself. ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "error: Incorrect API key provided: p@ss/w:rd!x",
    "rtsp://admin:p%40ss%2Fw%3Ard%21x@10.0.0.5/ch1",
    '{"error": "key \\"p@ss/w:rd!x\\""}',
])
def test_each_form_of_a_secret_is_masked(text: str) -> None:
    redactor = Redactor(["p@ss/w:rd!x"])
    masked = redactor(text)
    assert "p@ss/w:rd!x" not in masked
    assert "p%40ss" not in masked
    assert REDACTED in masked


def test_url_password_with_at_and_slash_is_masked_whole() -> None:
    # A decoded password may contain '@' and '/': everything up to the last '@' goes.
    masked = Redactor()("cannot open rtsp://admin:a@b/c@cam.local:554/stream failed")
    assert masked == "cannot open rtsp://admin:***@cam.local:554/stream failed"


def test_binary_payloads_are_left_alone_and_short_values_ignored() -> None:
    redactor = Redactor(["ab", "secret-value"])
    jpeg = b"\xff\xd8\xff\xe0secret-value\xff\xd9"
    assert redactor.redact_payload(jpeg) == jpeg  # not UTF-8: an image, not a text
    assert redactor.redact_payload(b'{"e": "secret-value"}') == b'{"e": "***"}'
    assert redactor("ab abc") == "ab abc"  # a 2-character 'secret' would blank every text


# --- Every exit: command-line output, /readyz, MQTT payloads. ----------------------------------


@pytest.fixture
def gateway() -> Iterator[EchoingGateway]:
    with EchoingGateway() as server:
        yield server


def test_analyze_never_prints_a_key_the_server_echoes(
    gateway: EchoingGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "fire.jpg"
    assert cv2.imwrite(str(image), render_frame(PRESETS["fire"](width=320, height=180), 8.0))
    config = tmp_path / "monitor.toml"
    config.write_text(f'[vlm]\nbase_url = "{gateway.base_url}"\napi_key = "{API_KEY}"\n'
                      f"max_retries = 0\n", encoding="utf-8")
    for extra in ([], ["--json"]):
        code = main(["analyze", str(image), "-c", str(config), *extra])
        out, err = capsys.readouterr()
        assert code == 1, (out, err)  # refused: exit 1, not "unavailable"
        assert "401" in out
        assert API_KEY not in out + err
        assert REDACTED in out


@pytest.mark.asyncio
async def test_readyz_and_mqtt_never_show_a_key_the_server_echoes(
    gateway: EchoingGateway, tmp_path: Path, mosquitto: MosquittoBroker,
    scene_clips: dict[str, Path], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    port = free_port()
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"),
        "vlm": {"base_url": gateway.base_url, "api_key": API_KEY, "max_retries": 0},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "client_id": "redaction"},
        "telemetry": {"port": port},
        "cameras": [{"id": "yard", "url": str(scene_clips["fire"]), "loop": True,
                     "interval_s": 0.5}],
    }, source="test")
    supervisor = Supervisor.open(config)
    shutdown = asyncio.Event()
    running = asyncio.create_task(supervisor.run(shutdown))

    def readyz() -> dict[str, object]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                body = r.read().decode()
        except urllib.error.HTTPError as exc:  # 503 before start: still a JSON body
            body = exc.read().decode()
        except urllib.error.URLError:  # not listening yet
            return {"reasons": []}
        assert API_KEY not in body
        result: dict[str, object] = json.loads(body)
        return result

    try:
        for _ in range(200):
            answer = await asyncio.to_thread(readyz)
            reasons = [str(r) for r in answer["reasons"]]  # type: ignore[attr-defined]
            if any("analysis failing" in reason for reason in reasons):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no 'analysis failing' reason; last reasons {reasons}")
        failing = next(r for r in reasons if "analysis failing" in r)
        assert "401" in failing
        assert REDACTED in failing
    finally:
        shutdown.set()
        await asyncio.wait_for(running, 15)
    assert API_KEY not in caplog.text


@pytest.mark.asyncio
async def test_mqtt_payloads_pass_the_redactor(tmp_path: Path,
                                               mosquitto: MosquittoBroker) -> None:
    """The publisher is the last exit before the broker: a text payload that quotes a
    registered secret (a camera's last error, a server's refusal) arrives masked; a binary
    one (an evidence JPEG) arrives byte for byte."""
    register_secrets(["cam-pass-77d1"])
    subscriber = Subscriber(mosquitto)
    publisher = MqttPublisher(MqttConfig(host=mosquitto.host, port=mosquitto.port,
                                         client_id="redaction-publisher"),
                              Outbox(tmp_path / "outbox.sqlite3"))
    jpeg = b"\xff\xd8\xff\xe0cam-pass-77d1\xff\xd9"
    try:
        await subscriber.start()
        async with running(publisher):
            publisher.publish("monitor/yard/status",
                              json.dumps({"last_error": "camera said: bad cam-pass-77d1"}),
                              retain=True)
            publisher.publish("monitor/yard/snapshot/fire", jpeg, retain=True)
            await wait_until(lambda: bool(subscriber.on("monitor/yard/snapshot/fire")), 10,
                             "both messages")
    finally:
        await subscriber.stop()
    status = subscriber.on("monitor/yard/status")[-1].json()
    assert status == {"last_error": "camera said: bad ***"}
    assert subscriber.on("monitor/yard/snapshot/fire")[-1].payload == jpeg
