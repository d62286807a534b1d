"""Prometheus metrics and the health endpoint (``/healthz``, ``/readyz``, ``/metrics``).

All metrics live in one :class:`Metrics` object with its own registry (no global state: tests
make as many daemons as they like). Stages get the object and count what they do; values that
already exist elsewhere (frames read by a reader thread, broker connected, queue depths) are read
at scrape time by a collector callback instead of being mirrored on every frame.

Labels carry camera ids, hazards, endpoints (base URLs with credentials redacted) and outcome
names, never secrets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
AGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60)


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
            "invalid_answer, stale_dropped)", ["endpoint", "outcome"], registry=registry)
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
    """``/healthz``, ``/readyz`` and ``/metrics`` over HTTP (loopback by default)."""

    def __init__(self, metrics: Metrics, readiness: Callable[[], Readiness]) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`port`)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_endpoint)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        logger.info("health and metrics on http://%s:%s/ (healthz, readyz, metrics)", host,
                    self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        readiness = self._readiness()
        body = json.dumps({"ready": readiness.ready, "reasons": list(readiness.reasons)})
        return web.Response(text=body + "\n", status=200 if readiness.ready else 503,
                            content_type="application/json")

    async def _metrics_endpoint(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
