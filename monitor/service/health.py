"""Camera health: what each camera's stream, picture and verdicts say, turned into events.

:class:`HealthWatch` holds a :class:`~monitor.alerts.health.HealthTracker` per camera and one for
the daemon (the model pool). The supervisor calls :meth:`HealthWatch.check_camera` for every
camera and :meth:`HealthWatch.check_model` on each status round (every 0.5 s) with what it
knows: whether the stream is online, the picture conditions of the camera's latest sample
(:class:`~monitor.ingest.picture.PictureConditions`, kept by its pipeline), how long since its
scene was last judged, and whether every model endpoint is out. The events go out through the
same path as alert events (:meth:`monitor.service.sink.AlertSink.health`). Pure apart from
logging: times come in as arguments.
"""

from __future__ import annotations

import logging

from monitor.alerts.health import (
    HealthEndReason,
    HealthEvent,
    HealthProblem,
    HealthTracker,
)
from monitor.alerts.tracker import EventType
from monitor.config import HealthConfig
from monitor.ingest.picture import PictureConditions, PictureWatch

logger = logging.getLogger(__name__)


def camera_thresholds(config: HealthConfig) -> dict[HealthProblem, float]:
    """Seconds each camera problem must last before its event starts."""
    return {HealthProblem.OFFLINE: config.offline_after_s,
            HealthProblem.FROZEN: config.frozen_after_s,
            HealthProblem.BLANK: config.blank_after_s,
            HealthProblem.VIEW_CHANGED: config.view_changed_after_s,
            # Its observation is already a duration (seconds without a verdict), measured
            # against no_verdict_after_s in check_camera: no second wait on top.
            HealthProblem.NO_VERDICT: 0.0}


def picture_watch(config: HealthConfig) -> PictureWatch:
    """A camera's picture checks with the configured limits."""
    return PictureWatch(blank_max_contrast=config.blank_max_contrast,
                        view_min_similarity=config.view_min_similarity)


class HealthWatch:
    """Health trackers of every camera and of the model pool (see the module docstring)."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._cameras: dict[str, HealthTracker] = {}
        self._model = HealthTracker(
            None, {HealthProblem.MODEL_UNAVAILABLE: config.model_unavailable_after_s})

    def check_camera(self, camera_id: str, *, online: bool, offline_detail: str,
                     picture: PictureConditions | None, unjudged_s: float | None,
                     now: float, wall: float, sampling: bool = True) -> list[HealthEvent]:
        """The events of one camera's problems at monotonic ``now`` (``wall``: epoch).

        ``picture``: the conditions of its latest sample (``None``: none yet); ``unjudged_s``:
        seconds since its scene was last judged while online (``None``: not applicable);
        ``sampling``: whether the camera's frames are being sampled (not while every hazard
        is outside its schedule: its last picture then says nothing about now)."""
        if not self.config.enabled:
            return []
        tracker = self._cameras.get(camera_id)
        if tracker is None:
            tracker = self._cameras[camera_id] = HealthTracker(
                camera_id, camera_thresholds(self.config))
        # Picture conditions only mean something while frames arrive; an offline camera is
        # reported as offline, not also as frozen on its last picture.
        seen = picture if online and sampling and picture is not None \
            else PictureConditions()
        unjudged = unjudged_s or 0.0
        offline = offline_detail or "the stream delivers no frames"
        frozen = "new frames arrive but the picture does not change"
        blank = f"uniform picture (contrast {seen.contrast:.1f} grey levels)"
        turned = (f"the scene no longer resembles the camera's view (similarity "
                  f"{seen.similarity or 0.0:.2f})")
        observations = [
            (HealthProblem.OFFLINE, not online, offline),
            (HealthProblem.FROZEN, seen.frozen, frozen),
            (HealthProblem.BLANK, seen.blank, blank),
            (HealthProblem.VIEW_CHANGED, seen.view_changed, turned),
            (HealthProblem.NO_VERDICT,
             online and unjudged_s is not None and unjudged >= self.config.no_verdict_after_s,
             f"no verdict for {unjudged:.0f} s"),
        ]
        events = []
        for problem, present, detail in observations:
            event = tracker.observe(problem, present=present, now=now, wall=wall,
                                    detail=detail if present else "")
            if event is not None:
                _log(event)
                events.append(event)
        return events

    def check_model(self, unavailable_reason: str | None, *, now: float,
                    wall: float) -> list[HealthEvent]:
        """The event of every model endpoint being out of service (``unavailable_reason``
        says why; ``None``: at least one is in service)."""
        if not self.config.enabled:
            return []
        event = self._model.observe(HealthProblem.MODEL_UNAVAILABLE,
                                    present=unavailable_reason is not None, now=now, wall=wall,
                                    detail=unavailable_reason or "")
        if event is None:
            return []
        _log(event)
        return [event]

    def forget_camera(self, camera_id: str, wall: float) -> list[HealthEvent]:
        """A camera left (removed or reconfigured): end its started problems."""
        tracker = self._cameras.pop(camera_id, None)
        return [] if tracker is None else tracker.end_all(wall, HealthEndReason.REMOVED)

    def end_all(self, wall: float) -> list[HealthEvent]:
        """Shutdown: end every started problem (the daemon can no longer watch them)."""
        events = [e for tracker in self._cameras.values()
                  for e in tracker.end_all(wall, HealthEndReason.SHUTDOWN)]
        return events + self._model.end_all(wall, HealthEndReason.SHUTDOWN)


def _log(event: HealthEvent) -> None:
    subject = f"camera {event.camera_id}" if event.camera_id else "model"
    if event.type is EventType.START:
        logger.warning("%s: health problem %s (event %s): %s", subject, event.problem.value,
                       event.event_id, event.detail)
    else:
        logger.info("%s: health problem %s over (event %s, %s)", subject, event.problem.value,
                    event.event_id, event.end_reason.value if event.end_reason else "-")
