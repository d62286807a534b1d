"""The operator console's actions, carried out where the trackers and the publisher live.

* **acknowledge**: an ``ack`` step on ``<prefix>/events`` with who and when; the alert stays
  raised (its retained ``ON`` is untouched).
* **false alarm**: the camera's tracker ends the alert with end reason ``false_alarm`` and
  keeps that hazard quiet for ``console.false_alarm_hold_s``, or until the scene changes
  (:mod:`monitor.console.holds`); the frame the model judged goes to the feedback folder
  labelled "not present".
* **missed hazard**: the camera's newest analysed frame goes to the feedback folder labelled
  "present".

The console's web routes and the MQTT command topics (:mod:`monitor.service.console_commands`)
both call these.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from monitor.alerts.payloads import EventPayload, iso_time
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import HazardTracker
from monitor.console.feedback import FeedbackFolder
from monitor.console.holds import Hold, SceneHolds, jpeg_thumbnail
from monitor.console.state import ConsoleAlert, ConsoleState, Sample
from monitor.console.web import ActionError
from monitor.model.answer import Hazard
from monitor.service.sink import AlertSink

logger = logging.getLogger(__name__)


class ConsoleActionHandler:
    """Implements :class:`~monitor.console.web.ConsoleActions` (see the module docstring)."""

    def __init__(self, console: ConsoleState, publisher: MqttPublisher, sink: AlertSink,
                 trackers: Callable[[str], HazardTracker | None], feedback: FeedbackFolder,
                 *, hold_s: float, scene_change: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        self._console = console
        self._publisher = publisher
        self._sink = sink
        self._trackers = trackers
        self._feedback = feedback
        self._hold_s = hold_s
        self._clock = clock
        self._holds = SceneHolds(scene_change)
        self._checking: set[str] = set()
        """Cameras whose newest frame is being compared (one at a time per camera)."""
        self._tasks: set[asyncio.Task[None]] = set()

    def _raised(self, event_id: str) -> ConsoleAlert:
        alert = self._console.alert(event_id)
        if alert is None:
            raise ActionError(404, f"no alert {event_id[:40]!r} (unknown or forgotten)")
        if not alert.active:
            raise ActionError(409, f"alert {event_id} has already ended ({alert.end_reason})")
        return alert

    async def acknowledge(self, event_id: str, by: str) -> ConsoleAlert:
        """Record and publish an ``ack`` step."""
        alert = self._raised(event_id)
        at = self._clock()
        revision = max((s.revision for s in alert.steps if s.type != "ack"), default=0)
        self._console.record_ack(event_id, by, at)
        payload = EventPayload(
            id=alert.event_id, revision=revision, type="ack", camera=alert.camera_id,
            hazard=Hazard(alert.hazard), started_at=iso_time(alert.started_at), ended_at=None,
            at=iso_time(at), detail=alert.detail, confirming_verdicts=0, verdicts=[],
            missing_helmets=None, by=by)
        self._sink.ack(payload)  # MQTT, then the notification channels that take "ack"
        logger.info("camera %s: %s alert %s acknowledged by %s", alert.camera_id,
                    alert.hazard, event_id, by)
        return alert

    async def false_alarm(self, event_id: str, by: str) -> ConsoleAlert:
        """End the alert as a false alarm, hold the hazard quiet, save a negative example."""
        alert = self._raised(event_id)
        tracker = self._trackers(alert.camera_id)
        hazard = Hazard(alert.hazard)
        event = tracker.dismiss(hazard, self._clock(), self._hold_s) \
            if tracker is not None else None
        if event is None:
            raise ActionError(409, f"alert {event_id} is no longer raised on camera "
                              f"{alert.camera_id}")
        event = dataclasses.replace(event, by=by)
        sample = (self._console.sample(alert.sample_id) if alert.sample_id is not None
                  else None) or self._console.latest(alert.camera_id)
        self._sink.event(event)  # end (false_alarm) on MQTT, OFF retained, and the console
        logger.info("camera %s: %s alert %s marked a false alarm by %s; quiet for %.0f s",
                    alert.camera_id, alert.hazard, event_id, by, self._hold_s)
        if sample is not None:
            path = await asyncio.to_thread(self._feedback.add, sample.jpeg,
                                           camera_id=alert.camera_id, hazard=hazard,
                                           present=False, at=sample.captured_at)
            logger.info("camera %s: false alarm saved as %s", alert.camera_id, path)
            await self._hold_until_scene_changes(alert.camera_id, hazard, sample.jpeg)
        return alert

    async def _hold_until_scene_changes(self, camera_id: str, hazard: Hazard,
                                        jpeg: bytes) -> None:
        try:
            reference = await asyncio.to_thread(jpeg_thumbnail, jpeg)
        except ValueError as exc:
            logger.warning("camera %s: no scene reference for the hold (%s); it lasts "
                           "%.0f s", camera_id, exc, self._hold_s)
            return
        self._holds.add(Hold(camera_id, hazard, self._clock() + self._hold_s, reference))
        self._console.watch_samples(self._on_sample, previous=self._on_sample)

    def _on_sample(self, sample: Sample) -> None:
        """A new analysed frame (on the loop): compare it in a thread if a hold awaits it."""
        camera_id = sample.camera_id
        if camera_id not in self._holds.cameras() or camera_id in self._checking:
            return
        self._checking.add(camera_id)
        task = asyncio.get_running_loop().create_task(self._check(sample),
                                                      name=f"console.hold[{camera_id}]")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, sample: Sample) -> None:
        try:
            thumbnail = await asyncio.to_thread(jpeg_thumbnail, sample.jpeg)
            now = self._clock()
            tracker = self._trackers(sample.camera_id)
            for hazard in self._holds.ended(sample.camera_id, thumbnail, now):
                if tracker is not None:
                    tracker.lift_hold(hazard, now)
                logger.info("camera %s: the scene changed; %s may alert again",
                            sample.camera_id, hazard.value)
        except ValueError as exc:
            logger.warning("camera %s: frame not compared for the hold: %s",
                           sample.camera_id, exc)
        finally:
            self._checking.discard(sample.camera_id)
            if not self._holds:
                self._console.watch_samples(None, previous=self._on_sample)

    async def missed(self, camera_id: str, hazard: Hazard, by: str) -> str:
        """Save the camera's newest analysed frame as showing ``hazard``."""
        sample = self._console.latest(camera_id)
        if sample is None:
            raise ActionError(409, f"camera {camera_id} has no analysed frame yet")
        path = await asyncio.to_thread(self._feedback.add, sample.jpeg, camera_id=camera_id,
                                       hazard=hazard, present=True, at=sample.captured_at)
        logger.info("camera %s: missed %s marked by %s, saved as %s", camera_id, hazard.value,
                    by, path)
        return str(path)
