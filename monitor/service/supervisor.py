"""The supervisor: wires the stages, runs them in one TaskGroup, shuts them down in order.

Tasks (all named, all in one ``asyncio.TaskGroup``)::

    mqtt.publisher            the broker connection and the outgoing queue
    camera[<id>].sampler      interval → encode (thread pool) → model → tracker → publish
    supervisor.watch          sd_notify watchdog and status; restarts a camera whose reader
                              thread died

A camera, the broker or the model server being down is an outage to report, not a reason to
stop: samplers log and go on, the publisher reconnects. A bug in one camera's pipeline is
logged and that camera restarted with backoff. Only a failure of a core component (the
publisher, the supervisor) ends the TaskGroup, so the daemon exits non-zero and systemd
restarts it. SIGHUP reloads the cameras without touching the ones that did not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from monitor.alerts.evidence import SnapshotError, SnapshotStore, boxes_for
from monitor.alerts.outbox import Outbox
from monitor.alerts.payloads import Box, SnapshotRef, StatusPayload, iso_time
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent, EndReason, EventType, HazardTracker, TrackerSettings
from monitor.backoff import backoff_s
from monitor.capture import CameraReader, CapturedFrame, StreamSource, StreamStatus
from monitor.config import CameraConfig, MonitorConfig
from monitor.ingest.changegate import ChangeGate, thumbnail_size
from monitor.ingest.sampling import IntervalSampler
from monitor.ingest.urls import redact_url, with_credentials
from monitor.model.answer import Hazard, Verdict, truncate
from monitor.model.client import (
    VlmAnswerError,
    VlmCameraBusyError,
    VlmClient,
    VlmError,
    VlmRequestRejectedError,
    VlmStaleFrameError,
    VlmUnavailableError,
)
from monitor.model.imaging import (
    EncodedImage,
    ImageBudgetError,
    RegionOfInterest,
    encode_for_model,
    smart_resize,
)
from monitor.redaction import register_secrets
from monitor.service.reload import plan_reload
from monitor.service.systemd import Notifier
from monitor.service.telemetry import CameraSnapshot, HealthServer, LiveSnapshot, Metrics, Readiness

logger = logging.getLogger(__name__)

SAMPLER_GRACE_S = 2.0
"""Shutdown: how long in-flight model requests may finish before they are cancelled."""
PUBLISHER_GRACE_S = 2.0
"""Shutdown: how long the publisher may flush its queue and publish ``offline``.
Together with the above, a SIGTERM ends well within 5 s."""
CAMERA_RESTART_CAP_S = 60.0
"""A camera pipeline that crashed is restarted after up to 1, 2, 4 ... up to this many seconds
(full jitter)."""
READER_JOIN_S = 2.0
STATUS_POLL_S = 0.5
"""How often camera statuses are checked for changes and stalls."""
FRAME_WAIT_S = 1.0
"""Longest sleep of a sampler waiting for a new frame (it re-checks stopping after it)."""
VERDICT_OVERDUE_INTERVALS = 3
VERDICT_OVERDUE_MIN_S = 10.0
"""Readiness: an online camera whose scene was last judged (a verdict, or the change gate
keeping the last one) more than this many sampling intervals ago, and at least this many
seconds, is reported "no verdict for N s" (a model that hangs says nothing else until its
requests time out)."""


@dataclass(slots=True)
class _Camera:
    config: CameraConfig
    reader: CameraReader
    tracker: HazardTracker
    sampler: IntervalSampler
    last_error: str | None = None
    task: asyncio.Task[None] | None = None
    """The camera's supervised pipeline task (sampling → model → tracker → MQTT)."""
    gate: ChangeGate | None = None
    """The change gate, unless the camera turned it off."""
    roi: RegionOfInterest | None = None
    confirm_min_gap_s: float = 0.5
    last_positive: bool = False
    """The last verdict reported a hazard: confirm now, and never skip it as unchanged."""
    status_signature: tuple[object, ...] | None = None
    status_published_at: float = 0.0
    judged_at: float | None = None
    """Monotonic time the camera's scene was last judged: a verdict arrived or the change
    gate kept the last one. ``None`` before the first."""
    online_since: float | None = None
    """Monotonic time the stream last came online (``None`` while it is not)."""
    interval_s: float = 2.0


def stream_source(config: MonitorConfig, camera: CameraConfig) -> StreamSource:
    """How to open ``camera``'s stream (credentials injected here, and only here)."""
    password = camera.password.get_secret_value() if camera.password else None
    defaults = config.defaults
    return StreamSource(
        camera_id=camera.id,
        url=with_credentials(camera.url, camera.username, password),
        transport=camera.transport, loop=camera.loop,
        open_timeout_s=defaults.open_timeout_s,
        read_timeout_s=defaults.read_timeout_s,
        backend=camera.backend or defaults.backend,
        rtsp_client=camera.rtsp_client or defaults.rtsp_client,
        decode=camera.decode or defaults.decode,
        interval_s=config.camera_interval_s(camera),
    )


def camera_hazards(config: MonitorConfig, camera: CameraConfig) -> list[Hazard]:
    """The hazards watched on ``camera``, as the pipeline names them."""
    return [Hazard(name) for name in config.camera_hazards(camera)]


class Daemon:
    """One monitor process: cameras in, MQTT alerts out."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        # Every text this process emits (logs, /readyz, MQTT) masks the configured secrets.
        register_secrets(config.secret_values())
        self.metrics = Metrics()  # first: the publisher counts the events it stores
        # --- issue 5: durable outbox, evidence store, reconciliation with the previous run ---
        mqtt = config.mqtt
        self.outbox = Outbox(config.state_dir / "outbox.sqlite3", max_messages=mqtt.queue_size,
                             max_bytes=mqtt.outbox_max_bytes, max_age_s=mqtt.outbox_max_age_s)
        self.publisher = MqttPublisher(mqtt, self.outbox, on_event=self._count_event)
        # Alerts of cameras no longer configured are ended, their retained topics cleared,
        # and Home Assistant discovery (if enabled) announced, before anything else is sent.
        self.publisher.reconcile({c.id: camera_hazards(config, c)
                                      for c in config.cameras if c.enabled})
        shots = config.snapshots
        self.snapshots = SnapshotStore(
            config.state_dir / "snapshots", max_count=shots.max_count,
            max_age_s=shots.max_age_s, max_bytes=shots.max_bytes,
            jpeg_quality=shots.jpeg_quality, url_prefix=shots.url_prefix,
        ) if shots.enabled else None
        # --- end issue 5 ---
        self.vlm = VlmClient(config.vlm, on_in_flight=self._count_in_flight)
        self.metrics.observe_live(self._live_snapshot)
        self.health = HealthServer(self.metrics, self.readiness)
        self.notifier = Notifier()
        self._started = False
        self._stopping = asyncio.Event()
        workers = max(1, min(4, os.cpu_count() or 1))
        self._encoder = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encoder")
        self._cameras: dict[str, _Camera] = {}
        self._rng = random.Random()
        self._group: asyncio.TaskGroup | None = None

    def _live_snapshot(self) -> LiveSnapshot:
        cameras = tuple(
            CameraSnapshot(camera_id=c.config.id, online=c.reader.status.online,
                           frames_read=c.reader.status.frames_read,
                           frames_dropped=c.reader.status.frames_dropped,
                           reconnects=c.reader.status.reconnects)
            for c in self._cameras.values()
        )
        return LiveSnapshot(cameras=cameras, broker_connected=self.publisher.connected,
                            mqtt_queue_depth=self.publisher.pending,
                            mqtt_refused=self.publisher.refused,
                            outbox_depth=self.outbox.depth)

    def readiness(self) -> Readiness:
        """Ready while the pipeline runs; the reasons list what is degraded or not running."""
        reasons = []
        if not self._started:
            reasons.append("pipeline not started")
        if self._stopping.is_set():
            reasons.append("shutting down")
        ready = not reasons
        if not self.publisher.connected:
            reasons.append(f"mqtt: not connected ({self.publisher.last_error or 'connecting'})")
        if self.publisher.refused:
            reasons.append(f"mqtt: the broker refused {self.publisher.refused} message(s), "
                           f"last {self.publisher.last_refusal}; check its ACL")
        reasons.extend(f"camera {c.config.id}: offline ({c.reader.status.last_error or '-'})"
                       for c in self._cameras.values() if not c.reader.status.online)
        reasons.extend(f"camera {c.config.id}: analysis failing: {c.last_error}"
                       for c in self._cameras.values() if c.last_error)
        now = time.monotonic()
        for camera in self._cameras.values():
            overdue = verdict_overdue_s(camera, now)
            if overdue is not None:
                reasons.append(f"camera {camera.config.id}: no verdict for {overdue:.0f} s")
        # Outages of cameras, broker or model are reported but do not make us "not ready":
        # the pipeline itself runs and recovers on its own.
        return Readiness(ready=ready, reasons=tuple(reasons))

    def _build_camera(self, config: MonitorConfig, camera: CameraConfig) -> _Camera:
        hazards = camera_hazards(config, camera)
        defaults = config.defaults
        gate_on = camera.change_gate if camera.change_gate is not None else defaults.change_gate
        return _Camera(
            config=camera,
            reader=CameraReader(stream_source(config, camera)),
            tracker=HazardTracker(camera.id, hazards, TrackerSettings.from_config(config.defaults)),
            sampler=IntervalSampler(config.camera_interval_s(camera)),
            gate=ChangeGate(max_verdict_age_s=defaults.max_verdict_age_s,
                            area_threshold=defaults.change_threshold) if gate_on else None,
            roi=RegionOfInterest(tuple(camera.roi)) if camera.roi else None,
            confirm_min_gap_s=defaults.confirm_min_gap_s,
            interval_s=config.camera_interval_s(camera),
        )

    def _start_camera(self, camera: _Camera) -> None:
        """Start a camera's reader thread and its supervised pipeline task."""
        assert self._group is not None  # noqa: S101 - only called inside run()'s TaskGroup
        camera_id = camera.config.id
        self._cameras[camera_id] = camera
        # A camera starts with no alert raised: say so, so no stale ON stays retained.
        for hazard in camera.tracker.watched:
            self.publisher.set_hazard_state(camera_id, hazard, on=False)
        camera.reader.start()
        camera.task = self._group.create_task(self._supervise_camera(camera),
                                              name=f"camera[{camera_id}].sampler")

    async def _stop_camera(self, camera: _Camera) -> None:
        """Stop one camera without touching the others."""
        self._cameras.pop(camera.config.id, None)
        camera.reader.stop()
        if camera.task is not None:
            camera.task.cancel("camera removed")
            await asyncio.wait({camera.task}, timeout=SAMPLER_GRACE_S)
        if not await asyncio.to_thread(camera.reader.join, READER_JOIN_S):
            logger.warning("camera %s: reader still blocked in the stream; leaving it",
                           camera.config.id)

    async def _supervise_camera(self, camera: _Camera) -> None:
        """Run a camera's pipeline; a bug in it is logged and the pipeline restarted with
        backoff, so one camera's failure never takes the others down."""
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._sample_camera(camera)
            except Exception:
                if time.monotonic() - started > CAMERA_RESTART_CAP_S:
                    failures = 0  # it ran fine for a while: start the backoff afresh
                delay = backoff_s(failures, self._rng, base_s=1.0, cap_s=CAMERA_RESTART_CAP_S)
                failures += 1
                logger.exception("camera %s: pipeline failed; restarting in %.1f s",
                                 camera.config.id, delay)
                await self._pause(delay)
            else:
                return

    async def run(self, shutdown: asyncio.Event,
                  reload_requests: asyncio.Queue[MonitorConfig] | None = None) -> None:
        """Run until ``shutdown`` is set, then stop in order. Configurations put on
        ``reload_requests`` are applied live (see :meth:`reload`)."""
        self._loop = asyncio.get_running_loop()
        config = self.config
        if config.telemetry.enabled:
            await self.health.start(config.telemetry.host, config.telemetry.port)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                publisher_task = group.create_task(self.publisher.run(), name="mqtt.publisher")
                group.create_task(self._publish_statuses(), name="cameras.status")
                for camera in config.cameras:
                    if camera.enabled:
                        self._start_camera(self._build_camera(config, camera))
                    else:
                        logger.info("camera %s: disabled in the configuration", camera.id)
                if not self._cameras:
                    logger.warning("no enabled camera in the configuration; only MQTT "
                                   "availability will be published")
                self._started = True
                logger.info("monitor started: %d camera(s), model %s at %s, broker %s:%d",
                            len(self._cameras), config.vlm.model,
                            redact_url(config.vlm.base_url), config.mqtt.host,
                            config.mqtt.port)
                watch = group.create_task(self._watch(publisher_task), name="supervisor.watch")
                self.notifier.ready(self._status_line())
                await self._serve(shutdown, reload_requests)
                await self._shutdown(watch, publisher_task)
        finally:
            self._group = None
            await self._release()

    async def _serve(self, shutdown: asyncio.Event,
                     reload_requests: asyncio.Queue[MonitorConfig] | None) -> None:
        """Wait for shutdown, applying reloads meanwhile."""
        stop = asyncio.ensure_future(shutdown.wait())
        try:
            while not stop.done():
                if reload_requests is None:
                    await stop
                    break
                next_reload = asyncio.ensure_future(reload_requests.get())
                await asyncio.wait({stop, next_reload}, return_when=asyncio.FIRST_COMPLETED)
                if next_reload.done():
                    await self.reload(next_reload.result())
                else:
                    next_reload.cancel()
        finally:
            stop.cancel()

    async def reload(self, new: MonitorConfig) -> None:
        """Apply a new configuration's cameras: added ones start, removed ones stop, changed
        ones restart; untouched cameras keep running. Other sections need a restart (the
        steps: :func:`~monitor.service.reload.plan_reload`)."""
        old = self.config
        register_secrets(new.secret_values())  # new cameras' passwords
        plan = plan_reload(old, new)
        for section in plan.sections_needing_restart:
            logger.warning("reload: [%s] changed; restart the daemon to apply it", section)
        for camera_id in plan.remove:
            camera = self._cameras.get(camera_id)
            if camera is not None:
                await self._stop_camera(camera)
            logger.info("camera %s: removed by reload", camera_id)
        for camera_config in plan.restart:
            camera = self._cameras.get(camera_config.id)
            if camera is not None:
                # Its tracker goes with it: end raised alerts explicitly, so subscribers get
                # an `end` (not a bare OFF) and the new tracker confirms afresh.
                for event in camera.tracker.end_all(time.time(), EndReason.RECONFIGURED):
                    self.publisher.publish_event(event)
                await self._stop_camera(camera)
            self._start_camera(self._build_camera(new, camera_config))
            logger.info("camera %s: restarted with its new settings", camera_config.id)
        for camera_config in plan.add:
            self._start_camera(self._build_camera(new, camera_config))
            logger.info("camera %s: added by reload", camera_config.id)
        self.config = new.model_copy(update={"vlm": old.vlm, "mqtt": old.mqtt,
                                             "telemetry": old.telemetry})
        # Alerts, retained topics and Home Assistant entities of removed cameras/hazards end
        # or go away; new ones are announced (idempotent).
        self.publisher.reconcile({c.id: camera_hazards(new, c)
                                  for c in new.cameras if c.enabled})
        logger.info("reload applied: %d added, %d removed, %d restarted, %d unchanged",
                    len(plan.add), len(plan.remove), len(plan.restart), len(plan.keep))

    async def _shutdown(self, watch: asyncio.Task[None],
                        publisher_task: asyncio.Task[None]) -> None:
        logger.info("shutting down")
        self.notifier.stopping()
        # 1. Stop intake: no new frames are sampled, readers stop decoding.
        self._stopping.set()
        watch.cancel()
        for camera_state in self._cameras.values():
            camera_state.reader.stop()
        # 2. Let in-flight model requests finish (their events still count), within a deadline.
        samplers = [c.task for c in self._cameras.values() if c.task is not None]
        if samplers:
            _done, pending = await asyncio.wait(samplers, timeout=SAMPLER_GRACE_S)
            # 3. Cancel what is still waiting for the model.
            for task in pending:
                logger.warning("%s: cancelled at shutdown (model request still running)",
                               task.get_name())
                task.cancel("shutdown deadline")
        # 4. Flush the MQTT queue and publish offline, within a deadline.
        self.publisher.close()
        _done, pending_publisher = await asyncio.wait({publisher_task},
                                                      timeout=PUBLISHER_GRACE_S)
        if pending_publisher:
            # Nothing is lost: unsent messages stay in the durable outbox (issue 5).
            logger.warning("mqtt: could not flush within %.0f s; %d message(s) stay in the "
                           "outbox for the next start", PUBLISHER_GRACE_S,
                           self.publisher.pending)
            publisher_task.cancel("shutdown deadline")

    async def _release(self) -> None:
        # 5. Close clients and threads whatever happened above.
        await self.health.stop()
        await self.vlm.aclose()
        for camera_state in self._cameras.values():
            camera_state.reader.stop()
        for camera_state in self._cameras.values():
            if not camera_state.reader.join(READER_JOIN_S):
                logger.warning("camera %s: reader still blocked in the stream; leaving it",
                               camera_state.config.id)
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        logger.info("monitor stopped")

    def _status_line(self) -> str:
        cameras = list(self._cameras.values())
        online = sum(1 for c in cameras if c.reader.status.online)
        broker = "connected" if self.publisher.connected else "NOT connected"
        failing = sum(1 for c in cameras if c.last_error)
        line = f"{online}/{len(cameras)} cameras online; broker {broker}"
        return line + (f"; analysis failing on {failing} camera(s)" if failing else "")

    async def _watch(self, publisher_task: asyncio.Task[None]) -> None:
        """Liveness: ping systemd's watchdog only while the loop is responsive and every
        internal task is alive (outages of cameras, broker or model are not failures);
        restart a camera whose reader thread died."""
        interval = self.notifier.watchdog_interval_s() or 5.0
        period = min(interval, 5.0)
        last_status = ""
        while True:
            for camera in list(self._cameras.values()):
                if not camera.reader.is_alive() and not self._stopping.is_set():
                    logger.error("camera %s: reader thread ended unexpectedly; restarting "
                                 "the camera", camera.config.id)
                    await self._stop_camera(camera)
                    self._start_camera(self._build_camera(self.config, camera.config))
            # clear_after_s must also end alerts of cameras that deliver no verdicts now
            # (offline stream, model down): the tracker only sees time when asked.
            now = time.time()
            for camera in self._cameras.values():
                for event in camera.tracker.expire(now):
                    logger.info("camera %s: %s %s (event %s): no positive verdict for %.0f s",
                                camera.config.id, event.hazard.value,
                                _EVENT_WORDS[event.type], event.event_id,
                                now - event.started_at)
                    self.publisher.publish_event(event)
            tasks_alive = not publisher_task.done() and all(
                c.task is not None and not c.task.done() for c in self._cameras.values())
            if tasks_alive:
                self.notifier.watchdog()
            status = self._status_line()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            # This sleep returning on time is itself the proof the loop is responsive.
            await asyncio.sleep(period)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _publish_statuses(self) -> None:
        """Camera status on ``<prefix>/<camera>/status`` (retained): on every change, and
        every ``status_heartbeat_s`` anyway. Also where a stalled stream is noticed: the
        reader may sit in a blocking read, but its status goes offline on time."""
        while not self._stopping.is_set():
            heartbeat = self.config.defaults.status_heartbeat_s
            now = time.monotonic()
            for camera in list(self._cameras.values()):
                status = camera.reader.check(now)
                if not status.online:
                    camera.online_since = None
                elif camera.online_since is None:
                    camera.online_since = now
                signature = status.signature()
                if signature != camera.status_signature \
                        or now - camera.status_published_at >= heartbeat:
                    camera.status_signature = signature
                    camera.status_published_at = now
                    self._send_status(status)
            await self._pause(STATUS_POLL_S)

    def _send_status(self, status: StreamStatus) -> None:
        self.publisher.publish_status(status_payload(status, time.time()))

    def _encode(self, camera: _Camera, frame: CapturedFrame) -> EncodedImage:
        """The frame at the model's size as JPEG (an encoder thread; never the loop).

        Without a region of interest, scaling is one swscale pass from the decoder's format
        straight to the budgeted size, compressed without a detour through BGR
        (:meth:`~monitor.capture.CapturedFrame.to_jpeg`); with one, the region is cropped from
        the full-size frame first, then resized.
        """
        vlm = self.config.vlm
        if camera.roi is None:
            height, width = smart_resize(frame.height, frame.width, min_pixels=vlm.min_pixels,
                                         max_pixels=vlm.max_pixels)
            return EncodedImage(jpeg=frame.to_jpeg(width, height, vlm.jpeg_quality),
                                width=width, height=height, source_width=frame.width,
                                source_height=frame.height)
        image = camera.roi.crop(frame.to_bgr())
        return encode_for_model(image, max_pixels=vlm.max_pixels,
                                min_pixels=vlm.min_pixels, jpeg_quality=vlm.jpeg_quality)

    async def _sample_camera(self, camera: _Camera) -> None:
        """The per-camera pipeline: take a frame (sampling), analyse it (model), act on the
        verdict (tracker, MQTT). One frame at a time, so one model request per camera."""
        while not self._stopping.is_set():
            frame = await self._next_frame(camera)
            if frame is None:
                continue
            analysed = await self._analyse(camera, frame)
            if analysed is not None:
                camera.judged_at = time.monotonic()
                # The frame analysed may be newer than the one sampled (see _analyse).
                verdict, frame = analysed
                await self._handle_verdict(camera, verdict, frame)
                self._confirm_now(camera, verdict)

    async def _next_frame(self, camera: _Camera) -> CapturedFrame | None:
        """Sampling: the newest frame once its interval is due and the change gate lets it
        through; ``None`` after a wait or when the unchanged scene keeps its last verdict."""
        frame = camera.reader.latest()
        now = time.monotonic()
        decision = camera.sampler.decide(
            now, frame.sequence if frame else None,
            newest_age_s=now - frame.captured_monotonic if frame else None,
            frame_gap_s=_frame_gap_s(camera.reader.status))
        if not decision.take or frame is None:
            if decision.needs_frame:
                await self._wait_for_frame(camera, frame.sequence if frame else None)
            else:
                await self._pause(decision.wait_s)
            return None
        camera.sampler.taken(now, frame.sequence)
        camera.reader.mark_taken(frame.sequence)
        camera.reader.want_next_frame_at(camera.sampler.next_due or 0.0)
        camera_id = camera.config.id
        self.metrics.frames_sampled.labels(camera_id).inc()
        logger.debug("camera %s: sampled frame %d (age %.2f s)", camera_id, frame.sequence,
                     now - frame.captured_monotonic)
        if camera.gate is not None:
            size = thumbnail_size(frame.width, frame.height)
            thumbnail = await self._loop.run_in_executor(self._encoder, frame.grey_thumbnail,
                                                         *size)
            # Positive answers and raised alerts are always re-checked on a fresh frame, so
            # confirming and clearing never rest on a reused verdict.
            alert_on = any(camera.tracker.is_active(h) for h in camera.tracker.watched)
            if not camera.last_positive and not alert_on:
                gate = camera.gate.check(thumbnail, now)
                if not gate.analyse:
                    camera.judged_at = now  # the last verdict still describes the scene
                    self.metrics.change_gate_skips.labels(camera_id).inc()
                    logger.debug("camera %s: scene %s; last verdict stands", camera_id,
                                 gate.reason)
                    return None
            camera.gate.analysed(thumbnail, now)
        return frame

    async def _wait_for_frame(self, camera: _Camera, after: int | None) -> None:
        """Sleep until the reader stores a frame newer than ``after`` (or 1 s passes)."""
        loop = self._loop
        arrived: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # runs in the reader thread
            # The loop may close between the reader taking this callback and calling it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, arrived)

        camera.reader.notify_next(wake)
        latest = camera.reader.latest()
        try:
            if latest is None or latest.sequence == after:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived, timeout=FRAME_WAIT_S)
        finally:
            camera.reader.notify_next(None)

    def _confirm_now(self, camera: _Camera, verdict: Verdict) -> None:
        """Confirm-now: after a positive verdict the next new frame is analysed as soon as
        it exists (at least ``confirm_min_gap_s`` after the previous sample)."""
        camera.last_positive = any(verdict.answer.is_positive(h)
                                   for h in camera.tracker.watched)
        # Only a positive still waiting for confirmation is worth hurrying: once the alert is
        # raised, re-checking at the normal interval keeps it (and clears it) just as well,
        # at a fraction of the GPU time.
        confirming = any(verdict.answer.is_positive(h) and not camera.tracker.is_active(h)
                         for h in camera.tracker.watched)
        if confirming:
            camera.sampler.expedite(camera.confirm_min_gap_s)
            camera.reader.want_next_frame_at(camera.sampler.next_due or 0.0)

    async def _analyse(self, camera: _Camera,
                       frame: CapturedFrame) -> tuple[Verdict, CapturedFrame] | None:
        """Encoding (thread pool) and the model request: the verdict and the frame it is
        about, or ``None`` when it failed (logged on change, counted always).

        When the model servers are the bottleneck the request waits for its turn; a frame that
        grew older than ``vlm.max_frame_age_s`` meanwhile is replaced by the reader's newest
        one (or dropped, if there is none), so the model never judges a stale picture.
        """
        camera_id = camera.config.id
        sent = frame

        async def newest() -> tuple[EncodedImage, float] | None:
            nonlocal sent
            latest = camera.reader.latest()
            if latest is None or latest.sequence == sent.sequence:
                return None
            sent = latest
            image = await self._loop.run_in_executor(self._encoder, self._encode, camera,
                                                     latest)
            return image, latest.captured_at

        try:
            image = await self._loop.run_in_executor(self._encoder, self._encode, camera,
                                                     frame)
            verdict = await self.vlm.analyse(camera_id, image, frame.captured_at,
                                             context=camera.config.context,
                                             hazards=camera.tracker.watched, refresh=newest)
        except (VlmError, ImageBudgetError) as exc:
            endpoint = exc.endpoint if isinstance(exc, VlmError) and exc.endpoint else "none"
            self.metrics.vlm_requests.labels(endpoint, _outcome(exc)).inc()
            if isinstance(exc, VlmAnswerError) and exc.raw_text:
                logger.debug("camera %s: the model's whole answer: %r", camera_id,
                             truncate(exc.raw_text, 2000))
            if str(exc) != camera.last_error:
                logger.warning("camera %s: frame not analysed: %s", camera_id, exc)
            camera.last_error = str(exc)
            return None
        if camera.roi is not None:
            # Boxes are in the cropped region's pixels; the evidence image is the whole frame.
            left, top, _, _ = camera.roi.box(sent.width, sent.height)
            verdict = dataclasses.replace(verdict, answer=verdict.answer.shifted(left, top))
        age = verdict.analysed_at - verdict.captured_at
        self._count_verdict(verdict.endpoint, verdict.latency_s, age, verdict.prompt_tokens,
                            verdict.completion_tokens)
        if camera.last_error is not None:
            logger.info("camera %s: analysis works again", camera_id)
            camera.last_error = None
        logger.debug("camera %s: verdict in %.2f s (frame age %.2f s): %s", camera_id,
                     verdict.latency_s, age, verdict.answer.model_dump_json())
        return verdict, sent

    async def _handle_verdict(self, camera: _Camera, verdict: Verdict,
                              frame: CapturedFrame | None = None) -> None:
        """Tracking and publishing: the verdict, then the events it causes, each with its
        evidence image (saved in the encoder pool, published before the event)."""
        self.publisher.publish_verdict(verdict)
        for event in camera.tracker.update(verdict.answer, verdict.captured_at):
            logger.info("camera %s: %s %s (event %s, %s): %s", camera.config.id,
                        event.hazard.value, _EVENT_WORDS[event.type], event.event_id,
                        f"{event.missing_helmets} without hard hat"
                        if event.missing_helmets else f"revision {event.revision}",
                        event.detail or "-")
            boxes = boxes_for(verdict.answer, event.hazard) \
                if event.type is not EventType.END else []
            snapshot = None
            if frame is not None and event.type is not EventType.END:
                snapshot = await self._save_evidence(event, frame, boxes)
            # Counted by _count_event, like the ends the publisher adds for stale alerts.
            self.publisher.publish_event(event, verdict=verdict, boxes=boxes, snapshot=snapshot)

    def _count_event(self, hazard: str, kind: str) -> None:
        self.metrics.events.labels(hazard, kind).inc()

    async def _save_evidence(self, event: AlertEvent, frame: CapturedFrame,
                             boxes: list[Box]) -> SnapshotRef | None:
        """The event's frame as a JPEG with its boxes drawn (file + retained MQTT topic);
        ``None`` when disabled or when it cannot be written (logged: the alert matters more)."""
        store = self.snapshots
        if store is None:
            return None
        path = store.path_for(event.camera_id, event.hazard, event.event_id, event.revision,
                              event.at)
        caption = (f"{event.hazard.value.upper()} {event.camera_id} "
                   f"{iso_time(event.at)}" + (f" missing hard hats: {event.missing_helmets}"
                                              if event.missing_helmets else ""))
        try:
            jpeg = await self._loop.run_in_executor(
                self._encoder, lambda: store.save(frame.to_bgr(), boxes, caption, path))
        except SnapshotError as exc:
            logger.warning("camera %s: evidence image not saved: %s", event.camera_id, exc)
            return None
        topic = self.publisher.publish_snapshot(event.camera_id, event.hazard, jpeg)
        return store.reference(path, topic)

    def _count_in_flight(self, endpoint: str, in_flight: int) -> None:
        self.metrics.vlm_in_flight.labels(endpoint).set(in_flight)

    def _count_verdict(self, endpoint: str, latency_s: float, age_s: float,
                       prompt_tokens: int | None, completion_tokens: int | None) -> None:
        metrics = self.metrics
        metrics.vlm_requests.labels(endpoint, "ok").inc()
        metrics.vlm_latency.labels(endpoint).observe(latency_s)
        metrics.frame_age.observe(age_s)
        if prompt_tokens is not None:
            metrics.tokens.labels("prompt").inc(prompt_tokens)
        if completion_tokens is not None:
            metrics.tokens.labels("completion").inc(completion_tokens)


_EVENT_WORDS = {EventType.START: "RAISED", EventType.UPDATE: "updated",
                EventType.END: "cleared"}


def status_payload(status: StreamStatus, at: float) -> StatusPayload:
    """The wire form of a reader's status at ``at`` (epoch s; its URL is already redacted)."""
    return StatusPayload(
        camera=status.camera_id, online=status.online, url=status.url,
        width=status.width, height=status.height, codec=status.codec, fps=status.fps,
        last_error=status.last_error, reconnects=status.reconnects,
        updated_at=iso_time(at), state=status.state, gop_frames=status.gop_frames,
        gop_s=round(status.gop_s, 3) if status.gop_s else None, decode=status.decode,
        backend=status.backend,
        stall_timeout_s=round(status.stall_timeout_s, 2) if status.stall_timeout_s else None,
        frames_read=status.frames_read, frames_dropped=status.frames_dropped,
    )


def verdict_overdue_s(camera: _Camera, now: float) -> float | None:
    """Seconds since an online camera's scene was last judged, when that is overdue (see
    :data:`VERDICT_OVERDUE_INTERVALS`), else ``None``. Counted from the later of the last
    verdict and the stream coming online: an outage of the camera is reported as such."""
    if camera.online_since is None:
        return None
    since = max(camera.judged_at or camera.online_since, camera.online_since)
    quiet = now - since
    limit = max(VERDICT_OVERDUE_MIN_S, VERDICT_OVERDUE_INTERVALS * camera.interval_s)
    return quiet if quiet > limit else None


def _frame_gap_s(status: StreamStatus) -> float | None:
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
