"""Camera health events, operator acks and false alarms reach the channels that ask for them,
through the same way out as alert steps (``AlertSink`` → ``NotifyHub``), against the local
webhook server; the filter and template rules as pure units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_args

import pytest

from monitor.alerts.health import HealthEndReason, HealthEvent, HealthProblem
from monitor.alerts.notify.delivery import NotifyHub
from monitor.alerts.notify.health_messages import health_notification_for, wants_health
from monitor.alerts.notify.messages import RateLimiter, notification_for
from monitor.alerts.outbox import Outbox, Stored
from monitor.alerts.payloads import EventPayload, HealthEventPayload
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent, EndReason, EventType
from monitor.config import MqttConfig
from monitor.console.feedback import FeedbackFolder
from monitor.console.state import CameraView, ConsoleState
from monitor.model.answer import Hazard
from monitor.notifyconfig import NotifyHealthProblemName, RateLimitConfig
from monitor.service.console_actions import ConsoleActionHandler
from monitor.service.sink import AlertSink
from monitor.service.telemetry import Metrics
from tests.alerts.notify.services import FakeServices
from tests.alerts.notify.support import channel_for, event_payload, sending, wait_for, worker_for


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def sink_over(hub: NotifyHub, tmp_path: Path, executor: ThreadPoolExecutor, *,
              console: ConsoleState | None = None) -> tuple[AlertSink, MqttPublisher]:
    """The daemon's sink over a real MQTT outbox (not connected: what it stores is what the
    broker would get) and ``hub``."""
    publisher = MqttPublisher(MqttConfig(client_id="notify-test"),
                              Outbox(tmp_path / "mqtt.sqlite3"))
    return AlertSink(publisher, None, Metrics(), executor, console=console,
                     notify=hub), publisher


def health_event(kind: str = "start", *, camera: str | None = "cam1",
                 problem: HealthProblem = HealthProblem.OFFLINE) -> HealthEvent:
    """A health event as the health watch hands it to the sink."""
    ended = kind == "end"
    return HealthEvent(event_id="health-1", type=EventType(kind), camera_id=camera,
                       problem=problem, started_at=1_796_000_000.0,
                       at=1_796_000_090.0 if ended else 1_796_000_060.0,
                       detail="connection refused", ended_at=1_796_000_090.0 if ended else None,
                       end_reason=HealthEndReason.RECOVERED if ended else None)


def alert_start(event_id: str = "alert-7") -> AlertEvent:
    return AlertEvent(event_id=event_id, type=EventType.START, camera_id="cam1",
                      hazard=Hazard.FIRE, started_at=1_796_000_000.0, ended_at=None,
                      at=1_796_000_000.0, detail="flames near the pallets", verdicts=())


def mqtt(publisher: MqttPublisher, topic: str) -> list[Stored]:
    """What the publisher stored for ``topic``, in order."""
    return [m for m in publisher.outbox.head(100) if m.topic == topic]


def hooks(fake: FakeServices, name: str) -> list[dict[str, Any]]:
    """What the webhook server took for channel ``name`` (its X-Tenant header)."""
    return [a.data for a in fake.accepted if a.headers.get("X-Tenant") == name]


# ---------------------------------------------------------------- through the sink


@pytest.mark.asyncio
async def test_health_start_and_end_reach_the_channel_filtered_on_them_only(
        fake: FakeServices, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    on_health = worker_for(channel_for("webhook", fake, name="on-health", events=["health"],
                                       headers={"X-Tenant": "on-health"}), tmp_path)
    alerts_only = worker_for(channel_for("webhook", fake, name="alerts-only",
                                         headers={"X-Tenant": "alerts-only"}), tmp_path)
    frozen_only = worker_for(channel_for("webhook", fake, name="frozen-only",
                                         events=["health"], health_problems=["frozen"],
                                         headers={"X-Tenant": "frozen-only"}), tmp_path)
    hub = NotifyHub([on_health, alerts_only, frozen_only])
    sink, publisher = sink_over(hub, tmp_path, executor)
    async with sending(on_health, alerts_only, frozen_only):
        sink.health(health_event("start"))
        sink.health(health_event("end"))
        sink.event(alert_start())  # a marker: once it is through, nothing else is coming
        await wait_for(lambda: len(hooks(fake, "on-health")) == 2
                       and len(hooks(fake, "alerts-only")) == 1)
    delivered = hooks(fake, "on-health")
    assert [d["notification"]["kind"] for d in delivered] == ["health_start", "health_end"]
    assert [d["event"]["problem"] for d in delivered] == ["offline", "offline"]
    assert [d["notification"]["problem"] for d in delivered] == ["offline", "offline"]
    assert delivered[0]["event"]["id"] == delivered[1]["event"]["id"] == "health-1"
    assert delivered[0]["notification"]["title"] == "Camera problem: camera cam1 offline"
    assert "connection refused" in delivered[0]["notification"]["text"]
    assert "recovered" in delivered[1]["notification"]["text"]
    assert [d["notification"]["kind"] for d in hooks(fake, "alerts-only")] == ["start"]
    assert hooks(fake, "frozen-only") == []
    assert [json.loads(m.payload)["type"] for m in mqtt(publisher, "monitor/health")] == [
        "start", "end"]  # MQTT has them too
    hub.close()


@pytest.mark.asyncio
async def test_an_ack_from_the_console_reaches_a_channel_filtered_on_ack(
        fake: FakeServices, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    acks = worker_for(channel_for("webhook", fake, name="acks", events=["ack"],
                                  headers={"X-Tenant": "acks"}), tmp_path)
    hub = NotifyHub([acks])
    console = ConsoleState([CameraView("cam1", "yard", ("fire",), None)])
    sink, publisher = sink_over(hub, tmp_path, executor, console=console)
    actions = ConsoleActionHandler(console, publisher, sink, lambda _camera: None,
                                   FeedbackFolder(tmp_path / "feedback"), hold_s=60.0,
                                   clock=lambda: 1_796_000_030.0)
    async with sending(acks):
        sink.event(alert_start())  # the channel does not take starts
        await actions.acknowledge("alert-7", "alice")
        await wait_for(lambda: len(hooks(fake, "acks")) == 1 and acks.outbox.depth == 0)
    (ack,) = hooks(fake, "acks")
    assert ack["notification"]["kind"] == "ack"
    assert ack["event"]["by"] == "alice"
    assert "By: alice" in ack["notification"]["text"]
    # Not the key of the start it acknowledges, or a de-duplicating receiver would drop it.
    assert ack["notification"]["key"] == "alert-7:0:ack"
    assert [a.headers["Idempotency-Key"] for a in fake.accepted] == ["alert-7:0:ack"]
    assert [(m["type"], m["by"]) for m in map(json.loads, (
        m.payload for m in mqtt(publisher, "monitor/events")))] == [
        ("start", None), ("ack", "alice")]  # on MQTT too
    hub.close()


@pytest.mark.asyncio
async def test_a_false_alarm_end_matches_false_alarm_and_end(
        fake: FakeServices, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    false_alarms = worker_for(channel_for("webhook", fake, name="fa", events=["false_alarm"],
                                          headers={"X-Tenant": "fa"}), tmp_path)
    ends = worker_for(channel_for("webhook", fake, name="ends", events=["end"],
                                  headers={"X-Tenant": "ends"}), tmp_path)
    hub = NotifyHub([false_alarms, ends])
    sink, _publisher = sink_over(hub, tmp_path, executor)
    cleared = AlertEvent(event_id="alert-8", type=EventType.END, camera_id="cam1",
                         hazard=Hazard.FIRE, started_at=1_796_000_000.0,
                         ended_at=1_796_000_050.0, at=1_796_000_050.0, detail="", verdicts=(),
                         revision=1, end_reason=EndReason.CLEARED)
    dismissed = AlertEvent(event_id="alert-9", type=EventType.END, camera_id="cam1",
                           hazard=Hazard.FIRE, started_at=1_796_000_000.0,
                           ended_at=1_796_000_060.0, at=1_796_000_060.0, detail="",
                           verdicts=(), revision=1, end_reason=EndReason.FALSE_ALARM)
    async with sending(false_alarms, ends):
        sink.event(cleared)
        sink.event(dismissed)
        await wait_for(lambda: len(hooks(fake, "ends")) == 2 and len(hooks(fake, "fa")) == 1)
    (false_alarm,) = hooks(fake, "fa")
    assert false_alarm["event"]["id"] == "alert-9"
    assert false_alarm["notification"]["kind"] == "false_alarm"
    assert false_alarm["notification"]["title"].startswith("False alarm:")
    assert [d["event"]["id"] for d in hooks(fake, "ends")] == ["alert-8", "alert-9"]
    hub.close()


# ---------------------------------------------------------------- pure rules


def test_the_problem_names_of_the_filter_are_the_health_problems() -> None:
    assert set(get_args(NotifyHealthProblemName)) == {problem.value for problem in HealthProblem}


def test_health_filter_problems_and_cameras_but_not_hazards(fake: FakeServices) -> None:
    start = HealthEventPayload.from_event(health_event())
    daemon = HealthEventPayload.from_event(
        health_event(camera=None, problem=HealthProblem.MODEL_UNAVAILABLE))
    assert wants_health(channel_for("webhook", fake, events=["health"], hazards=["fire"]), start)
    assert not wants_health(channel_for("webhook", fake), start)  # events lacks health
    assert not wants_health(channel_for("webhook", fake, events=["health"],
                                        health_problems=["blank"]), start)
    yard = channel_for("webhook", fake, events=["health"], cameras=["yard"])
    assert not wants_health(yard, start)
    assert wants_health(yard, daemon)  # the model's outage concerns every camera


def test_default_health_texts_in_both_languages(fake: FakeServices) -> None:
    start = HealthEventPayload.from_event(health_event())
    end = HealthEventPayload.from_event(health_event("end"))
    english, problem = health_notification_for(channel_for("webhook", fake), start)
    assert problem is None
    assert english.key == "health:health-1:start"
    assert english.text.startswith("Camera cam1: offline since")
    chinese, _ = health_notification_for(channel_for("webhook", fake, language="zh"), end)
    assert chinese.title == "【摄像头恢复】摄像头 cam1：离线"
    assert "已于" in chinese.text
    assert "recovered" in chinese.text
    daemon, _ = health_notification_for(channel_for("webhook", fake), HealthEventPayload.
                                        from_event(health_event(
                                            camera=None,
                                            problem=HealthProblem.MODEL_UNAVAILABLE)))
    assert daemon.camera == "-"
    assert "model unavailable" in daemon.title


def test_custom_health_template_sees_the_documented_values(fake: FakeServices) -> None:
    channel = channel_for(
        "webhook", fake, health_template="{{ event }} {{ type }} {{ camera }} {{ problem }} "
        "{{ problem_label }} {{ end_reason }} {{ id }}", template="{{ nope.missing }}")
    notification, problem = health_notification_for(
        channel, HealthEventPayload.from_event(health_event("end")))
    assert problem is None  # the alert template is not used for health events
    assert notification.text == "health end cam1 offline offline recovered health-1"


def test_rate_limit_counts_per_camera_and_problem(fake: FakeServices) -> None:
    channel = channel_for("webhook", fake, events=["health"])
    limiter = RateLimiter(RateLimitConfig(max_messages=1, window_s=60))
    offline, _ = health_notification_for(channel, HealthEventPayload.from_event(health_event()))
    frozen, _ = health_notification_for(channel, HealthEventPayload.from_event(
        health_event(problem=HealthProblem.FROZEN)))
    assert limiter.admit(offline, 0.0)
    assert limiter.admit(frozen, 1.0)  # another problem: its own budget
    assert not limiter.admit(offline, 2.0)
    (digest,) = limiter.digests(61.0, "en")
    assert digest.problem == "offline"
    assert "offline on camera cam1" in digest.text


def test_ack_text_says_who(fake: FakeServices) -> None:
    payload = event_payload("ack").model_copy(update={"by": "李工"})
    chinese, _ = notification_for(channel_for("webhook", fake, language="zh"), payload)
    assert "操作人：李工" in chinese.text
    assert chinese.title.startswith("【已确认】")


def test_alert_payload_unchanged_for_plain_steps(fake: FakeServices) -> None:
    # Only false-alarm ends change kind; other ends stay "end" (the rate limit's digest and
    # webhook receivers count on it).
    notification, _ = notification_for(channel_for("webhook", fake), event_payload("end"))
    assert notification.kind == "end"
    assert notification.key == "alert-1:1"
    assert isinstance(EventPayload.model_validate(notification.event), EventPayload)

