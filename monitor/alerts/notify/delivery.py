"""Durable delivery: one on-disk queue and one task per channel.

:class:`NotifyHub` takes every event step the pipelines produce (the same
:class:`~monitor.alerts.payloads.EventPayload` the MQTT publisher gets), and for each channel
that wants it renders the notification, applies the rate limit and stores it in that
channel's :class:`~monitor.alerts.outbox.Outbox` (``<state_dir>/notify/<name>.sqlite3``,
committed with fsync before :meth:`NotifyHub.event` returns, like an MQTT event).
:class:`ChannelWorker` sends its queue in order (so in order per camera), one notification at
a time, deleting each only once the service took it:

* a timeout, a connection error, HTTP 5xx or a rate-limit answer (HTTP 429, WeCom 45009,
  DingTalk 130101, Feishu 11232) is retried after the wait the service asked for, else after
  :func:`monitor.backoff.backoff_s` (up to ``retry_cap_s``);
* a refusal of the channel (bad key, token, signature) is logged once with the fix, counted,
  shown in ``/readyz`` and retried every ``retry_cap_s``: nothing is lost while it is fixed;
* a refusal of the message alone (the service rejects its content) drops it, logged and
  counted, so one bad message cannot block the channel.

Delivery is at least once: a notification the service took just before the daemon was killed
is sent again after the restart. The webhook carries ``Idempotency-Key`` (``<alert
id>:<revision>``), with which a receiver can make it exactly once; the chat services and
e-mail have no de-duplication, so a kill at that moment may duplicate one message.

Each channel's task is its own: a channel that is down delays neither MQTT (its own outbox
and task) nor the other channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerts.notify.channels import (
    FormPart,
    HttpRequest,
    Outcome,
    build_request,
    classify,
    image_limit,
    sends_image,
)
from monitor.alerts.notify.health_messages import health_notification_for, wants_health
from monitor.alerts.notify.images import fit_jpeg
from monitor.alerts.notify.messages import (
    Notification,
    RateLimiter,
    alert_event_names,
    notification_for,
    wants,
)
from monitor.alerts.notify.quiet import QuietHours
from monitor.alerts.notify.smtp import build_email, send_email
from monitor.alerts.outbox import Outbox, OutboxError, Outgoing
from monitor.alerts.payloads import EventPayload, HealthEventPayload
from monitor.backoff import backoff_s
from monitor.redaction import redact
from monitor.rules.schedules import WeeklySchedule

logger = logging.getLogger(__name__)

IDLE_POLL_S = 1.0
"""An idle channel looks for due digests this often (new notifications wake it at once)."""
RESTART_CAP_S = 60.0


@dataclass(slots=True)
class ChannelStats:
    """What a channel did in this process (for metrics and ``/readyz``)."""

    sent: int = 0
    retried: int = 0
    dropped: int = 0
    refusals: int = 0
    last_error: str | None = None
    refusal: Outcome | None = None
    """The channel's standing refusal (cleared by the next delivery)."""


class ChannelWorker:
    """One channel: its queue, its rate limit, its sending task (see the module docstring)."""

    def __init__(self, channel: Any, outbox: Outbox, *, clock: Any = time.time,
                 rng: random.Random | None = None,
                 schedule: WeeklySchedule | None = None) -> None:
        self.channel = channel
        self.name: str = channel.name
        self.outbox = outbox
        self.limiter = RateLimiter(channel.rate_limit)
        self.quiet = QuietHours(schedule, channel.urgent_hazards) \
            if schedule is not None else None
        """The channel's quiet hours (``schedule``), ``None``: it sends at any time."""
        self.stats = ChannelStats()
        self._clock = clock
        self._rng = rng or random.Random()
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._template_warned = False
        self._failures = 0

    # ------------------------------------------------------------ intake (event loop)

    def offer(self, payload: EventPayload) -> None:
        """Queue the notification of an event step if the channel wants it."""
        hazard = payload.hazard.value
        if not any(wants(self.channel, name, payload.camera, hazard)
                   for name in alert_event_names(payload)):
            return
        self._admit(*notification_for(self.channel, payload))

    def offer_health(self, payload: HealthEventPayload) -> None:
        """Queue the notification of a camera health event if the channel wants it."""
        if wants_health(self.channel, payload):
            self._admit(*health_notification_for(self.channel, payload))

    def _admit(self, notification: Notification, problem: str | None) -> None:
        if problem and not self._template_warned:
            self._template_warned = True
            logger.error("notify %s: %s; the default template is used", self.name,
                         redact(problem))
        now = self._clock()
        # Quiet hours first: what they hold back costs the rate limit nothing.
        if self.quiet is not None and not self.quiet.admit(notification, now):
            return
        if self.limiter.admit(notification, now):
            self.store(notification)

    def store(self, notification: Notification) -> None:
        """Put ``notification`` (and its image message, for WeCom) in the queue."""
        parts = [notification]
        if (self.channel.type == "wecom" and notification.image_path
                and sends_image(self.channel)):
            parts.append(replace(notification, key=f"{notification.key}:image", part="image"))
        self.outbox.put([Outgoing(notification.camera, part.to_json(), 1, retain=False)
                         for part in parts])
        self._wakeup.set()

    # ------------------------------------------------------------ sending (its own task)

    async def supervise(self) -> None:
        """:meth:`run`, restarted with backoff after a bug (logged), until cancelled."""
        failures = 0
        while True:
            try:
                await self.run()
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:
                delay = backoff_s(failures, self._rng, base_s=1.0, cap_s=RESTART_CAP_S)
                failures += 1
                logger.exception("notify %s: sender failed; restarting in %.1f s", self.name,
                                 delay)
                await asyncio.sleep(delay)

    async def run(self) -> None:
        """Send the queue until cancelled."""
        async with aiohttp.ClientSession() as session:
            self._session = session
            try:
                while True:
                    await self._turn()
            finally:
                self._session = None

    async def _turn(self) -> None:
        now = self._clock()
        quiet_digest = self.quiet.digest(now, self.channel.language) \
            if self.quiet is not None else None
        if quiet_digest is not None:
            self.store(quiet_digest)
        for digest in self.limiter.digests(now, self.channel.language):
            if self.quiet is None or self.quiet.admit(digest, now):
                self.store(digest)
        head = self.outbox.head(1)
        if not head:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=IDLE_POLL_S)
            return
        stored = head[0]
        try:
            notification = Notification.from_json(stored.payload)
        except (ValueError, TypeError):
            logger.exception("notify %s: unreadable queued notification dropped", self.name)
            self.outbox.ack(stored.seq)
            return
        outcome = await self.deliver(notification)
        self._record(outcome, notification)
        if outcome.kind in {"ok", "dropped"}:
            self.outbox.ack(stored.seq)
            return
        await asyncio.sleep(self._delay(outcome))

    def _delay(self, outcome: Outcome) -> float:
        if outcome.kind == "refused":
            return float(self.channel.retry_cap_s)
        if outcome.retry_after_s is not None:
            return min(outcome.retry_after_s, float(self.channel.retry_cap_s))
        return backoff_s(self._failures - 1, self._rng, base_s=1.0,
                         cap_s=self.channel.retry_cap_s)

    def _record(self, outcome: Outcome, notification: Notification) -> None:
        stats = self.stats
        if outcome.kind == "ok":
            if stats.refusal is not None or self._failures:
                logger.info("notify %s: delivering again (%s)", self.name,
                            redact(outcome.detail))
            stats.sent += 1
            stats.refusal = None
            stats.last_error = None
            self._failures = 0
            return
        detail = redact(outcome.detail)
        stats.last_error = detail
        if outcome.kind == "dropped":
            stats.dropped += 1
            logger.error("notify %s: %s (%s) dropped: %s", self.name, notification.kind,
                         notification.key, detail)
            return
        self._failures += 1
        if outcome.kind == "refused":
            stats.refusals += 1
            if stats.refusal is None or stats.refusal.detail != detail:
                logger.error("notify %s: refused by the service: %s; fix: %s. Notifications "
                             "wait in the channel's queue (%d)", self.name, detail,
                             outcome.fix, self.outbox.depth)
            stats.refusal = replace(outcome, detail=detail)
            return
        stats.retried += 1
        if self._failures == 1 or self._failures % 20 == 0:
            logger.warning("notify %s: not delivered (%s); retrying (%d waiting)", self.name,
                           detail, self.outbox.depth)

    async def deliver(self, notification: Notification) -> Outcome:
        """Send one notification and say what the service answered."""
        image = await self._image(notification)
        if notification.part == "image" and image is None:
            return Outcome("dropped", "evidence image missing or too large for the service")
        if self.channel.type == "email":
            channel = self.channel
            return await asyncio.to_thread(
                lambda: send_email(channel, build_email(channel, notification, image),
                                   channel.timeout_s))
        request = build_request(self.channel, notification, image, self._clock())
        return await self._http(request)

    async def _image(self, notification: Notification) -> bytes | None:
        path = notification.image_path
        wanted = notification.part == "image" if self.channel.type == "wecom" else True
        if not path or not wanted or not sends_image(self.channel):
            return None
        try:
            image = await asyncio.to_thread(Path(path).read_bytes)
        except OSError as exc:
            logger.warning("notify %s: evidence image %s unreadable (%s); sending without it",
                           self.name, path, exc.strerror)
            return None
        limit = image_limit(self.channel)
        if len(image) <= limit:
            return image
        fitted = await asyncio.to_thread(fit_jpeg, image, limit)
        if fitted is None:
            logger.warning("notify %s: evidence image of %d bytes cannot be shrunk under the "
                           "service's limit of %d; sending without it", self.name, len(image),
                           limit)
        return fitted

    async def _http(self, request: HttpRequest) -> Outcome:
        session = self._session
        if session is None:
            async with aiohttp.ClientSession() as own:
                self._session = own
                try:
                    return await self._http(request)
                finally:
                    self._session = None
        timeout = aiohttp.ClientTimeout(total=self.channel.timeout_s)
        data: Any = request.body if not request.form else _form(request.form)
        try:
            async with session.request(request.method, yarl.URL(request.url, encoded=True),
                                       headers=request.headers, data=data,
                                       timeout=timeout) as response:
                body = await response.read()
                return classify(self.channel.type, response.status, dict(response.headers),
                                body)
        except TimeoutError:
            return Outcome("retry", f"no answer within {self.channel.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return Outcome("retry", redact(f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------ reporting

    def reasons(self) -> list[str]:
        """``/readyz`` reasons: a standing refusal, or notifications waiting after errors."""
        stats = self.stats
        if stats.refusal is not None:
            return [(f"notify {self.name}: refused by the service ({stats.refusal.detail}); "
                    f"fix: {stats.refusal.fix}")]
        if stats.last_error is not None and self.outbox.depth:
            return [(f"notify {self.name}: {self.outbox.depth} waiting, last error "
                    f"{stats.last_error}")]
        return []


def _form(parts: Sequence[FormPart]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for part in parts:
        form.add_field(part.name, part.value, filename=part.filename,
                       content_type=part.content_type)
    return form


class NotifyHub:
    """Every configured channel (see the module docstring); constructed over open queues."""

    @classmethod
    def open(cls, channels: Iterable[Any], directory: Path,
             schedules: Mapping[str, WeeklySchedule] | None = None) -> NotifyHub:
        """Open each enabled channel's queue under ``directory`` (``schedules``: the
        configured ones by name, for the channels' quiet hours; names are checked at load).

        Raises:
            OutboxError: a queue cannot be opened (the state directory is unusable).
        """
        workers = []
        for channel in channels:
            if not channel.enabled:
                continue
            outbox = Outbox(directory / f"{channel.name}.sqlite3",
                            max_messages=channel.max_messages, max_age_s=channel.max_age_s,
                            peer=f"channel {channel.name}")
            schedule = (schedules or {}).get(channel.schedule) if channel.schedule else None
            workers.append(ChannelWorker(channel, outbox, schedule=schedule))
        return cls(workers)

    def __init__(self, workers: Sequence[ChannelWorker]) -> None:
        self.workers = list(workers)

    def event(self, payload: EventPayload) -> None:
        """Queue an event step for every channel that wants it (never raises: MQTT has it
        already, and one channel's full disk must not stop the others)."""
        for worker in self.workers:
            try:
                worker.offer(payload)
            except OutboxError as exc:
                logger.error("notify %s: %s %s not queued: %s", worker.name,  # noqa: TRY400
                             payload.type, payload.id, exc)

    def health(self, payload: HealthEventPayload) -> None:
        """Queue a camera health event for every channel that wants it (never raises, like
        :meth:`event`)."""
        for worker in self.workers:
            try:
                worker.offer_health(payload)
            except OutboxError as exc:
                logger.error("notify %s: health %s %s not queued: %s",  # noqa: TRY400
                             worker.name, payload.type, payload.id, exc)

    def reasons(self) -> list[str]:
        """``/readyz`` reasons of every channel."""
        return [reason for worker in self.workers for reason in worker.reasons()]

    def close(self) -> None:
        """Close the queues (what they hold stays on disk)."""
        for worker in self.workers:
            worker.outbox.close()


class NotifyCollector(Collector):
    """``/metrics`` of the channels, read at each scrape."""

    def __init__(self, hub: NotifyHub) -> None:
        self._hub = hub

    def collect(self) -> Iterable[Metric]:
        """The channels' counters and gauges."""
        sent = CounterMetricFamily("monitor_notify_sent", "Notifications delivered",
                                   labels=["channel"])
        failed = CounterMetricFamily(
            "monitor_notify_failures", "Delivery attempts that failed, by outcome (retry, "
            "refused: the channel's credentials, dropped: the message)",
            labels=["channel", "outcome"])
        held = CounterMetricFamily("monitor_notify_held_back", "Notifications summarised in "
                                   "a digest by the rate limit", labels=["channel"])
        depth = GaugeMetricFamily("monitor_notify_queue_depth", "Notifications waiting",
                                  labels=["channel"])
        refused = GaugeMetricFamily("monitor_notify_refused", "1 while the service refuses "
                                    "the channel's credentials", labels=["channel"])
        for worker in self._hub.workers:
            name, stats = worker.name, worker.stats
            sent.add_metric([name], stats.sent)
            failed.add_metric([name, "retry"], stats.retried)
            failed.add_metric([name, "refused"], stats.refusals)
            failed.add_metric([name, "dropped"], stats.dropped)
            held.add_metric([name], worker.limiter.held_back
                            + (worker.quiet.held_back if worker.quiet is not None else 0))
            depth.add_metric([name], worker.outbox.depth)
            refused.add_metric([name], 1 if stats.refusal is not None else 0)
        yield from (sent, failed, held, depth, refused)
