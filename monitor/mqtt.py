"""MQTT interface: topics, payload models, and the publisher's connection loop.

Topics (``<prefix>`` defaults to ``monitor``)::

    <prefix>/availability              retained  online | offline (offline is also the will)
    <prefix>/events                    QoS 1     JSON EventPayload (start / end)
    <prefix>/<camera>/<hazard>         retained  ON | OFF
    <prefix>/<camera>/status           retained  JSON StatusPayload
    <prefix>/<camera>/verdict          retained  JSON VerdictPayload

Publishing never blocks the pipeline: ``publish()`` appends to a bounded in-memory queue (the
oldest message is dropped past the bound, counted and logged) and one task sends the queue in
order. A message leaves the queue only once the broker acknowledged it (aiomqtt's ``publish``
waits for PUBACK at QoS 1), so a broker outage delays messages instead of losing them.
The connection loop reconnects forever with jittered, capped exponential backoff and logs the
delay; bad credentials are reported the same way and retried, because the broker's user
database may be fixed without restarting us.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from pydantic import BaseModel, ConfigDict

from monitor.capture import StreamStatus
from monitor.config import MqttConfig
from monitor.tracker import AlertEvent
from monitor.verdict import Hazard, SafetyAnswer, Verdict

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
RECONNECT_CAP_S = 30.0


def iso_time(epoch_s: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventPayload(_Payload):
    """An alert starting or ending (``<prefix>/events``)."""

    id: str
    type: str
    camera: str
    hazard: Hazard
    started_at: str
    ended_at: str | None
    at: str
    detail: str
    confirming_verdicts: int
    missing_helmets: int | None

    @classmethod
    def from_event(cls, event: AlertEvent) -> EventPayload:
        """The wire form of a tracker event."""
        return cls(
            id=event.event_id, type=event.type.value, camera=event.camera_id,
            hazard=event.hazard, started_at=iso_time(event.started_at),
            ended_at=iso_time(event.ended_at) if event.ended_at is not None else None,
            at=iso_time(event.at), detail=event.detail,
            confirming_verdicts=event.confirming_verdicts, missing_helmets=event.missing_helmets,
        )


class StatusPayload(_Payload):
    """A camera stream's state (``<prefix>/<camera>/status``)."""

    camera: str
    online: bool
    url: str
    width: int | None
    height: int | None
    codec: str | None
    fps: float | None
    last_error: str | None
    reconnects: int
    updated_at: str

    @classmethod
    def from_status(cls, status: StreamStatus, at: float) -> StatusPayload:
        """The wire form of a reader's status (its URL is already redacted)."""
        return cls(
            camera=status.camera_id, online=status.online, url=status.url,
            width=status.width, height=status.height, codec=status.codec, fps=status.fps,
            last_error=status.last_error, reconnects=status.reconnects,
            updated_at=iso_time(at),
        )


class VerdictPayload(_Payload):
    """The latest validated answer for a camera (``<prefix>/<camera>/verdict``)."""

    camera: str
    captured_at: str
    analysed_at: str
    latency_s: float
    model: str
    answer: SafetyAnswer
    prompt_tokens: int | None
    completion_tokens: int | None

    @classmethod
    def from_verdict(cls, verdict: Verdict) -> VerdictPayload:
        """The wire form of a verdict."""
        return cls(
            camera=verdict.camera_id, captured_at=iso_time(verdict.captured_at),
            analysed_at=iso_time(verdict.analysed_at), latency_s=round(verdict.latency_s, 3),
            model=verdict.model, answer=verdict.answer, prompt_tokens=verdict.prompt_tokens,
            completion_tokens=verdict.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str

    @property
    def availability(self) -> str:
        """Retained ``online``/``offline``."""
        return f"{self.prefix}/availability"

    @property
    def events(self) -> str:
        """Alert events (QoS 1, not retained)."""
        return f"{self.prefix}/events"

    def hazard(self, camera_id: str, hazard: Hazard) -> str:
        """Retained ``ON``/``OFF`` per camera and hazard."""
        return f"{self.prefix}/{camera_id}/{hazard.value}"

    def status(self, camera_id: str) -> str:
        """Retained stream status per camera."""
        return f"{self.prefix}/{camera_id}/status"

    def verdict(self, camera_id: str) -> str:
        """Retained latest verdict per camera."""
        return f"{self.prefix}/{camera_id}/verdict"


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttPublisher:
    """Owns the broker connection; everything else only calls the non-blocking ``publish*``."""

    def __init__(self, config: MqttConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self.topics = Topics(config.topic_prefix)
        self._queue: deque[_Message] = deque()
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._retained: dict[str, _Message] = {}
        self._rng = rng or random.Random()
        self._ever_connected = False
        self.connected = False
        self.dropped = 0
        self.last_error: str | None = None

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False,
                qos: int | None = None) -> None:
        """Queue a message; never blocks. Past ``queue_size`` the oldest is dropped."""
        data = payload.encode() if isinstance(payload, str) else payload
        message = _Message(topic, data, self._config.qos if qos is None else qos, retain)
        if retain:
            self._retained[topic] = message
        if len(self._queue) >= self._config.queue_size:
            lost = self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.error("mqtt: queue full (%d messages, broker unreachable?); dropped "
                             "the oldest (%s); %d dropped so far", self._config.queue_size,
                             lost.topic, self.dropped)
        self._queue.append(message)
        self._wakeup.set()

    def publish_event(self, event: AlertEvent) -> None:
        """Queue an alert event and the matching retained ``ON``/``OFF`` state."""
        payload = EventPayload.from_event(event)
        self.publish(self.topics.events, payload.model_dump_json())
        self.set_hazard_state(event.camera_id, event.hazard, on=event.type.value == "start")

    def set_hazard_state(self, camera_id: str, hazard: Hazard, *, on: bool) -> None:
        """Queue the retained ``ON``/``OFF`` of one camera's hazard."""
        self.publish(self.topics.hazard(camera_id, hazard), "ON" if on else "OFF", retain=True)

    def publish_status(self, status: StreamStatus, at: float) -> None:
        """Queue a camera's retained stream status."""
        payload = StatusPayload.from_status(status, at)
        self.publish(self.topics.status(status.camera_id), payload.model_dump_json(),
                     retain=True)

    def publish_verdict(self, verdict: Verdict) -> None:
        """Queue a camera's retained latest verdict."""
        payload = VerdictPayload.from_verdict(verdict)
        self.publish(self.topics.verdict(verdict.camera_id), payload.model_dump_json(),
                     retain=True)

    @property
    def pending(self) -> int:
        """Messages waiting for the broker."""
        return len(self._queue)

    def _client(self) -> aiomqtt.Client:
        config = self._config
        return aiomqtt.Client(
            hostname=config.host, port=config.port, username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            identifier=config.client_id, keepalive=config.keepalive_s,
            timeout=PUBLISH_TIMEOUT_S,
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
        )

    async def run(self) -> None:
        """Connect, send the queue, reconnect on failure; returns after ``close()``."""
        attempt = 0
        where = f"{self._config.host}:{self._config.port}"
        while True:
            try:
                async with self._client() as client:
                    self.connected, self.last_error, attempt = True, None, 0
                    logger.info("mqtt: connected to %s as %s", where, self._config.client_id)
                    await client.publish(self.topics.availability, b"online", qos=1,
                                         retain=True)
                    if self._ever_connected:
                        # The broker may have lost retained state (restart without
                        # persistence): send ours again before the newer queued messages.
                        for message in list(self._retained.values()):
                            await client.publish(message.topic, message.payload,
                                                 qos=message.qos, retain=True)
                    self._ever_connected = True
                    await self._send_queue(client)
                    await client.publish(self.topics.availability, b"offline", qos=1,
                                         retain=True)
                    self.connected = False
                    logger.info("mqtt: published offline, disconnecting")
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                self.last_error = str(exc)
                if self._closing.is_set():
                    logger.warning("mqtt: giving up at shutdown with %d messages unsent: %s",
                                   len(self._queue), exc)
                    return
                delay = min(RECONNECT_CAP_S, 1.5 ** min(attempt, 10)) * self._rng.uniform(0.5, 1)
                attempt += 1
                logger.warning("mqtt: broker %s: %s; reconnecting in %.1f s (%d queued)",
                               where, exc, delay, len(self._queue))
                try:
                    await asyncio.wait_for(self._closing.wait(), timeout=delay)
                except TimeoutError:
                    continue

    async def _send_queue(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._queue:
                if self._closing.is_set():
                    return
                self._wakeup.clear()
                closing = asyncio.ensure_future(self._closing.wait())
                wakeup = asyncio.ensure_future(self._wakeup.wait())
                try:
                    await asyncio.wait({closing, wakeup}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                    wakeup.cancel()
                continue
            message = self._queue[0]
            await client.publish(message.topic, message.payload, qos=message.qos,
                                 retain=message.retain, timeout=PUBLISH_TIMEOUT_S)
            # Only now, acknowledged, does the message leave the queue.
            if self._queue and self._queue[0] is message:
                self._queue.popleft()

    def close(self) -> None:
        """Ask ``run()`` to send what is queued, publish ``offline`` and return."""
        self._closing.set()
        self._wakeup.set()
