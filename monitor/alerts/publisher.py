"""MQTT publisher: the durable outbox in front of the broker, and the connection loop.

Topics (``<prefix>`` defaults to ``monitor``; ``docs/mqtt.md`` documents each with examples)::

    <prefix>/availability                retained  online | offline (offline is also the will)
    <prefix>/events                      QoS 1     JSON EventPayload (start / update / end)
    <prefix>/<camera>/<hazard>           retained  ON | OFF
    <prefix>/<camera>/<hazard>/snapshot  retained  JPEG of the latest alert frame (optional)
    <prefix>/<camera>/status             retained  JSON StatusPayload
    <prefix>/<camera>/verdict            retained  JSON VerdictPayload
    homeassistant/binary_sensor/...      retained  Home Assistant discovery (opt-in)

Payloads and topic names are in :mod:`monitor.alerts.payloads`.

Delivery: ``publish*()`` never blocks the pipeline. It writes the message to the durable
:class:`~monitor.alerts.outbox.Outbox` (SQLite, a fraction of a millisecond) and wakes the
sender; one
task sends the outbox in order and deletes each message only once the broker acknowledged it
(aiomqtt's ``publish`` waits for PUBACK at QoS 1). A broker outage or a killed daemon delays
messages instead of losing them; a message may go out twice (at-least-once), so events carry a
stable ``id`` and ``revision`` for subscribers to de-duplicate.

Retained state stays true across restarts: the outbox remembers which alerts are raised, so a
restarted daemon ends them (``end_reason: restart``) when it declares its hazards ``OFF``; it
remembers the retained topics it owns, so the topics (and Home Assistant entities) of a camera
removed from the configuration are cleared. After a reconnect the acknowledged retained state is
sent again before newer messages, because a broker restarted without persistence has lost it.

The connection loop reconnects forever with jittered, capped exponential backoff and logs the
delay; refused credentials are reported clearly (never with the password) and retried, because
the broker's user database may be fixed without restarting us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor.alerts.health import HealthEvent
from monitor.alerts.outbox import OpenAlert, Outbox, OutboxError, Outgoing
from monitor.alerts.payloads import (
    Box,
    ClipRef,
    EventPayload,
    HealthEventPayload,
    SnapshotRef,
    StatusPayload,
    Topics,
    VerdictPayload,
)
from monitor.alerts.retained import RetainedState
from monitor.alerts.tracker import AlertEvent, EventType
from monitor.backoff import backoff_s
from monitor.config import MqttConfig
from monitor.model.answer import Hazard, Verdict
from monitor.redaction import redact, redact_payload

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
RECONNECT_BASE_S = 1.0
RECONNECT_FACTOR = 1.5
"""Reconnect waits: full jitter under 1, 1.5, 2.25 ... s (aiomqtt's own example grows by 1.5)."""
RECONNECT_CAP_S = 30.0
SEND_BATCH = 100

# MQTT 3.1.1 CONNACK codes 4/5 and MQTT 5 reason codes 134/135: the broker refused who we are.
_AUTH_CODES = {4, 5, 134, 135}
_RETRY_REFUSALS = frozenset({0x80, 0x91, 0x97})
"""PUBACK reason codes worth sending the message again for: unspecified error, packet
identifier in use, quota exceeded. Others (not authorized, topic name invalid, payload format
invalid, implementation specific) say the same message will be refused again."""
REFUSAL_RETRY_S = 5.0
REFUSAL_RETRIES = 12
"""A message refused "for now" this many times in a row is refused for good: it must not
hold back everything behind it for ever."""


class AckingClient(aiomqtt.Client):
    """aiomqtt's client, keeping the MQTT 5 reason code of each PUBACK, which aiomqtt 2.x drops.

    aiomqtt completes ``publish()`` on any PUBACK, so a message the broker refused (its ACL
    answers "Not authorized") would look delivered and leave the outbox unseen.
    :meth:`deliver` says whether the broker took the message.
    """

    def __init__(self, **kwargs: Any) -> None:
        """Takes aiomqtt.Client's keyword arguments."""
        super().__init__(**kwargs)
        self._refusals: dict[int, ReasonCode] = {}
        self._last_mid: int | None = None
        send = self._client.publish

        def publish(*args: Any, **kwargs: Any) -> paho.MQTTMessageInfo:
            info = send(*args, **kwargs)
            self._last_mid = info.mid  # our task's publish: nothing runs in between
            return info

        self._client.publish = publish  # type: ignore[method-assign]

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        if reason_code.is_failure:
            self._refusals[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def deliver(self, topic: str, payload: bytes, *, qos: int,
                      retain: bool) -> ReasonCode | None:
        """Publish and wait for the acknowledgement; the broker's reason code when it refused
        the message, ``None`` when it took it."""
        self._last_mid = None
        await self.publish(topic, payload, qos=qos, retain=retain, timeout=PUBLISH_TIMEOUT_S)
        mid = self._last_mid
        return self._refusals.pop(mid, None) if mid is not None else None


class MqttPublisher:
    """Owns the broker connection; everything else only calls the non-blocking ``publish*``."""

    def __init__(self, config: MqttConfig, outbox: Outbox | None = None,
                 rng: random.Random | None = None,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        """``on_event(hazard, type)`` is called for every event stored (metrics)."""
        self._config = config
        self._on_event = on_event
        self.topics = Topics(config.topic_prefix)
        self.outbox = outbox if outbox is not None else Outbox(
            None, max_messages=config.queue_size, max_bytes=config.outbox_max_bytes,
            max_age_s=config.outbox_max_age_s)
        self.retained_state = RetainedState(config, self.topics, self.outbox, self.publish,
                                            self._publish_left_open_end)
        self.on_left_open_end: Callable[[EventPayload], None] | None = None
        """Called with the ``end`` of each alert a previous run left raised, once stored
        (the notification channels get these ends too)."""
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._retained: dict[str, bytes] = {}
        """Acknowledged retained state, sent again after a reconnect."""
        self._rng = rng or random.Random()
        self._ever_connected = False
        self.connected = False
        self.write_failures = 0
        self.refused = 0
        """Messages the broker refused for good (MQTT 5 PUBACK reason code), dropped."""
        self.last_refusal: str | None = None
        self._refused_topics: set[str] = set()
        self._retries: tuple[int, int] = (-1, 0)
        """(outbox sequence number, refusals "for now" in a row) of the message at the head."""
        self.connect_attempts = 0
        self.last_error: str | None = None

    # --- what the pipeline calls (never blocks) ---

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False,
                qos: int | None = None, owner: tuple[str, str | None] | None = None) -> None:
        """Store a message for the broker; never blocks."""
        data = payload.encode() if isinstance(payload, str) else payload
        self._store([Outgoing(topic, data, self._config.qos if qos is None else qos, retain)],
                    owner=owner)

    def _store(self, messages: Sequence[Outgoing], *, open_alert: OpenAlert | None = None,
               close_alert: str | None = None,
               owner: tuple[str, str | None] | None = None) -> bool:
        # Last exit before the broker: payloads quote error texts (a camera's last_error, a
        # server's refusal) that may carry a credential.
        messages = [replace(m, payload=redact_payload(m.payload)) for m in messages]
        if open_alert is not None:
            open_alert = replace(open_alert, payload=redact(open_alert.payload))
        try:
            self.outbox.put(messages, open_alert=open_alert, close_alert=close_alert,
                            owner=owner)
        except OutboxError as exc:
            # The disk is full or broken: the pipeline goes on (alerts still matter), but
            # this message cannot be kept; count and log it (the message says it all: no
            # traceback).
            self.write_failures += 1
            logger.error("mqtt: %s; %s not stored (%d lost so far)", exc,  # noqa: TRY400
                         ", ".join(m.topic for m in messages), self.write_failures)
            return False
        self._wakeup.set()
        return True

    def publish_event(self, event: AlertEvent, *, verdict: Verdict | None = None,
                      boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None,
                      clip: ClipRef | None = None) -> None:
        """Store an alert event and the matching retained ``ON``/``OFF``, atomically."""
        payload = EventPayload.from_event(event, verdict=verdict, boxes=boxes,
                                          snapshot=snapshot, clip=clip)
        self._publish_event_payload(payload)

    def _publish_left_open_end(self, payload: EventPayload) -> None:
        self._publish_event_payload(payload)
        if self.on_left_open_end is not None:
            self.on_left_open_end(payload)

    def _publish_event_payload(self, payload: EventPayload) -> None:
        camera, hazard = payload.camera, payload.hazard
        text = payload.model_dump_json()
        ended = payload.type == EventType.END.value
        messages = [
            Outgoing(self.topics.events, text.encode(), self._config.qos, retain=False),
            Outgoing(self.topics.hazard(camera, hazard), b"OFF" if ended else b"ON",
                     self._config.qos, retain=True),
        ]
        stored = self._store(
            messages,
            open_alert=None if ended else OpenAlert(payload.id, camera, hazard.value, text),
            close_alert=payload.id if ended else None, owner=(camera, hazard.value),
        )
        if stored and self._on_event is not None:
            self._on_event(hazard.value, payload.type)

    def set_hazard_state(self, camera_id: str, hazard: Hazard, *, on: bool) -> None:
        """Store the retained ``ON``/``OFF`` of one camera's hazard; ``OFF`` ends alerts a
        previous run left open for it first (:meth:`RetainedState.set_hazard_state`)."""
        self.retained_state.set_hazard_state(camera_id, hazard, on=on)

    def publish_snapshot(self, camera_id: str, hazard: Hazard, jpeg: bytes) -> str | None:
        """Store the retained evidence JPEG, if enabled; returns its topic."""
        if not self._config.snapshots:
            return None
        topic = self.topics.snapshot(camera_id, hazard)
        self.publish(topic, jpeg, retain=True, owner=(camera_id, hazard.value))
        return topic

    def publish_health(self, event: HealthEvent) -> None:
        """Store a camera health event (``<prefix>/health``, not retained)."""
        self.publish(self.topics.health, HealthEventPayload.from_event(event).model_dump_json())

    def publish_status(self, payload: StatusPayload) -> None:
        """Store a camera's retained stream status."""
        self.publish(self.topics.status(payload.camera), payload.model_dump_json(),
                     retain=True, owner=(payload.camera, None))

    def publish_verdict(self, verdict: Verdict) -> None:
        """Store a camera's retained latest verdict."""
        payload = VerdictPayload.from_verdict(verdict)
        self.publish(self.topics.verdict(verdict.camera_id), payload.model_dump_json(),
                     retain=True, owner=(verdict.camera_id, None))

    def reconcile(self, cameras: Mapping[str, Sequence[Hazard]]) -> None:
        """Reconcile what a previous run left with the configured ``cameras`` (id → hazards):
        see :meth:`RetainedState.reconcile`; idempotent."""
        self.retained_state.reconcile(cameras)

    @property
    def pending(self) -> int:
        """Messages waiting for the broker."""
        return self.outbox.depth

    @property
    def dropped(self) -> int:
        """Messages dropped: the outbox was full, they were too old, could not be stored, or
        the broker refused them."""
        return self.outbox.dropped + self.outbox.expired + self.write_failures + self.refused

    # --- the connection ---

    async def run(self) -> None:
        """Connect, send the outbox, reconnect on failure; returns after ``close()``."""
        where = f"{self._config.host}:{self._config.port}"
        attempt = 0
        while True:
            self.connect_attempts += 1
            client = mqtt_client(self._config, self.topics)
            try:
                async with client:
                    attempt = 0
                    self.connected, self.last_error = True, None
                    logger.info("mqtt: connected to %s as %s (MQTT %s%s)", where,
                                self._config.client_id, self._config.protocol,
                                ", TLS" if self._config.uses_tls else "")
                    self._refused(self.topics.availability, await client.deliver(
                        self.topics.availability, b"online", qos=1, retain=True))
                    if self._ever_connected:
                        # The broker may have lost retained state (restart without
                        # persistence): send ours again before the newer outbox messages;
                        # not where a newer value waits, so no subscriber sees a stale ON.
                        newer = self.outbox.pending_retained_topics()
                        for topic, payload in list(self._retained.items()):
                            if topic in newer:
                                continue
                            self._refused(topic, await client.deliver(
                                topic, payload, qos=self._config.qos, retain=True))
                    self._ever_connected = True
                    await self._send_outbox(client)
                    self._refused(self.topics.availability, await client.deliver(
                        self.topics.availability, b"offline", qos=1, retain=True))
                    self.connected = False
                    logger.info("mqtt: published offline, disconnecting")
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                self.last_error = describe_failure(self._config, exc)
                consume_disconnect_error(client)
                if self._closing.is_set():
                    logger.warning("mqtt: broker %s unreachable at shutdown (%s); %d message(s) "
                                   "stay in the outbox for the next start", where,
                                   self.last_error, self.outbox.depth)
                    return
                delay = backoff_s(attempt, self._rng, base_s=RECONNECT_BASE_S,
                                  cap_s=RECONNECT_CAP_S, factor=RECONNECT_FACTOR)
                attempt += 1
                logger.warning("mqtt: broker %s: %s; reconnecting in %.1f s (%d queued)",
                               where, self.last_error, delay, self.outbox.depth)
                try:
                    await asyncio.wait_for(self._closing.wait(), timeout=delay)
                except TimeoutError:
                    continue

    async def _send_outbox(self, client: AckingClient) -> None:
        while True:
            # Clear before reading: a message stored after head() sets it again, and nothing
            # can run between these two lines (no await), so no wakeup is lost.
            self._wakeup.clear()
            batch = self.outbox.head(SEND_BATCH)
            if not batch:
                if self._closing.is_set():
                    return
                await wait_either(self._closing, self._wakeup)
                continue
            for message in batch:
                refusal = await client.deliver(message.topic, message.payload,
                                               qos=message.qos, retain=message.retain)
                retries = self._retries[1] if self._retries[0] == message.seq else 0
                if refusal is not None and refusal.value in _RETRY_REFUSALS \
                        and retries < REFUSAL_RETRIES:
                    # The broker may take it later: keep it (and the order), try again.
                    self._retries = (message.seq, retries + 1)
                    logger.warning("mqtt: the broker refused %s for now (%s); trying again in "
                                   "%g s", message.topic, refusal, REFUSAL_RETRY_S)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), timeout=REFUSAL_RETRY_S)
                    if self._closing.is_set():
                        return  # it stays in the outbox for the next start
                    break
                # Only now, acknowledged (or refused for good), does it leave the outbox.
                self.outbox.ack(message.seq)
                if self._refused(message.topic, refusal):
                    continue
                if message.retain:
                    if message.payload:
                        self._retained[message.topic] = message.payload
                    else:
                        self._retained.pop(message.topic, None)

    def _refused(self, topic: str, refusal: ReasonCode | None) -> bool:
        """Count and report a message the broker refused for good; ``True`` if it did."""
        if refusal is None:
            return False
        self.refused += 1
        self.last_refusal = f"{topic}: {refusal}"
        # Once per topic, then every 100th: an ACL that denies a whole tree refuses every
        # message, and one line per message would bury the log.
        if topic not in self._refused_topics or self.refused % 100 == 0:
            self._refused_topics.add(topic)
            logger.error("mqtt: the broker refused %s (%s); dropped (%d refused so far). Check "
                         "the broker's ACL for this client (%s) and its topic prefix %r",
                         topic, refusal, self.refused,
                         f"user {self._config.username!r}" if self._config.username
                         else "anonymous", self._config.topic_prefix)
        return True

    def close(self) -> None:
        """Ask ``run()`` to send what is stored, publish ``offline`` and return."""
        self._closing.set()
        self._wakeup.set()


def consume_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark aiomqtt's "unexpected disconnection" as seen.

    aiomqtt 2.x stores it in a future that ``__aexit__`` skips after a lost connection, so
    asyncio would log "Future exception was never retrieved" at ERROR level for every broker
    outage, which reads like a crash to an operator. We already reported the outage."""
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future) and disconnected.done() \
            and not disconnected.cancelled():
        disconnected.exception()


def mqtt_client(config: MqttConfig, topics: Topics) -> AckingClient:
    """The client for one connection attempt, its will ``offline`` on the availability topic."""
    tls = None
    if config.uses_tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(config.ca_file) if config.ca_file else None,
            certfile=str(config.cert_file) if config.cert_file else None,
            keyfile=str(config.key_file) if config.key_file else None,
        )
    return AckingClient(
        hostname=config.host, port=config.port, username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        identifier=config.client_id, keepalive=config.keepalive_s,
        protocol=(aiomqtt.ProtocolVersion.V5 if config.protocol == "5"
                  else aiomqtt.ProtocolVersion.V311),
        tls_params=tls, tls_insecure=config.tls_insecure if tls else None,
        timeout=PUBLISH_TIMEOUT_S,
        will=aiomqtt.Will(topics.availability, b"offline", qos=1, retain=True),
    )


def describe_failure(config: MqttConfig, exc: aiomqtt.MqttError) -> str:
    """A log line for a connection failure that says what to fix (never the password)."""
    # Only a refused CONNECT says something about credentials (a publish error's code is
    # paho's own numbering, where 4 means "not connected").
    code = exc.rc if isinstance(exc, MqttConnectError) else None
    value = getattr(code, "value", code)
    if isinstance(value, int) and value in _AUTH_CODES:
        who = f"user {config.username!r}" if config.username else "anonymous"
        return (f"the broker refused the credentials ({who}): {exc}; check mqtt.username "
                f"and mqtt.password (and the broker's password_file/ACL)")
    return str(exc)


async def wait_either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Wait until ``first`` or ``second`` is set."""
    one = asyncio.ensure_future(first.wait())
    two = asyncio.ensure_future(second.wait())
    try:
        await asyncio.wait({one, two}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        one.cancel()
        two.cancel()
