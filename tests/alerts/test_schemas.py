"""The JSON Schemas in docs/schemas: current with the payload models, and every JSON payload
the publisher sends through a real Mosquitto validates against them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from monitor.alerts.payloads import Box, SnapshotRef, schema_models, schema_text
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import HazardTracker, TrackerSettings
from monitor.config import MqttConfig
from monitor.ingest.source import StreamStatus
from monitor.model.answer import Answer, Hazard, Verdict
from monitor.service.supervisor import status_payload
from monitor.sim.broker import MosquittoBroker
from tests.conftest import ROOT
from tests.support.mqtt_client import Received, Subscriber, running, wait_until

SCHEMAS = ROOT / "docs" / "schemas"
REGENERATE = "python -m monitor.alerts.payloads docs/schemas"


@pytest.mark.parametrize("name", sorted(schema_models()))
def test_schema_files_are_current(name: str) -> None:
    path = SCHEMAS / f"{name}.schema.json"
    model = schema_models()[name]
    assert path.exists(), f"{path} is missing; run `{REGENERATE}`"
    assert path.read_text(encoding="utf-8") == schema_text(model), (
        f"{path} is out of date with {model.__name__}; run `{REGENERATE}`")


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_for(topic: str) -> str | None:
    levels = topic.split("/")
    if topic == "monitor/events":
        return "event"
    if topic.startswith("homeassistant/"):
        return "ha-binary-sensor-discovery"
    if len(levels) == 3 and levels[2] in {"status", "verdict"}:
        return levels[2]
    return None


def answer(helmet: str, missing: int) -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "yes", "description": "flames"}, "smoke": {"answer": "no"},
        "helmet": {"status": helmet, "missing_count": missing}})


@pytest.mark.asyncio
async def test_published_payloads_match_the_schemas(mosquitto: MosquittoBroker) -> None:
    subscriber = Subscriber(mosquitto, "#")
    await subscriber.start()
    publisher = MqttPublisher(MqttConfig(host=mosquitto.host, port=mosquitto.port,
                                         client_id="monitor-schema", discovery=True))
    tracker = HazardTracker("cam", list(Hazard), TrackerSettings(confirm_frames=1,
                                                                 clear_frames=1))
    now = time.time()
    try:
        async with running(publisher):
            publisher.reconcile({"cam": list(Hazard)})
            publisher.publish_status(status_payload(StreamStatus(
                "cam", "rtsp://u:***@192.0.2.1/x", online=True, width=640, height=360,
                fps=10.0), now))
            steps = [answer("some_missing", 1), answer("some_missing", 2),
                     Answer.model_validate({"fire": {"answer": "no"},
                                                  "smoke": {"answer": "no"},
                                                  "helmet": {"status": "all_worn"}})]
            for offset, step in enumerate(steps):
                verdict = Verdict("cam", step, now + offset, now + offset + 0.4, 0.4,
                                  "Qwen2.5-VL", "http://127.0.0.1:8000/v1", 1342, 61)
                publisher.publish_verdict(verdict)
                for event in tracker.update(step, now + offset):
                    publisher.publish_event(
                        event, verdict=verdict,
                        boxes=[Box(label="no hard hat", x1=1, y1=2, x2=30, y2=40)],
                        snapshot=SnapshotRef(path="/var/lib/monitor/snapshots/cam/x.jpg",
                                             url="https://nvr.example/x.jpg", topic=None))
            await wait_until(lambda: publisher.pending == 0, 10, "everything published")
            await wait_until(lambda: len(subscriber.events()) >= 5, 10, "the events")
    finally:
        await subscriber.stop()
    checked = check_all(subscriber.messages)
    assert set(checked) == {"event", "status", "verdict", "ha-binary-sensor-discovery"}
    assert {e["type"] for e in subscriber.events()} == {"start", "update", "end"}


def check_all(messages: list[Received]) -> dict[str, int]:
    """Validate every JSON message; returns how many were checked per schema."""
    checked: dict[str, int] = {}
    validators: dict[str, jsonschema.Draft202012Validator] = {}
    for message in messages:
        name = schema_for(message.topic)
        if name is None or not message.payload:
            continue
        data: Any = json.loads(message.payload)
        validators.setdefault(name, validator(name)).validate(data)
        checked[name] = checked.get(name, 0) + 1
    return checked


def test_a_wrong_payload_fails_validation() -> None:
    with pytest.raises(jsonschema.ValidationError, match="'type'"):
        validator("event").validate({"id": "x"})


def test_every_schema_file_has_a_model() -> None:
    names = {p.name.removesuffix(".schema.json") for p in Path(SCHEMAS).glob("*.schema.json")}
    assert names == set(schema_models())
