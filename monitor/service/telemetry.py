"""Prometheus metrics and the health endpoint (``/healthz``, ``/readyz``, ``/metrics``).

All metrics live in one :class:`Metrics` object with its own registry (no global state: tests
make as many daemons as they like). Stages get the object and count what they do; values that
already exist elsewhere (frames read by a reader thread, broker connected, queue depths) are read
at scrape time by a collector callback instead of being mirrored on every frame.

Labels carry camera ids, hazards, endpoints (base URLs with credentials redacted) and outcome
names, never secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.redaction import redact

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
AGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60)
LOOP_LAG_INTERVAL_S = 0.5
LOOP_LAG_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class CameraSnapshot:
    """What a scrape reads from one camera."""

    camera_id: str
    online: bool
    frames_read: int
    frames_dropped: int
    reconnects: int


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """Values read at scrape time from the running daemon."""

    cameras: tuple[CameraSnapshot, ...] = ()
    broker_connected: bool = False
    mqtt_queue_depth: int = 0
    mqtt_refused: int = 0
    outbox_depth: int = 0


class _LiveCollector(Collector):
    def __init__(self, read: Callable[[], LiveSnapshot]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        live = self._read()
        frames = CounterMetricFamily("monitor_frames_read", "Frames decoded per camera",
                                     labels=["camera"])
        dropped = CounterMetricFamily(
            "monitor_frames_overwritten", "Decoded frames replaced by a newer one before "
            "being sampled (newest-frame mailbox)", labels=["camera"])
        reconnects = CounterMetricFamily("monitor_camera_reconnects",
                                         "Stream reconnect attempts", labels=["camera"])
        online = GaugeMetricFamily("monitor_camera_online", "1 while the stream delivers",
                                   labels=["camera"])
        for camera in live.cameras:
            frames.add_metric([camera.camera_id], camera.frames_read)
            dropped.add_metric([camera.camera_id], camera.frames_dropped)
            reconnects.add_metric([camera.camera_id], camera.reconnects)
            online.add_metric([camera.camera_id], 1.0 if camera.online else 0.0)
        yield frames
        yield dropped
        yield reconnects
        yield online
        yield GaugeMetricFamily("monitor_cameras_online", "Cameras whose stream delivers",
                                value=sum(1 for camera in live.cameras if camera.online))
        yield GaugeMetricFamily("monitor_broker_connected", "1 while connected to the broker",
                                value=1.0 if live.broker_connected else 0.0)
        yield GaugeMetricFamily("monitor_mqtt_queue_depth", "Messages waiting for the broker",
                                value=live.mqtt_queue_depth)
        yield CounterMetricFamily("monitor_mqtt_refused", "Messages the broker refused for "
                                  "good (MQTT 5 PUBACK reason code, e.g. its ACL) and that were "
                                  "dropped", value=live.mqtt_refused)
        yield GaugeMetricFamily("monitor_outbox_depth", "Messages in the durable outbox",
                                value=live.outbox_depth)


@dataclass
class Metrics:
    """Every metric the daemon exports."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        registry = self.registry
        self.frames_sampled = Counter(
            "monitor_frames_sampled", "Frames taken for analysis", ["camera"], registry=registry)
        self.change_gate_skips = Counter(
            "monitor_change_gate_skips", "Sampled frames not sent because the scene had not "
            "changed", ["camera"], registry=registry)
        self.vlm_requests = Counter(
            "monitor_vlm_requests", "Model requests by outcome (ok, unavailable, rejected, "
            "invalid_answer, stale_dropped, busy, image_error)", ["endpoint", "outcome"],
            registry=registry)
        self.vlm_latency = Histogram(
            "monitor_vlm_latency_seconds", "Model request latency", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self.frame_age = Histogram(
            "monitor_frame_age_seconds", "Age of a frame when its verdict arrived (capture to "
            "answer)", buckets=AGE_BUCKETS, registry=registry)
        self.tokens = Counter(
            "monitor_vlm_tokens", "Tokens billed by the model server", ["kind"],
            registry=registry)
        self.events = Counter(
            "monitor_events", "Alert events published", ["hazard", "type"], registry=registry)
        self.vlm_in_flight = Gauge(
            "monitor_vlm_in_flight", "Model requests in flight", ["endpoint"],
            registry=registry)
        self.event_loop_lag = Gauge(
            "monitor_event_loop_lag_seconds", "How late the event loop ran a timer at the "
            "latest check (every 0.5 s): time spent in blocking code on the loop",
            registry=registry)
        self.event_loop_lag_max = Gauge(
            "monitor_event_loop_lag_max_seconds", "The largest event-loop lag of the checks in "
            "the last 60 s", registry=registry)

    async def watch_event_loop(self, interval_s: float = LOOP_LAG_INTERVAL_S,
                               window_s: float = LOOP_LAG_WINDOW_S,
                               clock: Callable[[], float] = time.monotonic) -> None:
        """Measure the event loop's lag until cancelled: how much later than asked a sleep
        of ``interval_s`` wakes up. Anything that blocks the loop (a slow fsync, CPU work
        that belongs in a thread) delays every timer by as much, so it shows up here."""
        recent: deque[tuple[float, float]] = deque()
        while True:
            asked = clock()
            await asyncio.sleep(interval_s)
            woke = clock()
            lag = max(0.0, woke - asked - interval_s)
            recent.append((woke, lag))
            while recent[0][0] < woke - window_s:
                recent.popleft()
            self.event_loop_lag.set(lag)
            self.event_loop_lag_max.set(max(value for _, value in recent))

    def observe_live(self, read: Callable[[], LiveSnapshot]) -> None:
        """Read ``read()`` at every scrape (called once, by the daemon)."""
        self.registry.register(_LiveCollector(read))

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the pipeline runs, and if not, why."""

    ready: bool
    reasons: tuple[str, ...] = ()


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` over HTTP (loopback by default).

    While it serves, it also runs :meth:`Metrics.watch_event_loop`: the lag is worth measuring
    exactly when someone can scrape it.
    """

    def __init__(self, metrics: Metrics, readiness: Callable[[], Readiness],
                 routes: Callable[[web.Application], None] | None = None) -> None:
        self._routes = routes
        """Adds more routes (the operator console) to the same server."""
        self._metrics = metrics
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self._loop_watch: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.listening = asyncio.Event()
        """Set once :meth:`start` listens (then :attr:`port` is known)."""

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`port`)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_endpoint)
        if self._routes is not None:
            self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        logger.info("health and metrics on http://%s:%s/ (healthz, readyz, metrics)", host,
                    self.port)
        self.listening.set()
        self._loop_watch = asyncio.create_task(self._metrics.watch_event_loop(),
                                               name="telemetry.event_loop_lag")

    async def stop(self) -> None:
        """Stop listening."""
        if self._loop_watch is not None:
            self._loop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_watch
            self._loop_watch = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        readiness = self._readiness()
        # Reasons quote servers' error texts, which may echo a credential back.
        body = redact(json.dumps({"ready": readiness.ready, "reasons": list(readiness.reasons)},
                                 ensure_ascii=False))
        return web.Response(text=body + "\n", status=200 if readiness.ready else 503,
                            content_type="application/json")

    async def _metrics_endpoint(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
