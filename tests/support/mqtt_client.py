"""Test-side MQTT helpers: a subscriber that survives broker restarts, waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from monitor.alerts.publisher import MqttPublisher, consume_disconnect_error
from monitor.sim.broker import MosquittoBroker


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher,
                  stop_timeout_s: float = 20) -> AsyncIterator[asyncio.Task[None]]:
    """``publisher.run()`` as a task for the block; closed and awaited on the way out."""
    task = asyncio.create_task(publisher.run(), name="test.publisher")
    try:
        yield task
    finally:
        publisher.close()
        await asyncio.wait_for(task, timeout=stop_timeout_s)


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict[str, Any]:
        """The payload as JSON."""
        data: dict[str, Any] = json.loads(self.payload)
        return data


@dataclass
class Subscriber:
    """Subscribes to ``pattern`` with a persistent session (clean_session false, QoS 1), so
    messages published while it is disconnected (broker restarts) wait for it; reconnects
    until stopped."""

    broker: MosquittoBroker
    pattern: str = "monitor/#"
    identifier: str = "test-subscriber"
    client_options: dict[str, Any] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    _task: asyncio.Task[None] | None = None
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, timeout_s: float = 10) -> None:
        """Connect and subscribe (returns once subscribed)."""
        self._task = asyncio.create_task(self._run(), name="test.subscriber")
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)

    async def _run(self) -> None:
        while True:
            client = aiomqtt.Client(self.broker.host, self.broker.port,
                                    identifier=self.identifier, clean_session=False,
                                    **self.client_options)
            try:
                async with client:
                    await client.subscribe(self.pattern, qos=1)
                    self.connections += 1
                    self._subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.messages.append(Received(str(message.topic), message.payload,
                                                      message.retain))
            except aiomqtt.MqttError:
                consume_disconnect_error(client)
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on(self, topic: str) -> list[Received]:
        """Messages received on ``topic``."""
        return [m for m in self.messages if m.topic == topic]

    def events(self, topic: str = "monitor/events") -> list[dict[str, Any]]:
        """The JSON events received, in arrival order (duplicates included)."""
        return [m.json() for m in self.on(topic)]


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def retained(broker: MosquittoBroker, pattern: str, *, settle_s: float = 0.5,
                   **client_options: Any) -> dict[str, bytes]:
    """The retained messages under ``pattern`` (a fresh clean session collects them)."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-retained",
                              **client_options) as client:
        await client.subscribe(pattern, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle_s):
                async for message in client.messages:
                    if message.retain:
                        assert isinstance(message.payload, bytes)
                        found[str(message.topic)] = message.payload
    return found


def dedupe(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First occurrence of each ``(id, revision)``, in arrival order (what a subscriber does)."""
    seen: set[tuple[str, int]] = set()
    unique = []
    for event in events:
        key = (event["id"], event["revision"])
        if key not in seen:
            seen.add(key)
            unique.append(event)
    return unique


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """A mosquitto password file (``mosquitto_passwd -b``) with ``users`` (name → password)."""
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True,
                       capture_output=True)
