"""The publisher against a real Mosquitto: topics, retained state, will, outage buffering,
restart reconciliation (stale alerts ended, removed cameras' topics cleared)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from monitor.alerts.outbox import Outbox
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent, EndReason, EventType, Observation
from monitor.config import MqttConfig
from monitor.model.answer import Hazard
from monitor.sim.broker import MosquittoBroker
from tests.support.mqtt_client import Subscriber, retained, running, wait_until


def event(kind: EventType, event_id: str = "e1", camera: str = "cam1") -> AlertEvent:
    seen = Observation(1_700_000_000.0, positive=kind is not EventType.END, detail="flames")
    return AlertEvent(event_id=event_id, type=kind, camera_id=camera, hazard=Hazard.FIRE,
                      started_at=1_700_000_000.0,
                      ended_at=1_700_000_010.0 if kind is EventType.END else None,
                      at=1_700_000_000.0, detail="flames", verdicts=(seen, seen),
                      revision=0 if kind is EventType.START else 1,
                      end_reason=EndReason.CLEARED if kind is EventType.END else None)


async def collect(broker: MosquittoBroker, topic: str, count: int, timeout_s: float = 10,
                  subscribed: asyncio.Event | None = None) -> list[tuple[str, bytes, bool]]:
    """Subscribe and gather ``count`` messages (topic, payload, retained flag)."""
    seen: list[tuple[str, bytes, bool]] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-sub") as client:
        await client.subscribe(topic, qos=1)
        if subscribed is not None:
            subscribed.set()
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.append((str(message.topic), message.payload, message.retain))
                if len(seen) >= count:
                    break
    return seen


def config_for(broker: MosquittoBroker, **overrides: object) -> MqttConfig:
    return MqttConfig.model_validate({"host": broker.host, "port": broker.port,
                                      "client_id": "monitor-test", **overrides})


@pytest.mark.asyncio
async def test_event_state_and_availability(mosquitto: MosquittoBroker) -> None:
    subscribed = asyncio.Event()
    events = asyncio.create_task(collect(mosquitto, "monitor/events", 2, subscribed=subscribed))
    await subscribed.wait()
    publisher = MqttPublisher(config_for(mosquitto))
    async with running(publisher):
        publisher.publish_event(event(EventType.START))
        publisher.publish_event(event(EventType.END))
        received = await events
    start, end = (json.loads(payload) for _, payload, _ in received)
    assert [start["type"], end["type"]] == ["start", "end"]
    assert start["id"] == end["id"] == "e1"
    assert end["hazard"] == "fire"
    assert end["ended_at"].startswith("2023-11-14T22:13:30")
    assert not any(retained for _, _, retained in received)
    retained = {t: p for t, p, r in await collect(mosquitto, "monitor/#", 2) if r}
    assert retained["monitor/cam1/fire"] == b"OFF"
    assert retained["monitor/availability"] == b"offline"  # clean shutdown says so


@pytest.mark.asyncio
async def test_messages_wait_for_the_broker_and_go_out_in_order() -> None:
    broker = MosquittoBroker()
    publisher = MqttPublisher(config_for(broker))
    async with running(publisher):
        for index in range(5):  # broker not started yet: stored
            publisher.publish_event(event(EventType.START, f"e{index}"))
        await asyncio.sleep(0.5)
        assert publisher.pending == 6  # 5 events + the latest retained ON (coalesced)
        assert not publisher.connected
        await asyncio.to_thread(broker.start)
        try:
            received = await collect(broker, "monitor/cam1/fire", 1, timeout_s=20)
            assert received[0][1] == b"ON"
            async with asyncio.timeout(10):
                while publisher.pending:
                    await asyncio.sleep(0.05)
        finally:
            publisher.close()
    broker.stop()


@pytest.mark.asyncio
async def test_queue_bound_drops_oldest_and_counts() -> None:
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=1, queue_size=10))
    for index in range(25):  # not retained: no coalescing
        publisher.publish(f"t/{index}", "x")
    assert publisher.pending == 10
    assert publisher.dropped == 15


@pytest.mark.asyncio
async def test_last_will_marks_offline_when_the_daemon_dies(mosquitto: MosquittoBroker) -> None:
    publisher = MqttPublisher(config_for(mosquitto, keepalive_s=5))
    task = asyncio.create_task(publisher.run())
    async with asyncio.timeout(10):
        while not publisher.connected:
            await asyncio.sleep(0.05)
    # Kill the connection without a clean DISCONNECT, as a crash would.
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    [(_, payload, retained)] = await collect(mosquitto, "monitor/availability", 1)
    assert retained
    assert payload in {b"online", b"offline"}


@pytest.mark.asyncio
async def test_restart_ends_stale_alerts_and_clears_removed_cameras(
        mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """A daemon killed with alerts raised: the next run ends them (no stale ON), and the
    retained topics of a camera that left the configuration are cleared."""
    path = tmp_path / "outbox.sqlite3"
    first = MqttPublisher(config_for(mosquitto), Outbox(path))
    first.reconcile({"cam1": [Hazard.FIRE], "gone": [Hazard.FIRE]})
    first.publish_event(event(EventType.START, "e-cam1"))
    first.publish_event(event(EventType.START, "e-gone", camera="gone"))
    async with running(first):
        await wait_until(lambda: first.pending == 0, 10, "the first run's messages")
    first.outbox.close()
    before = await retained(mosquitto, "monitor/#")
    assert before["monitor/cam1/fire"] == before["monitor/gone/fire"] == b"ON"

    subscriber = Subscriber(mosquitto, "monitor/events")
    await subscriber.start()
    counted: list[tuple[str, str]] = []
    second = MqttPublisher(config_for(mosquitto), Outbox(path),
                           on_event=lambda hazard, kind: counted.append((hazard, kind)))
    second.reconcile({"cam1": [Hazard.FIRE]})  # camera "gone" was removed
    second.set_hazard_state("cam1", Hazard.FIRE, on=False)  # what the daemon does at start
    async with running(second):
        await wait_until(lambda: len(subscriber.events()) >= 2, 10, "two end events")
    await subscriber.stop()
    ends = {e["id"]: e for e in subscriber.events()}
    assert ends["e-gone"]["type"] == ends["e-cam1"]["type"] == "end"
    assert ends["e-gone"]["end_reason"] == "removed"
    assert ends["e-cam1"]["end_reason"] == "restart"
    assert ends["e-cam1"]["revision"] == 1
    after = await retained(mosquitto, "monitor/#")
    assert after["monitor/cam1/fire"] == b"OFF"
    assert "monitor/gone/fire" not in after  # cleared, not left ON
    assert second.outbox.open_alerts() == []
    assert counted == [("fire", "end"), ("fire", "end")]  # the metrics see them too


class RefusingOnce:
    """Stands in for the broker connection (unit test of the sending loop): refuses the first
    ``times`` deliveries with ``reason``, then takes everything."""

    def __init__(self, reason: str, times: int) -> None:
        self.reason = ReasonCode(PacketTypes.PUBACK, reason)
        self.left = times
        self.delivered: list[str] = []

    async def deliver(self, topic: str, payload: bytes, *, qos: int,
                      retain: bool) -> ReasonCode | None:
        if self.left:
            self.left -= 1
            return self.reason
        self.delivered.append(topic)
        return None


@pytest.mark.asyncio
@pytest.mark.parametrize(("reason", "times", "kept"), [
    ("Quota exceeded", 2, True),  # refused for now, twice: retried
    ("Not authorized", 2, False),  # refused for good
    ("Quota exceeded", 4, False),  # refused for now too often (3 retries here): given up
])
async def test_a_refusal_that_may_pass_later_is_retried_in_order(
        monkeypatch: pytest.MonkeyPatch, reason: str, times: int, kept: bool) -> None:
    monkeypatch.setattr("monitor.alerts.publisher.REFUSAL_RETRY_S", 0.01)
    monkeypatch.setattr("monitor.alerts.publisher.REFUSAL_RETRIES", 3)
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=1))
    for index in range(3):
        publisher.publish(f"t/{index}", "x")
    connection = RefusingOnce(reason, times=times)
    sending = asyncio.create_task(publisher._send_outbox(connection))  # type: ignore[arg-type]
    await wait_until(lambda: publisher.pending == 0, 5, "the outbox sent")
    publisher.close()
    await asyncio.wait_for(sending, 5)
    if kept:  # refused twice, then taken: nothing lost, the order kept
        assert connection.delivered == ["t/0", "t/1", "t/2"]
        assert publisher.refused == 0
    elif times == 2:  # refused for good, each: dropped and counted
        assert connection.delivered == ["t/2"]
        assert publisher.refused == 2
    else:  # t/0 refused 3 times for now, then once more: dropped; t/1 and t/2 go out
        assert connection.delivered == ["t/1", "t/2"]
        assert publisher.refused == 1
