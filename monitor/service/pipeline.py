"""One camera's pipeline: next frame, model, verdict, events. One frame at a time.

The flow of one turn (:meth:`CameraPipeline.step`; :meth:`CameraPipeline.run` repeats it)::

    next frame     the sampler says a frame is due (interval, freshness, confirm-now) and the
                   change gate lets it through (or the unchanged scene keeps its last verdict)
    analyse        take a model slot (waits its turn on an endpoint), then the camera's
                   freshest frame: too old is dropped (``stale_dropped``), else encoded on the
                   executor and sent; a retry takes a slot and the freshest frame again
    verify         a positive with boxes under [verification]: each box cropped from the full
                   frame and asked about (:mod:`monitor.service.verification`); the verdict
                   goes on gated by the answers
    verdict        published, fed to the hazard tracker; its events go out, each with its
                   evidence image (and zoom-in crops) first
    confirm-now    a positive still unconfirmed makes the next frame due soon

Everything the pipeline talks to is injected and typed by the small protocols below: the frame
source (the camera reader), the model client, the sink (publisher, evidence store and metrics,
wired by the :class:`~monitor.service.supervisor.Supervisor`), the clock and the executor for
CPU work (thumbnails, JPEG). The model client never calls back into the pipeline, and the
pipeline tells the reader only what the sampler decided (``mark_taken``,
``want_next_frame_at``). The constructor does no I/O; the supervisor starts the reader and
runs :meth:`CameraPipeline.run` as the task ``camera[<id>].sampler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

from monitor.alerts.evidence import boxes_for
from monitor.alerts.payloads import Box, SnapshotRef
from monitor.alerts.siterules import SiteRules, frame_boxes
from monitor.alerts.tracker import AlertEvent, EventType, HazardTracker, TrackerSettings
from monitor.config import CameraConfig, MonitorConfig
from monitor.ingest.changegate import ChangeGate, thumbnail_size
from monitor.ingest.picture import PictureWatch
from monitor.ingest.sampling import IntervalSampler
from monitor.model.answer import Hazard, Verdict, truncate
from monitor.model.client import (
    Analysis,
    CropReply,
    VlmAnswerError,
    VlmCameraBusyError,
    VlmError,
    VlmRequestRejectedError,
    VlmStaleFrameError,
    VlmUnavailableError,
)
from monitor.model.imaging import (
    EncodedImage,
    ImageBudgetError,
    RegionOfInterest,
    encode_bgr_jpeg,
    encode_for_model,
    encode_yuv_jpeg,
    smart_resize,
)
from monitor.model.priority import Urgency, camera_urgency
from monitor.model.verify import CropCheck
from monitor.pixels import BgrImage, GreyImage, YuvPlanes
from monitor.rules.zones import FrameBox
from monitor.service.scenewatch import SceneWatch
from monitor.service.verification import Verifier

logger = logging.getLogger(__name__)

FRAME_WAIT_S = 1.0
"""Longest sleep waiting for a new frame (the loop re-checks stopping after it)."""
OFF_SCHEDULE_POLL_S = 5.0
"""While every hazard is outside its schedule, how often the pipeline looks again."""

_T = TypeVar("_T")

# --- What the pipeline uses of its neighbours. ---------------------------------------------------


class Frame(Protocol):
    """A decoded frame (:class:`monitor.ingest.reader.CapturedFrame`); conversions are CPU work."""

    @property
    def sequence(self) -> int: ...
    @property
    def captured_at(self) -> float:
        """Wall clock, epoch seconds."""
    @property
    def captured_monotonic(self) -> float: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    def yuv_planes(self, width: int, height: int) -> YuvPlanes | None: ...
    def to_bgr(self, width: int | None = None, height: int | None = None) -> BgrImage: ...
    def grey_thumbnail(self, width: int, height: int) -> GreyImage: ...


class SourceStatus(Protocol):
    """What the sampler needs of the stream (:class:`monitor.ingest.reader.StreamStatus`)."""

    @property
    def decode(self) -> str | None: ...
    @property
    def gop_s(self) -> float | None: ...
    @property
    def fps(self) -> float | None: ...


class FrameSource(Protocol):
    """The reader's side that the pipeline uses (:class:`monitor.ingest.reader.CameraReader`)."""

    @property
    def status(self) -> SourceStatus: ...
    def latest(self) -> Frame | None:
        """The newest frame (``None`` before the first)."""
    def notify_next(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once, from the reader's thread, when the next frame arrives."""
    def mark_taken(self, sequence: int) -> None: ...
    def want_next_frame_at(self, at: float) -> None: ...


class ModelSlot(Protocol):
    """A place on a model endpoint for one attempt (:class:`monitor.model.client.ModelSlot`)."""

    def check_age(self, captured_at: float, *, now: float) -> None:
        """Raise :class:`VlmStaleFrameError` for a frame too old to send."""
    async def analyse(self, image: EncodedImage, *, captured_at: float | None = None,
                      context: str = "", hazards: Sequence[Hazard] | None = None) -> Analysis:
        """Send the image; a failure worth retrying ends the slot's block quietly."""
    async def check_crop(self, image: EncodedImage, hazard: Hazard, *,
                         max_tokens: int) -> CropReply:
        """Ask the zoom-in question about a crop (:mod:`monitor.service.verification`)."""


class ModelRequest(Protocol):
    """One camera's request through its retries (:class:`monitor.model.client.ModelRequest`)."""

    def slot(self) -> AbstractAsyncContextManager[ModelSlot]: ...


class ModelClient(Protocol):
    """The model client (:class:`monitor.model.client.VlmClient`)."""

    def request(self, camera_id: str, *,
                urgency: Urgency | None = None) -> AbstractAsyncContextManager[ModelRequest]:
        """One request of the camera; ``urgency`` orders it among those waiting for a slot."""


class PipelineSink(Protocol):
    """Where a pipeline's results and counts go (:class:`monitor.service.sink.AlertSink`)."""

    def sampled(self, camera_id: str) -> None:
        """A frame was taken for analysis."""
    def unchanged(self, camera_id: str) -> None:
        """The change gate kept the last verdict."""
    def failed(self, camera_id: str, endpoint: str, outcome: str) -> None:
        """A frame was not analysed (``outcome``: the metric's label)."""
    def verdict(self, verdict: Verdict) -> None:
        """A verdict arrived (counted and published)."""
    async def evidence(self, event: AlertEvent, frame: Frame,
                       boxes: Sequence[Box]) -> SnapshotRef | None:
        """The event's evidence image saved and published; ``None`` when there is none."""
    def event(self, event: AlertEvent, *, verdict: Verdict | None = None,
              boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None) -> None:
        """An alert event to publish."""
    async def crop_evidence(self, event: AlertEvent,
                            checks: Sequence[CropCheck]) -> list[str | None]:
        """The zoom-in crops behind the event saved as evidence: their paths, in order
        (``None`` for one not saved)."""


class Clock(Protocol):
    """Monotonic time for intervals, wall time for capture ages and events."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    """The process's clocks."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """:func:`time.time`."""
        return time.time()


# --- The pipeline. -------------------------------------------------------------------------------


class CameraPipeline:
    """One camera from sampled frame to published events (see the module docstring)."""

    def __init__(self, config: MonitorConfig, camera: CameraConfig, *, source: FrameSource,
                 client: ModelClient, sink: PipelineSink, executor: Executor,
                 clock: Clock | None = None, stopping: asyncio.Event | None = None) -> None:
        defaults = config.defaults
        self.camera = camera
        self.camera_id = camera.id
        self.interval_s = config.camera_interval_s(camera)
        self.tracker = HazardTracker(camera.id, [Hazard(h) for h in config.camera_hazards(camera)],
                                     TrackerSettings.from_config(defaults),
                                     rules=SiteRules.from_config(config, camera))
        gate_on = camera.change_gate if camera.change_gate is not None else defaults.change_gate
        self._gate = ChangeGate(max_verdict_age_s=defaults.max_verdict_age_s,
                                area_threshold=defaults.change_threshold) if gate_on else None
        self._sampler = IntervalSampler(self.interval_s)
        self._roi = RegionOfInterest(tuple(camera.roi)) if camera.roi else None
        self._confirm_min_gap_s = defaults.confirm_min_gap_s
        self._vlm = config.vlm
        self._source, self._client, self._sink = source, client, sink
        self._executor = executor
        self._clock = clock or SystemClock()
        self._stopping = stopping or asyncio.Event()
        self._verifier = Verifier(camera.id, config.verification, config.vlm, client=client,
                                  executor=executor)
        self.last_error: str | None = None
        """Why the last frame was not analysed (``None`` once one is)."""
        self.judged_at: float | None = None
        """Monotonic time the scene was last judged: a verdict arrived or the change gate kept
        the last one. ``None`` before the first."""
        self._last_positive = False
        """The last verdict reported a hazard: confirm now, and never skip it as unchanged."""
        self._sent_sequence: int | None = None
        """The frame last sent to the model, when newer than the one sampled."""
        self.verdict_at: float | None = None
        """Monotonic time the model's last verdict arrived (``None`` before the first)."""
        self._max_verdict_age_s = defaults.max_verdict_age_s
        self._scene = SceneWatch(area_threshold=defaults.change_threshold,
                                 offload=self._run)
        """While a request waits for a slot: has the scene changed since the last analysed
        frame (then it goes before unchanged cameras of equal priority)?"""
        health = config.health
        self.picture: PictureWatch | None = PictureWatch(
            blank_max_contrast=health.blank_max_contrast,
            view_min_similarity=health.view_min_similarity) if health.enabled else None
        """Frozen, blank, turned-away: from each sample's thumbnail (read by the health
        checks)."""

    async def run(self) -> None:
        """Turn after turn until the stopping event is set."""
        while not self._stopping.is_set():
            await self.step()

    async def step(self) -> Verdict | None:
        """One turn: the next frame, its verdict, the events (see the module docstring); the
        verdict, or ``None`` after a wait, a skip or a failure."""
        frame = await self.next_frame()
        if frame is None:
            return None
        sampled = frame.sequence
        # Not held while the request waits for a slot (long under overload; see next_frame):
        # the freshest frame is taken when the slot comes.
        del frame
        analysed = await self.analyse(sampled)
        if analysed is None:
            return None
        verdict, sent = analysed
        # Zoom-in verification of positives (nothing to do, no cost, for the others).
        verdict = await self._verifier.verify(verdict, sent, self.tracker.watched)
        self.judged_at = self.verdict_at = self._clock.monotonic()
        await self.handle_verdict(verdict, sent)
        self._confirm_now(verdict)
        return verdict

    async def next_frame(self) -> Frame | None:
        """Sampling: the newest frame once its interval is due and the change gate lets it
        through; ``None`` after a wait or when the unchanged scene keeps its last verdict."""
        if not self.tracker.asked(self._clock.time()):
            # Every hazard is outside its schedule: nothing to ask, and nothing overdue.
            self.judged_at = self._clock.monotonic()
            await self._pause(min(self.interval_s, OFF_SCHEDULE_POLL_S))
            return None
        frame = self._source.latest()
        now = self._clock.monotonic()
        decision = self._sampler.decide(
            now, frame.sequence if frame else None,
            newest_age_s=now - frame.captured_monotonic if frame else None,
            frame_gap_s=_frame_gap_s(self._source.status))
        if frame is not None and decision.take and frame.sequence == self._sent_sequence:
            # Already sent (it was the freshest when a slot came): wait for a newer one.
            decision = dataclasses.replace(decision, take=False, needs_frame=True)
        if not decision.take or frame is None:
            after = frame.sequence if frame else None
            # Not held while waiting: the reader may replace it meanwhile, and a picture still
            # held then is one more buffer in the shared decoder's pool, for every camera.
            del frame
            if decision.needs_frame:
                await self._wait_for_frame(after)
            else:
                await self._pause(decision.wait_s)
            return None
        self._sampler.taken(now, frame.sequence)
        self._source.mark_taken(frame.sequence)
        self._source.want_next_frame_at(self._sampler.next_due or 0.0)
        self._sink.sampled(self.camera_id)
        logger.debug("camera %s: sampled frame %d (age %.2f s)", self.camera_id, frame.sequence,
                     now - frame.captured_monotonic)
        if self._gate is None and self.picture is None:
            return frame
        size = thumbnail_size(frame.width, frame.height)
        thumbnail = await self._run(frame.grey_thumbnail, *size)
        if self.picture is not None:
            self.picture.observe(thumbnail)
        if self._gate is not None and not self._gate_passes(thumbnail, now):
            return None
        return frame

    def _gate_passes(self, thumbnail: GreyImage, now: float) -> bool:
        """The change gate: whether the scene changed enough to be worth the model."""
        assert self._gate is not None  # noqa: S101 - checked by the caller
        # Positive answers and raised alerts are always re-checked on a fresh frame, so
        # confirming and clearing never rest on a reused verdict.
        alert_on = any(self.tracker.is_active(h) for h in self.tracker.watched)
        if not self._last_positive and not alert_on:
            gate = self._gate.check(thumbnail, now)
            if gate.changed is not None and gate.changed > self._gate.area_threshold:
                self._scene.mark_changed()
            if not gate.analyse:
                self.judged_at = now  # the last verdict still describes the scene
                self._sink.unchanged(self.camera_id)
                logger.debug("camera %s: scene %s; last verdict stands", self.camera_id,
                             gate.reason)
                return False
        self._gate.analysed(thumbnail, now)
        return True

    async def analyse(self, sampled: int) -> tuple[Verdict, Frame] | None:
        """The model's verdict and the frame it is about (the camera's freshest when the slot
        came: frame number ``sampled`` or a newer one), or ``None`` when it failed (logged on
        change, counted always)."""
        try:
            analysis, sent = await self._ask_model(sampled)
        except (VlmError, ImageBudgetError) as exc:
            self._failed(exc)
            return None
        await self._scene.analysed(sent)  # the slot is free again: the reference for waits
        verdict = analysis.verdict(self.camera_id, sent.captured_at)
        if self._roi is not None:
            # Boxes are in the cropped region's pixels; the evidence image is the whole frame.
            left, top, _, _ = self._roi.box(sent.width, sent.height)
            verdict = dataclasses.replace(verdict, answer=verdict.answer.shifted(left, top),
                                          image_offset=(left, top))
        if self.last_error is not None:
            logger.info("camera %s: analysis works again", self.camera_id)
            self.last_error = None
        logger.debug("camera %s: verdict in %.2f s (frame age %.2f s): %s", self.camera_id,
                     verdict.latency_s, verdict.analysed_at - verdict.captured_at,
                     verdict.answer.model_dump_json())
        return verdict, sent

    async def _ask_model(self, sampled: int) -> tuple[Analysis, Frame]:
        """Slot first, then the freshest frame, encoded and sent; again on a retry."""
        async with self._client.request(self.camera_id, urgency=self.urgency()) as request:
            while True:
                # While the request waits for a slot, a change of scene moves it up.
                self._scene.start(self._source)
                try:
                    # A failure worth retrying ends this block quietly; the next slot backs off.
                    async with request.slot() as slot:
                        self._scene.stop()
                        frame = self._source.latest()
                        if frame is None:  # not once a frame was sampled: kept for the types
                            raise VlmStaleFrameError("frame dropped, not sent: the camera's "
                                                     "reader holds no frame", age_s=0.0)
                        if frame.sequence != sampled:
                            self._sent_sequence = frame.sequence
                            self._source.mark_taken(frame.sequence)
                        slot.check_age(frame.captured_at, now=self._clock.time())
                        image = await self._run(self._encode, frame)
                        analysis = await slot.analyse(image, captured_at=frame.captured_at,
                                                      context=self.camera.context,
                                                      hazards=self._asked(frame.captured_at))
                        return analysis, frame
                finally:
                    self._scene.stop()

    def urgency(self) -> Urgency:
        """What this camera's next request tells the pool (:mod:`monitor.model.priority`):
        alerting while a hazard is positive and unconfirmed or an alert is active."""
        alerting = self._last_positive or any(self.tracker.is_active(h)
                                              for h in self.tracker.watched)
        return camera_urgency(alerting=alerting, priority=self.camera.priority,
                              last_verdict_at=self.verdict_at,
                              max_verdict_age_s=self._max_verdict_age_s,
                              interval_s=self.interval_s, scene_changed=self._scene.changed)

    def _failed(self, exc: VlmError | ImageBudgetError) -> None:
        endpoint = exc.endpoint if isinstance(exc, VlmError) and exc.endpoint else "none"
        self._sink.failed(self.camera_id, endpoint, _outcome(exc))
        if isinstance(exc, VlmAnswerError) and exc.raw_text:
            logger.debug("camera %s: the model's whole answer: %r", self.camera_id,
                         truncate(exc.raw_text, 2000))
        if str(exc) != self.last_error:
            logger.warning("camera %s: frame not analysed: %s", self.camera_id, exc)
        self.last_error = str(exc)

    async def handle_verdict(self, verdict: Verdict, frame: Frame | None = None) -> None:
        """Tracking and publishing: the verdict, then the events it causes, each with its
        evidence image of ``frame`` (saved and published before the event)."""
        self._sink.verdict(verdict)
        located = self._zone_boxes(verdict, frame)
        for event in self.tracker.update(verdict.answer, verdict.captured_at, located):
            logger.info("camera %s: %s %s (event %s, %s): %s", self.camera_id,
                        event.hazard.value, EVENT_WORDS[event.type], event.event_id,
                        f"{event.missing_helmets} without hard hat"
                        if event.missing_helmets else f"revision {event.revision}",
                        event.detail or "-")
            boxes = boxes_for(verdict.answer, event.hazard) \
                if event.type is not EventType.END else []
            snapshot = None
            if frame is not None and event.type is not EventType.END:
                snapshot = await self._sink.evidence(event, frame, boxes)
            self._sink.event(event, verdict=await self._with_crop_evidence(verdict, event),
                             boxes=boxes, snapshot=snapshot)

    async def _with_crop_evidence(self, verdict: Verdict, event: AlertEvent) -> Verdict:
        """The verdict with the zoom-in crops behind ``event`` saved as evidence."""
        checked = verdict.verification.result(event.hazard) if verdict.verification else None
        if checked is None or not checked.checks or event.type is EventType.END:
            return verdict
        assert verdict.verification is not None  # noqa: S101 - checked is its result
        paths = await self._sink.crop_evidence(event, checked.checks)
        return dataclasses.replace(
            verdict, verification=verdict.verification.with_evidence(event.hazard, paths))

    def _asked(self, at: float) -> tuple[Hazard, ...]:
        """The hazards to ask about for a frame captured at ``at``: those in schedule (all
        watched ones if a schedule ended just now, rather than a question about nothing)."""
        return self.tracker.asked(at) or self.tracker.watched

    def _zone_boxes(self, verdict: Verdict,
                    frame: Frame | None) -> dict[Hazard, tuple[FrameBox, ...]] | None:
        """The answer's boxes per hazard in fractions of ``frame``, for the camera's zones
        (``None`` when it has none, or the frame's size is unknown)."""
        if frame is None or not self.tracker.rules.zones:
            return None
        return {hazard: frame_boxes(boxes_for(verdict.answer, hazard), frame.width,
                                    frame.height) for hazard in self.tracker.watched}

    def _confirm_now(self, verdict: Verdict) -> None:
        """Confirm-now: after a positive verdict the next new frame is analysed as soon as
        it exists (at least ``confirm_min_gap_s`` after the previous sample)."""
        # A positive the site rules discount (a person in an excluded zone) is no reason to
        # hurry, nor to jump the queue: it would keep the camera at confirm-now pace for good.
        positive = [h for h in self.tracker.watched
                    if verdict.answer.is_positive(h) and self.tracker.reported(h)]
        self._last_positive = bool(positive)
        # Only a positive still waiting for confirmation is worth hurrying: once the alert is
        # raised, re-checking at the normal interval keeps it (and clears it) just as well,
        # at a fraction of the GPU time.
        if any(not self.tracker.is_active(h) for h in positive):
            self._sampler.expedite(self._confirm_min_gap_s)
            self._source.want_next_frame_at(self._sampler.next_due or 0.0)

    def _encode(self, frame: Frame) -> EncodedImage:
        """The frame at the model's size as JPEG (on the executor; never the loop).

        Without a region of interest, scaling is one swscale pass from the decoder's format
        straight to the budgeted size, compressed without a detour through BGR
        (:func:`frame_jpeg`); with one, the region is cropped from the full-size frame first,
        then resized.
        """
        vlm = self._vlm
        if self._roi is None:
            height, width = smart_resize(frame.height, frame.width, min_pixels=vlm.min_pixels,
                                         max_pixels=vlm.max_pixels)
            return EncodedImage(jpeg=frame_jpeg(frame, width, height, vlm.jpeg_quality),
                                width=width, height=height, source_width=frame.width,
                                source_height=frame.height)
        image = self._roi.crop(frame.to_bgr())
        return encode_for_model(image, max_pixels=vlm.max_pixels,
                                min_pixels=vlm.min_pixels, jpeg_quality=vlm.jpeg_quality)

    async def _run(self, work: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    async def _wait_for_frame(self, after: int | None) -> None:
        """Sleep until the source stores a frame newer than ``after`` (or 1 s passes)."""
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # runs in the reader thread
            # The loop may close between the reader taking this callback and calling it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, arrived)

        self._source.notify_next(wake)
        latest = self._source.latest()
        nothing_newer = latest is None or latest.sequence == after
        del latest  # not held while waiting (see next_frame)
        try:
            if nothing_newer:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived, timeout=FRAME_WAIT_S)
        finally:
            self._source.notify_next(None)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


EVENT_WORDS = {EventType.START: "RAISED", EventType.UPDATE: "updated",
               EventType.END: "cleared"}
"""How the log lines name each event type."""


def frame_jpeg(frame: Frame, width: int, height: int, quality: int) -> bytes:
    """``frame`` scaled to ``width`` x ``height`` as JPEG: from its 4:2:0 planes where it has
    them (no colour conversion; ingest scales, the model encodes), else from BGR."""
    planes = frame.yuv_planes(width, height)
    if planes is not None:
        return encode_yuv_jpeg(planes, quality)
    return encode_bgr_jpeg(frame.to_bgr(width, height), quality)


def _frame_gap_s(status: SourceStatus) -> float | None:
    """How often a camera's reader delivers a new frame, once measured."""
    if status.decode == "keyframes" and status.gop_s:
        return status.gop_s
    return 1.0 / status.fps if status.fps else None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _outcome(exc: Exception) -> str:
    """The metric label of a failed analysis."""
    if isinstance(exc, VlmUnavailableError):
        return "unavailable"
    if isinstance(exc, VlmRequestRejectedError):
        return "rejected"
    if isinstance(exc, VlmAnswerError):
        return "invalid_answer"
    if isinstance(exc, VlmStaleFrameError):
        return "stale_dropped"
    if isinstance(exc, VlmCameraBusyError):
        return "busy"
    return "image_error"
