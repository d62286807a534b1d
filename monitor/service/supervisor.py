"""The supervisor: wires the stages, runs them in one TaskGroup, shuts them down in order.

Tasks (all named, all in one ``asyncio.TaskGroup``)::

    mqtt.publisher            the broker connection and the outgoing queue
    camera[<id>].sampler      the camera's :class:`~monitor.service.pipeline.CameraPipeline`:
                              next frame -> model slot, freshest frame, encode (executor),
                              model -> verdict, tracker, events (through the AlertSink)
    cameras.status            retained camera status on change and as a heartbeat; notices
                              stalled streams; health checks (monitor.service.health) whose
                              start/end events go out on <prefix>/health
    supervisor.watch          sd_notify watchdog and status; ends alerts nobody confirms any
                              more; restarts a camera whose reader thread died

Per camera the supervisor owns the reader (thread) and the pipeline task; the pipeline owns
the rest of the camera's state (sampler, change gate, tracker, region of interest). Shared by
all: one :class:`~monitor.model.client.VlmClient`, one
:class:`~monitor.service.sink.AlertSink` (publisher, evidence store, metrics), one encoder
thread pool.

A camera, the broker or the model server being down is an outage to report, not a reason to
stop: pipelines log and go on, the publisher reconnects. A bug in one camera's pipeline is
logged and that camera restarted with backoff. Only a failure of a core component (the
publisher, the supervisor) ends the TaskGroup, so the daemon exits non-zero and systemd
restarts it. SIGHUP reloads the cameras without touching the ones that did not change
(:func:`~monitor.service.reload.plan_reload` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from monitor import heap
from monitor.alerts.evidence import SnapshotStore
from monitor.alerts.notify.delivery import NotifyCollector, NotifyHub
from monitor.alerts.outbox import Outbox
from monitor.alerts.payloads import StatusPayload, iso_time
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import EndReason, EventType, HazardTracker
from monitor.backoff import backoff_s
from monitor.config import CameraConfig, MonitorConfig
from monitor.console.auth import ConsoleAuth
from monitor.console.feedback import FeedbackFolder
from monitor.console.state import ConsoleState, camera_views
from monitor.console.web import ConsoleWeb
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import StreamStatus, stream_source
from monitor.model.answer import Hazard
from monitor.model.client import VlmClient
from monitor.redaction import redact, register_secrets
from monitor.service.clips import ClipRecorder
from monitor.service.console_actions import ConsoleActionHandler
from monitor.service.console_commands import ConsoleCommands
from monitor.service.health import HealthWatch
from monitor.service.pipeline import EVENT_WORDS, CameraPipeline
from monitor.service.reload import QUIET_HOURS, plan_reload
from monitor.service.sink import AlertSink
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
VERDICT_OVERDUE_INTERVALS = 3
VERDICT_OVERDUE_MIN_S = 10.0
"""Readiness: an online camera whose scene was last judged (a verdict, or the change gate
keeping the last one) more than this many sampling intervals ago, and at least this many
seconds, is reported "no verdict for N s" (a model that hangs says nothing else until its
requests time out)."""


@dataclass(slots=True)
class _Camera:
    """A running camera as the supervisor sees it: its reader, its pipeline and their task."""

    config: CameraConfig
    reader: CameraReader
    pipeline: CameraPipeline
    task: asyncio.Task[None] | None = None
    """The camera's supervised pipeline task (``camera[<id>].sampler``)."""
    status_signature: tuple[object, ...] | None = None
    status_published_at: float = 0.0
    online_since: float | None = None
    """Monotonic time the stream last came online (``None`` while it is not)."""

    async def supervise(self, stopping: asyncio.Event, rng: random.Random) -> None:
        """Run the pipeline; a bug in it is logged and the pipeline restarted with backoff,
        so one camera's failure never takes the others down."""
        failures = 0
        while not stopping.is_set():
            started = time.monotonic()
            try:
                await self.pipeline.run()
            except Exception:
                if time.monotonic() - started > CAMERA_RESTART_CAP_S:
                    failures = 0  # it ran fine for a while: start the backoff afresh
                delay = backoff_s(failures, rng, base_s=1.0, cap_s=CAMERA_RESTART_CAP_S)
                failures += 1
                logger.exception("camera %s: pipeline failed; restarting in %.1f s",
                                 self.config.id, delay)
                await _pause(stopping, delay)
            else:
                return

    async def stop(self) -> None:
        """Stop the reader and the pipeline task (within deadlines)."""
        self.reader.stop()
        if self.task is not None:
            self.task.cancel("camera removed")
            await asyncio.wait({self.task}, timeout=SAMPLER_GRACE_S)
        if not await asyncio.to_thread(self.reader.join, READER_JOIN_S):
            logger.warning("camera %s: reader still blocked in the stream; leaving it",
                           self.config.id)

    def observe_status(self, now: float, heartbeat_s: float) -> StreamStatus | None:
        """The reader's status (first checked for a stall) when it is worth publishing: it
        changed, or ``heartbeat_s`` passed since the last one; else ``None``."""
        status = self.reader.check(now)
        if not status.online:
            self.online_since = None
        elif self.online_since is None:
            self.online_since = now
        signature = status.signature()
        if signature == self.status_signature and now - self.status_published_at < heartbeat_s:
            return None
        self.status_signature = signature
        self.status_published_at = now
        return status


def camera_hazards(config: MonitorConfig, camera: CameraConfig) -> list[Hazard]:
    """The hazards watched on ``camera``, as the pipeline names them."""
    return [Hazard(name) for name in config.camera_hazards(camera)]


class Supervisor:
    """One monitor process: cameras in, MQTT alerts out (see the module docstring)."""

    @classmethod
    def open(cls, config: MonitorConfig) -> Supervisor:
        """Open the state directory (the durable outbox, locked to this process) and make the
        supervisor; the one step of start-up that touches the disk before :meth:`run`.

        Raises:
            OutboxError: the state directory is unusable (a deployment problem: exit 78).
        """
        mqtt = config.mqtt
        outbox = Outbox(config.state_dir / "outbox.sqlite3", max_messages=mqtt.queue_size,
                        max_bytes=mqtt.outbox_max_bytes, max_age_s=mqtt.outbox_max_age_s)
        schedules = {name: section.build(name) for name, section in config.schedules.items()}
        return cls(config, outbox, NotifyHub.open(config.notify, config.state_dir / "notify",
                                                  schedules))

    def __init__(self, config: MonitorConfig, outbox: Outbox,
                 notify: NotifyHub | None = None) -> None:
        """Wire the stages around an open ``outbox``; no I/O (see :meth:`open`)."""
        self.config = config
        # Every text this process emits (logs, /readyz, MQTT) masks the configured secrets.
        register_secrets(config.secret_values())
        self.metrics = Metrics()  # first: the publisher counts the events it stores
        self.outbox = outbox
        self.publisher = MqttPublisher(config.mqtt, outbox, on_event=self._count_event)
        shots = config.snapshots
        self.snapshots = SnapshotStore(
            config.state_dir / "snapshots", max_count=shots.max_count,
            max_age_s=shots.max_age_s, max_bytes=shots.max_bytes,
            jpeg_quality=shots.jpeg_quality, url_prefix=shots.url_prefix,
        ) if shots.enabled else None
        self.vlm = VlmClient(config.vlm, on_in_flight=self._count_in_flight)
        self.metrics.observe_live(self._live_snapshot)
        self.notifier = Notifier()
        self._started = False
        self._stopping = asyncio.Event()
        workers = max(1, min(4, os.cpu_count() or 1))
        self._encoder = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encoder")
        self.console = ConsoleState.from_config(config) \
            if config.console.enabled and config.telemetry.enabled else None
        # Notification channels ([[notify]]): each its own queue and task (notify[<name>]).
        self.notify = notify or NotifyHub([])
        self.metrics.registry.register(NotifyCollector(self.notify))
        self.sink = AlertSink(self.publisher, self.snapshots, self.metrics, self._encoder,
                              console=self.console, notify=self.notify)
        self.publisher.on_left_open_end = self.notify.event
        self.console_commands: ConsoleCommands | None = None
        self.console_web = self._console_web(config)
        self.health = HealthServer(self.metrics, self.readiness,
                                   self.console_web.add_routes if self.console_web else None)
        self.health_watch = HealthWatch(config.health)
        self._cameras: dict[str, _Camera] = {}
        # Evidence clips: a packet ring per camera, fed by its reader, cut into the store.
        self.clips = ClipRecorder(self.snapshots, self.publisher, config.clips.max_total_bytes,
                                  self.metrics.registry) if self.snapshots is not None else None
        self.sink.clips = self.clips
        if self.clips is not None and self.console is not None:
            self.clips.add_listener(self.console.record_clip)  # a clip ready after the end
        self._rng = random.Random()
        self._group: asyncio.TaskGroup | None = None

    def _console_web(self, config: MonitorConfig) -> ConsoleWeb | None:
        """The operator console's routes and actions (``None``: console off)."""
        if self.console is None:
            return None
        feedback = FeedbackFolder(config.console.feedback_dir or config.state_dir / "feedback")
        actions = ConsoleActionHandler(
            self.console, self.publisher, self.sink, self._tracker, feedback,
            hold_s=config.console.false_alarm_hold_s,
            scene_change=config.console.false_alarm_scene_change)
        if config.console.mqtt_commands:
            self.console_commands = ConsoleCommands(config.mqtt, actions)
        return ConsoleWeb(self.console, ConsoleAuth(config.console), actions)

    def _tracker(self, camera_id: str) -> HazardTracker | None:
        camera = self._cameras.get(camera_id)
        return camera.pipeline.tracker if camera is not None else None

    def readiness(self) -> Readiness:
        """Ready while the pipeline runs; the reasons list what is degraded or not running."""
        reasons = []
        if not self._started:
            reasons.append("pipeline not started")
        if self._stopping.is_set():
            reasons.append("shutting down")
        ready = not reasons
        reasons.extend(broker_reasons(self.publisher))
        reasons.extend(camera_reasons(list(self._cameras.values()), time.monotonic()))
        reasons.extend(self.notify.reasons())
        # Outages of cameras, broker or model are reported but do not make us "not ready":
        # the pipeline itself runs and recovers on its own.
        return Readiness(ready=ready, reasons=tuple(reasons))

    def _build_camera(self, config: MonitorConfig, camera: CameraConfig) -> _Camera:
        """A camera's reader and pipeline, not started (no I/O)."""
        clip = config.camera_clip(camera)
        ring = self.clips.ring(camera.id, clip) if self.clips is not None and clip else None
        reader = CameraReader(stream_source(config, camera), ring=ring)
        pipeline = CameraPipeline(config, camera, source=reader, client=self.vlm,
                                  sink=self.sink, executor=self._encoder,
                                  stopping=self._stopping)
        return _Camera(config=camera, reader=reader, pipeline=pipeline)

    def _start_camera(self, camera: _Camera) -> None:
        """Start a camera's reader thread and its supervised pipeline task."""
        assert self._group is not None  # noqa: S101 - only called inside run()'s TaskGroup
        camera_id = camera.config.id
        self._cameras[camera_id] = camera
        # A camera starts with no alert raised: say so, so no stale ON stays retained.
        for hazard in camera.pipeline.tracker.watched:
            self.publisher.set_hazard_state(camera_id, hazard, on=False)
        camera.reader.start()
        camera.task = self._group.create_task(camera.supervise(self._stopping, self._rng),
                                              name=f"camera[{camera_id}].sampler")

    async def _stop_camera(self, camera: _Camera) -> None:
        """Stop one camera without touching the others."""
        self._cameras.pop(camera.config.id, None)
        for event in self.health_watch.forget_camera(camera.config.id, time.time()):
            self.sink.health(event)
        await camera.stop()
        if self.clips is not None:
            self.clips.forget(camera.config.id)

    async def run(self, shutdown: asyncio.Event,
                  reload_requests: asyncio.Queue[MonitorConfig] | None = None) -> None:
        """Run until ``shutdown`` is set, then stop in order. Configurations put on
        ``reload_requests`` are applied live (see :meth:`reload`)."""
        self._loop = asyncio.get_running_loop()
        config = self.config
        # Before the reader and encoder threads exist: arenas made earlier stay.
        heap.limit_arenas()
        # Alerts of cameras no longer configured are ended, their retained topics cleared,
        # and Home Assistant discovery (if enabled) announced, before anything else is sent.
        self.publisher.reconcile({c.id: camera_hazards(config, c)
                                  for c in config.cameras if c.enabled})
        if config.telemetry.enabled:
            await self.health.start(config.telemetry.host, config.telemetry.port)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                publisher_task = group.create_task(self.publisher.run(), name="mqtt.publisher")
                group.create_task(self._publish_statuses(), name="cameras.status")
                if self.console_commands is not None:
                    group.create_task(self.console_commands.run(self._stopping),
                                      name="console.commands")
                notify_tasks = [group.create_task(worker.supervise(), name=f"notify[{worker.name}]")
                                for worker in self.notify.workers]
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
                            redact(config.vlm.base_url), config.mqtt.host,
                            config.mqtt.port)
                watch = group.create_task(self._watch(publisher_task), name="supervisor.watch")
                self.notifier.ready(self._status_line())
                await self._serve(shutdown, reload_requests)
                await self._shutdown(watch, publisher_task)
                for task in notify_tasks:  # what they did not send stays in their queues
                    task.cancel("shutdown")
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
            if section == QUIET_HOURS:
                logger.warning("reload: a schedule that notification channels' quiet hours "
                               "follow changed: the cameras follow it now, the channels after "
                               "a restart of the daemon")
            else:
                logger.warning("reload: %s changed; restart the daemon to apply it",
                               section if section == "state_dir" else f"[{section}]")
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
                for event in camera.pipeline.tracker.end_all(time.time(),
                                                             EndReason.RECONFIGURED):
                    self.sink.event(event)
                await self._stop_camera(camera)
            self._start_camera(self._build_camera(new, camera_config))
            logger.info("camera %s: restarted with its new settings", camera_config.id)
        for camera_config in plan.add:
            self._start_camera(self._build_camera(new, camera_config))
            logger.info("camera %s: added by reload", camera_config.id)
        self.config = new.model_copy(update={"vlm": old.vlm, "mqtt": old.mqtt,
                                             "telemetry": old.telemetry,
                                             "console": old.console})
        if self.console is not None:
            self.console.set_cameras(camera_views(new))
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
        for event in self.health_watch.end_all(time.time()):
            self.sink.health(event)
        self.publisher.close()
        _done, pending_publisher = await asyncio.wait({publisher_task},
                                                      timeout=PUBLISHER_GRACE_S)
        if pending_publisher:
            # Nothing is lost: unsent messages stay in the durable outbox.
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
        if self.clips is not None:
            self.clips.close()
        self.notify.close()
        self.notifier.close()
        logger.info("monitor stopped")

    async def _watch(self, publisher_task: asyncio.Task[None]) -> None:
        """Liveness: ping systemd's watchdog only while the loop is responsive and every
        internal task is alive (outages of cameras, broker or model are not failures);
        restart a camera whose reader thread died."""
        interval = self.notifier.watchdog_interval_s() or 5.0
        period = min(interval, 5.0)
        last_status = ""
        next_trim = time.monotonic() + heap.TRIM_INTERVAL_S
        while True:
            for camera in list(self._cameras.values()):
                if not camera.reader.is_alive() and not self._stopping.is_set():
                    logger.error("camera %s: reader thread ended unexpectedly; restarting "
                                 "the camera", camera.config.id)
                    await self._stop_camera(camera)
                    self._start_camera(self._build_camera(self.config, camera.config))
            expire_alerts(list(self._cameras.values()), self.sink, time.time())
            tasks_alive = not publisher_task.done() and all(
                c.task is not None and not c.task.done() for c in self._cameras.values())
            if tasks_alive:
                self.notifier.watchdog()
            status = self._status_line()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            if time.monotonic() >= next_trim:
                # In a thread: the trim walks every heap arena for a few milliseconds.
                await asyncio.to_thread(heap.release_free_memory)
                next_trim = time.monotonic() + heap.TRIM_INTERVAL_S
            # This sleep returning on time is itself the proof the loop is responsive.
            await asyncio.sleep(period)

    async def _publish_statuses(self) -> None:
        """Camera status on ``<prefix>/<camera>/status`` (retained): on every change, and
        every ``status_heartbeat_s`` anyway. Also where a stalled stream is noticed: the
        reader may sit in a blocking read, but its status goes offline on time."""
        while not self._stopping.is_set():
            heartbeat = self.config.defaults.status_heartbeat_s
            now = time.monotonic()
            for camera in list(self._cameras.values()):
                status = camera.observe_status(now, heartbeat)
                if status is not None:
                    self.sink.stream_status(status_payload(status, time.time()))
            check_health(list(self._cameras.values()), self.health_watch, self.vlm, self.sink,
                         now)
            await _pause(self._stopping, STATUS_POLL_S)

    def _status_line(self) -> str:
        return status_line(list(self._cameras.values()), self.publisher.connected)

    def _live_snapshot(self) -> LiveSnapshot:
        return live_snapshot(list(self._cameras.values()), self.publisher, self.outbox)

    def _count_event(self, hazard: str, kind: str) -> None:
        self.metrics.events.labels(hazard, kind).inc()

    def _count_in_flight(self, endpoint: str, in_flight: int) -> None:
        self.metrics.vlm_in_flight.labels(endpoint).set(in_flight)


def broker_reasons(publisher: MqttPublisher) -> list[str]:
    """Readiness reasons of the broker connection: not connected, messages refused."""
    reasons = []
    if not publisher.connected:
        reasons.append(f"mqtt: not connected ({publisher.last_error or 'connecting'})")
    if publisher.refused:
        reasons.append(f"mqtt: the broker refused {publisher.refused} message(s), "
                       f"last {publisher.last_refusal}; check its ACL")
    return reasons


def expire_alerts(cameras: Sequence[_Camera], sink: AlertSink, now: float) -> None:
    """End the alerts whose ``clear_after_s`` passed without a positive verdict: also those
    of cameras that deliver no verdicts now (offline stream, model down), since the tracker
    only sees time when asked."""
    for camera in cameras:
        for event in camera.pipeline.tracker.expire(now):
            # Besides clear_after_s, site rules act on time alone: a schedule ends, an
            # alert escalates.
            why = (f"end reason {event.end_reason.value}"
                   if event.end_reason not in (None, EndReason.TIMEOUT)
                   else f"severity {event.severity.value}" if event.type is EventType.UPDATE
                   else f"no positive verdict for {now - event.started_at:.0f} s")
            logger.info("camera %s: %s %s (event %s): %s", camera.config.id,
                        event.hazard.value, EVENT_WORDS[event.type], event.event_id, why)
            sink.event(event)


def check_health(cameras: Sequence[_Camera], watch: HealthWatch, vlm: VlmClient,
                 sink: AlertSink, now: float) -> None:
    """One round of health checks (monotonic ``now``): each camera's stream, picture and
    verdicts, and the model pool; the events go out through the sink."""
    wall = time.time()
    events = []
    for camera in cameras:
        status = camera.reader.status
        picture = camera.pipeline.picture
        events.extend(watch.check_camera(
            camera.config.id, online=status.online, offline_detail=status.last_error or "",
            picture=picture.conditions if picture is not None else None,
            unjudged_s=unjudged_s(camera, now), now=now, wall=wall,
            sampling=bool(camera.pipeline.tracker.asked(wall))))
    events.extend(watch.check_model(vlm.unavailable_reason(), now=now, wall=wall))
    for event in events:
        sink.health(event)


def unjudged_s(camera: _Camera, now: float) -> float | None:
    """Seconds since an online camera's scene was last judged (a verdict, or the change gate
    keeping the last one), counted from when it came online; ``None`` while it is offline."""
    if camera.online_since is None:
        return None
    judged_at = camera.pipeline.judged_at
    return now - max(judged_at or camera.online_since, camera.online_since)


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


def live_snapshot(cameras: Sequence[_Camera], publisher: MqttPublisher,
                  outbox: Outbox) -> LiveSnapshot:
    """What a ``/metrics`` scrape reads of the running cameras, broker and outbox."""
    return LiveSnapshot(
        cameras=tuple(CameraSnapshot(camera_id=c.config.id, online=c.reader.status.online,
                                     frames_read=c.reader.status.frames_read,
                                     frames_dropped=c.reader.status.frames_dropped,
                                     reconnects=c.reader.status.reconnects)
                      for c in cameras),
        broker_connected=publisher.connected, mqtt_queue_depth=publisher.pending,
        mqtt_refused=publisher.refused, outbox_depth=outbox.depth)


def camera_reasons(cameras: Sequence[_Camera], now: float) -> list[str]:
    """Readiness reasons of the cameras: offline, analysis failing, no verdict for N s."""
    reasons = [f"camera {c.config.id}: offline ({c.reader.status.last_error or '-'})"
               for c in cameras if not c.reader.status.online]
    reasons.extend(f"camera {c.config.id}: analysis failing: {c.pipeline.last_error}"
                   for c in cameras if c.pipeline.last_error)
    for camera in cameras:
        overdue = verdict_overdue_s(camera, now)
        if overdue is not None:
            reasons.append(f"camera {camera.config.id}: no verdict for {overdue:.0f} s")
    return reasons


def status_line(cameras: Sequence[_Camera], broker_connected: bool) -> str:
    """systemd's STATUS= line: cameras online, the broker, failing analyses."""
    online = sum(1 for c in cameras if c.reader.status.online)
    broker = "connected" if broker_connected else "NOT connected"
    failing = sum(1 for c in cameras if c.pipeline.last_error)
    line = f"{online}/{len(cameras)} cameras online; broker {broker}"
    return line + (f"; analysis failing on {failing} camera(s)" if failing else "")


def verdict_overdue_s(camera: _Camera, now: float) -> float | None:
    """Seconds since an online camera's scene was last judged, when that is overdue (see
    :data:`VERDICT_OVERDUE_INTERVALS`), else ``None``. Counted from the later of the last
    verdict and the stream coming online: an outage of the camera is reported as such."""
    if camera.online_since is None:
        return None
    judged_at = camera.pipeline.judged_at
    since = max(judged_at or camera.online_since, camera.online_since)
    quiet = now - since
    limit = max(VERDICT_OVERDUE_MIN_S, VERDICT_OVERDUE_INTERVALS * camera.pipeline.interval_s)
    return quiet if quiet > limit else None


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stopping`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
