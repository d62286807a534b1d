"""Where the camera pipelines' results go: MQTT, the evidence store, the metrics.

:class:`AlertSink` implements :class:`~monitor.service.pipeline.PipelineSink` over the
:class:`~monitor.alerts.publisher.MqttPublisher` (retained verdict, events and their ``ON``/
``OFF``, the retained snapshot), the :class:`~monitor.alerts.evidence.SnapshotStore` (evidence
JPEGs, written on the executor) and :class:`~monitor.service.telemetry.Metrics`. One sink serves
every camera. Another destination for alerts (a notification channel, a clip recorder) is added
here, next to ``event``: the pipelines do not change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor

from monitor.alerts.evidence import SnapshotError, SnapshotStore
from monitor.alerts.health import HealthEvent
from monitor.alerts.notify.delivery import NotifyHub
from monitor.alerts.payloads import (
    Box,
    EventPayload,
    HealthEventPayload,
    SnapshotRef,
    StatusPayload,
    iso_time,
)
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent
from monitor.console.state import ConsoleState
from monitor.model.answer import Verdict
from monitor.model.verify import CropCheck
from monitor.service.clips import ClipRecorder
from monitor.service.pipeline import Frame
from monitor.service.telemetry import Metrics

logger = logging.getLogger(__name__)


class AlertSink:
    """Publishes, stores and counts what the pipelines produce (see the module docstring)."""

    clips: ClipRecorder | None = None
    """Evidence clips: a ``start`` begins one, every event carries its reference."""

    def __init__(self, publisher: MqttPublisher, snapshots: SnapshotStore | None,
                 metrics: Metrics, executor: Executor, *,
                 console: ConsoleState | None = None, notify: NotifyHub | None = None) -> None:
        self._publisher = publisher
        self.console = console
        """The operator console's memory, fed one way from here (``None``: console off)."""
        self._notify = notify
        self._snapshots = snapshots
        self._metrics = metrics
        self._executor = executor

    def sampled(self, camera_id: str) -> None:
        """A frame was taken for analysis."""
        self._metrics.frames_sampled.labels(camera_id).inc()

    def unchanged(self, camera_id: str) -> None:
        """The change gate kept the last verdict."""
        self._metrics.change_gate_skips.labels(camera_id).inc()

    def failed(self, camera_id: str, endpoint: str, outcome: str) -> None:
        """A frame was not analysed."""
        self._metrics.vlm_requests.labels(endpoint, outcome).inc()

    def verdict(self, verdict: Verdict) -> None:
        """Count the request and its cost, and publish the retained verdict."""
        metrics = self._metrics
        metrics.vlm_requests.labels(verdict.endpoint, "ok").inc()
        metrics.vlm_latency.labels(verdict.endpoint).observe(verdict.latency_s)
        metrics.frame_age.observe(verdict.analysed_at - verdict.captured_at)
        if verdict.prompt_tokens is not None:
            metrics.tokens.labels("prompt").inc(verdict.prompt_tokens)
        if verdict.completion_tokens is not None:
            metrics.tokens.labels("completion").inc(verdict.completion_tokens)
        if verdict.verification is not None:
            # The zoom-in questions are GPU work too: the same counters.
            for result in verdict.verification.results:
                for check in result.checks:
                    metrics.tokens.labels("prompt").inc(check.prompt_tokens or 0)
                    metrics.tokens.labels("completion").inc(check.completion_tokens or 0)
        self._publisher.publish_verdict(verdict)
        if self.console is not None:
            self.console.record_verdict(verdict)

    async def evidence(self, event: AlertEvent, frame: Frame,
                       boxes: Sequence[Box]) -> SnapshotRef | None:
        """The event's frame as a JPEG with its boxes drawn (file + retained MQTT topic);
        ``None`` when disabled or when it cannot be written (logged: the alert matters more)."""
        store = self._snapshots
        if store is None:
            return None
        path = store.path_for(event.camera_id, event.hazard, event.event_id, event.revision,
                              event.at)
        caption = (f"{event.hazard.value.upper()} {event.camera_id} "
                   f"{iso_time(event.at)}" + (f" missing hard hats: {event.missing_helmets}"
                                              if event.missing_helmets else ""))
        try:
            # Drawing, JPEG and the write are blocking: the executor, never the loop.
            jpeg = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: store.save(frame.to_bgr(), boxes, caption, path))
        except SnapshotError as exc:
            logger.warning("camera %s: evidence image not saved: %s", event.camera_id, exc)
            return None
        topic = self._publisher.publish_snapshot(event.camera_id, event.hazard, jpeg)
        return store.reference(path, topic)

    async def crop_evidence(self, event: AlertEvent,
                            checks: Sequence[CropCheck]) -> list[str | None]:
        """The zoom-in crops behind the event, saved next to its evidence image
        (``...-r<revision>-zoom<n>.jpg``, captioned ``zoom-in <n>``); their paths, ``None``
        where there is no crop or it cannot be written (logged)."""
        store = self._snapshots
        if store is None:
            return [None] * len(checks)
        frame_path = store.path_for(event.camera_id, event.hazard, event.event_id,
                                    event.revision, event.at)
        paths: list[str | None] = []
        loop = asyncio.get_running_loop()
        for number, check in enumerate(checks, start=1):
            crop = check.image
            if crop is None:
                paths.append(None)
                continue
            path = frame_path.with_name(f"{frame_path.stem}-zoom{number}.jpg")
            try:
                await loop.run_in_executor(self._executor, store.save, crop, [],
                                           f"zoom-in {number}", path)
            except SnapshotError as exc:
                logger.warning("camera %s: zoom-in crop not saved: %s", event.camera_id, exc)
                paths.append(None)
                continue
            paths.append(str(path))
        return paths

    def event(self, event: AlertEvent, *, verdict: Verdict | None = None,
              boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None) -> None:
        """Publish an alert event (counted by the publisher's ``on_event``, like the ends it
        adds itself for alerts a previous run left open)."""
        clip = self.clips.clip_for(event) if self.clips is not None else None
        self._publisher.publish_event(event, verdict=verdict, boxes=boxes, snapshot=snapshot,
                                      clip=clip)
        if self.console is not None:
            self.console.record_event(event, snapshot, clip=clip, verdict=verdict)
        if self._notify is not None:
            # After MQTT, into each channel's own queue: a channel never delays the broker.
            self._notify.event(EventPayload.from_event(event, verdict=verdict, boxes=boxes,
                                                       snapshot=snapshot, clip=clip))

    def health(self, event: HealthEvent) -> None:
        """Publish a camera health event (a destination added next to ``event`` gets these
        too: they are events a channel may page someone for)."""
        self._publisher.publish_health(event)
        if self.console is not None:
            self.console.record_health(event)
        if self._notify is not None:
            self._notify.health(HealthEventPayload.from_event(event))

    def stream_status(self, payload: StatusPayload) -> None:
        """Publish a camera's stream status (retained) and show it in the console."""
        self._publisher.publish_status(payload)
        if self.console is not None:
            self.console.record_stream(payload)

    def ack(self, payload: EventPayload) -> None:
        """Publish an operator's ``ack`` step on ``<prefix>/events`` and hand it to the
        notification channels (filter ``ack``), like every other event step."""
        self._publisher.publish(self._publisher.topics.events, payload.model_dump_json())
        if self._notify is not None:
            self._notify.event(payload)
