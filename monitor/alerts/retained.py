"""Retained state across restarts: what a previous run of the daemon left on the broker.

The outbox remembers which alerts are raised and which retained topics the daemon owns;
:class:`RetainedState` ends alerts a previous run left open (``end_reason: restart`` or
``removed``), clears the retained topics (and Home Assistant entities) of cameras or hazards no
longer configured, and announces discovery for the configured ones. It only stores messages,
through the publisher's non-blocking ``publish`` and event path; it never talks to the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from monitor.alerts.discovery import discovery_messages
from monitor.alerts.outbox import OpenAlert, Outbox
from monitor.alerts.payloads import EventPayload, Topics, iso_time
from monitor.alerts.tracker import EndReason, EventType
from monitor.config import MqttConfig
from monitor.model.answer import Hazard

# The publisher's logger: these lines read as they did when the publisher wrote them.
logger = logging.getLogger("monitor.alerts.publisher")


class Publish(Protocol):
    """The publisher's non-blocking ``publish``."""

    def __call__(self, topic: str, payload: str | bytes, *, retain: bool = False,
                 qos: int | None = None,
                 owner: tuple[str, str | None] | None = None) -> None: ...


class RetainedState:
    """Ends alerts left open and clears or announces retained topics, through ``publish``."""

    def __init__(self, config: MqttConfig, topics: Topics, outbox: Outbox, publish: Publish,
                 publish_event: Callable[[EventPayload], None]) -> None:
        """``publish_event`` stores an event payload and its retained ``ON``/``OFF``."""
        self._config = config
        self._topics = topics
        self._outbox = outbox
        self._publish = publish
        self._publish_event = publish_event

    def set_hazard_state(self, camera_id: str, hazard: Hazard, *, on: bool) -> None:
        """Store the retained ``ON``/``OFF`` of one camera's hazard.

        ``OFF`` outside an event is the daemon saying "no alert is raised" (at start, after a
        camera restart): alerts this daemon left open for that camera and hazard, e.g. when it
        was killed, are ended first (``end_reason: restart``) so no subscriber waits forever.
        """
        if not on:
            for alert in self._outbox.open_alerts():
                if alert.camera == camera_id and alert.hazard == hazard.value:
                    self.end_open_alert(alert, EndReason.RESTART)
        self._publish(self._topics.hazard(camera_id, hazard), "ON" if on else "OFF",
                      retain=True, owner=(camera_id, hazard.value))

    def end_open_alert(self, alert: OpenAlert, reason: EndReason) -> None:
        """Store the ``end`` event of an alert a previous run left raised."""
        last = EventPayload.model_validate_json(alert.payload)
        now = iso_time(datetime.now(UTC).timestamp())
        logger.warning("camera %s: %s alert (event %s) was still raised by a previous run; "
                       "ending it (%s)", alert.camera, alert.hazard, alert.event_id,
                       reason.value)
        self._publish_event(last.model_copy(update={
            "type": EventType.END.value, "revision": last.revision + 1, "ended_at": now,
            "at": now, "confirming_verdicts": 0, "verdicts": [], "end_reason": reason.value,
            "model": None, "latency_s": None, "boxes": [], "snapshot": None,
        }))

    def reconcile(self, cameras: Mapping[str, Sequence[Hazard]]) -> None:
        """Reconcile what a previous run left with the configured ``cameras`` (id → hazards).

        Called at start; idempotent, so a configuration reload may call it again with the new
        cameras.

        Alerts of cameras or hazards no longer configured are ended (``removed``); their
        retained topics, and Home Assistant entities no longer wanted, are cleared (an empty
        retained message deletes a retained message; for discovery it removes the entity);
        discovery configs of the configured ones are published when enabled.
        """
        for alert in self._outbox.open_alerts():
            if alert.hazard not in {h.value for h in cameras.get(alert.camera, ())}:
                self.end_open_alert(alert, EndReason.REMOVED)
        wanted, announce = self.wanted_topics(cameras)
        stale = [topic for topic, _, _ in self._outbox.owned_topics() if topic not in wanted]
        for topic in stale:
            self._publish(topic, b"", retain=True)
        if stale:
            logger.info("mqtt: cleared %d retained topic(s) of cameras or hazards no longer "
                        "configured", len(stale))
            self._outbox.disown(stale)
        for camera_id, hazard, topic, payload in announce:
            self._publish(topic, payload, retain=True, owner=(camera_id, hazard.value))

    def wanted_topics(self, cameras: Mapping[str, Sequence[Hazard]]
                      ) -> tuple[set[str], list[tuple[str, Hazard, str, bytes]]]:
        """The retained topics the configured ``cameras`` own, and the discovery messages to
        announce (camera, hazard, topic, payload), in order; none when discovery is off."""
        wanted: set[str] = set()
        announce: list[tuple[str, Hazard, str, bytes]] = []
        for camera_id, hazards in cameras.items():
            wanted |= {self._topics.status(camera_id), self._topics.verdict(camera_id)}
            for hazard in hazards:
                wanted |= {self._topics.hazard(camera_id, hazard),
                           self._topics.snapshot(camera_id, hazard)}
                if self._config.discovery:
                    for topic, payload in discovery_messages(self._config, camera_id, hazard):
                        wanted.add(topic)
                        announce.append((camera_id, hazard, topic, payload))
        return wanted, announce
