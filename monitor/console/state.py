"""The console's memory: per camera the last analysed samples, and the recent alerts.

Fed one way by the daemon's sink (:meth:`ConsoleState.record_verdict`,
:meth:`ConsoleState.record_event`, :meth:`ConsoleState.record_health`) and the clip recorder
(:meth:`ConsoleState.record_clip`) on the event loop; nothing here calls back into the
pipeline. A sample keeps the JPEG exactly as it was sent to the model: a viewer gets those
bytes, so watching the console never costs an encode. Everything is bounded: a ring of
``samples_per_camera`` samples per camera, at most ``max_events`` alerts, and each live
subscriber's queue (a viewer that does not keep up loses updates, never memory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.alerts.evidence import boxes_for
from monitor.alerts.health import HealthEvent
from monitor.alerts.payloads import (
    ClipPayload,
    ClipRef,
    SnapshotRef,
    StatusPayload,
    VerificationPayload,
    iso_time,
)
from monitor.alerts.tracker import AlertEvent, EventType, Observation, Severity
from monitor.config import CameraConfig, MonitorConfig
from monitor.console.overlays import (
    SentGeometry,
    ZoneView,
    verification_overlays,
    zone_overlays,
)
from monitor.model.answer import Answer, Hazard, Verdict
from monitor.model.verify import HazardCheck, Verification

SUBSCRIBER_QUEUE = 256
"""Live updates buffered per viewer; beyond that the viewer is told to reload."""
_HAZARD_WORDS = {Hazard.FIRE: "fire", Hazard.SMOKE: "smoke", Hazard.NO_HELMET: "hard hats"}


@dataclass(frozen=True, slots=True)
class CameraView:
    """What the console shows of a camera's configuration."""

    camera_id: str
    context: str
    hazards: tuple[str, ...]
    roi: tuple[tuple[float, float], ...] | None
    zones: tuple[ZoneView, ...] = ()
    """The camera's named zones (site rules), drawn beside the region of interest."""

    @classmethod
    def of(cls, config: MonitorConfig, camera: CameraConfig) -> CameraView:
        """The view of ``camera`` under ``config``."""
        return cls(camera_id=camera.id, context=camera.context,
                   hazards=tuple(config.camera_hazards(camera)),
                   roi=tuple(camera.roi) if camera.roi else None,
                   zones=tuple(ZoneView(name, tuple((x, y) for x, y in points))
                               for name, points in camera.zones.items()))


@dataclass(frozen=True, slots=True)
class OverlayBox:
    """A box the model located, in pixels of the image that was sent (the JPEG served)."""

    hazard: str
    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One analysed frame: the JPEG sent to the model and what the model said about it."""

    sample_id: int
    camera_id: str
    captured_at: float
    analysed_at: float
    latency_s: float
    model: str
    jpeg: bytes
    width: int
    height: int
    answer: Answer
    source_width: int
    """Size of what the sent image was scaled from (the frame, or its region of interest)."""
    source_height: int
    offset: tuple[int, int] = (0, 0)
    """Where that source's top-left corner lies in the frame."""
    verification: Verification | None = None
    """The zoom-in verification of the verdict (its crops are drawn; the answer is gated)."""
    view: CameraView | None = None
    """The camera as configured when the sample was kept (its zones and region)."""

    # Derived only when someone looks: with no viewer, keeping a sample costs next to nothing.

    @property
    def summary(self) -> str:
        """The verdict in words."""
        return summary_text(self.answer)

    @property
    def hazards(self) -> tuple[str, ...]:
        """The hazards this answer reports (``yes``)."""
        return tuple(h.value for h in Hazard if self.answer.is_positive(h))

    @property
    def boxes(self) -> tuple[OverlayBox, ...]:
        """The answer's boxes in pixels of the sent image."""
        return overlay_boxes(self.answer, self.offset, (self.width, self.height),
                             (self.source_width, self.source_height))

    def to_json(self) -> dict[str, Any]:
        """The API form (the JPEG is at ``image``)."""
        return {
            "id": self.sample_id, "camera": self.camera_id,
            "captured_at": iso_time(self.captured_at),
            "analysed_at": iso_time(self.analysed_at),
            "latency_s": round(self.latency_s, 3), "model": self.model,
            "frame_age_s": round(max(0.0, self.analysed_at - self.captured_at), 3),
            "width": self.width, "height": self.height, "summary": self.summary,
            "hazards": list(self.hazards),
            "boxes": [{"hazard": b.hazard, "label": b.label, "x1": b.x1, "y1": b.y1,
                       "x2": b.x2, "y2": b.y2} for b in self.boxes],
            "answer": self.answer.model_dump(mode="json"),
            "image": f"/api/frames/{self.sample_id}.jpg",
            "zones": zone_overlays(self.view.zones, self.geometry) if self.view else [],
            "verification": verification_overlays(self.verification, self.geometry),
        }

    @property
    def geometry(self) -> SentGeometry:
        """How the sent image maps to the frame (for zones and crops)."""
        return SentGeometry.of((self.width, self.height),
                               (self.source_width, self.source_height), self.offset,
                               self.view.roi if self.view else None)


@dataclass(frozen=True, slots=True)
class AlertStep:
    """One event of an alert as the console shows it.

    Kept compact, for the console holds ``max_events`` alerts with every step: the verdicts are
    the tracker's own (immutable) observations and the verification is its result without the
    crop images; their wire form (dicts, ISO times) is built only when someone looks."""

    type: str
    revision: int
    at: float
    detail: str
    confirming_verdicts: int
    verdicts: tuple[Observation, ...]
    snapshot_path: str | None
    missing_helmets: int | None
    by: str | None = None
    """Who did it, for operator steps (``ack``)."""
    severity: str = "normal"
    zones: tuple[str, ...] = ()
    """The camera's zones holding the boxes that counted."""
    checked: HazardCheck | None = None
    """The zoom-in verification of the step's hazard (crop images dropped: see
    :func:`without_images`)."""

    @property
    def verification(self) -> dict[str, Any] | None:
        """The verification's wire form (outcome, crops, evidence)."""
        if self.checked is None:
            return None
        return VerificationPayload.from_result(self.checked).model_dump(mode="json")

    @property
    def crop_paths(self) -> list[str]:
        """The crop evidence JPEGs the verification saved, in order."""
        if self.checked is None:
            return []
        return [c.evidence_path for c in self.checked.checks if c.evidence_path is not None]

    def to_json(self) -> dict[str, Any]:
        """The API form."""
        return {"type": self.type, "revision": self.revision, "at": iso_time(self.at),
                "detail": self.detail, "confirming_verdicts": self.confirming_verdicts,
                "verdicts": [{"captured_at": iso_time(o.at), "positive": o.positive,
                              "detail": o.detail, "missing_helmets": o.missing_helmets}
                             for o in self.verdicts],
                "snapshot": self.snapshot_path,
                "missing_helmets": self.missing_helmets, "by": self.by,
                "severity": self.severity, "zones": list(self.zones),
                "verification": self.verification}


def without_images(result: HazardCheck) -> HazardCheck:
    """``result`` without its crops' pixels (full-resolution arrays, kept by the pipeline only
    until the evidence store has them): what an alert step keeps of it."""
    if all(check.image is None for check in result.checks):
        return result
    return dataclasses.replace(result, checks=tuple(
        dataclasses.replace(check, image=None) for check in result.checks))


@dataclass(slots=True)
class ConsoleAlert:
    """An alert from start to end, with every step the console saw."""

    event_id: str
    camera_id: str
    hazard: str
    started_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    detail: str = ""
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    steps: list[AlertStep] = field(default_factory=list)
    sample_id: int | None = None
    """The sample behind the latest start/update (the frame the model judged)."""
    severity: str = "normal"
    """``high`` once escalated (it stays)."""
    zones: tuple[str, ...] = ()
    """The zones of the latest step that named any."""
    clip: ClipRef | None = None
    """The alert's evidence clip, as the latest step (or the clip's announcement) gave it."""

    @property
    def active(self) -> bool:
        """Whether the alert is still raised."""
        return self.ended_at is None

    @property
    def snapshot_path(self) -> str | None:
        """The newest evidence image of the alert."""
        return next((s.snapshot_path for s in reversed(self.steps) if s.snapshot_path), None)

    def to_json(self) -> dict[str, Any]:
        """The API form."""
        return {
            "id": self.event_id, "camera": self.camera_id, "hazard": self.hazard,
            "active": self.active, "started_at": iso_time(self.started_at),
            "ended_at": iso_time(self.ended_at) if self.ended_at is not None else None,
            "end_reason": self.end_reason, "detail": self.detail,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": iso_time(self.acknowledged_at)
            if self.acknowledged_at is not None else None,
            "snapshot": self.snapshot_path, "steps": [s.to_json() for s in self.steps],
            "severity": self.severity, "zones": list(self.zones),
            "clip": self.clip.model_dump(mode="json") if self.clip is not None else None,
            "verification": self.verification,
            "crops": [{"path": path, "url": f"/api/evidence/{self.event_id}/crop{number}.jpg"}
                      for number, path in enumerate(self.crop_paths, start=1)],
        }

    @property
    def verification(self) -> dict[str, Any] | None:
        """The newest zoom-in verification of the alert's hazard."""
        return next((s.verification for s in reversed(self.steps) if s.checked is not None),
                    None)

    @property
    def crop_paths(self) -> list[str]:
        """The crop evidence JPEGs (files in the evidence store) of the newest step that saved
        any (an end's verification, say the rejection that cleared it, saves none)."""
        return next((paths for step in reversed(self.steps) if (paths := step.crop_paths)), [])


def summary_text(answer: Answer) -> str:
    """One line of what the model said: each hazard's decision and its description."""
    parts = []
    for hazard, word in _HAZARD_WORDS.items():
        if hazard is Hazard.NO_HELMET:
            decision = answer.helmet.status.value.replace("_", " ")
        else:
            decision = (answer.fire if hazard is Hazard.FIRE else answer.smoke).answer.value
        detail = answer.detail(hazard)
        parts.append(f"{word}: {decision}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def overlay_boxes(answer: Answer, offset: tuple[int, int], size: tuple[int, int],
                  source: tuple[int, int]) -> tuple[OverlayBox, ...]:
    """``answer``'s boxes (frame pixels) in pixels of the image sent: ``size`` scaled from
    ``source`` whose corner is at ``offset`` in the frame."""
    dx, dy = offset
    sx = size[0] / source[0] if source[0] else 1.0
    sy = size[1] / source[1] if source[1] else 1.0
    return tuple(OverlayBox(hazard=hazard.value, label=box.label,
                            x1=round((box.x1 - dx) * sx, 1), y1=round((box.y1 - dy) * sy, 1),
                            x2=round((box.x2 - dx) * sx, 1), y2=round((box.y2 - dy) * sy, 1))
                 for hazard in Hazard for box in boxes_for(answer, hazard))


class ConsoleState:
    """The console's bounded memory and its live feed (see the module docstring)."""

    def __init__(self, cameras: Iterable[CameraView], *, samples_per_camera: int = 8,
                 max_events: int = 500) -> None:
        self._samples_per_camera = samples_per_camera
        self._max_events = max_events
        self._cameras: dict[str, CameraView] = {}
        self._rings: dict[str, deque[Sample]] = {}
        self._by_id: dict[int, Sample] = {}
        self._alerts: OrderedDict[str, ConsoleAlert] = OrderedDict()
        self._ids = itertools.count(1)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._sample_watchers: set[Callable[[Sample], None]] = set()
        self._streams: dict[str, StatusPayload] = {}
        """Each camera's newest stream status (from the retained status the daemon publishes)."""
        self._health: dict[str | None, dict[str, HealthEvent]] = {}
        """Active health problems by camera (``None``: the daemon's, shown on every camera),
        each by its event id."""
        self.set_cameras(cameras)

    @classmethod
    def from_config(cls, config: MonitorConfig) -> ConsoleState:
        """The state for ``config``'s enabled cameras and ``[console]`` bounds."""
        return cls(camera_views(config), samples_per_camera=config.console.samples_per_camera,
                   max_events=config.console.max_events)

    # --- The feed (from the sink, on the event loop). ------------------------------------------

    def set_cameras(self, cameras: Iterable[CameraView]) -> None:
        """The configured cameras (at start and after a reload); removed ones are forgotten."""
        views = {view.camera_id: view for view in cameras}
        for gone in set(self._rings) - set(views):
            for sample in self._rings.pop(gone):
                self._by_id.pop(sample.sample_id, None)
            self._health.pop(gone, None)
            self._streams.pop(gone, None)
        self._cameras = views
        for camera_id in views:
            self._rings.setdefault(camera_id, deque())
        self._publish({"type": "cameras"})

    def record_verdict(self, verdict: Verdict) -> Sample | None:
        """Keep a verdict's sample (``None``: no image, or a camera the console does not
        show)."""
        image = verdict.image
        ring = self._rings.get(verdict.camera_id)
        if image is None or ring is None:
            return None
        sample = Sample(
            sample_id=next(self._ids), camera_id=verdict.camera_id,
            captured_at=verdict.captured_at, analysed_at=verdict.analysed_at,
            latency_s=verdict.latency_s, model=verdict.model, jpeg=image.jpeg,
            width=image.width, height=image.height, answer=verdict.answer,
            source_width=image.source_width, source_height=image.source_height,
            offset=verdict.image_offset, verification=verdict.verification,
            view=self._cameras.get(verdict.camera_id))
        ring.append(sample)
        self._by_id[sample.sample_id] = sample
        while len(ring) > self._samples_per_camera:
            self._by_id.pop(ring.popleft().sample_id, None)
        for watcher in list(self._sample_watchers):
            watcher(sample)
        if self._subscribers:  # nobody watching: no serialising either
            self._publish({"type": "sample", "sample": sample.to_json()})
        return sample

    def record_event(self, event: AlertEvent, snapshot: SnapshotRef | None = None, *,
                     clip: ClipRef | None = None, verdict: Verdict | None = None) -> None:
        """Keep an alert event (start, update, end) with its evidence image's path, its clip
        and the verdict behind it (for its zoom-in verification)."""
        alert = self._alerts.get(event.event_id)
        if alert is None:
            alert = ConsoleAlert(event_id=event.event_id, camera_id=event.camera_id,
                                 hazard=event.hazard.value, started_at=event.started_at)
            self._alerts[event.event_id] = alert
            while len(self._alerts) > self._max_events:
                self._alerts.popitem(last=False)
        alert.detail = event.detail or alert.detail
        latest = self.latest(event.camera_id)
        if event.type is not EventType.END and latest is not None:
            alert.sample_id = latest.sample_id  # the sink records the verdict first
        if event.type is EventType.END:
            alert.ended_at = event.ended_at if event.ended_at is not None else event.at
            alert.end_reason = event.end_reason.value if event.end_reason else None
        if event.severity is Severity.HIGH:
            alert.severity = Severity.HIGH.value  # it stays high to the end
        alert.zones = tuple(event.zones) or alert.zones
        if clip is not None:
            alert.clip = clip
        checked = verdict.verification.result(event.hazard) \
            if verdict is not None and verdict.verification is not None else None
        alert.steps.append(AlertStep(
            type=event.type.value, revision=event.revision, at=event.at, detail=event.detail,
            confirming_verdicts=event.confirming_verdicts,
            verdicts=event.verdicts,
            snapshot_path=snapshot.path if snapshot is not None else None,
            missing_helmets=event.missing_helmets, severity=event.severity.value,
            zones=event.zones, by=event.by,
            checked=without_images(checked) if checked is not None else None))
        if self._subscribers:
            self._publish({"type": "alert", "alert": alert.to_json()})

    def record_clip(self, clip: ClipPayload) -> None:
        """An alert's evidence clip was written (or given up): its reference says so, even
        when the alert ended before (clip recorder listener, on the event loop)."""
        alert = self._alerts.get(clip.id)
        if alert is None or alert.clip is None:
            return
        alert.clip = alert.clip.model_copy(update={"ready": clip.ready})
        if self._subscribers:
            self._publish({"type": "alert", "alert": alert.to_json()})

    def record_stream(self, status: StatusPayload) -> None:
        """A camera's stream status changed (from the sink, on the event loop)."""
        if status.camera not in self._cameras:
            return
        self._streams[status.camera] = status
        if self._subscribers:
            self._publish({"type": "stream", "camera": status.camera,
                           "stream": self.stream(status.camera)})

    def stream(self, camera_id: str) -> dict[str, Any] | None:
        """What the console shows of a camera's stream: its state (connecting, online,
        offline, unauthorized, stopped) and a detail (the picture's size, codec and frame
        rate, or the last error); ``None`` before the first status."""
        status = self._streams.get(camera_id)
        if status is None:
            return None
        if status.online:
            size = f"{status.width}x{status.height}" if status.width and status.height else ""
            rate = f"{status.fps:.0f} fps" if status.fps else ""
            detail = " ".join(part for part in (size, status.codec or "", rate) if part)
        else:
            detail = status.last_error or ""
        return {"state": status.state, "detail": detail}

    def record_health(self, event: HealthEvent) -> None:
        """A camera health problem started or ended (from the sink, on the event loop)."""
        problems = self._health.setdefault(event.camera_id, {})
        if event.end_reason is None:
            problems[event.event_id] = event
        else:
            problems.pop(event.event_id, None)
        if self._subscribers:
            shown = [event.camera_id] if event.camera_id is not None else list(self._cameras)
            self._publish({"type": "health",
                           "health": {c: self.health(c) for c in shown if c in self._cameras}})

    def record_ack(self, event_id: str, by: str, at: float) -> ConsoleAlert | None:
        """An operator acknowledged the alert (``None``: no such alert)."""
        alert = self._alerts.get(event_id)
        if alert is None:
            return None
        alert.acknowledged_by, alert.acknowledged_at = by, at
        alert.steps.append(AlertStep(type="ack", revision=len(alert.steps), at=at,
                                     detail="", confirming_verdicts=0, verdicts=(),
                                     snapshot_path=None, missing_helmets=None, by=by))
        self._publish({"type": "alert", "alert": alert.to_json()})
        return alert

    # --- What the pages and the API read. -----------------------------------------------------

    @property
    def cameras(self) -> list[CameraView]:
        """The cameras shown, in configuration order."""
        return list(self._cameras.values())

    def camera(self, camera_id: str) -> CameraView | None:
        """One camera (``None``: not shown)."""
        return self._cameras.get(camera_id)

    def samples(self, camera_id: str) -> list[Sample]:
        """A camera's samples, newest first."""
        return list(reversed(self._rings.get(camera_id, ())))

    def latest(self, camera_id: str) -> Sample | None:
        """A camera's newest sample."""
        ring = self._rings.get(camera_id)
        return ring[-1] if ring else None

    def sample(self, sample_id: int) -> Sample | None:
        """A sample still kept, by id."""
        return self._by_id.get(sample_id)

    def alert(self, event_id: str) -> ConsoleAlert | None:
        """One alert by id."""
        return self._alerts.get(event_id)

    def alerts(self, *, camera: str | None = None, hazard: str | None = None,
               since: float | None = None, until: float | None = None,
               active: bool | None = None) -> list[ConsoleAlert]:
        """Alerts, newest first, filtered (``since``/``until``: epoch s of the start)."""
        return [a for a in reversed(self._alerts.values())
                if (camera is None or a.camera_id == camera)
                and (hazard is None or a.hazard == hazard)
                and (since is None or a.started_at >= since)
                and (until is None or a.started_at <= until)
                and (active is None or a.active == active)]

    def health(self, camera_id: str) -> list[dict[str, Any]]:
        """A camera's active health problems (with the daemon's), oldest first."""
        events = [*self._health.get(camera_id, {}).values(), *self._health.get(None, {}).values()]
        return [{"problem": e.problem.value, "since": iso_time(e.started_at),
                 "detail": e.detail, "daemon_wide": e.camera_id is None}
                for e in sorted(events, key=lambda e: e.started_at)]

    def evidence_path(self, event_id: str, name: str) -> str | None:
        """The evidence file ``name`` (``clip.mp4``, ``crop<n>.jpg`` from 1) of an alert, as events
        named it; ``None``: no such file known (only files named by events are served)."""
        alert = self._alerts.get(event_id)
        if alert is None:
            return None
        if name == "clip.mp4":
            return alert.clip.path if alert.clip is not None and alert.clip.ready else None
        crops = alert.crop_paths
        number = name.removeprefix("crop").removesuffix(".jpg")
        if name.startswith("crop") and name.endswith(".jpg") and number.isdigit() \
                and 1 <= int(number) <= len(crops):
            return crops[int(number) - 1]
        return None

    def active_alerts(self, camera_id: str) -> list[ConsoleAlert]:
        """A camera's raised alerts."""
        return self.alerts(camera=camera_id, active=True)

    # --- Live updates. -------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of live updates (``{"type": "sample" | "alert" | "health" | "cameras" |
        "lost"}``);
        give it back with :meth:`unsubscribe`."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop feeding ``queue``."""
        self._subscribers.discard(queue)

    def watch_samples(self, watcher: Callable[[Sample], None] | None,
                      previous: Callable[[Sample], None] | None = None) -> None:
        """Call ``watcher`` with every new sample (on the event loop; it must not block),
        replacing ``previous``; ``None`` adds nothing."""
        if previous is not None:
            self._sample_watchers.discard(previous)
        if watcher is not None:
            self._sample_watchers.add(watcher)

    @property
    def subscribers(self) -> int:
        """How many viewers follow live updates."""
        return len(self._subscribers)

    def _publish(self, update: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(update)
            except asyncio.QueueFull:
                # A viewer that stopped reading: it is told it lost updates (it reloads), and
                # is fed no more until it reconnects.
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait({"type": "lost"})


def camera_views(config: MonitorConfig) -> list[CameraView]:
    """The console's view of every enabled camera of ``config``."""
    return [CameraView.of(config, camera) for camera in config.cameras if camera.enabled]

