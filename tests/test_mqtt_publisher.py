"""The publisher against a real Mosquitto: topics, retained state, will, outage buffering."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from monitor.config import MqttConfig
from monitor.mqtt import MqttPublisher
from monitor.sim.broker import MosquittoBroker
from monitor.tracker import AlertEvent, EventType
from monitor.verdict import Hazard


def event(kind: EventType, event_id: str = "e1") -> AlertEvent:
    return AlertEvent(event_id=event_id, type=kind, camera_id="cam1", hazard=Hazard.FIRE,
                      started_at=1_700_000_000.0,
                      ended_at=1_700_000_010.0 if kind is EventType.END else None,
                      at=1_700_000_000.0, detail="flames", confirming_verdicts=2)


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run(), name="test.publisher")
    try:
        yield task
    finally:
        publisher.close()
        await asyncio.wait_for(task, timeout=10)


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
        for index in range(5):  # broker not started yet: queued
            publisher.publish_event(event(EventType.START, f"e{index}"))
        await asyncio.sleep(0.5)
        assert publisher.pending == 10
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
    for index in range(25):
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
