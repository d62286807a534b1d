"""RetainedState on its own: an in-memory outbox and a recording ``publish``, no broker."""

from __future__ import annotations

import pytest

from monitor.alerts.outbox import OpenAlert, Outbox, Outgoing
from monitor.alerts.payloads import EventPayload, Topics
from monitor.alerts.retained import RetainedState
from monitor.alerts.tracker import AlertEvent, EndReason, EventType, Observation
from monitor.config import MqttConfig
from monitor.model.answer import Hazard

Sent = tuple[str, str | bytes, bool, tuple[str, str | None] | None]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.events: list[EventPayload] = []

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False,
                qos: int | None = None, owner: tuple[str, str | None] | None = None) -> None:
        self.sent.append((topic, payload, retain, owner))

    def publish_event(self, payload: EventPayload) -> None:
        self.events.append(payload)


def started(camera: str, event_id: str) -> OpenAlert:
    seen = Observation(1_700_000_000.0, positive=True, detail="flames")
    event = AlertEvent(event_id=event_id, type=EventType.START, camera_id=camera,
                       hazard=Hazard.FIRE, started_at=1_700_000_000.0, ended_at=None,
                       at=1_700_000_000.0, detail="flames", verdicts=(seen, seen), revision=0,
                       end_reason=None)
    text = EventPayload.from_event(event).model_dump_json()
    return OpenAlert(event_id, camera, Hazard.FIRE.value, text)


def state(outbox: Outbox, recorder: Recorder, **config: object) -> RetainedState:
    mqtt = MqttConfig.model_validate({"host": "localhost", **config})
    return RetainedState(mqtt, Topics(mqtt.topic_prefix), outbox, recorder.publish,
                         recorder.publish_event)


def test_off_ends_the_alerts_left_open_for_that_camera_and_hazard_only() -> None:
    outbox, recorder = Outbox(None), Recorder()
    for camera, event_id in (("cam1", "e1"), ("cam2", "e2")):
        outbox.put([Outgoing("monitor/events", b"{}", 1, retain=False)],
                   open_alert=started(camera, event_id))
    retained = state(outbox, recorder)
    retained.set_hazard_state("cam1", Hazard.FIRE, on=False)
    assert [(e.id, e.type, e.end_reason, e.revision) for e in recorder.events] == [
        ("e1", "end", EndReason.RESTART.value, 1)]
    assert recorder.sent == [("monitor/cam1/fire", "OFF", True, ("cam1", "fire"))]
    recorder.events.clear()
    retained.set_hazard_state("cam2", Hazard.FIRE, on=True)  # ON ends nothing
    assert recorder.events == []
    assert recorder.sent[-1] == ("monitor/cam2/fire", "ON", True, ("cam2", "fire"))


@pytest.mark.parametrize("discovery", [False, True])
def test_reconcile_ends_removed_alerts_clears_stale_topics_and_announces(
        discovery: bool) -> None:
    outbox, recorder = Outbox(None), Recorder()
    outbox.put([Outgoing("monitor/gone/fire", b"ON", 1, retain=True)],
               open_alert=started("gone", "e9"), owner=("gone", "fire"))
    outbox.put([Outgoing("monitor/cam1/status", b"{}", 1, retain=True)], owner=("cam1", None))
    retained = state(outbox, recorder, discovery=discovery)
    retained.reconcile({"cam1": [Hazard.FIRE]})
    assert [(e.id, e.end_reason) for e in recorder.events] == [("e9", "removed")]
    assert ("monitor/gone/fire", b"", True, None) in recorder.sent
    assert not any(topic.startswith("monitor/cam1") for topic, *_ in recorder.sent)
    assert "monitor/gone/fire" not in {topic for topic, _, _ in outbox.owned_topics()}
    announced = [(topic, owner) for topic, _, _, owner in recorder.sent if owner is not None]
    wanted, _ = retained.wanted_topics({"cam1": [Hazard.FIRE]})
    assert {"monitor/cam1/status", "monitor/cam1/verdict", "monitor/cam1/fire",
            "monitor/cam1/fire/snapshot"} <= wanted
    if discovery:
        [(topic, owner)] = announced
        assert owner == ("cam1", "fire")
        assert topic.startswith("homeassistant/")
        assert topic in wanted
    else:
        assert announced == []
