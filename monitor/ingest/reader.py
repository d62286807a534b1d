"""Camera ingest: one thread per camera owns its decoder and keeps only the newest frame.

Why a thread and not the event loop: FFmpeg's demuxing and decoding block. Each camera gets a
thread of its own (never the default executor, where a hung connect would starve everyone).
PyAV's ``timeout=(open, read)`` installs FFmpeg's interrupt callback, so a connect that hangs or
a stream that stops delivering ends in an exception and a reconnect, never a stuck thread.

One read loop (:meth:`CameraReader._read_packets`) serves both receivers
(:mod:`monitor.ingest.receivers`: the built-in RTSP/RTP receiver, FFmpeg's demuxer); which
packets it decodes is the pure :class:`~monitor.ingest.decode.DecodePolicy`'s decision. The
OpenCV backend gives decoded pictures, not packets, and has a small loop of its own.

What it costs, and why it is cheap (``bench/ingest.py`` measures it):

- **Keyframe-only decoding.** When the sampling interval is at least the stream's GOP duration,
  every sample can be a keyframe, so only keyframe packets reach the decoder (the others are
  dropped at the packet level, and the decoder's ``skip_frame = "NONKEY"`` guards the rest).
  A 1080p25 stream with a 2 s GOP then costs one decode in 50 instead of 50. ``decode = "auto"``
  measures the GOP from the packets' keyframe flags and timestamps and decides; ``"keyframes"``
  and ``"all"`` force it. When the GOP is shorter than the interval, the sampler says when it
  will want its next frame (:meth:`CameraReader.want_next_frame_at`) and keyframes that a newer
  one will replace before then are not decoded either
  (:func:`~monitor.ingest.decode.keyframe_needed`).
- **Nothing converted until sampled.** Frames stay in the decoder's format in a one-slot
  mailbox (:class:`~monitor.ingest.frame.FrameMailbox`); the newest overwrites the previous
  one (counted). Colour conversion and scaling happen once, for the sampled frame.
- **One decoder thread per camera.** FFmpeg's own decoder threads would multiply threads by
  cores for no gain on one keyframe every few seconds (and frame threading delays output).

Stall detection comes from the stream's own frame rate
(:func:`~monitor.ingest.decode.stall_timeout_s`): a stream that delivers no packet for several
frame intervals is reported offline (``check()``, polled by the daemon) and, once the rate is
known, reopened after that long (FFmpeg's read timeout of the next connection is derived from
it). Reconnects use capped exponential backoff with jitter and log the delay; the cap is a few
seconds in the first minute of an outage (short outages end fast), and only a connection that
stayed up (``STABLE_CONNECTION_S``) ends an outage (a source that gives a frame and hangs up is
not reopened every second). Credentials are typed in the :class:`StreamSource` and put into
the URL only by the call that opens the stream; the camera's password is registered with
:mod:`monitor.redaction`, and every log line, status and error passes through ``redact``.
"""

from __future__ import annotations

import errno
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import av
import av.error
import cv2
import numpy as np

from monitor.errors import exception_reason
from monitor.ingest.clips import PacketRing
from monitor.ingest.decode import (
    BACKOFF_EARLY_S,
    STABLE_CONNECTION_S,
    DecodePolicy,
    StreamMeter,
    backoff_delay,
    stall_timeout_s,
)
from monitor.ingest.frame import CapturedFrame, FrameMailbox
from monitor.ingest.receivers import BuiltinRtspReceiver, PyavReceiver, Receiver, open_opencv
from monitor.ingest.rtsp import RtspError, RtspUnauthorizedError, RtspUnsupportedError
from monitor.ingest.source import (
    DecodeChoice,
    NotVideoError,
    StreamEndedError,
    StreamError,
    StreamSource,
    StreamStalledError,
    StreamState,
    StreamStatus,
)
from monitor.redaction import redact, register_secrets

logger = logging.getLogger(__name__)

OPENCV_RETRIEVE_FRACTION = 0.25
"""OpenCV backend: convert a grabbed frame at most every interval x this (it cannot defer)."""


class StatusBoard:
    """A camera's :class:`StreamStatus`: changed by the reader thread, read by anyone; each
    change worth publishing (:meth:`StreamStatus.signature`) goes to ``on_status``."""

    def __init__(self, source: StreamSource, meter: StreamMeter,
                 on_status: Callable[[StreamStatus], None] | None) -> None:
        self._source = source
        self._meter = meter
        self._on_status = on_status
        self._lock = threading.Lock()
        self.status = StreamStatus(camera_id=source.camera_id, url=source.redacted_url,
                                   backend=source.backend)

    def set(self, **changes: Any) -> None:
        """Change the status; tell ``on_status`` when it changed in a way worth publishing."""
        with self._lock:
            previous = self.status
            self.status = current = replace(previous, **changes)
        if self._on_status is not None and previous.signature() != current.signature():
            self._on_status(current)

    def counted(self, dropped: bool) -> None:
        """A frame was read (and the one it replaced ``dropped`` untaken)."""
        with self._lock:
            # Counters are only read for status; no one is told of them.
            self.status = replace(self.status, frames_read=self.status.frames_read + 1,
                                  frames_dropped=self.status.frames_dropped + int(dropped))

    def check(self, now: float) -> StreamStatus:
        """The status, first marked offline if no packet came within the stall timeout."""
        status = self.status
        last = self._meter.last_packet_at
        timeout = status.stall_timeout_s
        if status.online and last is not None and timeout is not None and now - last > timeout:
            self.set(state="offline", online=False,
                     last_error=f"stalled: no data for {now - last:.1f} s (stall timeout "
                                f"{timeout:.1f} s at {status.fps or 0:.1f} fps)")
            logger.warning("camera %s: stream stalled (no data for %.1f s); waiting for the "
                           "read timeout to reconnect", self._source.camera_id, now - last)
        return self.status

    def at_keyframe(self, previous: DecodeChoice, mode: DecodeChoice) -> None:
        """At a keyframe: log a change of the decode mode, publish the measurements."""
        if mode != previous:
            gop_s = self._meter.gop_s
            logger.info("camera %s: decoding %s (GOP %s s, interval %g s)",
                        self._source.camera_id,
                        "keyframes only" if mode == "keyframes" else "all frames",
                        f"{gop_s:.2f}" if gop_s else "?", self._source.interval_s)
        self.measured(mode)

    def measured(self, mode: DecodeChoice) -> None:
        """Publish the decode mode, frame rate, GOP and stall timeout where they changed."""
        meter, status = self._meter, self.status
        fps = meter.fps
        changes: dict[str, Any] = {}
        if mode != status.decode:
            changes["decode"] = mode
        if meter.gop_frames != status.gop_frames:
            changes["gop_frames"] = meter.gop_frames
        if meter.gop_s and (status.gop_s is None or abs(meter.gop_s - status.gop_s) > 0.05):
            changes["gop_s"] = meter.gop_s
        if fps and (status.fps is None or abs(fps - status.fps) > 0.2):
            changes["fps"] = fps
        # Whatever the connection started with (the read timeout, before any rate was
        # known), the stall timeout follows the rate the status shows.
        stall = stall_timeout_s(changes.get("fps", status.fps), self._source.read_timeout_s)
        if stall != status.stall_timeout_s:
            changes["stall_timeout_s"] = stall
        if changes:
            self.set(**changes)
        if status.fps is None and "fps" in changes:
            logger.info("camera %s: %.1f fps measured (stall timeout %.1f s)",
                        self._source.camera_id, changes["fps"], stall)

    def online(self, width: int, height: int, codec: str, mode: DecodeChoice) -> None:
        """The first picture of a connection (or the first after a stall)."""
        fps = self._meter.known_fps or self.status.fps
        # The first picture often comes before the rate is measured (three packets): the
        # line then says so, and another one gives the rate once it is known.
        rate = f"{fps:.1f} fps" if fps else "frame rate not measured yet"
        logger.info("camera %s: online (%dx%d %s, %s, decoding %s) at %s",
                    self._source.camera_id, width, height, codec, rate, mode,
                    self._source.redacted_url)
        self.set(state="online", online=True, last_error=None, width=width, height=height,
                 codec=codec, decode=mode, fps=fps)


class CameraReader:
    """Reads one camera in a thread of its own; ``latest()`` gives the newest frame."""

    def __init__(
        self,
        source: StreamSource,
        on_status: Callable[[StreamStatus], None] | None = None,
        rng: random.Random | None = None,
        ring: PacketRing | None = None,
    ) -> None:
        self.source = source
        self.ring = ring
        """Keeps every packet for evidence clips (``None``: no clips for this camera)."""
        if source.password_text:
            register_secrets([source.password_text])
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._mailbox = FrameMailbox(source.camera_id)
        self._delivered = False
        """The current connection delivered a frame (a long one that did ends the outage)."""
        self._wanted_at = 0.0
        self._meter = StreamMeter()
        self._board = StatusBoard(source, self._meter, on_status)
        self._builtin_rtsp = (
            source.backend == "pyav" and source.rtsp_client == "builtin"
            and source.transport == "tcp" and source.url.lower().startswith("rtsp://"))
        """Read with :mod:`monitor.ingest.rtsp` (until the camera turns out to need FFmpeg)."""
        self._thread = threading.Thread(
            target=self._run, name=f"camera[{source.camera_id}].reader", daemon=True
        )

    @property
    def status(self) -> StreamStatus:
        """The stream's current status."""
        return self._board.status

    def start(self) -> None:
        """Start reading in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop; it notices within one packet or one read timeout."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; ``True`` when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        """Whether the reader thread still runs."""
        return self._thread.is_alive()

    def latest(self) -> CapturedFrame | None:
        """The newest decoded frame, or ``None`` before the first one."""
        return self._mailbox.latest()

    def notify_next(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once, from the reader thread, when the next frame arrives
        (see :meth:`FrameMailbox.notify_next`). ``None`` cancels."""
        self._mailbox.notify_next(callback)

    def mark_taken(self, sequence: int) -> None:
        """The sampler took frame ``sequence`` (so its replacement is not counted as dropped)."""
        self._mailbox.mark_taken(sequence)

    def want_next_frame_at(self, at: float) -> None:
        """The sampler's next frame is due at ``at`` (monotonic): keyframes that will have
        a successor before then are not decoded. 0 (the default) decodes every keyframe."""
        self._wanted_at = at

    def check(self, now: float) -> StreamStatus:
        """The status, first marked offline if no packet came within the stall timeout.

        Called periodically from outside the reader (the daemon's status task): the reader
        thread itself may sit in a blocking read until FFmpeg's timeout fires, but the status
        goes ``offline`` as soon as the stream is overdue by its own frame rate.
        """
        return self._board.check(now)

    def _run(self) -> None:
        camera = self.source.camera_id
        attempt = 0
        outage_since: float | None = None  # the first failure since a stable connection
        while not self._stop.is_set():
            self._delivered = False
            connection_started = time.monotonic()
            try:
                self._read_once()
                if self._stop.is_set():
                    break
                raise StreamEndedError("stream ended")
            except RtspUnsupportedError as exc:
                # Not an outage: this camera needs FFmpeg's reader. Switch for good, at once.
                self._builtin_rtsp = False
                logger.info("camera %s: %s; reading it with FFmpeg instead", camera,
                            self._describe(exc))
                continue
            except (av.error.FFmpegError, OSError, StreamError, RtspError, ValueError) as exc:
                if self._stop.is_set():
                    break
                ended = time.monotonic()
                state: StreamState = "offline"
                message = self._describe(exc, quiet_s=ended - (
                    self._meter.last_packet_at or connection_started))
                if isinstance(exc, av.error.HTTPUnauthorizedError | RtspUnauthorizedError):
                    state = "unauthorized"
                if self.source.is_file and self.source.loop and isinstance(exc, StreamEndedError):
                    continue  # play the file again at once: that is what loop means
                if self._delivered and ended - connection_started >= STABLE_CONNECTION_S:
                    outage_since = None  # it worked for a while: the backoff starts afresh
                if outage_since is None:
                    outage_since, attempt = ended, 0
                if isinstance(exc, NotVideoError):
                    # A misconfiguration will not end by itself in a few seconds: no need for
                    # the quick retries of a young outage (the log would repeat it every 4 s).
                    outage_since = min(outage_since, ended - BACKOFF_EARLY_S)
                delay = backoff_delay(attempt, ended - outage_since, self._rng)
                attempt += 1
                self._board.set(state=state, online=False, last_error=message,
                                reconnects=self.status.reconnects + 1)
                logger.warning("camera %s: %s; reconnecting in %.1f s", camera, message, delay)
                self._stop.wait(delay)
        self._board.set(state="stopped", online=False, last_error="stopped")
        logger.info("camera %s: reader stopped", camera)

    def _describe(self, exc: BaseException, quiet_s: float | None = None) -> str:
        """An error text as it may leave the process (:func:`monitor.redaction.redact`).
        ``quiet_s``: seconds since the last video packet (or since connecting, when none)."""
        text = exception_reason(exc)
        status = self.status
        timeout = status.stall_timeout_s or self.source.read_timeout_s
        if isinstance(exc, av.error.HTTPUnauthorizedError):
            text = ("unauthorized: the camera refused the credentials (401); check the "
                    "camera's username and password")
        elif isinstance(exc, av.error.ExitError | av.error.InvalidDataError) and \
                not status.online and self._meter.last_packet_at is None:
            text = (f"no answer within the open timeout ({self.source.open_timeout_s:g} s): "
                    f"{type(exc).__name__}")
        elif isinstance(exc, av.error.ExitError | TimeoutError):
            text = f"no data within the read timeout ({timeout:.1f} s)"
        elif isinstance(exc, OSError) and exc.errno == errno.EIO and quiet_s is not None and \
                quiet_s >= min(timeout, self.source.open_timeout_s) * 0.9:
            # FFmpeg's RTSP demuxer reports PyAV's timeout as an I/O error; the camera talked
            # (RTSP answers, RTCP) but sent no video.
            text = f"no video for {quiet_s:.1f} s (read timeout {timeout:.1f} s)"
        elif isinstance(exc, ConnectionRefusedError):
            text = "connection refused (nothing listens at that address)"
        return redact(text)

    def _read_once(self) -> bool:
        """Open the stream and read it until it ends; ``True`` if it delivered frames."""
        if self.source.backend == "opencv":
            return self._read_opencv()
        return self._read_packets()

    def _receiver(self, read_timeout_s: float, mode: DecodeChoice) -> Receiver:
        if self._builtin_rtsp:
            return BuiltinRtspReceiver(self.source, read_timeout_s, mode,
                                       keep_raw=self.ring is not None)
        return PyavReceiver(self.source, read_timeout_s, self._stop)

    def _read_packets(self) -> bool:
        """The read loop: packets from the receiver, decoded as the policy says."""
        self._meter.reset_connection()
        # Once this camera's frame rate is known, a silent stream is given up after its own
        # stall timeout rather than a fixed one (FFmpeg's timeout is fixed per connection).
        read_timeout = stall_timeout_s(self._meter.known_fps, self.source.read_timeout_s)
        self._board.set(stall_timeout_s=read_timeout)
        policy = DecodePolicy.start(self.source.decode, self.source.interval_s,
                                    self.source.read_timeout_s, self._meter, time.monotonic())
        delivered = False
        ring = self.ring
        with self._receiver(read_timeout, policy.mode) as receiver:
            if ring is not None:
                ring.reset(receiver.codec, receiver.extradata, receiver.rtp)
            for packet in receiver.packets():
                if self._stop.is_set():
                    return delivered
                now = time.monotonic()
                self._meter.packet(packet.meter_pts_s, packet.keyframe, now)
                if ring is not None:
                    # Compressed, as received: no decoding for the clip's sake.
                    kept = packet.raw if packet.raw is not None else packet.data
                    if kept is not None:
                        ring.add(kept if isinstance(kept, bytes) else bytes(kept),
                                 packet.keyframe,
                                 now if packet.meter_pts_s is None else packet.meter_pts_s,
                                 packet.dts_s, now)
                previous = policy.mode
                step = policy.packet(packet.keyframe, now, self._wanted_at)
                if packet.keyframe:
                    self._board.at_keyframe(previous, policy.mode)
                    receiver.at_keyframe(policy.mode, now, self._meter.gop_s)
                if step == "overdue":
                    raise self._no_pictures(policy.since_picture_s(now), policy.synced,
                                            receiver.idr_only)
                if step == "skip" or packet.data is None:
                    continue  # not wanted, or damaged (lost packets): nothing worth decoding
                try:
                    pictures = receiver.decode(packet.data, policy.mode)
                except av.error.InvalidDataError:
                    # One damaged packet (UDP loss) is no reason to reconnect; a stream that
                    # keeps failing trips the picture timeout.
                    continue
                for picture in pictures:
                    policy.pictured(now)
                    pts_s = packet.pts_s if packet.pts_s is not None else _time(picture)
                    self._store(picture, picture.width, picture.height, pts_s)
                    delivered = True
                    if not self.status.online:  # first picture, or back after a stall
                        self._board.online(picture.width, picture.height, receiver.codec,
                                           policy.mode)
        return delivered

    @staticmethod
    def _no_pictures(since_picture_s: float, synced: bool, idr_only: bool) -> Exception:
        """The error that ends a connection whose packets keep coming without a picture."""
        if idr_only and not synced:
            # Video flows but never a random-access frame (H.264: IDR): a camera whose
            # keyframes are recovery points, which FFmpeg's parser recognises and the built-in
            # receiver does not.
            return RtspUnsupportedError(f"no IDR keyframe in {since_picture_s:.1f} s of video")
        return StreamStalledError(f"no picture decoded for {since_picture_s:.1f} s although "
                                  f"data arrives (no keyframe?)")

    def _read_opencv(self) -> bool:
        """OpenCV decodes every frame (no packets, no keyframe-only mode) and converts in
        ``retrieve()``: only a few frames per interval are retrieved, so conversion is not
        paid 25 times a second."""
        self._meter.reset_connection()
        capture = open_opencv(self.source)
        delivered = False
        declared_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        retrieve_every = self.source.interval_s * OPENCV_RETRIEVE_FRACTION
        pace_s = 1.0 / declared_fps if self.source.is_file and declared_fps > 0 else 0.0
        last_retrieved = float("-inf")
        try:
            while not self._stop.is_set():
                if not capture.grab():
                    return delivered
                now = time.monotonic()
                self._meter.packet(None, keyframe=False, now=now)
                if pace_s and self._stop.wait(pace_s):
                    return delivered
                if now - last_retrieved < retrieve_every:
                    continue
                ok, image = capture.retrieve()
                if not ok:
                    continue
                last_retrieved = now
                image = np.asarray(image, dtype=np.uint8)
                position_s = float(capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                self._store(image, image.shape[1], image.shape[0], position_s)
                delivered = True
                if not self.status.online:
                    self._board.online(image.shape[1], image.shape[0], "?", "all")
                self._board.measured("all")
        finally:
            capture.release()
        return delivered

    def _store(self, frame: Any, width: int, height: int, pts_s: float | None) -> None:
        self._delivered = True
        self._board.counted(self._mailbox.put(frame, width, height, pts_s))


def _time(picture: Any) -> float | None:
    pts = picture.time
    return float(pts) if pts is not None else None
