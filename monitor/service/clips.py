"""Evidence clips: each camera's packet ring, and the MP4 cut from it when an alert starts.

The service wires the two halves the dependency rule keeps apart: the ring and the remuxing
live in :mod:`monitor.ingest.clips` (they know packets and PyAV), the events in
:mod:`monitor.alerts` (they know nothing of streams). :class:`ClipRecorder` gives each camera
whose clips are on a :class:`~monitor.ingest.clips.PacketRing` (all sharing one
:class:`~monitor.ingest.clips.RingBudget`), and :meth:`ClipRecorder.clip_for` is called by the
:class:`~monitor.service.sink.AlertSink` for every event it publishes:

- a ``start`` takes the ring's packets from ``pre_roll_s`` before the event's frame (from the
  keyframe at or before it) at once, and hands the rest to a clip thread, which waits for the
  post-roll, takes the packets that followed, remuxes both into one MP4 in the evidence
  store's directory (:meth:`SnapshotStore.path_for`'s name with ``-clip.mp4``), applies the
  store's retention, and announces the result on ``<prefix>/clips``; the event itself never
  waits: it carries a :class:`~monitor.alerts.payloads.ClipRef` with ``ready`` false;
- later steps of the alert carry the same reference, ``ready`` once the file is complete.

Notification channels get a finished clip's path by the alert's id with
:meth:`ClipRecorder.finished_path` (or wait for it: :meth:`ClipRecorder.wait_for_clip`), or
are told through :meth:`ClipRecorder.add_listener`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.alerts.evidence import SnapshotStore
from monitor.alerts.payloads import ClipPayload, ClipRef, iso_time
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent, EventType
from monitor.clipconfig import ClipSettings
from monitor.ingest.clips import (
    RING_SLACK_S,
    ClipError,
    ClipPackets,
    PacketRing,
    RingBudget,
    stream_offset,
    write_mp4,
)
from monitor.redaction import redact

logger = logging.getLogger(__name__)

LATE_PACKETS_S = 1.2
"""The clip thread waits this long past the post-roll: the built-in receiver reads lazily
(up to a second) while no frame is wanted, so the last packets arrive a little late."""
REMEMBERED_CLIPS = 256
"""Alerts whose clip state is kept for later steps and for notification channels."""
CLIP_WORKERS = 2


@dataclass(slots=True)
class _Clip:
    camera_id: str
    event: AlertEvent
    ref: ClipRef
    done: threading.Event = field(default_factory=threading.Event)
    finished: Path | None = None


@dataclass(slots=True)
class _Camera:
    ring: PacketRing
    settings: ClipSettings


class ClipRecorder:
    """Packet rings per camera and the clips cut from them (see the module docstring)."""

    def __init__(self, store: SnapshotStore, publisher: MqttPublisher | None,
                 max_total_bytes: int, registry: CollectorRegistry | None = None) -> None:
        self._store = store
        self._publisher = publisher
        self.budget = RingBudget(max_total_bytes)
        self._cameras: dict[str, _Camera] = {}
        self._clips: OrderedDict[str, _Clip] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=CLIP_WORKERS, thread_name_prefix="clip")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[ClipPayload], None]] = []
        self.outcomes: dict[str, int] = {"written": 0, "failed": 0}
        if registry is not None:
            registry.register(_ClipCollector(self))

    def ring(self, camera_id: str, settings: ClipSettings) -> PacketRing:
        """A new ring for ``camera_id`` (its reader feeds it); replaces the camera's last."""
        self.forget(camera_id)
        ring = PacketRing(camera_id, keep_s=settings.pre_roll_s + RING_SLACK_S,
                          max_bytes=settings.max_bytes, budget=self.budget)
        self._cameras[camera_id] = _Camera(ring, settings)
        return ring

    def forget(self, camera_id: str) -> None:
        """The camera stopped: its ring's memory goes back to the budget."""
        camera = self._cameras.pop(camera_id, None)
        if camera is not None:
            camera.ring.reset("none")

    def memory(self) -> dict[str, int]:
        """Bytes held per camera's ring."""
        return {camera_id: camera.ring.used_bytes for camera_id, camera in self._cameras.items()}

    def overflows(self) -> dict[str, int]:
        """Per camera, GOPs its ring dropped whole for not fitting ``clip_max_bytes``."""
        return {camera_id: camera.ring.overflows for camera_id, camera in self._cameras.items()}

    def add_listener(self, listener: Callable[[ClipPayload], None]) -> None:
        """Call ``listener`` (on the event loop) with every clip written or given up."""
        self._listeners.append(listener)

    def clip_for(self, event: AlertEvent) -> ClipRef | None:
        """The clip reference an event carries: a ``start`` begins the clip (never waits);
        later steps get the alert's reference as it stands. Call it on the event loop."""
        if event.type is EventType.START:
            return self._begin(event)
        with self._lock:
            clip = self._clips.get(event.event_id)
            return clip.ref if clip is not None else None

    def finished_path(self, event_id: str) -> Path | None:
        """The finished clip of alert ``event_id``; ``None`` while (or when) there is none."""
        with self._lock:
            clip = self._clips.get(event_id)
        return clip.finished if clip is not None else None

    async def wait_for_clip(self, event_id: str, timeout_s: float) -> Path | None:
        """Wait up to ``timeout_s`` for alert ``event_id``'s clip; its path, or ``None``."""
        with self._lock:
            clip = self._clips.get(event_id)
        if clip is None:
            return None
        await asyncio.to_thread(clip.done.wait, timeout_s)
        return clip.finished

    def close(self) -> None:
        """Stop: clips being recorded are written with what they have (no new ones)."""
        self._stop.set()
        self._executor.shutdown(wait=False)

    def _begin(self, event: AlertEvent) -> ClipRef | None:
        camera = self._cameras.get(event.camera_id)
        if camera is None or self._stop.is_set():
            return None
        settings = camera.settings
        # The event's time is its frame's capture time (epoch); the ring counts monotonic.
        alert_at = time.monotonic() - max(0.0, time.time() - event.at)
        first = camera.ring.take(alert_at - settings.pre_roll_s)
        if first is None:
            logger.info("camera %s: no clip for event %s: %s", event.camera_id,
                        event.event_id, camera.ring.refused or "no video kept yet")
            return None
        base = self._store.path_for(event.camera_id, event.hazard, event.event_id, 0, event.at)
        path = base.with_name(base.stem.removesuffix("-r0") + "-clip.mp4")
        url = self._store.reference(path, None).url
        ref = ClipRef(path=str(path), url=url, ready=False,
                      expected_at=iso_time(event.at + settings.post_roll_s + LATE_PACKETS_S))
        clip = _Clip(event.camera_id, event, ref)
        with self._lock:
            self._clips[event.event_id] = clip
            while len(self._clips) > REMEMBERED_CLIPS:
                self._clips.popitem(last=False)
        self._loop = asyncio.get_running_loop()
        self._executor.submit(self._record, clip, camera, first, alert_at)
        return ref

    def _record(self, clip: _Clip, camera: _Camera, first: ClipPackets, alert_at: float) -> None:
        """The clip thread: wait for the post-roll, cut, write, announce."""
        settings = camera.settings
        path = Path(clip.ref.path)
        try:
            end_at = alert_at + settings.post_roll_s
            self._stop.wait(max(0.0, end_at + LATE_PACKETS_S - time.monotonic()))
            packets = first.packets
            rest = camera.ring.take(0.0, after=packets[-1].sequence)
            if rest is not None:
                until = end_at - stream_offset(packets)
                packets += tuple(p for p in rest.packets if p.pts_s <= until)
            whole = replace(first, packets=packets)
            duration = write_mp4(whole, path)
            pre_roll = alert_at - stream_offset(packets) - packets[0].pts_s
            size = path.stat().st_size
        except (ClipError, OSError) as exc:
            reason = redact(str(exc))
            logger.warning("camera %s: evidence clip for event %s not written: %s",
                           clip.camera_id, clip.event.event_id, reason)
            self._finish(clip, None, ClipPayload(
                id=clip.event.event_id, camera=clip.camera_id, hazard=clip.event.hazard,
                ready=False, path=str(path), url=clip.ref.url, duration_s=None,
                pre_roll_s=None, size_bytes=None, error=reason))
            return
        self._store.prune(keep=path)
        logger.info("camera %s: evidence clip for event %s: %s (%.1f s, %.1f s before the "
                    "alert, %d bytes)", clip.camera_id, clip.event.event_id, path, duration,
                    pre_roll, size)
        self._finish(clip, path, ClipPayload(
            id=clip.event.event_id, camera=clip.camera_id, hazard=clip.event.hazard,
            ready=True, path=str(path), url=clip.ref.url, duration_s=round(duration, 3),
            pre_roll_s=round(pre_roll, 3), size_bytes=size))

    def _finish(self, clip: _Clip, path: Path | None, payload: ClipPayload) -> None:
        with self._lock:
            clip.finished = path
            if path is not None:
                clip.ref = clip.ref.model_copy(update={"ready": True})
            self.outcomes["written" if path is not None else "failed"] += 1
        clip.done.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The publisher and the listeners belong to the event loop.
            loop.call_soon_threadsafe(self._announce, payload)

    def _announce(self, payload: ClipPayload) -> None:
        if self._publisher is not None:
            try:
                self._publisher.publish(self._publisher.topics.clips, payload.model_dump_json())
            except Exception:  # a clip finished during shutdown, after the outbox closed
                logger.warning("camera %s: clip of event %s written but not announced",
                               payload.camera, payload.id, exc_info=True)
        for listener in self._listeners:
            try:
                listener(payload)
            except Exception:
                logger.exception("clip listener failed")


class _ClipCollector(Collector):
    """The rings' memory and the clips' outcomes, read at scrape time."""

    def __init__(self, recorder: ClipRecorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterable[Metric]:
        recorder = self._recorder
        memory = GaugeMetricFamily(
            "monitor_clip_ring_bytes", "Memory held by a camera's evidence clip packet ring "
            "(payload plus bookkeeping)", labels=["camera"])
        for camera_id, used in recorder.memory().items():
            memory.add_metric([camera_id], used)
        yield memory
        overflows = CounterMetricFamily(
            "monitor_clip_ring_overflows", "GOPs a camera's ring dropped whole because one GOP "
            "was larger than clip_max_bytes (raise it)", labels=["camera"])
        for camera_id, count in recorder.overflows().items():
            overflows.add_metric([camera_id], count)
        yield overflows
        yield GaugeMetricFamily("monitor_clip_ring_total_bytes", "Memory held by all packet "
                                "rings together (capped by clips.max_total_bytes)",
                                value=recorder.budget.used)
        outcomes = CounterMetricFamily("monitor_clips", "Evidence clips by outcome (written, "
                                       "failed)", labels=["outcome"])
        for outcome, count in recorder.outcomes.items():
            outcomes.add_metric([outcome], count)
        yield outcomes
