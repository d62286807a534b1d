"""Ingest benchmark: what watching N 1080p25 RTSP cameras costs, naive reader vs ``monitor``.

Serves N synthetic 1920x1080 25 fps H.264 streams (GOP 50, about 4 Mbit/s, moving content)
from the real RTSP test server (GStreamer, ``tests/support/rtsp.py``) and measures, over the
same window and in separate client processes:

(a) ``baseline``: what a newcomer writes: OpenCV ``VideoCapture.read()`` on every frame in a
    thread per camera, one frame sampled every ``--interval`` seconds;
(b) ``monitor``: the daemon's capture + sampling + imaging: a ``CameraReader`` per camera with
    default settings (``decode = "auto"``), ``IntervalSampler`` + the change gate on an asyncio
    loop, and the sampled frames resized to the default pixel budget and JPEG-encoded (base64
    data URL) in an encoder pool, as the daemon does before the model request;
(d) ``clips`` (with ``--clips N``): (b) with an evidence clip packet ring on every camera
    (``monitor.ingest.clips``: every frame kept compressed, as received, for a 5 s pre-roll,
    nothing decoded or assembled for it), against (b) without rings at the same N in the same
    run; prints the client CPU it adds (the issue's bound: at most 5 % at N=48) and the
    ring's memory per camera;
(e) ``split`` (with ``--clips N``, once after the pairs): (b) with a ring on every second
    camera, so that rings and no rings share the process and the window; each camera's
    reader thread's CPU (where a ring's work is done) is compared, ringed against plain, and
    set against the client's CPU per camera: what whole runs on a shared machine cannot
    resolve (two runs of the same code differ by up to 8 % here);
(c) ``bare`` (with ``--bare``): the bare PyAV keyframe-only reader of ``rtsp-lab.md`` (``av.open``
    over TCP, ``skip_frame = "NONKEY"``, each keyframe converted to BGR, a thread per camera),
    the figure the daemon has to beat.

Two clips (``--clip``): ``site`` (default), the synthetic fire scene: a mostly static site
whose keyframes are large (~140 KB) next to small P-frames, as a fixed camera's are; and
``testsrc2``, FFmpeg's moving test pattern encoded with the command in ``rtsp-lab.md``, where
the issue's reference figures were measured (keyframes ~42 KB, large P-frames).

Figures: client CPU seconds per camera-minute (process CPU time, not wall clock), peak RSS
and memory per camera (peak RSS minus the RSS just before the readers started, divided by N),
frame age at sampling (p50, p99: how far behind the live stream the sampled frame is), the RTSP
server's own CPU (separately and in the total), the ratio a/b, and the largest N that (b)
sustains below 80 % of all cores in total (server included) with every camera sampled on time
(frame-age p99 <= interval + 0.5 s and every camera's sample count within one of the expected).

Usage (from the repository root)::

    .venv/bin/python -m bench.ingest                      # compare at 8, scale 48,72,96
    .venv/bin/python -m bench.ingest --compare 8 --scale 72 --duration 60
    .venv/bin/python -m bench.ingest --compare 8 --repeat 3 --scale 96   # median ratio
    .venv/bin/python -m bench.ingest --only monitor --scale 24   # quick look
    .venv/bin/python -m bench.ingest --clip testsrc2 --bare --repeat 3   # rtsp-lab's clip
    .venv/bin/python -m bench.ingest --compare 0 --scale "" --clips 48 --duration 30

Frame age: the server sends in real time, so a frame's lag is (when it was sampled) - (its
stream time) - (the smallest such offset seen on that camera, i.e. a frame taken fresh off the
wire). The baseline's decoded frames queue up in its socket and FFmpeg buffers when it falls
behind; that lag is what this catches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "monitor-bench"
CPU_LIMIT = 0.80
AGE_SLACK_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
OFFSET_POLL_S = 0.5
"""How often (b)'s frame-age tracker looks at each camera's newest frame. It reads the frame's
own arrival time, so it only has to see each frame once: a keyframe stays the newest for a
whole GOP (2 s here). At 10 Hz the tracker itself was half of the client's event-loop CPU
(0.032 against 0.015 CPU-s per camera-minute at N=8), measuring apparatus, not the daemon."""


# --- The clip. ----------------------------------------------------------------------------------


CLIPS = ("site", "testsrc2")


def bench_clip(cache: Path, kind: str = "site") -> Path:
    """The 1080p25 GOP-50 ~4 Mbit/s clip with moving content (written once, then cached)."""
    from monitor.sim.scenes import PRESETS, write_scene  # noqa: PLC0415 - heavy; only here

    if kind == "testsrc2":
        return _testsrc2_clip(cache)
    path = cache / "fire-1080p25-gop50-4M.mp4"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"writing the benchmark clip {path} (once; about a minute) ...", flush=True)
        scene = PRESETS["fire"](width=1920, height=1080, fps=25, gop=50)
        partial = path.with_suffix(".part.mp4")
        write_scene(scene, partial, bitrate=4_000_000)
        partial.rename(path)
    return path


def _testsrc2_clip(cache: Path) -> Path:
    """FFmpeg's ``testsrc2`` pattern, encoded exactly as ``rtsp-lab.md`` did for its figures."""
    path = cache / "testsrc2-1080p25-gop50-4M.mp4"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"writing the benchmark clip {path} (once) ...", flush=True)
        partial = path.with_suffix(".part.mp4")
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", "testsrc2=size=1920x1080:rate=25", "-t", "60", "-c:v", "libx264",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50",
             "-sc_threshold", "0", "-b:v", "4M", "-bf", "0", "-movflags", "+faststart",
             str(partial)], check=True)
        partial.rename(path)
    return path


# --- Client side (runs in a child process: its own CPU time and peak RSS). ----------------------


@dataclass
class _Ages:
    """Per camera: the smallest (arrival - stream time) offset and the sampled frames, per
    connection (``epoch``: stream times start afresh when a reader reconnects)."""

    best_offsets: dict[int, float] = field(default_factory=dict)
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(monotonic time sampled, stream time of the frame, connection)."""

    def arrived(self, now: float, pts_s: float | None, epoch: int = 0) -> None:
        if pts_s is not None:
            self.best_offsets[epoch] = min(self.best_offsets.get(epoch, float("inf")),
                                           now - pts_s)

    def sampled(self, now: float, pts_s: float, epoch: int = 0) -> None:
        self.samples.append((now, pts_s, epoch))

    def ages(self) -> list[float]:
        # A connection whose offset was never seen counts its samples as fresh.
        return [max(0.0, at - pts - self.best_offsets.get(epoch, at - pts))
                for at, pts, epoch in self.samples]


@dataclass
class _Readers:
    """What a naive client's reader threads share with its sampler."""

    urls: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    latest: list[tuple[float, float, int] | None] = field(default_factory=list)
    """Per camera: (monotonic time, stream time, connection) of the newest decoded frame."""
    ages: list[_Ages] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.latest = [None] * len(self.urls)
        self.ages = [_Ages() for _ in self.urls]

    def arrived(self, index: int, now: float, pts: float | None, epoch: int = 0) -> None:
        """A reader thread decoded a frame."""
        with self.lock:
            self.ages[index].arrived(now, pts, epoch)
            if pts is not None:
                self.latest[index] = (now, pts, epoch)


def _client_baseline(urls: list[str], interval: float, warmup: float, duration: float,
                     ) -> dict[str, Any]:
    """(a): OpenCV ``VideoCapture.read()`` on every frame, a thread per camera."""
    import cv2  # noqa: PLC0415 - the child imports only what its mode needs

    shared = _Readers(urls)

    def read(index: int, url: str) -> None:
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        while not shared.stop.is_set():
            ok, _image = capture.read()
            if not ok:
                time.sleep(0.1)
                continue
            now = time.monotonic()
            pts = float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            shared.arrived(index, now, pts)
        capture.release()

    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    return _sample_threads(read, shared, interval=interval, warmup=warmup, duration=duration)


def _sample_threads(read: Callable[[int, str], None], shared: _Readers, *, interval: float,
                    warmup: float, duration: float) -> dict[str, Any]:
    """Run ``read`` in a thread per camera and sample each camera's newest frame every
    ``interval`` (the naive readers' sampler), measuring the window."""
    threads = [threading.Thread(target=read, args=(i, url), daemon=True)
               for i, url in enumerate(shared.urls)]
    rss_before = _rss_mb()
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    start_cpu = time.process_time()
    start = time.monotonic()
    print("WINDOW START", flush=True)
    next_tick = start
    while True:
        next_tick += interval
        if next_tick > start + duration:
            break
        time.sleep(max(0.0, next_tick - time.monotonic()))
        now = time.monotonic()
        with shared.lock:
            for index, frame in enumerate(shared.latest):
                if frame is not None:
                    shared.ages[index].sampled(now, frame[1], frame[2])
    time.sleep(max(0.0, start + duration - time.monotonic()))
    cpu = time.process_time() - start_cpu
    print("WINDOW END", flush=True)
    shared.stop.set()
    return _summary(cpu, time.monotonic() - start, shared.ages, interval, duration,
                    rss_before_mb=rss_before)


def _client_bare(urls: list[str], interval: float, warmup: float, duration: float,
                 ) -> dict[str, Any]:
    """(c): rtsp-lab.md's bare PyAV keyframe-only reader, a thread per camera."""
    import av  # noqa: PLC0415 - the child imports only what its mode needs

    shared = _Readers(urls)

    def read(index: int, url: str) -> None:
        epoch = 0
        while not shared.stop.is_set():
            try:
                with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"},
                             timeout=10.0) as container:
                    stream = container.streams.video[0]
                    stream.codec_context.skip_frame = "NONKEY"
                    for frame in container.decode(stream):
                        if shared.stop.is_set():
                            return
                        frame.to_ndarray(format="bgr24")
                        pts = float(frame.time) if frame.time is not None else None
                        shared.arrived(index, time.monotonic(), pts, epoch)
            except (av.error.FFmpegError, OSError):
                time.sleep(0.5)
            epoch += 1

    return _sample_threads(read, shared, interval=interval, warmup=warmup, duration=duration)


def _client_clips(urls: list[str], interval: float, warmup: float,
                  duration: float) -> dict[str, Any]:
    """(b) with an evidence clip ring on every camera, as the daemon's defaults make them."""
    return _client_monitor(urls, interval, warmup, duration, ring_every=1)


def _client_split(urls: list[str], interval: float, warmup: float,
                  duration: float) -> dict[str, Any]:
    """(b) with an evidence clip ring on every second camera: rings and no rings in the same
    process over the same window, compared reader thread by reader thread."""
    return _client_monitor(urls, interval, warmup, duration, ring_every=2)


def _client_monitor(  # noqa: PLR0915 - one closure-heavy function keeps the mode readable
        urls: list[str], interval: float, warmup: float, duration: float, *,
        ring_every: int = 0) -> dict[str, Any]:
    from monitor import heap  # noqa: PLC0415
    from monitor.clipconfig import ClipDefaults, ClipsConfig  # noqa: PLC0415
    from monitor.config import DefaultsConfig, VlmConfig  # noqa: PLC0415
    from monitor.ingest.changegate import ChangeGate, thumbnail_size  # noqa: PLC0415
    from monitor.ingest.clips import RING_SLACK_S, PacketRing, RingBudget  # noqa: PLC0415
    from monitor.ingest.reader import CameraReader  # noqa: PLC0415
    from monitor.ingest.sampling import IntervalSampler  # noqa: PLC0415
    from monitor.ingest.source import StreamSource  # noqa: PLC0415
    from monitor.model.imaging import EncodedImage, smart_resize  # noqa: PLC0415
    from monitor.service.pipeline import frame_jpeg  # noqa: PLC0415

    # One function on purpose: the imports above stay local to this mode.
    heap.limit_arenas()  # as the daemon's supervisor does before its threads start
    vlm = VlmConfig()
    defaults = DefaultsConfig(interval_s=interval)
    clip, budget = ClipDefaults(), RingBudget(ClipsConfig().max_total_bytes)
    rings = [PacketRing(f"cam{i}", keep_s=clip.clip_pre_roll_s + RING_SLACK_S,
                        max_bytes=clip.clip_max_bytes, budget=budget)
             if ring_every and i % ring_every == 0 else None
             for i in range(len(urls))]
    readers = [CameraReader(StreamSource(
        camera_id=f"cam{i}", url=url, open_timeout_s=defaults.open_timeout_s,
        read_timeout_s=defaults.read_timeout_s, backend=defaults.backend,
        decode=defaults.decode, interval_s=interval), ring=rings[i])
        for i, url in enumerate(urls)]
    ages = [_Ages() for _ in urls]
    encoder = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                 thread_name_prefix="encoder")
    window: dict[str, float] = {}
    sampled = [0] * len(urls)
    encoded = [0] * len(urls)

    def encode(frame: Any) -> int:
        height, width = smart_resize(frame.height, frame.width, min_pixels=vlm.min_pixels,
                                     max_pixels=vlm.max_pixels)
        # The pipeline's _encode for a camera without a region of interest.
        image = EncodedImage(jpeg=frame_jpeg(frame, width, height, vlm.jpeg_quality), width=width,
                             height=height, source_width=frame.width,
                             source_height=frame.height)
        return len(image.data_url)

    async def camera(index: int) -> None:
        # The daemon's _next_frame, minus the model: same sampler, wake-up and change gate.
        loop = asyncio.get_running_loop()
        reader = readers[index]
        sampler = IntervalSampler(interval)
        gate = ChangeGate(max_verdict_age_s=defaults.max_verdict_age_s,
                          area_threshold=defaults.change_threshold)
        while True:
            frame = reader.latest()
            now = time.monotonic()
            status = reader.status
            gap = status.gop_s if status.decode == "keyframes" else (
                1.0 / status.fps if status.fps else None)
            decision = sampler.decide(
                now, frame.sequence if frame else None,
                newest_age_s=now - frame.captured_monotonic if frame else None,
                frame_gap_s=gap)
            if not decision.take or frame is None:
                # Neither frame is held while waiting, as in the daemon's _next_frame.
                after = frame.sequence if frame is not None else None
                frame = None
                if decision.needs_frame:
                    arrived: asyncio.Future[None] = loop.create_future()

                    def wake(future: asyncio.Future[None] = arrived) -> None:
                        loop.call_soon_threadsafe(_resolve, future)

                    reader.notify_next(wake)
                    newest = reader.latest()
                    nothing_newer = newest is None or after is None or newest.sequence == after
                    newest = None
                    if nothing_newer:
                        # (the daemon's _wait_for_frame)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(arrived, timeout=1.0)
                    reader.notify_next(None)
                else:
                    await asyncio.sleep(decision.wait_s)
                continue
            sampler.taken(now, frame.sequence)
            reader.mark_taken(frame.sequence)
            reader.want_next_frame_at(sampler.next_due or 0.0)
            if "start" in window and frame.pts_s is not None:
                ages[index].sampled(now, frame.pts_s, reader.status.reconnects)
                sampled[index] += 1
            thumbnail = await loop.run_in_executor(
                encoder, frame.grey_thumbnail, *thumbnail_size(frame.width, frame.height))
            if gate.check(thumbnail, now).analyse:
                gate.analysed(thumbnail, now)
                await loop.run_in_executor(encoder, encode, frame)
                encoded[index] += 1

    def track_offsets() -> None:
        # The freshest frame ever seen per camera defines "no lag" (see the module doc).
        for index, reader in enumerate(readers):
            frame = reader.latest()
            if frame is not None:
                ages[index].arrived(frame.captured_monotonic, frame.pts_s,
                                    reader.status.reconnects)

    async def main() -> dict[str, Any]:
        tasks = [asyncio.create_task(camera(i)) for i in range(len(readers))]
        rss_before = _rss_mb()
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + warmup
        while time.monotonic() < deadline:
            track_offsets()
            await asyncio.sleep(OFFSET_POLL_S)
        start_cpu = time.process_time()
        start_threads = _threads_cpu_s()
        start_readers = _reader_cpu_s()
        start_reconnects = sum(reader.status.reconnects for reader in readers)
        window["start"] = start = time.monotonic()
        print("WINDOW START", flush=True)
        while time.monotonic() < start + duration:
            track_offsets()
            await asyncio.sleep(OFFSET_POLL_S)
        cpu = time.process_time() - start_cpu
        end_threads = _threads_cpu_s()
        end_readers = _reader_cpu_s()
        # Counted before the readers are told to stop (a stopped reader is not online).
        now = time.monotonic()
        offline = sum(1 for reader in readers if not reader.check(now).online)
        ring_bytes = [ring.used_bytes for ring in rings if ring is not None]
        reconnects = sum(reader.status.reconnects for reader in readers) - start_reconnects
        print("WINDOW END", flush=True)
        for task in tasks:
            task.cancel()
        for reader in readers:
            reader.stop()
        summary = _summary(cpu, time.monotonic() - start, ages, interval, duration,
                           rss_before_mb=rss_before)
        summary["encoded"] = sum(encoded)
        summary["decode_modes"] = sorted({r.status.decode or "-" for r in readers})
        summary["offline"] = offline
        summary["ring_mb_per_camera"] = statistics.mean(ring_bytes) / 1e6 if ring_bytes else 0.0
        summary["ring_mb_max"] = max(ring_bytes) / 1e6 if ring_bytes else 0.0
        summary["reconnects"] = reconnects
        summary["threads"] = {group: end_threads.get(group, 0.0) - start_threads.get(group, 0.0)
                              for group in end_threads}
        spent = {name: end_readers[name] - start_readers.get(name, 0.0) for name in end_readers}
        ringed = [spent.get(f"camera[cam{i}].reader", 0.0)
                  for i, ring in enumerate(rings) if ring is not None]
        plain = [spent.get(f"camera[cam{i}].reader", 0.0)
                 for i, ring in enumerate(rings) if ring is None]
        summary["reader_cpu_s_ringed"] = statistics.mean(ringed) if ringed else 0.0
        summary["reader_cpu_s_plain"] = statistics.mean(plain) if plain else 0.0
        return summary

    # The offset tracker's own small cost (see OFFSET_POLL_S) is part of the figure.
    return asyncio.run(main())


def _threads_cpu_s() -> dict[str, float]:
    """CPU seconds so far per thread group (readers, encoder, main loop, other), from
    ``/proc``: where the client's CPU goes, not just how much."""
    groups: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.native_id is None:
            continue
        try:
            seconds = _proc_cpu_s(thread.native_id, task=True)
        except OSError:
            continue  # the thread just ended
        name = thread.name
        group = ("readers" if name.endswith(".reader") else
                 "encoder" if name.startswith("encoder") else
                 "loop" if name == "MainThread" else "other")
        groups[group] = groups.get(group, 0.0) + seconds
    return groups


def _reader_cpu_s() -> dict[str, float]:
    """CPU seconds so far of each camera's reader thread, by thread name."""
    spent: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.native_id is not None and thread.name.endswith(".reader"):
            with contextlib.suppress(OSError):  # the thread just ended
                spent[thread.name] = _proc_cpu_s(thread.native_id, task=True)
    return spent


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _rss_mb() -> float:
    """The process's resident memory now, in MB (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _summary(cpu: float, wall: float, ages: list[_Ages], interval: float,
             duration: float, *, rss_before_mb: float) -> dict[str, Any]:
    all_ages = sorted(age for camera in ages for age in camera.ages())
    counts = [len(camera.samples) for camera in ages]
    return {
        "cpu_s": cpu, "wall_s": wall, "cameras": len(ages),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_before_mb": rss_before_mb,
        "age_p50": _percentile(all_ages, 0.50), "age_p99": _percentile(all_ages, 0.99),
        "samples_min": min(counts, default=0), "samples_expected": int(duration / interval),
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] \
        if q < 1 else values[-1]


def child_main(mode: str, urls: list[str], interval: float, warmup: float,
               duration: float) -> None:
    """Entry of the child process: measure one client and print a JSON line."""
    run = {"baseline": _client_baseline, "bare": _client_bare, "monitor": _client_monitor,
           "clips": _client_clips, "split": _client_split}[mode]
    result = run(urls, interval, warmup, duration)
    print("RESULT " + json.dumps(result), flush=True)
    # Reader threads may still sit in a read; the figures are out, leave without joining.
    os._exit(0)


# --- Parent: the server, the children, the figures. ---------------------------------------------


def _proc_cpu_s(pid: int, *, task: bool = False) -> float:
    path = f"/proc/self/task/{pid}/stat" if task else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


@dataclass
class RunResult:
    """One client mode at one N."""

    mode: str
    cameras: int
    client: dict[str, Any]
    server_cpu_s: float

    @property
    def minutes(self) -> float:
        return float(self.client["wall_s"]) / 60.0

    @property
    def client_per_cam_min(self) -> float:
        return float(self.client["cpu_s"]) / self.cameras / self.minutes

    @property
    def server_per_cam_min(self) -> float:
        return self.server_cpu_s / self.cameras / self.minutes

    @property
    def total_share(self) -> float:
        """Share of all cores used by client + server over the window."""
        cores = os.cpu_count() or 1
        wall = float(self.client["wall_s"])
        return (float(self.client["cpu_s"]) + self.server_cpu_s) / wall / cores

    @property
    def mb_per_camera(self) -> float:
        """Memory per camera: peak RSS minus the RSS just before the readers started (the
        imports, the process itself), divided by N."""
        c = self.client
        return (float(c["peak_rss_mb"]) - float(c["rss_before_mb"])) / self.cameras

    def on_time(self, interval: float) -> bool:
        c = self.client
        return bool(c["age_p99"] <= interval + AGE_SLACK_S
                    and c["samples_min"] >= c["samples_expected"] - 1)

    def sustained(self, interval: float) -> bool:
        return self.total_share < CPU_LIMIT and self.on_time(interval)

    def line(self, interval: float) -> str:
        c = self.client
        extra = ""
        if self.mode in {"clips", "split"}:
            extra = (f"  rings {c['ring_mb_per_camera']:.2f} MB/cam (largest "
                     f"{c['ring_mb_max']:.2f} MB)")
        if self.mode in {"monitor", "clips", "split"}:
            extra += (f"  decode={'/'.join(c['decode_modes'])} offline={c['offline']}"
                     f" reconnects={c['reconnects']}")
            total = sum(c["threads"].values()) or 1.0
            extra += "\n      where the client's CPU went: " + ", ".join(
                f"{group} {seconds / total:.0%}" for group, seconds in
                sorted(c["threads"].items(), key=lambda item: -item[1]))
        label = {"baseline": "a", "monitor": "b", "bare": "c", "clips": "d",
                 "split": "e"}[self.mode]
        return (f"  ({label}) {self.mode:<8} N={self.cameras:<3}"
                f" client {self.client_per_cam_min:6.2f} CPU-s/cam-min"
                f" | server {self.server_per_cam_min:5.2f}"
                f" | total {self.total_share:6.1%} of {os.cpu_count()} cores"
                f" | peak RSS {c['peak_rss_mb']:7.1f} MB ({self.mb_per_camera:4.1f} MB/cam)"
                f" | age p50 {c['age_p50']:.2f} s p99 {c['age_p99']:.2f} s"
                f" | samples/cam min {c['samples_min']}/{c['samples_expected']}"
                f"{' on time' if self.on_time(interval) else ' LATE'}{extra}")


def run_once(mode: str, cameras: int, clip: Path, args: argparse.Namespace) -> RunResult:
    """Serve ``cameras`` streams, run one client mode against them, return the figures."""
    sys.path.insert(0, str(ROOT))
    from tests.support.rtsp import RtspServer  # noqa: PLC0415 - test support, found via ROOT

    mounts = {f"cam{i}": clip for i in range(cameras)}
    # shared=True: one pipeline per mount, as a camera is (and the server's cost per camera).
    with RtspServer(mounts, shared=True) as server:
        urls = [server.url(name) for name in mounts]
        command = [sys.executable, "-m", "bench.ingest", "--child", mode,
                   "--interval", str(args.interval), "--warmup", str(args.warmup),
                   "--duration", str(args.duration), *urls]
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None  # noqa: S101 - Popen with stdout=PIPE
        server_start = server_end = 0.0
        result: dict[str, Any] | None = None
        for raw in child.stdout:
            line = raw.strip()
            if line == "WINDOW START":
                server_start = _proc_cpu_s(server.pid)
            elif line == "WINDOW END":
                server_end = _proc_cpu_s(server.pid)
            elif line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
        child.wait(timeout=60)
    if result is None:
        raise SystemExit(f"the {mode} client at N={cameras} printed no result "
                         f"(exit code {child.returncode})")
    return RunResult(mode, cameras, result, server_end - server_start)


def _compare(args: argparse.Namespace, clip: Path) -> None:
    """(a) and (b) at N = ``--compare``, alternating ``--repeat`` times (machine noise moves
    both; alternating pairs and the median ratio keep one slow minute from deciding)."""
    ratios: list[float] = []
    memories: list[float] = []
    for _ in range(max(1, args.repeat)):
        baseline = ours = None
        if args.only != "monitor":
            baseline = run_once("baseline", args.compare, clip, args)
            print(baseline.line(args.interval), flush=True)
        if args.only != "baseline":
            ours = run_once("monitor", args.compare, clip, args)
            print(ours.line(args.interval), flush=True)
            memories.append(ours.mb_per_camera)
        if baseline is None or ours is None:
            continue
        if args.bare:
            bare = run_once("bare", args.compare, clip, args)
            print(bare.line(args.interval), flush=True)
            beat = bare.client_per_cam_min / ours.client_per_cam_min
            print(f"  ratio c/b at N={args.compare}: {beat:.2f}x (above 1: monitor spends less "
                  f"client CPU than the bare keyframe reader)", flush=True)
        ratio = baseline.client_per_cam_min / ours.client_per_cam_min
        ratios.append(ratio)
        total_ratio = (baseline.client_per_cam_min + baseline.server_per_cam_min) / \
            (ours.client_per_cam_min + ours.server_per_cam_min)
        print(f"  ratio a/b at N={args.compare}: {ratio:.1f}x client CPU "
              f"({total_ratio:.1f}x with the server's share)"
              f"{'' if baseline.sustained(args.interval) else ' (baseline NOT keeping up)'}"
              f"; (b) memory {ours.mb_per_camera:.1f} MB per camera "
              f"(baseline {baseline.mb_per_camera:.1f})", flush=True)
    if len(ratios) > 1:
        print(f"  ratio a/b at N={args.compare}, median of {len(ratios)} alternating pairs: "
              f"{statistics.median(ratios):.1f}x "
              f"({', '.join(f'{ratio:.1f}' for ratio in ratios)})", flush=True)
    if len(memories) > 1:
        print(f"  (b) memory per camera at N={args.compare}, median of {len(memories)} runs: "
              f"{statistics.median(memories):.1f} MB "
              f"({', '.join(f'{memory:.1f}' for memory in memories)})", flush=True)


def rtp_packets(clip: Path, frames: int = 250) -> tuple[list[bytes], float]:
    """The first ``frames`` of ``clip`` as a camera sends them: H.264 in RTP (RFC 6184, FU-A
    fragments of 1400 bytes); and the seconds of video they are."""
    import struct  # noqa: PLC0415

    import av  # noqa: PLC0415 - heavy; only here

    packets: list[bytes] = []
    sequence = 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        count = 0
        for packet in container.demux(stream):
            if not packet.size or packet.pts is None:
                continue
            stamp = int(packet.pts * (stream.time_base or 0) * 90000) & 0xFFFFFFFF
            data, position, nals = bytes(packet), 0, []
            while position + 4 <= len(data):  # length-prefixed NAL units (MP4)
                size = int.from_bytes(data[position:position + 4], "big")
                nals.append(data[position + 4:position + 4 + size])
                position += 4 + size
            for index, nal in enumerate(nals):
                last = index == len(nals) - 1
                body = nal[1:]
                pieces = [body[i:i + 1400] for i in range(0, len(body), 1400)] or [b""]
                for piece_index, piece in enumerate(pieces):
                    end = piece_index == len(pieces) - 1
                    fu = (nal[0] & 0x1F) | (0x80 if piece_index == 0 else 0) | \
                        (0x40 if end else 0)
                    marker = 0x80 if last and end else 0
                    packets.append(struct.pack(">BBHII", 0x80, 96 | marker, sequence & 0xFFFF,
                                               stamp, 1) + bytes(((nal[0] & 0xE0) | 28, fu))
                                   + piece)
                    sequence += 1
            count += 1
            if count >= frames:
                break
    return packets, count / 25.0


def replay_cost_ms(packets: list[bytes], seconds: float, *, ring: bool,
                   assemble_all: bool = False) -> float:
    """CPU milliseconds per camera-second of the built-in receiver's read loop over its
    receive buffer (interleaved RTP, as the session walks it) in keyframe-only mode, without
    or with an evidence clip ring: each unit's raw bytes copied (as
    ``RtspSession(keep_raw=True)`` does) and kept. ``assemble_all``: the ring fed the way it
    was before the raw bytes (the depacketizer assembling every frame, each frame kept), for
    comparison."""
    from monitor.ingest.clips import RING_SLACK_S, PacketRing, RtpFraming  # noqa: PLC0415
    from monitor.ingest.rtsp import Depacketizer  # noqa: PLC0415

    buffer = b"".join(b"$\x00" + len(p).to_bytes(2, "big") + p for p in packets)
    view = memoryview(buffer)
    kept = PacketRing("replay", keep_s=5.0 + RING_SLACK_S, max_bytes=16 << 20) if ring else None
    if kept is not None:
        kept.reset("h264", None, RtpFraming(channel=0, clock_rate=90000))
    rounds = 4
    started = 0.0
    for round_ in range(rounds + 1):
        if round_ == 1:  # the first round warms up: the ring grows to its steady size
            started = time.process_time()
        depacketizer = Depacketizer(keyframes_only=not assemble_all)
        start, end, raw_from = 0, len(buffer), 0
        while end - start >= 4:
            length = (buffer[start + 2] << 8) | buffer[start + 3]
            unit = depacketizer.packet(buffer, start + 4, length)
            start += 4 + length
            if unit is not None and kept is not None:
                data = unit.data if assemble_all else bytes(view[raw_from:start])
                raw_from = start
                if data is not None:
                    kept.add(data, unit.keyframe, unit.rtp_time / 90000 + round_ * seconds,
                             None, 0.0)
    return (time.process_time() - started) * 1000 / (rounds * seconds)


def _clips(args: argparse.Namespace, clip: Path) -> None:
    """(b) and (d) at N = ``--clips``, alternating ``--repeat`` times: the client CPU the
    packet rings add, and their memory per camera. Then, because a loaded machine moves whole
    runs by more than 5 %, the receive path alone replayed in this process (deterministic work,
    alternating, median of 5): what keeping every frame adds per camera, against (b)'s client
    CPU of the same run."""
    added: list[float] = []
    plain_ms: list[float] = []
    for _ in range(max(1, args.repeat)):
        plain = run_once("monitor", args.clips, clip, args)
        print(plain.line(args.interval), flush=True)
        ringed = run_once("clips", args.clips, clip, args)
        print(ringed.line(args.interval), flush=True)
        extra = ringed.client_per_cam_min / plain.client_per_cam_min - 1
        added.append(extra)
        plain_ms.append(plain.client_per_cam_min * 1000 / 60)
        print(f"  clips at N={args.clips}: pre-roll buffering adds {extra:+.1%} client CPU "
              f"({ringed.client_per_cam_min:.2f} vs {plain.client_per_cam_min:.2f} "
              f"CPU-s/cam-min; bound +5.0 %: {'met' if extra <= 0.05 else 'NOT met'}); "
              f"ring memory {ringed.client['ring_mb_per_camera']:.2f} MB per camera",
              flush=True)
    if len(added) > 1:
        print(f"  clips at N={args.clips}, median of {len(added)} alternating pairs: "
              f"{statistics.median(added):+.1%} client CPU", flush=True)
    split = run_once("split", args.clips, clip, args)
    print(split.line(args.interval), flush=True)
    c, seconds_measured = split.client, float(split.client["wall_s"])
    ringed_ms = float(c["reader_cpu_s_ringed"]) * 1000 / seconds_measured
    plain_reader_ms = float(c["reader_cpu_s_plain"]) * 1000 / seconds_measured
    per_camera_ms = float(c["cpu_s"]) * 1000 / split.cameras / seconds_measured
    share = (ringed_ms - plain_reader_ms) / per_camera_ms
    print(f"  clips at N={args.clips}, (e) rings on every second camera in one run (same "
          f"process, same window): a reader thread with a ring {ringed_ms:.2f} ms CPU per "
          f"camera-second, without {plain_reader_ms:.2f}: {ringed_ms - plain_reader_ms:+.2f} "
          f"ms = {share:+.1%} of the client's CPU per camera ({per_camera_ms:.2f} ms per "
          f"camera-second; bound +5.0 %: {'met' if share <= 0.05 else 'NOT met'})",
          flush=True)
    packets, seconds = rtp_packets(clip)
    keyframes, keeping, assembling = [], [], []
    for _ in range(5):
        keyframes.append(replay_cost_ms(packets, seconds, ring=False))
        keeping.append(replay_cost_ms(packets, seconds, ring=True))
        assembling.append(replay_cost_ms(packets, seconds, ring=True, assemble_all=True))
    delta = statistics.median(keeping) - statistics.median(keyframes)
    before = statistics.median(assembling) - statistics.median(keyframes)
    client = statistics.median(plain_ms)
    print(f"  receive path replayed ({len(packets)} RTP packets, {seconds:g} s of the clip, "
          f"median of 5): keyframes only {statistics.median(keyframes):.3f} ms CPU per "
          f"camera-second, every frame kept in a ring as received "
          f"{statistics.median(keeping):.3f}: +{delta:.3f} ms = {delta / client:+.1%} of (b)'s "
          f"client CPU in this run ({client:.2f} ms per camera-second); every frame "
          f"assembled for the ring instead (before 2026-12-02): +{before:.3f} ms = "
          f"{before / client:+.1%}", flush=True)


def jpeg_difference(clip: Path, *, keyframes: int = 8) -> str:
    """What the keyframe decoder's one quality trade-off (no deblocking filter) does to the
    image the model gets: every keyframe of ``clip`` (up to ``keyframes``) decoded as the
    reader does and with the filter, each sent as the daemon sends it (default pixel budget
    and JPEG quality), both JPEGs decoded back to grey and compared. JPEG's own effect (the
    same picture at quality 85 and 84) is printed beside it for scale."""
    import av  # noqa: PLC0415 - heavy; only here
    import numpy as np  # noqa: PLC0415
    import simplejpeg  # noqa: PLC0415

    from monitor.config import VlmConfig  # noqa: PLC0415
    from monitor.ingest.decoders import keyframe_decoder  # noqa: PLC0415
    from monitor.ingest.frame import CapturedFrame  # noqa: PLC0415
    from monitor.model.imaging import smart_resize  # noqa: PLC0415
    from monitor.service.pipeline import frame_jpeg  # noqa: PLC0415

    vlm = VlmConfig()

    def grey(picture: Any, quality: int) -> Any:
        height, width = smart_resize(picture.height, picture.width,
                                     min_pixels=vlm.min_pixels, max_pixels=vlm.max_pixels)
        frame = CapturedFrame(camera_id="q", sequence=0, captured_at=0.0,
                              captured_monotonic=0.0, width=picture.width,
                              height=picture.height, _frame=picture)
        jpeg = frame_jpeg(frame, width, height, quality)
        return simplejpeg.decode_jpeg(jpeg, colorspace="GRAY").astype(np.int16)

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        ours = keyframe_decoder(stream.codec_context)
        exact: Any = av.CodecContext.create(stream.codec_context.name, "r")
        exact.extradata = stream.codec_context.extradata
        exact.options = {"flags": "+low_delay"}
        exact.thread_count = 1
        means: list[float] = []
        peaks: list[int] = []
        jpeg_own: list[float] = []
        for packet in container.demux(stream):
            if not packet.size or not packet.is_keyframe:
                continue
            (skipped,) = ours.decode(packet)
            (filtered,) = exact.decode(packet)
            difference = np.abs(grey(skipped, vlm.jpeg_quality) - grey(filtered, vlm.jpeg_quality))
            means.append(float(difference.mean()))
            peaks.append(int(difference.max()))
            jpeg_own.append(float(np.abs(grey(filtered, vlm.jpeg_quality)
                                         - grey(filtered, vlm.jpeg_quality - 1)).mean()))
            if len(means) >= keyframes:
                break
    return (f"quality: keyframes decoded without the deblocking filter, as sent (JPEG q"
            f"{vlm.jpeg_quality} at the default pixel budget): mean absolute difference "
            f"{statistics.mean(means):.3f} grey levels (per keyframe "
            f"{', '.join(f'{mean:.3f}' for mean in means)}; largest pixel difference "
            f"{max(peaks)}) over {len(means)} keyframes of {clip.name}; JPEG quality "
            f"{vlm.jpeg_quality} against {vlm.jpeg_quality - 1} of the same picture: "
            f"{statistics.mean(jpeg_own):.3f}")


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=int, default=8,
                        help="N for (a) vs (b) (an N where the baseline keeps up); 0 skips")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate (a) and (b) this many times at --compare; the median "
                             "ratio is printed")
    parser.add_argument("--scale", default="48,72,96",
                        help="comma-separated N to try with (b), ascending")
    parser.add_argument("--only", choices=["baseline", "monitor"], default=None)
    parser.add_argument("--bare", action="store_true",
                        help="also run (c), rtsp-lab.md's bare PyAV keyframe reader, at --compare")
    parser.add_argument("--clip", choices=CLIPS, default="site",
                        help="site: the synthetic fire scene (default); testsrc2: rtsp-lab's clip")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=12.0,
                        help="seconds after starting the client before measuring")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quality", action="store_true",
                        help="only print what skipping the deblocking filter on keyframes does "
                             "to the JPEG sent (mean absolute difference in grey levels)")
    parser.add_argument("--clips", type=int, default=0,
                        help="N for (b) without vs (d) with evidence clip rings; 0 skips")
    parser.add_argument("--child", choices=["baseline", "monitor", "bare", "clips", "split"],
                        help=argparse.SUPPRESS)
    parser.add_argument("urls", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.urls, args.interval, args.warmup, args.duration)
        return
    clip = bench_clip(args.cache, args.clip)
    if args.quality:
        print(jpeg_difference(clip), flush=True)
        return
    load = os.getloadavg()
    print(f"ingest benchmark: {os.cpu_count()} cores, load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; clip {args.clip} ({clip.name}): "
          f"1920x1080 25 fps GOP 50 ~4 Mbit/s; "
          f"interval {args.interval:g} s; {args.duration:g} s measured after "
          f"{args.warmup:g} s warm-up", flush=True)
    if args.compare:
        _compare(args, clip)
    if args.clips:
        _clips(args, clip)
    if args.only == "baseline":
        return
    largest: int | None = None
    for cameras in sorted(int(n) for n in args.scale.split(",") if n.strip()):
        result = run_once("monitor", cameras, clip, args)
        print(result.line(args.interval), flush=True)
        if result.sustained(args.interval):
            largest = cameras
        else:
            break
    if not args.scale.strip():
        pass  # no scaling asked for
    elif largest is None:
        print("  (b) sustained none of the N tried below 80 % of all cores", flush=True)
    else:
        print(f"  largest N tried that (b) sustains below 80 % of all cores, server included, "
              f"every camera on time: {largest}", flush=True)
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)


if __name__ == "__main__":
    main()
