"""Home Assistant MQTT discovery: payloads against Home Assistant's documented fields, and
entities removed when their camera leaves the configuration (real Mosquitto)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from monitor.alerts.discovery import config_topic, discovery_messages
from monitor.alerts.outbox import Outbox
from monitor.alerts.publisher import MqttPublisher
from monitor.config import MqttConfig
from monitor.model.answer import Hazard
from monitor.sim.broker import MosquittoBroker
from tests.support.mqtt_client import retained, running, wait_until

# https://www.home-assistant.io/integrations/binary_sensor.mqtt/ (configuration variables)
# and https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (device, origin).
DOCUMENTED_FIELDS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
    "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "off_delay",
    "origin", "payload_available", "payload_not_available", "payload_off", "payload_on",
    "platform", "qos", "state_topic", "unique_id", "value_template",
}
DOCUMENTED_DEVICE_FIELDS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}
DOCUMENTED_ORIGIN_FIELDS = {"name", "sw_version", "support_url"}
# https://www.home-assistant.io/integrations/binary_sensor/#device-class
BINARY_SENSOR_DEVICE_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
    "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
    "smoke", "sound", "tamper", "update", "vibration", "window",
}
# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids of [a-zA-Z0-9_-].
DISCOVERY_TOPIC = re.compile(r"^homeassistant/binary_sensor/(?:[A-Za-z0-9_-]+/)?"
                             r"[A-Za-z0-9_-]+/config$")


def config(**overrides: object) -> MqttConfig:
    return MqttConfig.model_validate({"discovery": True, "client_id": "monitor-ha",
                                      "topic_prefix": "site/monitor", **overrides})


@pytest.mark.parametrize("hazard", list(Hazard))
def test_payload_uses_only_documented_fields(hazard: Hazard) -> None:
    [(topic, payload)] = discovery_messages(config(), "gate-1", hazard)
    assert DISCOVERY_TOPIC.match(topic), topic
    data = json.loads(payload)
    assert set(data) <= DOCUMENTED_FIELDS, set(data) - DOCUMENTED_FIELDS
    assert set(data["device"]) <= DOCUMENTED_DEVICE_FIELDS
    assert set(data["origin"]) <= DOCUMENTED_ORIGIN_FIELDS
    assert data["device_class"] in BINARY_SENSOR_DEVICE_CLASSES
    assert data["device_class"] == ("safety" if hazard is Hazard.NO_HELMET else "smoke")
    # It follows the daemon's real topics and payloads.
    assert data["state_topic"] == f"site/monitor/gate-1/{hazard.value}"
    assert (data["payload_on"], data["payload_off"]) == ("ON", "OFF")
    assert data["availability_topic"] == "site/monitor/availability"
    assert (data["payload_available"], data["payload_not_available"]) == ("online", "offline")
    assert data["device"]["identifiers"] == ["site_monitor_gate-1"]  # one device per camera
    assert data["qos"] == 1


def test_unique_ids_are_unique_and_stable() -> None:
    ids = [json.loads(p)["unique_id"] for camera in ("a", "b") for hazard in Hazard
           for _, p in discovery_messages(config(), camera, hazard)]
    assert len(set(ids)) == len(ids)
    assert ids == [json.loads(p)["unique_id"] for camera in ("a", "b") for hazard in Hazard
                   for _, p in discovery_messages(config(), camera, hazard)]


@pytest.mark.asyncio
async def test_entities_removed_with_their_camera(mosquitto: MosquittoBroker,
                                                  tmp_path: Path) -> None:
    settings = config(host=mosquitto.host, port=mosquitto.port)
    outbox = tmp_path / "outbox.sqlite3"
    first = MqttPublisher(settings, Outbox(outbox))
    first.reconcile({"gate-1": [Hazard.FIRE, Hazard.SMOKE], "yard": [Hazard.NO_HELMET]})
    async with running(first):
        await wait_until(lambda: first.pending == 0, 10, "discovery published")
    first.outbox.close()
    announced = await retained(mosquitto, "homeassistant/#")
    assert set(announced) == {config_topic(settings, "gate-1", Hazard.FIRE),
                              config_topic(settings, "gate-1", Hazard.SMOKE),
                              config_topic(settings, "yard", Hazard.NO_HELMET)}

    # Next start: camera "yard" is gone and gate-1 no longer watches smoke.
    second = MqttPublisher(settings, Outbox(outbox))
    second.reconcile({"gate-1": [Hazard.FIRE]})
    async with running(second):
        await wait_until(lambda: second.pending == 0, 10, "removals published")
    assert set(await retained(mosquitto, "homeassistant/#")) == {
        config_topic(settings, "gate-1", Hazard.FIRE)}


def test_discovery_off_publishes_nothing(tmp_path: Path) -> None:
    publisher = MqttPublisher(config(discovery=False), Outbox(None))
    publisher.reconcile({"gate-1": list(Hazard)})
    assert publisher.pending == 0
