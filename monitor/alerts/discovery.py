"""Home Assistant MQTT discovery (opt-in: ``mqtt.discovery = true``).

One ``binary_sensor`` per camera and hazard, grouped into one Home Assistant device per camera,
on ``<discovery_prefix>/binary_sensor/<node>/<hazard>/config`` (retained). The sensor follows
the retained ``ON``/``OFF`` topic, is unavailable while the daemon's availability topic says
``offline`` (including its last will), and shows the camera's latest verdict as attributes.
Fire and smoke use device class ``smoke``, missing hard hats ``safety``.

Removal: the publisher remembers which config topics it published; when a camera (or one of
its hazards) leaves the configuration, it publishes an empty retained payload there, which is
how Home Assistant deletes a discovered entity.

Field names follow Home Assistant's documentation of the MQTT binary sensor and of MQTT
discovery (https://www.home-assistant.io/integrations/binary_sensor.mqtt/,
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery); the model forbids anything
else, and ``tests/test_discovery.py`` checks the payloads against that documented list.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from monitor import __version__
from monitor.config import MqttConfig
from monitor.model.answer import Hazard

DEVICE_CLASS: dict[Hazard, Literal["smoke", "safety"]] = {
    Hazard.FIRE: "smoke",
    Hazard.SMOKE: "smoke",
    Hazard.NO_HELMET: "safety",
}
NAMES = {Hazard.FIRE: "Fire", Hazard.SMOKE: "Smoke", Hazard.NO_HELMET: "Missing hard hat"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscoveryDevice(_Strict):
    """The Home Assistant device (one per camera) an entity belongs to."""

    identifiers: list[str]
    name: str
    manufacturer: str
    model: str
    sw_version: str


class DiscoveryOrigin(_Strict):
    """Which application published the discovery message."""

    name: str
    sw_version: str


class BinarySensorDiscovery(_Strict):
    """A Home Assistant MQTT binary sensor discovery payload."""

    name: str
    unique_id: str
    state_topic: str
    payload_on: str = "ON"
    payload_off: str = "OFF"
    device_class: Literal["smoke", "safety"]
    availability_topic: str
    payload_available: str = "online"
    payload_not_available: str = "offline"
    json_attributes_topic: str
    qos: int = Field(ge=0, le=2)
    device: DiscoveryDevice
    origin: DiscoveryOrigin


def _topic_id(text: str) -> str:
    """A node/object id for discovery topics: only ``[A-Za-z0-9_-]`` is allowed there."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def config_topic(config: MqttConfig, camera_id: str, hazard: Hazard) -> str:
    """The retained discovery topic of one camera's hazard sensor."""
    node = _topic_id(f"{config.topic_prefix}_{camera_id}")
    return f"{config.discovery_prefix}/binary_sensor/{node}/{hazard.value}/config"


def sensor_config(config: MqttConfig, camera_id: str, hazard: Hazard) -> BinarySensorDiscovery:
    """The discovery payload of one camera's hazard sensor."""
    prefix = config.topic_prefix
    node = _topic_id(f"{prefix}_{camera_id}")
    return BinarySensorDiscovery(
        name=NAMES[hazard], unique_id=f"{node}_{hazard.value}",
        state_topic=f"{prefix}/{camera_id}/{hazard.value}",
        device_class=DEVICE_CLASS[hazard], availability_topic=f"{prefix}/availability",
        json_attributes_topic=f"{prefix}/{camera_id}/verdict", qos=config.qos,
        device=DiscoveryDevice(identifiers=[node], name=f"Camera {camera_id}",
                               manufacturer="monitor", model="Camera safety monitor",
                               sw_version=__version__),
        origin=DiscoveryOrigin(name="monitor", sw_version=__version__),
    )


def discovery_messages(config: MqttConfig, camera_id: str,
                       hazard: Hazard) -> list[tuple[str, bytes]]:
    """(topic, payload) of the retained discovery messages for one camera's hazard."""
    payload = sensor_config(config, camera_id, hazard).model_dump_json()
    return [(config_topic(config, camera_id, hazard), payload.encode())]
