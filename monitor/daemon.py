"""The supervisor: wires the stages, runs them in one TaskGroup, shuts them down in order.

Tasks (all named, all in one ``asyncio.TaskGroup``)::

    mqtt.publisher            the broker connection and the outgoing queue
    camera[<id>].sampler      interval → encode (thread pool) → model → tracker → publish
    supervisor.watch          fails the daemon if a camera reader thread died unexpectedly

A camera, the broker or the model server being down is an outage to report, not a reason to
stop: samplers log and go on, the publisher reconnects. Only a bug (an unexpected exception in
a task, a reader thread that died) ends the TaskGroup, so systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from monitor.capture import CameraReader, CapturedFrame, StreamSource, StreamStatus
from monitor.config import CameraConfig, MonitorConfig
from monitor.imaging import EncodedImage, ImageBudgetError, encode_for_model
from monitor.mqtt import MqttPublisher
from monitor.sampling import IntervalSampler
from monitor.systemd import Notifier
from monitor.telemetry import CameraSnapshot, HealthServer, LiveSnapshot, Metrics, Readiness
from monitor.tracker import HazardTracker
from monitor.urls import redact_url, with_credentials
from monitor.verdict import Verdict
from monitor.vlm import (
    VlmAnswerError,
    VlmClient,
    VlmError,
    VlmRequestRejectedError,
    VlmUnavailableError,
)

logger = logging.getLogger(__name__)

SAMPLER_GRACE_S = 5.0
"""Shutdown: how long in-flight model requests may finish before they are cancelled."""
PUBLISHER_GRACE_S = 5.0
"""Shutdown: how long the publisher may flush its queue and publish ``offline``."""
READER_JOIN_S = 2.0


class ReaderDiedError(RuntimeError):
    """A camera reader thread ended while the daemon was running (a bug: it never should)."""


@dataclass(slots=True)
class _Camera:
    config: CameraConfig
    reader: CameraReader
    tracker: HazardTracker
    sampler: IntervalSampler
    last_error: str | None = None


def stream_source(config: MonitorConfig, camera: CameraConfig) -> StreamSource:
    """How to open ``camera``'s stream (credentials injected here, and only here)."""
    password = camera.password.get_secret_value() if camera.password else None
    return StreamSource(
        camera_id=camera.id,
        url=with_credentials(camera.url, camera.username, password),
        transport=camera.transport, loop=camera.loop,
        open_timeout_s=config.defaults.open_timeout_s,
        read_timeout_s=config.defaults.read_timeout_s,
    )


class Daemon:
    """One monitor process: cameras in, MQTT alerts out."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.publisher = MqttPublisher(config.mqtt)
        self.vlm = VlmClient(config.vlm)
        self.metrics = Metrics()
        self.metrics.observe_live(self._live_snapshot)
        self.health = HealthServer(self.metrics, self.readiness)
        self._endpoint_label = redact_url(config.vlm.base_url)
        self.notifier = Notifier()
        self._started = False
        self._stopping = asyncio.Event()
        workers = max(1, min(4, os.cpu_count() or 1))
        self._encoder = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encoder")
        self._cameras: list[_Camera] = []

    def _live_snapshot(self) -> LiveSnapshot:
        cameras = tuple(
            CameraSnapshot(camera_id=c.config.id, online=c.reader.status.online,
                           frames_read=c.reader.status.frames_read,
                           frames_dropped=c.reader.status.frames_dropped,
                           reconnects=c.reader.status.reconnects)
            for c in self._cameras
        )
        return LiveSnapshot(cameras=cameras, broker_connected=self.publisher.connected,
                            mqtt_queue_depth=self.publisher.pending)

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
        reasons.extend(f"camera {c.config.id}: offline ({c.reader.status.last_error or '-'})"
                       for c in self._cameras if not c.reader.status.online)
        reasons.extend(f"camera {c.config.id}: analysis failing: {c.last_error}"
                       for c in self._cameras if c.last_error)
        # Outages of cameras, broker or model are reported but do not make us "not ready":
        # the pipeline itself runs and recovers on its own.
        return Readiness(ready=ready, reasons=tuple(reasons))

    def _on_status(self, status: StreamStatus) -> None:
        """Called from a reader thread: hand the status to the loop thread."""
        self._loop.call_soon_threadsafe(self.publisher.publish_status, status, time.time())

    async def run(self, shutdown: asyncio.Event) -> None:
        """Run until ``shutdown`` is set, then stop in order."""
        self._loop = asyncio.get_running_loop()
        config = self.config
        for camera in config.cameras:
            if not camera.enabled:
                logger.info("camera %s: disabled in the configuration", camera.id)
                continue
            hazards = config.camera_hazards(camera)
            self._cameras.append(_Camera(
                config=camera,
                reader=CameraReader(stream_source(config, camera), on_status=self._on_status),
                tracker=HazardTracker(camera.id, hazards, config.defaults.confirm_frames,
                                      config.defaults.clear_frames),
                sampler=IntervalSampler(config.camera_interval_s(camera)),
            ))
            # A fresh daemon has no alert raised: say so, so no stale ON stays retained.
            for hazard in hazards:
                self.publisher.set_hazard_state(camera.id, hazard, on=False)
        if not self._cameras:
            logger.warning("no enabled camera in the configuration; only MQTT availability "
                           "will be published")
        for camera_state in self._cameras:
            camera_state.reader.start()
        if config.telemetry.enabled:
            await self.health.start(config.telemetry.host, config.telemetry.port)
        self._started = True
        logger.info("monitor started: %d camera(s), model %s at %s, broker %s:%d",
                    len(self._cameras), config.vlm.model, config.vlm.base_url,
                    config.mqtt.host, config.mqtt.port)
        try:
            async with asyncio.TaskGroup() as group:
                publisher_task = group.create_task(self.publisher.run(), name="mqtt.publisher")
                samplers = [
                    group.create_task(self._sample_camera(camera_state),
                                      name=f"camera[{camera_state.config.id}].sampler")
                    for camera_state in self._cameras
                ]
                watch = group.create_task(self._watch(samplers, publisher_task),
                                          name="supervisor.watch")
                self.notifier.ready(self._status_line())
                await shutdown.wait()
                await self._shutdown(samplers, watch, publisher_task)
        finally:
            await self._release()

    async def _shutdown(self, samplers: list[asyncio.Task[None]], watch: asyncio.Task[None],
                        publisher_task: asyncio.Task[None]) -> None:
        logger.info("shutting down")
        self.notifier.stopping()
        # 1. Stop intake: no new frames are sampled, readers stop decoding.
        self._stopping.set()
        watch.cancel()
        for camera_state in self._cameras:
            camera_state.reader.stop()
        # 2. Let in-flight model requests finish (their events still count), within a deadline.
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
            logger.warning("mqtt: could not flush within %.0f s; %d message(s) unsent",
                           PUBLISHER_GRACE_S, self.publisher.pending)
            publisher_task.cancel("shutdown deadline")

    async def _release(self) -> None:
        # 5. Close clients and threads whatever happened above.
        await self.health.stop()
        await self.vlm.aclose()
        for camera_state in self._cameras:
            camera_state.reader.stop()
        for camera_state in self._cameras:
            if not camera_state.reader.join(READER_JOIN_S):
                logger.warning("camera %s: reader still blocked in the stream; leaving it",
                               camera_state.config.id)
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        logger.info("monitor stopped")

    def _status_line(self) -> str:
        online = sum(1 for c in self._cameras if c.reader.status.online)
        broker = "connected" if self.publisher.connected else "NOT connected"
        failing = sum(1 for c in self._cameras if c.last_error)
        line = f"{online}/{len(self._cameras)} cameras online; broker {broker}"
        return line + (f"; analysis failing on {failing} camera(s)" if failing else "")

    async def _watch(self, samplers: list[asyncio.Task[None]],
                     publisher_task: asyncio.Task[None]) -> None:
        """Liveness: fail on a dead reader thread; ping systemd's watchdog only while the
        loop is responsive and every internal task is alive (outages are not failures)."""
        interval = self.notifier.watchdog_interval_s() or 5.0
        period = min(interval, 5.0)
        last_status = ""
        while True:
            for camera_state in self._cameras:
                if not camera_state.reader.is_alive():
                    raise ReaderDiedError(
                        f"camera {camera_state.config.id}: reader thread ended unexpectedly")
            tasks_alive = not publisher_task.done() and not any(t.done() for t in samplers)
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

    def _encode(self, frame: CapturedFrame) -> EncodedImage:
        vlm = self.config.vlm
        return encode_for_model(frame.to_bgr(), max_pixels=vlm.max_pixels,
                                min_pixels=vlm.min_pixels, jpeg_quality=vlm.jpeg_quality)

    async def _sample_camera(self, camera: _Camera) -> None:
        """The per-camera pipeline: take a frame (sampling), analyse it (model), act on the
        verdict (tracker, MQTT). One frame at a time, so one model request per camera."""
        while not self._stopping.is_set():
            frame = await self._next_frame(camera)
            if frame is None:
                continue
            verdict = await self._analyse(camera, frame)
            if verdict is not None:
                self._handle_verdict(camera, verdict)

    async def _next_frame(self, camera: _Camera) -> CapturedFrame | None:
        """Sampling: the newest frame once its interval is due; ``None`` after a wait."""
        frame = camera.reader.latest()
        now = time.monotonic()
        decision = camera.sampler.decide(now, frame.sequence if frame else None)
        if not decision.take or frame is None:
            await self._pause(decision.wait_s)
            return None
        camera.sampler.taken(now, frame.sequence)
        self.metrics.frames_sampled.labels(camera.config.id).inc()
        return frame

    async def _analyse(self, camera: _Camera, frame: CapturedFrame) -> Verdict | None:
        """Encoding (thread pool) and the model request; ``None`` when it failed (logged on
        change, counted always)."""
        camera_id = camera.config.id
        try:
            image = await self._loop.run_in_executor(self._encoder, self._encode, frame)
            verdict = await self.vlm.analyse(camera_id, image, frame.captured_at)
        except (VlmError, ImageBudgetError) as exc:
            self.metrics.vlm_requests.labels(self._endpoint_label, _outcome(exc)).inc()
            if str(exc) != camera.last_error:
                logger.warning("camera %s: frame not analysed: %s", camera_id, exc)
            camera.last_error = str(exc)
            return None
        age = verdict.analysed_at - frame.captured_at
        self._count_verdict(verdict.latency_s, age, verdict.prompt_tokens,
                            verdict.completion_tokens)
        if camera.last_error is not None:
            logger.info("camera %s: analysis works again", camera_id)
            camera.last_error = None
        logger.debug("camera %s: verdict in %.2f s (frame age %.2f s): %s", camera_id,
                     verdict.latency_s, age, verdict.answer.model_dump_json())
        return verdict

    def _handle_verdict(self, camera: _Camera, verdict: Verdict) -> None:
        """Tracking and publishing: the verdict, then the events it causes."""
        self.publisher.publish_verdict(verdict)
        for event in camera.tracker.update(verdict.answer, verdict.captured_at):
            logger.info("camera %s: %s %s (event %s): %s", camera.config.id,
                        event.hazard.value,
                        "RAISED" if event.type.value == "start" else "cleared",
                        event.event_id, event.detail or "-")
            self.publisher.publish_event(event)
            self.metrics.events.labels(event.hazard.value, event.type.value).inc()

    def _count_verdict(self, latency_s: float, age_s: float, prompt_tokens: int | None,
                       completion_tokens: int | None) -> None:
        metrics = self.metrics
        metrics.vlm_requests.labels(self._endpoint_label, "ok").inc()
        metrics.vlm_latency.labels(self._endpoint_label).observe(latency_s)
        metrics.frame_age.observe(age_s)
        if prompt_tokens is not None:
            metrics.tokens.labels("prompt").inc(prompt_tokens)
        if completion_tokens is not None:
            metrics.tokens.labels("completion").inc(completion_tokens)


def _outcome(exc: Exception) -> str:
    """The metric label of a failed analysis."""
    if isinstance(exc, VlmUnavailableError):
        return "unavailable"
    if isinstance(exc, VlmRequestRejectedError):
        return "rejected"
    if isinstance(exc, VlmAnswerError):
        return "invalid_answer"
    return "image_error"
