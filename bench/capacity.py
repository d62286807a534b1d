"""Capacity: N cameras against a simulated GPU from 0.5x to 3x what it serves, with and
without priority scheduling, and a hazard appearing on known cameras at known times.

The GPU is the VLM simulator (``monitor sim-vlm``, its own process) with its service-time
model: every request is in service for ``--latency-s + --latency-per-image-token-s * image
tokens``, at most ``--batch`` at once, the rest wait (vLLM beyond ``--max-num-seqs``). That
serves ``batch / service time`` requests per second; at ``--interval-s`` per camera a load of
1x is that many requests per second times the interval in cameras.

The daemon's own parts run in this process as the supervisor wires them: the real
:class:`~monitor.model.client.VlmClient` (``max_concurrency`` = the batch, as the README tells
users, and the daemon's default ``vlm.queue_headroom``: that many requests more wait in the
simulator's queue, as they would in vLLM's; ``--queue-headroom 0`` is the daemon before it),
one :class:`~monitor.service.pipeline.CameraPipeline` per camera, the
:class:`~monitor.service.sink.AlertSink` and :class:`~monitor.alerts.publisher.MqttPublisher`
with its outbox, to a private Mosquitto; a subscriber times the ``start`` events. Only the
cameras are synthetic: each source holds pre-rendered 320x180 frames of the quiet scene (eight
variants with sensor noise, 3 grey levels, so no two successive frames are identical, as on a
real static camera) or of the fire scene while its camera's hazard lasts, with a new sequence
number ``--fps`` times a second, so no decoding shares the two cores with what is measured.
The change gate is off (every camera wants every interval analysed: a busy site); the
pipeline's scene-change watch (:mod:`monitor.service.scenewatch`) still runs while requests
wait, and sees the noisy quiet frames as unchanged and a starting fire as changed.

Each run: ``--warmup-s`` first (not counted), then ``--measure-s`` measured; in it, on the
first ``--trials`` cameras (all but two at most) fire appears at known times, ``--spacing-s``
apart plus a random phase within an interval, and lasts until its alert's ``start`` arrives
on MQTT; the run ends once every trial's alert started and ``--measure-s`` passed (or
``--trial-timeout-s`` after the last fire). It prints, per load and scheduling:

* ``used``: the model's capacity used: service time of the requests answered (the part inside
  the measured time) / (batch x measured time);
* ``rates``: the spread of analysis rates among the cameras without a hazard (equal
  priority; each camera's rate from the intervals between its analyses): the largest
  deviation from their mean, in percent;
* ``age p50/p95``: frame age at analysis (answer time - capture time), all cameras;
* ``alert p50/p95``: the hazard's first frame to its MQTT ``start``, over the trials.

Goals (issue #16): at 2x, used >= 95 %, rates within +-20 %, age p95 < ``max_frame_age_s``,
alert p95 <= 1.5x the unloaded (0.5x) figure with priority.

Usage (from the repository root; a few minutes with the defaults)::

    .venv/bin/python -m bench.capacity
    .venv/bin/python -m bench.capacity --loads 0.5,2 --trials 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiomqtt
import numpy as np

from monitor.alerts.outbox import Outbox
from monitor.alerts.payloads import Box, SnapshotRef
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import AlertEvent
from monitor.config import QUEUE_HEADROOM, MonitorConfig, config_from_mapping
from monitor.ingest.frame import CapturedFrame
from monitor.model.answer import Verdict
from monitor.model.client import VlmClient
from monitor.model.imaging import image_tokens
from monitor.model.verify import CropCheck
from monitor.service.pipeline import CameraPipeline, Frame
from monitor.service.sink import AlertSink
from monitor.service.telemetry import Metrics
from monitor.sim.broker import MosquittoBroker, free_port, wait_for_port
from monitor.sim.scenes import PRESETS, render_frame

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 320, 180


# --- Synthetic cameras. --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Status:
    decode: str | None
    gop_s: float | None
    fps: float | None


class SyntheticCamera:
    """A camera's newest frame, computed from the clock: a new sequence number every 1/fps
    seconds, the fire picture while ``fire_from <= capture time < fire_until``, else one of
    the quiet scene's noisy variants (a real static camera's frames differ by sensor noise)."""

    def __init__(self, camera_id: str, fps: float, quiet: Sequence[np.ndarray],
                 fire: np.ndarray, t0: float) -> None:
        self.camera_id = camera_id
        self.fps = fps
        self.status = _Status(decode="all", gop_s=None, fps=fps)
        self._quiet, self._fire, self._t0 = quiet, fire, t0
        self.fire_from = math.inf
        self.fire_until = math.inf
        self._wake: asyncio.TimerHandle | None = None

    def first_fire_frame_at(self) -> float:
        """Capture time of the first frame showing the fire."""
        index = math.ceil((self.fire_from - self._t0) * self.fps - 1e-9)
        return self._t0 + index / self.fps

    def latest(self) -> CapturedFrame:
        """The newest frame now."""
        now = time.time()
        index = math.floor((now - self._t0) * self.fps)
        captured = self._t0 + index / self.fps
        image = self._fire if self.fire_from <= captured < self.fire_until \
            else self._quiet[index % len(self._quiet)]
        monotonic = time.monotonic() - (now - captured)
        return CapturedFrame(self.camera_id, index, captured, monotonic, WIDTH, HEIGHT, image)

    def notify_next(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when the next frame exists."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if callback is not None:
            now = time.time()
            next_at = self._t0 + (math.floor((now - self._t0) * self.fps) + 1) / self.fps
            self._wake = asyncio.get_running_loop().call_later(max(0.0, next_at - now),
                                                              callback)

    def mark_taken(self, sequence: int) -> None:
        """Nothing to do: frames are computed, not stored."""

    def want_next_frame_at(self, at: float) -> None:
        """Nothing to do: every frame is available."""


@dataclass(slots=True)
class Recorder:
    """Wraps the daemon's sink; keeps every verdict's camera, capture and answer times."""

    sink: AlertSink
    verdicts: list[tuple[str, float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def sampled(self, camera_id: str) -> None:
        self.sink.sampled(camera_id)

    def unchanged(self, camera_id: str) -> None:
        self.sink.unchanged(camera_id)

    def failed(self, camera_id: str, endpoint: str, outcome: str) -> None:
        self.failures.append(outcome)
        self.sink.failed(camera_id, endpoint, outcome)

    def verdict(self, verdict: Verdict) -> None:
        self.verdicts.append((verdict.camera_id, verdict.captured_at, verdict.analysed_at))
        self.sink.verdict(verdict)

    async def evidence(self, event: AlertEvent, frame: Frame,
                       boxes: Sequence[Box]) -> SnapshotRef | None:
        return await self.sink.evidence(event, frame, boxes)

    async def crop_evidence(self, event: AlertEvent,
                            checks: Sequence[CropCheck]) -> list[str | None]:
        return await self.sink.crop_evidence(event, checks)

    def event(self, event: AlertEvent, *, verdict: Verdict | None = None,
              boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None) -> None:
        self.sink.event(event, verdict=verdict, boxes=boxes, snapshot=snapshot)


# --- One run. ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The bench's settings (see ``--help``)."""

    interval_s: float
    fps: float
    batch: int
    latency_s: float
    latency_per_image_token_s: float
    warmup_s: float
    measure_s: float
    trials: int
    spacing_s: float
    trial_timeout_s: float
    max_frame_age_s: float
    seed: int
    queue_headroom: int = QUEUE_HEADROOM
    """The daemon's ``vlm.queue_headroom``: requests beyond the batch, queued by the GPU."""

    @property
    def image_tokens(self) -> int:
        """Image tokens of one request (the frames are sent at their own size)."""
        return image_tokens(HEIGHT, WIDTH)

    @property
    def service_s(self) -> float:
        """Seconds one request is in service on the simulated GPU."""
        return self.latency_s + self.latency_per_image_token_s * self.image_tokens

    @property
    def capacity_per_s(self) -> float:
        """Requests per second the simulated GPU serves."""
        return self.batch / self.service_s

    def cameras_at(self, load: float) -> int:
        """Cameras making ``load`` times the GPU's capacity at ``interval_s`` each."""
        return max(2, round(load * self.capacity_per_s * self.interval_s))


@dataclass(frozen=True, slots=True)
class Result:
    """What one run measured."""

    load: float
    priority: bool
    cameras: int
    used: float
    rate_spread: float
    age_p50: float
    age_p95: float
    alert_p50: float
    alert_p95: float
    alerts_missed: int
    failed: int
    """Frames not analysed (stale, model errors): none expected."""


QUIET_VARIANTS = 8
SENSOR_NOISE_SIGMA = 3.0
"""Grey levels of per-pixel noise (and up to 1 level of brightness flicker) on the quiet
frames: a static site camera's frames are never identical, yet unchanged in content."""


def noisy_variants(image: np.ndarray, rng: random.Random,
                   count: int = QUIET_VARIANTS) -> list[np.ndarray]:
    """``count`` copies of ``image`` with sensor noise: the quiet scene as a camera sees it."""
    noise = np.random.default_rng(rng.randrange(2**32))
    return [np.clip(image.astype(np.float32) + noise.normal(0.0, SENSOR_NOISE_SIGMA, image.shape)
                    + noise.uniform(-1.0, 1.0), 0, 255).astype(np.uint8)
            for _ in range(count)]


def settings(options: Options, cameras: int, sim_url: str, broker: MosquittoBroker,
             state_dir: Path, *, priority: bool) -> MonitorConfig:
    """The daemon's configuration for one run."""
    return config_from_mapping({
        "state_dir": str(state_dir),
        "vlm": {"base_url": sim_url, "max_concurrency": options.batch,
                "queue_headroom": options.queue_headroom, "timeout_s": 60,
                "max_frame_age_s": options.max_frame_age_s, "priority_scheduling": priority,
                "language": "en"},
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "capacity-bench"},
        "defaults": {"interval_s": options.interval_s, "confirm_frames": 2, "clear_frames": 2,
                     "hazards": ["fire"], "change_gate": False, "confirm_min_gap_s": 0.5},
        "health": {"enabled": False},
        "cameras": [{"id": f"cam{i:03d}", "url": f"rtsp://bench/cam{i:03d}"}
                    for i in range(cameras)],
    }, source="bench")


def analysis_rate(times: Sequence[float]) -> float | None:
    """Analyses per second from their times: intervals between the first and the last (a
    count over a short window would be off by up to one analysis); ``None`` for fewer than
    three."""
    if len(times) < 3:
        return None
    ordered = sorted(times)
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


async def watch_starts(broker: MosquittoBroker, starts: dict[str, float],
                       ready: asyncio.Event) -> None:
    """Record when each camera's first ``start`` event arrives (wall clock)."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="capacity-watch") as client:
        await client.subscribe("monitor/events", qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)  # noqa: S101 - aiomqtt's type
            event = json.loads(message.payload)
            if event["type"] == "start":
                starts.setdefault(event["camera"], time.time())


async def one_run(options: Options, load: float, *, priority: bool, sim_url: str,
                  broker: MosquittoBroker, images: tuple[Sequence[np.ndarray], np.ndarray],
                  rng: random.Random) -> Result:
    """Run ``load`` x capacity cameras until every trial's alert started; measure."""
    count = options.cameras_at(load)
    with tempfile.TemporaryDirectory(prefix="capacity-") as state:
        config = settings(options, count, sim_url, broker, Path(state), priority=priority)
        outbox = Outbox(Path(state) / "outbox.sqlite3")
        publisher = MqttPublisher(config.mqtt, outbox)
        client = VlmClient(config.vlm)
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encoder")
        recorder = Recorder(AlertSink(publisher, None, Metrics(), executor))
        stopping = asyncio.Event()
        t0 = time.time()
        cameras = [SyntheticCamera(c.id, options.fps, images[0], images[1], t0)
                   for c in config.cameras]
        pipelines = [CameraPipeline(config, c, source=source, client=client, sink=recorder,
                                    executor=executor, stopping=stopping)
                     for c, source in zip(config.cameras, cameras, strict=True)]
        starts: dict[str, float] = {}
        ready = asyncio.Event()
        watcher = asyncio.create_task(watch_starts(broker, starts, ready))
        await ready.wait()
        publisher_task = asyncio.create_task(publisher.run())
        tasks = [asyncio.create_task(p.run()) for p in pipelines]
        trial_cameras = cameras[:min(options.trials, count - 2)]
        window_start = time.time() + options.warmup_s
        await run_trials(options, trial_cameras, starts, window_start, rng)
        window_end = time.time()
        stopping.set()
        await asyncio.wait(tasks, timeout=options.service_s * 4 + 2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        publisher.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(publisher_task, 5)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.aclose()
        executor.shutdown()
        outbox.close()

    result = measure(options, load, priority=priority, cameras=cameras,
                     trial_cameras=trial_cameras, verdicts=recorder.verdicts, starts=starts,
                     window=(window_start, window_end))
    return dataclasses.replace(result, failed=len(recorder.failures))


async def run_trials(options: Options, trial_cameras: Sequence[SyntheticCamera],
                     starts: dict[str, float], window_start: float, rng: random.Random) -> None:
    """Light the fires at their known times; put each out once its alert started; return
    when all started and ``measure_s`` passed (or the timeout did)."""
    for index, camera in enumerate(trial_cameras):
        camera.fire_from = window_start + index * options.spacing_s \
            + rng.uniform(0.0, options.interval_s)
    deadline = max(window_start + options.measure_s,
                   (trial_cameras[-1].fire_from if trial_cameras else window_start)
                   + options.trial_timeout_s)
    while time.time() < deadline:
        for camera in trial_cameras:
            if camera.camera_id in starts and camera.fire_until == math.inf:
                camera.fire_until = time.time() + 1.0  # seen: the fire goes out
        if all(c.camera_id in starts for c in trial_cameras) \
                and time.time() > window_start + options.measure_s:
            return
        await asyncio.sleep(0.05)


def measure(options: Options, load: float, *, priority: bool,
            cameras: Sequence[SyntheticCamera], trial_cameras: Sequence[SyntheticCamera],
            verdicts: Sequence[tuple[str, float, float]], starts: dict[str, float],
            window: tuple[float, float]) -> Result:
    """The run's figures over ``window`` (wall clock, after the warm-up)."""
    window_start, window_end = window
    duration = window_end - window_start
    in_window = [v for v in verdicts if window_start <= v[2] <= window_end]
    # Each answer was in service for service_s before it arrived: count the part of that
    # inside the window (a count of answers would be off by the requests at its edges).
    busy = sum(max(0.0, min(analysed, window_end) - max(analysed - options.service_s,
                                                         window_start))
               for _, _, analysed in verdicts)
    used = busy / (options.batch * duration)
    hazard_ids = {c.camera_id for c in trial_cameras}
    quiet_ids = [c.camera_id for c in cameras if c.camera_id not in hazard_ids]
    rates = [rate for rate in (analysis_rate([v[2] for v in in_window if v[0] == camera_id])
                               for camera_id in quiet_ids) if rate is not None]
    mean_rate = statistics.fmean(rates) if rates else math.nan
    spread = max(abs(r / mean_rate - 1.0) for r in rates) if rates and mean_rate else math.nan
    ages = [analysed - captured for _, captured, analysed in in_window]
    delays = [starts[c.camera_id] - c.first_fire_frame_at() for c in trial_cameras
              if c.camera_id in starts]
    return Result(load=load, priority=priority, cameras=len(cameras), used=used,
                  rate_spread=spread, age_p50=percentile(ages, 0.5),
                  age_p95=percentile(ages, 0.95), alert_p50=percentile(delays, 0.5),
                  alert_p95=percentile(delays, 0.95),
                  alerts_missed=len(trial_cameras) - len(delays), failed=0)


# --- The whole bench. ----------------------------------------------------------------------------


def start_simulator(options: Options, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``monitor sim-vlm`` with the GPU service-time model, in its own process."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "sim-vlm", "--port", str(port),
             "--latency", str(options.latency_s),
             "--latency-per-image-token", str(options.latency_per_image_token_s),
             "--batch-capacity", str(options.batch)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if not wait_for_port("127.0.0.1", port, 20):
        process.kill()
        raise SystemExit(f"the simulator did not start: {log.read_text()[-2000:]}")
    return process, f"http://127.0.0.1:{port}/v1"


async def check_service_time(sim_url: str, options: Options) -> None:
    """Say what the simulator was configured with, as it reports it."""
    async with aiohttp.ClientSession() as session:
        root = sim_url.removesuffix("/v1")
        async with session.get(f"{root}/sim/behaviour") as response:
            behaviour = await response.json()
    print(f"simulated GPU: {behaviour['latency_s']:g} s + "
          f"{behaviour['latency_per_image_token_s']:g} s x {options.image_tokens} image tokens "
          f"= {options.service_s:.3f} s per request, batch {behaviour['batch_capacity']}: "
          f"{options.capacity_per_s:.2f} requests/s; cameras every {options.interval_s:g} s: "
          f"1x = {options.capacity_per_s * options.interval_s:.1f} cameras; daemon: "
          f"max_concurrency {options.batch} + queue_headroom {options.queue_headroom}")


def row(result: Result, unloaded: float) -> str:
    """One printed line of results."""
    ratio = result.alert_p95 / unloaded if unloaded and not math.isnan(unloaded) else math.nan
    missed = f"  ({result.alerts_missed} alert(s) missed)" if result.alerts_missed else ""
    missed += f"  ({result.failed} frame(s) not analysed)" if result.failed else ""
    return (f"{result.load:4.1f}x {result.cameras:4d} {'on ' if result.priority else 'off':>8}"
            f" {result.used:6.1%} {result.rate_spread:+7.1%}"
            f" {result.age_p50:6.2f} {result.age_p95:6.2f}"
            f" {result.alert_p50:7.2f} {result.alert_p95:7.2f} {ratio:6.2f}x{missed}")


async def main_async(options: Options, loads: Sequence[float]) -> int:
    """Every load with priority on and off; print the table and the goals."""
    rng = random.Random(options.seed)
    quiet = noisy_variants(render_frame(PRESETS["quiet"](width=WIDTH, height=HEIGHT), 1.0), rng)
    fire = render_frame(PRESETS["fire"](width=WIDTH, height=HEIGHT), 8.0)
    print(f"load average {load_average()} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="capacity-bench-") as scratch:
        broker = MosquittoBroker()
        broker.start()
        process, sim_url = await asyncio.to_thread(start_simulator, options,
                                                   Path(scratch) / "sim.log")
        try:
            await check_service_time(sim_url, options)
            print(f"{'load':>5} {'cams':>4} {'priority':>8} {'used':>6} {'rates':>7} "
                  f"{'age50':>6} {'age95':>6} {'alert50':>7} {'alert95':>7} {'/unld':>7}")
            results = []
            for load in loads:
                for priority in (True, False):
                    result = await one_run(options, load, priority=priority, sim_url=sim_url,
                                           broker=broker, images=(quiet, fire), rng=rng)
                    results.append(result)
                    unloaded = next((r.alert_p95 for r in results
                                     if r.load == min(loads) and r.priority), math.nan)
                    print(row(result, unloaded), flush=True)
        finally:
            process.terminate()
            process.wait(10)
            broker.stop()
    print(f"load average at the end {load_average()}")
    return report_goals(results, options, loads)


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages: a run on a busy machine says so."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report_goals(results: Sequence[Result], options: Options, loads: Sequence[float]) -> int:
    """Print the goals at 2x against this run's figures; 0 when all are met."""
    unloaded = next((r for r in results if r.load == min(loads) and r.priority), None)
    target = next((r for r in results if r.load == 2.0 and r.priority), None)
    if unloaded is None or target is None:
        print("goals: need loads 2 and a lower one (the unloaded figure) to judge")
        return 0
    goals = [
        (f"used at 2x >= 95 %: {target.used:.1%}", target.used >= 0.95),
        (f"rates at 2x within +-20 %: {target.rate_spread:+.1%}", target.rate_spread <= 0.20),
        ((f"frame age p95 at 2x < max_frame_age_s ({options.max_frame_age_s:g} s): "
          f"{target.age_p95:.2f} s"), target.age_p95 < options.max_frame_age_s),
        ((f"alert p95 at 2x <= 1.5x unloaded ({unloaded.alert_p95:.2f} s at "
          f"{unloaded.load:g}x): {target.alert_p95:.2f} s "
          f"({target.alert_p95 / unloaded.alert_p95:.2f}x)"),
         target.alert_p95 <= 1.5 * unloaded.alert_p95),
    ]
    for text, met in goals:
        print(f"  {'met ' if met else 'MISS'} {text}")
    return 0 if all(met for _, met in goals) else 1


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, list[float]]:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--loads", default="0.5,1,2,3",
                        help="loads as multiples of the GPU's capacity (default 0.5,1,2,3)")
    parser.add_argument("--interval-s", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=8, help="simulated batch capacity")
    parser.add_argument("--latency-s", type=float, default=0.5)
    parser.add_argument("--latency-per-image-token-s", type=float, default=0.0045)
    parser.add_argument("--warmup-s", type=float, default=6.0)
    parser.add_argument("--measure-s", type=float, default=24.0,
                        help="measured time per run, after the warm-up (at least)")
    parser.add_argument("--trials", type=int, default=10,
                        help="hazards per run (at most cameras - 2)")
    parser.add_argument("--spacing-s", type=float, default=1.0)
    parser.add_argument("--trial-timeout-s", type=float, default=30.0)
    parser.add_argument("--max-frame-age-s", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--queue-headroom", type=int, default=QUEUE_HEADROOM,
                        help="the daemon's vlm.queue_headroom: requests sent beyond the batch, "
                        f"which the simulated GPU queues (default {QUEUE_HEADROOM}, the "
                        "daemon's)")
    args = parser.parse_args(argv)
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    options = Options(interval_s=args.interval_s, fps=args.fps, batch=args.batch,
                      latency_s=args.latency_s,
                      latency_per_image_token_s=args.latency_per_image_token_s,
                      warmup_s=args.warmup_s, measure_s=args.measure_s, trials=args.trials,
                      spacing_s=args.spacing_s, trial_timeout_s=args.trial_timeout_s,
                      max_frame_age_s=args.max_frame_age_s, seed=args.seed,
                      queue_headroom=args.queue_headroom)
    return options, loads


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m bench.capacity``."""
    options, loads = parse_args(argv)
    return asyncio.run(main_async(options, loads))


if __name__ == "__main__":
    sys.exit(main())

