"""Soak: 48 simulated cameras through the real daemon for 30 minutes; does its footprint stay flat?

Starts, as production would, ``monitor run`` as a subprocess with 48 cameras, the VLM simulator
(``monitor sim-vlm``) as a second process and a private Mosquitto, plus a subscriber that counts
what arrives. The cameras are the cheapest sources the project has: the demo's synthetic scenes
(640x360, 10 fps, a keyframe every 2 s; ``fire``, ``smoke``, ``no_helmet`` and ``quiet`` in
turn) as local files looped in real time, so no RTSP server shares the cores with the daemon;
the ``fire``, ``smoke`` and ``no_helmet`` scenes raise and end alerts every loop, so events
(fsynced outbox commits), snapshots and retained state flow all the time.

Every ``--sample-s`` seconds (60, or 10 in runs under 10 minutes) it samples the daemon: VmRSS
and Threads from ``/proc/<pid>/status`` (threads: the fewest of 5 reads 0.1 s apart, and the
most as ``thr seen``; see :data:`THREAD_READS`), open file descriptors (``/proc/<pid>/fd``),
CPU (``/proc/<pid>/stat``) and, from ``/metrics``, the event-loop lag
(``monitor_event_loop_lag_seconds``, the latest 0.5 s check, and ``..._max_seconds``, the worst
of the last 60 s), frames sampled, model requests answered and cameras online. The first sample
after ``--warmup-s`` is the start, the last one the end. Verdict: RSS growth at most 5 % and
descriptors and threads flat (no more at the end than at the start).

Usage (from the repository root)::

    .venv/bin/python -m bench.soak                      # 48 cameras, 30 minutes
    .venv/bin/python -m bench.soak --minutes 3          # a quick look (warm-up 60 s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiomqtt

from monitor import heap
from monitor.sim.broker import MosquittoBroker, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "monitor-bench"
SCENES = ("fire", "smoke", "no_helmet", "quiet")
RSS_GROWTH_LIMIT = 0.05
THREAD_READS = 5
"""Reads of the thread count per sample, 0.1 s apart, of which the smallest counts: FFmpeg
starts and ends worker threads of its own (libavutil slice threads, two per decoder or scaler
here) as streams loop and frames are converted, so one read catches a passing crowd."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
FILLED_AFTER_S = 600.0
"""By then the daemon's bounded memories are full at this soak's alert rate (about 40 alerts a
minute): growth after it is what a leak would look like."""
CONSOLE_ALERTS = 500
"""The console's default ``max_events``."""
MIB = 1024 * 1024
DUMP_TIMEOUT_S = 120.0
"""Longest wait for a memory dump (a tracemalloc snapshot of a busy daemon takes seconds)."""
TRACE_SITES_SHOWN = 15
TRACE_STACKS_SHOWN = 3
PROBLEM_LINES_SHOWN = 10
"""ERROR and Traceback lines of the daemon's log printed in the report."""


def scene_clips(cache: Path) -> dict[str, Path]:
    """The demo's four scenes as H.264 files (written once, then cached)."""
    from monitor.sim.scenes import PRESETS, write_scene  # noqa: PLC0415 - heavy; only here

    clips = {}
    for name in SCENES:
        path = cache / f"soak-{name}-640x360-10fps.mp4"
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part.mp4")
            write_scene(PRESETS[name](), partial)
            partial.rename(path)
        clips[name] = path
    return clips


def write_config(path: Path, *, cameras: int, clips: dict[str, Path], vlm_port: int,
                 broker: MosquittoBroker, metrics_port: int) -> None:
    """The daemon's configuration: defaults except for the simulated parts."""
    lines = [
        f'state_dir = "{path.parent / "state"}"',
        "[vlm]", f'base_url = "http://127.0.0.1:{vlm_port}/v1"', "timeout_s = 10",
        "[mqtt]", f'host = "{broker.host}"', f"port = {broker.port}",
        'client_id = "monitor-soak"',
        "[telemetry]", f"port = {metrics_port}",
    ]
    for index in range(cameras):
        scene = SCENES[index % len(SCENES)]
        lines += ["[[cameras]]", f'id = "cam{index:02d}-{scene.replace("_", "-")}"',
                  f'url = "{clips[scene]}"', "loop = true"]
    path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the daemon."""

    elapsed_s: float
    rss_kib: int
    threads: int
    """The fewest of :data:`THREAD_READS` reads: the threads that stay."""
    threads_seen: int
    """The most of those reads (transient FFmpeg workers included)."""
    fds: int
    cpu_s: float
    lag_s: float | None
    lag_max_s: float | None
    frames_sampled: float
    answered: float
    cameras_online: float


def proc_status(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, Threads) from ``/proc/<pid>/status``."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


def open_fds(pid: int) -> int:
    """Open file descriptors of the process."""
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process (all its threads)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / CLK_TCK


def metric_sums(text: str) -> dict[str, float]:
    """Prometheus text → sum of the samples of each metric name (labels summed over)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        sums[name] = sums.get(name, 0.0) + float(value)
    return sums


async def sample(pid: int, started: float, http: aiohttp.ClientSession,
                 metrics_url: str) -> Sample:
    """Read ``/proc`` and ``/metrics`` for the daemon ``pid``."""
    rss, _ = proc_status(pid)
    fds = open_fds(pid)
    counts = []
    for _ in range(THREAD_READS):
        counts.append(proc_status(pid)[1])
        await asyncio.sleep(0.1)
    cpu = proc_cpu_s(pid)
    try:
        async with http.get(metrics_url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            sums = metric_sums(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        sums = {}
    return Sample(
        elapsed_s=time.monotonic() - started, rss_kib=rss, threads=min(counts),
        threads_seen=max(counts), fds=fds, cpu_s=cpu,
        lag_s=sums.get("monitor_event_loop_lag_seconds"),
        lag_max_s=sums.get("monitor_event_loop_lag_max_seconds"),
        frames_sampled=sums.get("monitor_frames_sampled_total", 0.0),
        answered=sums.get("monitor_vlm_requests_total", 0.0),
        cameras_online=sums.get("monitor_cameras_online", 0.0))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def row(current: Sample, previous: Sample | None, events: int, marker: str = "") -> str:
    """One printed line per sample."""
    if previous is None or current.elapsed_s <= previous.elapsed_s:
        cpu = "-"
    else:
        cpu = f"{(current.cpu_s - previous.cpu_s) / (current.elapsed_s - previous.elapsed_s):.0%}"
    return (f"{current.elapsed_s:>7.0f} {current.rss_kib / 1024:>8.1f} {current.fds:>5} "
            f"{current.threads:>7} {current.threads_seen:>8} {cpu:>5} {_ms(current.lag_s):>8} "
            f"{_ms(current.lag_max_s):>9} "
            f"{current.cameras_online:>6.0f} {current.frames_sampled:>8.0f} "
            f"{current.answered:>8.0f} {events:>7} {marker}")


HEADER = (f"{'t s':>7} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'thr seen':>8} {'CPU':>5} "
          f"{'lag ms':>8} {'lagmax ms':>9} {'online':>6} {'sampled':>8} {'answered':>8} "
          f"{'events':>7}")


class Subscriber:
    """Counts the alert events that reach the broker (proof that the pipeline runs)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self._broker = broker
        self.events = 0
        self.messages = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Subscribe to ``monitor/#`` until cancelled."""
        async with aiomqtt.Client(self._broker.host, self._broker.port,
                                  identifier="monitor-soak-subscriber") as client:
            await client.subscribe("monitor/#", qos=1)
            self.ready.set()
            async for message in client.messages:
                self.messages += 1
                if str(message.topic) == "monitor/events":
                    self.events += 1


THREAD_STACK_BYTES = 8 * 1024 * 1024
"""The size of a thread's stack mapping (glibc's default from ``ulimit -s``)."""
ARENA_ALIGN_BYTES = 64 * 1024 * 1024
"""glibc maps each thread arena's heap at a multiple of its largest size (64 MiB)."""
MEMORY_KINDS = ("main heap", "thread arenas", "thread stacks", "other anonymous", "files")


def memory_by_kind(pid: int) -> dict[str, int]:
    """The daemon's resident KiB by kind of mapping (``/proc/<pid>/smaps``): glibc's main heap,
    its thread arenas, thread stacks, other anonymous memory (Python's object arenas, large
    blocks, FFmpeg's buffers) and file mappings. Where RSS growth lives says what grows."""
    kinds = dict.fromkeys(MEMORY_KINDS, 0)
    kind = "files"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if name == "[heap]":
                kind = "main heap"
            elif name.startswith("["):
                kind = "thread stacks" if name == "[stack]" else "files"
            elif name:
                kind = "files"
            elif end - start == THREAD_STACK_BYTES:
                kind = "thread stacks"
            elif start % ARENA_ALIGN_BYTES == 0 and end - start <= ARENA_ALIGN_BYTES:
                kind = "thread arenas"
            else:
                kind = "other anonymous"
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1])
    return kinds


def growth(start: float, end: float) -> float:
    """Relative growth from ``start`` to ``end``."""
    return (end - start) / start if start else 0.0


def verdict(start: Sample, end: Sample) -> tuple[bool, list[str]]:
    """Whether the footprint stayed flat, and one line per figure."""
    rss = growth(start.rss_kib, end.rss_kib)
    lines = [
        (f"RSS      {start.rss_kib / 1024:8.1f} -> {end.rss_kib / 1024:8.1f} MiB  {rss:+.1%}  "
         f"(limit +{RSS_GROWTH_LIMIT:.0%})"),
        (f"fds      {start.fds:8d} -> {end.fds:8d}      {growth(start.fds, end.fds):+.1%}  "
         f"(flat: no more at the end)"),
        (f"threads  {start.threads:8d} -> {end.threads:8d}      "
         f"{growth(start.threads, end.threads):+.1%}  (flat: no more at the end)"),
        (f"loop lag {_ms(start.lag_s):>8} -> {_ms(end.lag_s):>8} ms (latest check); worst of "
         f"the last 60 s {_ms(start.lag_max_s)} -> {_ms(end.lag_max_s)} ms"),
    ]
    ok = rss <= RSS_GROWTH_LIMIT and end.fds <= start.fds and end.threads <= start.threads
    return ok, lines


class MemoryDebug:
    """Opt-in diagnostics (``--memory-debug``): the daemon dumps glibc's ``malloc_info`` and,
    with ``--tracemalloc``, a snapshot of Python's allocations on ``SIGUSR2`` (see
    :data:`monitor.heap.MEMORY_DEBUG_ENV`) at the start of the window, at the
    :data:`FILLED_AFTER_S` mark and at the end; the report says what grew between them. Tracing
    costs CPU and memory of its own: the RSS figures of such a run are not the soak's."""

    def __init__(self, directory: Path, trace_frames: int) -> None:
        self.directory = directory
        self.trace_frames = trace_frames
        self.dumps: list[tuple[float, str]] = []
        """(elapsed s, label) of each dump written."""

    def environment(self) -> dict[str, str]:
        """What the daemon's environment gets for it."""
        env = {heap.MEMORY_DEBUG_ENV: str(self.directory)}
        if self.trace_frames:
            env["PYTHONTRACEMALLOC"] = str(self.trace_frames)
        return env

    async def dump(self, daemon: subprocess.Popen[bytes], elapsed_s: float) -> None:
        """Have the daemon write its next dump and wait until it is there."""
        label = f"dump-{len(self.dumps) + 1:02d}"
        done = self.directory / f"{label}.malloc.xml"
        daemon.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + DUMP_TIMEOUT_S
        while not done.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"the daemon wrote no memory dump {label} within "
                                 f"{DUMP_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.2)
        self.dumps.append((elapsed_s, label))

    def report(self) -> None:
        """Print, for the first dump against each later one, glibc's arenas and the Python
        allocation sites that grew most."""
        if len(self.dumps) < 2:
            return
        first_at, first = self.dumps[0]
        for later_at, later in self.dumps[1:]:
            print(f"\nmemory debug: {first} ({first_at:.0f} s) -> {later} ({later_at:.0f} s)")
            self._report_arenas(first, later)
            self._report_python(first, later)

    def _report_arenas(self, first: str, later: str) -> None:
        before, after = (heap.parse_malloc_info(
            (self.directory / f"{label}.malloc.xml").read_text()) for label in (first, later))
        for old, new in zip(before[0], after[0], strict=False):
            print(f"  glibc arena {new.number}: system {old.system_bytes / MIB:.1f} -> "
                  f"{new.system_bytes / MIB:.1f} MiB, in use {old.used_bytes / MIB:.1f} -> "
                  f"{new.used_bytes / MIB:.1f}, free inside {old.free_bytes / MIB:.1f} -> "
                  f"{new.free_bytes / MIB:.1f}")
        print(f"  glibc mapped blocks: {before[1]} ({before[2] / MIB:.1f} MiB) -> {after[1]} "
              f"({after[2] / MIB:.1f} MiB)")

    def _report_python(self, first: str, later: str) -> None:
        paths = [self.directory / f"{label}.tracemalloc" for label in (first, later)]
        if not all(path.exists() for path in paths):
            return
        old, new = (tracemalloc.Snapshot.load(str(path)) for path in paths)
        traced = [sum(stat.size for stat in snapshot.statistics("filename")) / MIB
                  for snapshot in (old, new)]
        print(f"  Python allocations traced: {traced[0]:.1f} -> {traced[1]:.1f} MiB; the sites "
              f"that grew most:")
        for stat in new.compare_to(old, "lineno")[:TRACE_SITES_SHOWN]:
            frame = stat.traceback[0]
            print(f"    {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d} blocks  "
                  f"{_short_path(frame.filename)}:{frame.lineno}")
        for stat in new.compare_to(old, "traceback")[:TRACE_STACKS_SHOWN]:
            print(f"    {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d} blocks from:")
            for frame in stat.traceback:
                print(f"        {_short_path(frame.filename)}:{frame.lineno}")


def _short_path(filename: str) -> str:
    """A traced file's path from the repository or from site-packages."""
    for marker in (str(ROOT) + "/", "site-packages/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def start_sim(port: int, latency_s: float, log: Path) -> subprocess.Popen[bytes]:
    """``monitor sim-vlm`` as its own process, as a real model server would be."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "sim-vlm", "--port", str(port),
             "--latency", str(latency_s)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if not wait_for_port("127.0.0.1", port, 30):
        process.kill()
        raise SystemExit(f"the simulator did not start: {log.read_text()[-2000:]}")
    return process


def start_daemon(config: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``monitor run`` as a subprocess, as systemd runs it (no ``MONITOR_`` overrides; only
    ``extra_env``, the diagnostics' switches)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update(extra_env or {})
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


async def soak(args: argparse.Namespace, workdir: Path) -> bool:
    """Run everything for ``args.minutes``; print the samples and the verdict."""
    clips = await asyncio.to_thread(scene_clips, args.cache)
    broker = MosquittoBroker()
    await asyncio.to_thread(broker.start)
    sim_port, metrics_port = free_port(), free_port()
    sim = start_sim(sim_port, args.vlm_latency, workdir / "sim.log")
    daemon: subprocess.Popen[bytes] | None = None
    subscriber = Subscriber(broker)
    listen = asyncio.create_task(subscriber.run(), name="soak.subscriber")
    try:
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        config = workdir / "monitor.toml"
        write_config(config, cameras=args.cameras, clips=clips, vlm_port=sim_port,
                     broker=broker, metrics_port=metrics_port)
        log_path = workdir / "daemon.log"
        debug = (MemoryDebug(workdir / "memdebug", args.tracemalloc)
                 if args.memory_debug or args.tracemalloc else None)
        daemon = await asyncio.to_thread(start_daemon, config, log_path,
                                         debug.environment() if debug else None)
        started = time.monotonic()
        print(f"daemon pid {daemon.pid}; log {log_path}", flush=True)
        print(HEADER, flush=True)
        samples, maps = await watch(args, daemon, started,
                                    f"http://127.0.0.1:{metrics_port}/metrics", subscriber,
                                    debug=debug)
        code = await asyncio.to_thread(stop, daemon)
    finally:
        if daemon is not None:
            await asyncio.to_thread(stop, daemon)
        listen.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await listen
        await asyncio.to_thread(stop, sim)
        await asyncio.to_thread(broker.stop)
    ok = report(args, samples, maps, code=code, log_path=log_path, subscriber=subscriber)
    if debug is not None:
        debug.report()
    return ok


async def watch(args: argparse.Namespace, daemon: subprocess.Popen[bytes], started: float,
                metrics_url: str, subscriber: Subscriber, *, debug: MemoryDebug | None = None,
                ) -> tuple[list[Sample], list[dict[str, int]]]:
    """Sample the daemon every ``args.sample_s`` until ``args.minutes`` have passed; also its
    memory by kind at the start and the end of the window (and ``debug``'s dumps then and at
    the :data:`FILLED_AFTER_S` mark)."""
    samples: list[Sample] = []
    end_at = started + args.minutes * 60
    warm_at = started + args.warmup_s
    warm_marked = False
    previous: Sample | None = None
    maps: list[dict[str, int]] = []
    filled_dumped = False
    async with aiohttp.ClientSession() as http:
        next_at = started + args.sample_s
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.returncode}) after "
                                 f"{time.monotonic() - started:.0f} s")
            current = await sample(daemon.pid, started, http, metrics_url)
            marker = ""
            if not warm_marked and time.monotonic() >= warm_at:
                marker, warm_marked = "<- start (after warm-up)", True
                samples.clear()
                maps = [memory_by_kind(daemon.pid)]
            samples.append(current)
            if time.monotonic() + args.sample_s > end_at:
                marker = "<- end"
                maps.append(memory_by_kind(daemon.pid))
            print(row(current, previous, subscriber.events, marker), flush=True)
            if debug is not None and (marker or (
                    not filled_dumped and current.elapsed_s >= FILLED_AFTER_S)):
                filled_dumped = filled_dumped or current.elapsed_s >= FILLED_AFTER_S
                await debug.dump(daemon, current.elapsed_s)
            previous = current
            if marker == "<- end":
                return samples, maps
            next_at += args.sample_s


def report(args: argparse.Namespace, samples: list[Sample], maps: list[dict[str, int]], *,
           code: int, log_path: Path, subscriber: Subscriber) -> bool:
    """Print the verdict; whether the soak passed."""
    if len(samples) < 2:
        raise SystemExit("fewer than two samples after the warm-up: make --minutes longer")
    start, end = samples[0], samples[-1]
    ok, lines = verdict(start, end)
    window = end.elapsed_s - start.elapsed_s
    cpu = (end.cpu_s - start.cpu_s) / window
    peak = max(samples, key=lambda s: s.lag_max_s or 0.0)
    log = log_path.read_text(errors="replace").splitlines()
    problems = [line for line in log if " ERROR " in line or "Traceback" in line]
    print(f"\nover {window:.0f} s after a {args.warmup_s:.0f} s warm-up ({args.cameras} cameras):")
    for line in lines:
        print("  " + line)
    # A leak grows at a steady rate; an allocator or cache warming up grows less and less.
    middle = samples[len(samples) // 2]
    late = next((s for s in samples if s.elapsed_s >= FILLED_AFTER_S), None)
    if late is not None and late is not end:
        print(f"  RSS growth from {late.elapsed_s:.0f} s on (the bounded in-memory state full: "
              f"the console's {CONSOLE_ALERTS} alerts, the evidence store): "
              f"{late.rss_kib / 1024:.1f} -> {end.rss_kib / 1024:.1f} MiB "
              f"{growth(late.rss_kib, end.rss_kib):+.1%}")
    print(f"  RSS growth in the first half of the window "
          f"{growth(start.rss_kib, middle.rss_kib):+.1%}, in the second half "
          f"{growth(middle.rss_kib, end.rss_kib):+.1%}")
    if len(maps) == 2:
        print("  resident MiB by kind, start -> end: " + "; ".join(
            f"{kind} {maps[0][kind] / 1024:.1f} -> {maps[1][kind] / 1024:.1f}"
            for kind in MEMORY_KINDS))
    print(f"  RSS peak {max(s.rss_kib for s in samples) / 1024:.1f} MiB; threads peak "
          f"{max(s.threads for s in samples)} (with FFmpeg's transient workers: "
          f"{max(s.threads_seen for s in samples)}); fds peak {max(s.fds for s in samples)}; worst "
          f"loop lag seen {_ms(peak.lag_max_s)} ms (at {peak.elapsed_s:.0f} s)")
    sampled = end.frames_sampled - start.frames_sampled
    print(f"  daemon CPU {cpu:.0%} of one core; frames sampled {sampled:.0f},"
          f" model answers {end.answered - start.answered:.0f}; {subscriber.events} events and "
          f"{subscriber.messages} messages reached the subscriber; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"  daemon exit code {code} after SIGTERM; {len(problems)} ERROR/Traceback line(s) in "
          f"its log of {len(log)} lines")
    # The work directory goes with the run: show what went wrong while it can be read.
    for line in problems[:PROBLEM_LINES_SHOWN]:
        print(f"    {line[:300]}")
    print(f"verdict: {'PASS' if ok else 'FAIL'} (RSS growth <= {RSS_GROWTH_LIMIT:.0%} after "
          f"warm-up, descriptors and threads flat)", flush=True)
    return ok


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run the soak, exit 1 if the verdict is FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cameras", type=int, default=48)
    parser.add_argument("--minutes", type=float, default=30.0, help="whole run, warm-up included")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="not judged (default: 120 s, or 60 s for runs under 10 minutes)")
    parser.add_argument("--sample-s", type=float, default=None,
                        help="seconds between samples (default: 60, or 10 under 10 minutes)")
    parser.add_argument("--vlm-latency", type=float, default=0.1,
                        help="the simulator's seconds per request")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where clips are kept")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the configuration, state and logs here (default: a "
                             "temporary directory, removed afterwards)")
    parser.add_argument("--memory-debug", action="store_true",
                        help="the daemon dumps glibc's malloc_info at the start, the 10-minute "
                             "mark and the end; the report compares them")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="also trace Python's allocations with this many frames and print "
                             "the sites that grew (slows the daemon: its figures are not the "
                             "soak's)")
    args = parser.parse_args(argv)
    short = args.minutes < 10
    if args.warmup_s is None:
        args.warmup_s = 60.0 if short else 120.0
    if args.sample_s is None:
        args.sample_s = 10.0 if short else 60.0
    print(f"soak: {args.cameras} cameras (640x360 10 fps files looped in real time, the "
          f"cheapest source), {args.minutes:g} min, warm-up {args.warmup_s:.0f} s, a sample "
          f"every {args.sample_s:.0f} s; simulator latency {args.vlm_latency:g} s; "
          f"{os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        ok = asyncio.run(soak(args, args.workdir.resolve()))
    else:
        with tempfile.TemporaryDirectory(prefix="monitor-soak-") as tmp:
            ok = asyncio.run(soak(args, Path(tmp)))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
