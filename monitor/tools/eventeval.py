"""``monitor eval-video DIR``: event-level evaluation of the whole pipeline on recorded clips.

``monitor eval`` scores single images; a site lives with events. This runs the daemon's own
pipeline (:class:`~monitor.service.pipeline.CameraPipeline`: sampling, change gate, model,
zoom-in verification, confirmation, clearing) over every video file of ``DIR``, one camera per
clip, and compares the alerts it raises with labelled incidents.

Time is the clip's: a clip plays as fast as the model allows. Its clock runs at wall speed while
the pipeline works (model requests, encoding, verification) and jumps over the pipeline's waits
(the sampling interval, waiting for the next frame), so a 1-second model request costs a
second of clip time as it would on a live camera, and a quiet 2-second interval costs
nothing. Frames are decoded in order as the clip's clock passes them.

Labels (``DIR/labels.csv`` by default) are intervals, one incident a row, with a header::

    clip,hazard,start_s,end_s
    yard-0412.mp4,fire,4.0,14.0
    gate-0101.mp4,no_helmet,3.0,20.0

``clip`` is the file name relative to ``DIR``, ``hazard`` is ``fire``, ``smoke`` or
``no_helmet``, times are seconds from the clip's start. A clip without rows has no incident:
any alert on it is a false alarm. Scoring, per hazard (pure: :func:`score`):

* an incident is caught when an alert of its hazard on its clip overlaps it (the alert raised
  by ``end_s + grace_s`` at the latest, ``--grace``); time to alert is from ``start_s`` to the
  first such alert's start (0 when an alert was already raised);
* an alert raised outside every incident of its hazard (each widened by ``grace_s`` on both
  sides) is a false alarm, also when it lasts into a later incident; false alarms per
  camera-hour divide by the clips' total duration;
* tokens per camera-hour: prompt + completion tokens of every request (zoom-in questions
  included, and also shown alone), over the same duration.

``--compare other.toml`` runs the same clips with a second configuration and prints both side
by side (what K-of-N, the pixel budget or verification buys on *your* footage). ``--sim``
points both at an in-process VLM simulator. ``monitor sim-clips DIR`` writes a synthetic
labelled set (with look-alikes) and two configurations to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from monitor.alerts.payloads import Box, SnapshotRef
from monitor.alerts.tracker import AlertEvent, EventType
from monitor.config import CameraConfig, ConfigError, MonitorConfig, load_config
from monitor.ingest.frame import CapturedFrame
from monitor.model.answer import Hazard, Verdict
from monitor.model.client import VlmClient
from monitor.model.verify import CropCheck
from monitor.service.pipeline import CameraPipeline, Frame

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".ts", ".webm")
DEFAULT_GRACE_S = 5.0
HAZARD_ORDER = (Hazard.FIRE, Hazard.SMOKE, Hazard.NO_HELMET)


class EventEvalError(ValueError):
    """The folder, a clip or the labels are unusable (the message says where and why)."""


# --- Labels and results (pure). -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incident:
    """One labelled interval of a hazard on a clip."""

    clip: str
    hazard: Hazard
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    """An alert the pipeline raised on a clip (times in clip seconds)."""

    clip: str
    hazard: Hazard
    start_s: float
    end_s: float | None
    """``None``: still raised when the clip ended."""


@dataclass(slots=True)
class ClipRun:
    """What the pipeline did on one clip."""

    clip: str
    duration_s: float
    alerts: list[RaisedAlert] = field(default_factory=list)
    verdicts: int = 0
    failures: int = 0
    tokens: int = 0
    verification_tokens: int = 0


def read_labels(path: Path, clips: Sequence[str]) -> list[Incident]:
    """The incidents of ``path`` (see the module docstring), checked against ``clips``.

    Raises:
        EventEvalError: naming the file, line and problem.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise EventEvalError(f"{path}: cannot read labels: {exc.strerror or exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["clip", "hazard", "start_s", "end_s"]:
        raise EventEvalError(f"{path}: the first line must be the header "
                             "clip,hazard,start_s,end_s")
    incidents = []
    known = set(clips)
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{number}"
        if len(row) != 4:
            raise EventEvalError(f"{where}: expected 4 columns, got {len(row)}")
        clip, hazard, start, end = (cell.strip() for cell in row)
        if clip not in known:
            raise EventEvalError(f"{where}: clip {clip!r} is not a video file of the folder")
        try:
            kind = Hazard(hazard)
        except ValueError:
            raise EventEvalError(f"{where}: hazard {hazard!r} is not fire, smoke or "
                                 "no_helmet") from None
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise EventEvalError(f"{where}: start_s and end_s must be seconds, got "
                                 f"{start!r} and {end!r}") from None
        if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s < end_s):
            raise EventEvalError(f"{where}: need 0 <= start_s < end_s, got {start_s}..{end_s}")
        incidents.append(Incident(clip, kind, start_s, end_s))
    return incidents


@dataclass(frozen=True, slots=True)
class HazardScore:
    """Event-level figures of one hazard."""

    hazard: Hazard
    incidents: int
    caught: int
    false_alarms: int
    camera_hours: float
    times_to_alert_s: tuple[float, ...]

    @property
    def missed(self) -> int:
        """Incidents without an alert."""
        return self.incidents - self.caught

    @property
    def false_alarms_per_camera_hour(self) -> float:
        """False alarms over the clips' total duration."""
        return self.false_alarms / self.camera_hours if self.camera_hours else 0.0

    def time_to_alert_s(self, quantile: float) -> float | None:
        """The ``quantile`` (0..1) of the times from incident start to alert (``None``: no
        incident caught)."""
        return percentile(self.times_to_alert_s, quantile)


@dataclass(frozen=True, slots=True)
class Report:
    """One configuration's event-level evaluation of a folder."""

    name: str
    clips: int
    camera_hours: float
    hazards: tuple[HazardScore, ...]
    tokens: int
    verification_tokens: int
    verdicts: int
    failures: int

    @property
    def tokens_per_camera_hour(self) -> float:
        """Every request's tokens over the clips' total duration."""
        return self.tokens / self.camera_hours if self.camera_hours else 0.0

    @property
    def verification_tokens_per_camera_hour(self) -> float:
        """The zoom-in questions' share of :attr:`tokens_per_camera_hour`."""
        return self.verification_tokens / self.camera_hours if self.camera_hours else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "name": self.name, "clips": self.clips, "camera_hours": self.camera_hours,
            "verdicts": self.verdicts, "failures": self.failures,
            "tokens_per_camera_hour": round(self.tokens_per_camera_hour),
            "verification_tokens_per_camera_hour":
                round(self.verification_tokens_per_camera_hour),
            "hazards": {s.hazard.value: {
                "incidents": s.incidents, "caught": s.caught, "missed": s.missed,
                "false_alarms": s.false_alarms,
                "false_alarms_per_camera_hour": round(s.false_alarms_per_camera_hour, 2),
                "time_to_alert_p50_s": s.time_to_alert_s(0.5),
                "time_to_alert_p95_s": s.time_to_alert_s(0.95),
            } for s in self.hazards},
        }


def percentile(values: Sequence[float], quantile: float) -> float | None:
    """Linear-interpolated percentile (``None`` for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    position = quantile * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def score(name: str, runs: Sequence[ClipRun], incidents: Sequence[Incident], *,
          grace_s: float = DEFAULT_GRACE_S) -> Report:
    """Match alerts to incidents (see the module docstring)."""
    hours = sum(run.duration_s for run in runs) / 3600.0
    scores = []
    for hazard in HAZARD_ORDER:
        wanted = [i for i in incidents if i.hazard is hazard]
        alerts = [a for run in runs for a in run.alerts if a.hazard is hazard]
        ends = {run.clip: run.duration_s for run in runs}
        times: list[float] = []
        for incident in wanted:
            overlapping = [a for a in alerts if a.clip == incident.clip
                           and a.start_s <= incident.end_s + grace_s
                           and (a.end_s if a.end_s is not None else ends[a.clip])
                           >= incident.start_s]
            if overlapping:
                first = min(overlapping, key=lambda a: a.start_s)
                times.append(max(0.0, first.start_s - incident.start_s))
        false_alarms = sum(
            1 for a in alerts
            if not any(i.clip == a.clip and i.start_s - grace_s <= a.start_s <= i.end_s + grace_s
                       for i in wanted))
        scores.append(HazardScore(hazard, len(wanted), len(times), false_alarms, hours,
                                  tuple(times)))
    return Report(name=name, clips=len(runs), camera_hours=hours, hazards=tuple(scores),
                  tokens=sum(r.tokens for r in runs),
                  verification_tokens=sum(r.verification_tokens for r in runs),
                  verdicts=sum(r.verdicts for r in runs),
                  failures=sum(r.failures for r in runs))


def format_reports(reports: Sequence[Report]) -> str:
    """The table: one row per hazard and figure, one column per configuration."""
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows: list[tuple[str, ...]] = [("", *(r.name for r in reports))]
    for index, hazard in enumerate(HAZARD_ORDER):
        per = [r.hazards[index] for r in reports]
        label = hazard.value
        rows += [
            (f"{label}: incidents caught / missed", *(f"{s.caught} / {s.missed}" for s in per)),
            (f"{label}: false alarms per camera-hour (count)",
             *(f"{s.false_alarms_per_camera_hour:.1f} ({s.false_alarms})" for s in per)),
            (f"{label}: time to alert p50 / p95 (s)",
             *(f"{seconds(s.time_to_alert_s(0.5))} / {seconds(s.time_to_alert_s(0.95))}"
               for s in per)),
        ]
    rows += [
        ("tokens per camera-hour", *(f"{r.tokens_per_camera_hour:,.0f}" for r in reports)),
        ("  of which zoom-in", *(f"{r.verification_tokens_per_camera_hour:,.0f}"
                                 for r in reports)),
        ("verdicts (failed requests)", *(f"{r.verdicts} ({r.failures})" for r in reports)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    first = reports[0]
    title = (f"event-level evaluation: {first.clips} clips, {first.camera_hours * 60:.1f} "
             f"camera-minutes")
    lines = [title, *("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                      for row in rows)]
    return "\n".join(lines)


# --- Running the pipeline over a clip. -----------------------------------------------------------


class ClipClock:
    """A clip's clock (see the module docstring): wall speed while working, jumps over waits.

    ``monotonic()`` is seconds since the clip's start; ``time()`` is ``epoch`` plus that.
    """

    def __init__(self, epoch: float) -> None:
        self.epoch = epoch
        self._started = time.monotonic()
        self._skipped = 0.0

    def monotonic(self) -> float:
        """Clip seconds now."""
        return time.monotonic() - self._started + self._skipped

    def time(self) -> float:
        """Wall-clock-like time of the clip (``epoch`` at its start)."""
        return self.epoch + self.monotonic()

    def skip(self, seconds: float) -> None:
        """Jump ``seconds`` ahead (a wait the pipeline would have slept through)."""
        self._skipped += max(0.0, seconds)


@dataclass(slots=True)
class _ClipStatus:
    decode: str | None = "all"
    gop_s: float | None = None
    fps: float | None = None


class ClipSource:
    """A video file as a camera's frame source: the newest frame at the clip's clock."""

    def __init__(self, path: Path, camera_id: str, clock: ClipClock) -> None:
        self.path = path
        self._camera_id, self._clock = camera_id, clock
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise EventEvalError(f"{path}: not a readable video ({exc})") from None
        rate = stream.average_rate
        self.status = _ClipStatus(fps=float(rate) if rate else None)
        self._frames: Iterator[Any] = self._container.decode(stream)
        self._sequence = 0
        self._latest: CapturedFrame | None = None
        self._next: tuple[float, Any] | None = None
        self.ended = False
        self.last_pts_s = 0.0
        self._pull()

    def _pull(self) -> None:
        """Decode the next frame into ``_next`` (``ended`` after the last)."""
        try:
            frame = next(self._frames)
        except (StopIteration, av.FFmpegError):
            self._next = None
            self.ended = True
            return
        pts = float(frame.time) if frame.time is not None else self.last_pts_s
        self._next = (pts, frame)

    @property
    def next_pts_s(self) -> float | None:
        """When the next frame of the clip is due (``None``: no more frames)."""
        return self._next[0] if self._next else None

    def latest(self) -> CapturedFrame | None:
        """The newest frame whose time has come."""
        now = self._clock.monotonic()
        while self._next is not None and self._next[0] <= now:
            pts, frame = self._next
            self._sequence += 1
            self._latest = CapturedFrame(
                camera_id=self._camera_id, sequence=self._sequence,
                captured_at=self._clock.epoch + pts, captured_monotonic=pts,
                width=frame.width, height=frame.height, _frame=frame, pts_s=pts)
            self.last_pts_s = pts
            self._pull()
        return self._latest

    def notify_next(self, callback: Callable[[], None] | None) -> None:
        """Unused: :class:`ClipPipeline` jumps to the next frame instead of waiting."""

    def mark_taken(self, sequence: int) -> None:
        """Nothing to count in a file."""

    def want_next_frame_at(self, at: float) -> None:
        """Every frame is decoded anyway."""

    def close(self) -> None:
        """Close the file."""
        self._container.close()


class ClipPipeline(CameraPipeline):
    """The daemon's pipeline with its two waits replaced by jumps of the clip's clock; every
    decision (sampling, change gate, verification, tracker) is the daemon's own code."""

    def __init__(self, config: MonitorConfig, camera: CameraConfig, *, source: ClipSource,
                 clock: ClipClock, **parts: Any) -> None:
        super().__init__(config, camera, source=source, clock=clock, **parts)
        self._clip, self._clip_clock = source, clock

    async def _pause(self, seconds: float) -> None:
        self._clip_clock.skip(seconds)
        self._stop_at_end()
        await asyncio.sleep(0)

    async def _wait_for_frame(self, after: int | None) -> None:
        due = self._clip.next_pts_s
        if due is not None:
            self._clip_clock.skip(due - self._clip_clock.monotonic())
        self._stop_at_end()
        await asyncio.sleep(0)

    def _stop_at_end(self) -> None:
        if self._clip.ended and self._clip_clock.monotonic() > self._clip.last_pts_s:
            self._stopping.set()


class _RecordingSink:
    """The pipeline's sink for an evaluation: counts and alert spans, nothing published."""

    def __init__(self, run: ClipRun, epoch: float) -> None:
        self.run, self._epoch = run, epoch
        self._open: dict[Hazard, float] = {}

    def sampled(self, camera_id: str) -> None:
        """Nothing to count."""

    def unchanged(self, camera_id: str) -> None:
        """Nothing to count."""

    def failed(self, camera_id: str, endpoint: str, outcome: str) -> None:
        """A frame was not analysed."""
        self.run.failures += 1

    def verdict(self, verdict: Verdict) -> None:
        """Count the verdict and its tokens (zoom-in questions included)."""
        self.run.verdicts += 1
        self.run.tokens += (verdict.prompt_tokens or 0) + (verdict.completion_tokens or 0)
        if verdict.verification is not None:
            self.run.tokens += verdict.verification.tokens
            self.run.verification_tokens += verdict.verification.tokens

    async def evidence(self, event: AlertEvent, frame: Frame,
                       boxes: Sequence[Box]) -> SnapshotRef | None:
        """No evidence images in an evaluation."""
        return None

    async def crop_evidence(self, event: AlertEvent,
                            checks: Sequence[CropCheck]) -> list[str | None]:
        """No evidence images in an evaluation."""
        return [None] * len(checks)

    def event(self, event: AlertEvent, *, verdict: Verdict | None = None,
              boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None) -> None:
        """Alert spans, in clip seconds."""
        if event.type is EventType.START:
            self._open[event.hazard] = event.started_at - self._epoch
        elif event.type is EventType.END and event.hazard in self._open:
            self.run.alerts.append(RaisedAlert(self.run.clip, event.hazard,
                                               self._open.pop(event.hazard),
                                               event.at - self._epoch))

    def close(self) -> None:
        """Alerts still raised at the clip's end."""
        for hazard, start in self._open.items():
            self.run.alerts.append(RaisedAlert(self.run.clip, hazard, start, None))
        self._open.clear()


def camera_id_for(clip: str) -> str:
    """A camera id (letters, digits, ``-``, ``_``) for a clip's file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(clip).stem)[:60] or "clip"


async def run_clip(config: MonitorConfig, directory: Path, clip: str, client: VlmClient,
                   executor: Executor) -> ClipRun:
    """The pipeline over one clip, at the speed the model allows."""
    camera = CameraConfig(id=camera_id_for(clip), url=str(directory / clip))
    clock = ClipClock(epoch=time.time())
    source = await asyncio.get_running_loop().run_in_executor(
        executor, ClipSource, directory / clip, camera.id, clock)
    run = ClipRun(clip=clip, duration_s=0.0)
    sink = _RecordingSink(run, clock.epoch)
    pipeline = ClipPipeline(config, camera, source=source, clock=clock, client=client,
                            sink=sink, executor=executor)
    try:
        await pipeline.run()
    finally:
        source.close()
        sink.close()
    frame_gap = 1.0 / source.status.fps if source.status.fps else 0.0
    run.duration_s = source.last_pts_s + frame_gap
    return run


def clips_of(directory: Path) -> list[str]:
    """The video files of ``directory`` (sorted names)."""
    if not directory.is_dir():
        raise EventEvalError(f"{directory}: not a directory")
    names = sorted(p.name for p in directory.iterdir()
                   if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not names:
        raise EventEvalError(f"{directory}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return names


async def evaluate_clips(config: MonitorConfig, directory: Path, incidents: Sequence[Incident],
                         clips: Sequence[str], *, name: str,
                         grace_s: float = DEFAULT_GRACE_S) -> Report:
    """Run every clip (as many at once as ``vlm.max_concurrency``) and score the alerts."""
    client = VlmClient(config.vlm)
    limit = asyncio.Semaphore(max(1, config.vlm.max_concurrency))
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="eval-video")

    async def one(clip: str) -> ClipRun:
        async with limit:
            return await run_clip(config, directory, clip, client, executor)

    try:
        runs = await asyncio.gather(*(one(clip) for clip in clips))
    finally:
        await client.aclose()
        executor.shutdown()
    return score(name, runs, incidents, grace_s=grace_s)


# --- Command line. ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``monitor eval-video``'s options."""
    parser.add_argument("directory", type=Path, metavar="DIR", help="folder of video clips")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help="configuration (its [vlm], [defaults] and [verification]; "
                        "default: built-in defaults)")
    parser.add_argument("--compare", type=Path, metavar="OTHER.toml",
                        help="a second configuration, run on the same clips, side by side")
    parser.add_argument("--labels", type=Path, help="labels file (default DIR/labels.csv)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                        help=f"seconds after an incident's end within which its alert still "
                        f"counts (default {DEFAULT_GRACE_S:g})")
    parser.add_argument("--base-url", help="model server API root (replaces the configured)")
    parser.add_argument("--sim", action="store_true",
                        help="use an in-process VLM simulator (synthetic clips)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _load(path: Path | None) -> MonitorConfig:
    return load_config(path) if path is not None else MonitorConfig()


def _with_base_url(config: MonitorConfig, base_url: str | None,
                   model: str | None = None) -> MonitorConfig:
    if base_url is None:
        return config
    update: dict[str, object] = {"base_url": base_url, "endpoints": []}
    if model is not None:
        update["model"] = model
    return config.model_copy(update={"vlm": config.vlm.model_copy(update=update)})


async def evaluate_folder(args: argparse.Namespace) -> list[Report]:
    """Everything ``monitor eval-video`` runs (one report per configuration)."""
    directory: Path = args.directory
    clips = clips_of(directory)
    labels = args.labels or directory / "labels.csv"
    incidents = read_labels(labels, clips) if labels.exists() or args.labels else []
    named = [(args.config, _load(args.config))]
    if args.compare is not None:
        named.append((args.compare, _load(args.compare)))
    names = [path.stem if path else "defaults" for path, _ in named]
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]

    async def run(base_url: str | None, model: str | None = None) -> list[Report]:
        reports = []
        for name, (_, config) in zip(names, named, strict=True):
            reports.append(await evaluate_clips(_with_base_url(config, base_url, model),
                                                directory, incidents, clips, name=name,
                                                grace_s=args.grace))
        return reports

    if not args.sim:
        return await run(args.base_url)
    from monitor.sim.server import SimServer  # noqa: PLC0415 - only with --sim

    async with SimServer() as sim:
        # Whatever model the configurations name, the simulator answers for it.
        return await run(sim.base_url, sim.model_name)


def main(args: argparse.Namespace) -> int:
    """``monitor eval-video``: 0, or 65 for unusable input (named on stderr)."""
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    try:
        reports = asyncio.run(evaluate_folder(args))
    except (EventEvalError, ConfigError) as exc:
        sys.stderr.write(f"eval-video: {exc}\n")
        return 65
    if args.json:
        sys.stdout.write(json.dumps([r.to_json() for r in reports], indent=2) + "\n")
    else:
        sys.stdout.write(format_reports(reports) + "\n")
    return 0
