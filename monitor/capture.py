"""Camera ingest: one thread per camera owns its decoder and keeps only the newest frame.

Why a thread and not the event loop: FFmpeg's demuxing and decoding block. Each camera gets a
thread of its own (never the default executor, where a hung connect would starve everyone).
PyAV's ``timeout=(open, read)`` installs FFmpeg's interrupt callback, so a connect that hangs or
a stream that stops delivering ends in an exception and a reconnect, never a stuck thread.

Hand-off: a one-slot mailbox. The thread overwrites it with every decoded frame (newest wins,
overwritten frames are counted); the sampler takes the newest when its interval is due. Frames
stay in decoder format (``av.VideoFrame``) until sampled: colour conversion costs CPU and is
only done for frames that are analysed.

Credentials are injected into the URL only for ``av.open``; every log line, status and error
shows the redacted URL.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import av
import av.error
import numpy as np

from monitor.imaging import BgrImage
from monitor.urls import REDACTED, redact_url, url_password

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """A decoded frame, as read from the stream, not yet converted."""

    camera_id: str
    sequence: int
    captured_at: float
    """Wall-clock time (epoch seconds) the frame came out of the decoder."""
    captured_monotonic: float
    width: int
    height: int
    _frame: Any  # av.VideoFrame; kept opaque so callers convert through to_bgr()

    def to_bgr(self) -> BgrImage:
        """The frame as a BGR ``uint8`` array (CPU work: call it off the event loop)."""
        return np.asarray(self._frame.to_ndarray(format="bgr24"), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """What is known about a camera's stream; published when it changes."""

    camera_id: str
    url: str
    """Redacted: never holds a password."""
    online: bool = False
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    fps: float | None = None
    last_error: str | None = None
    reconnects: int = 0
    frames_read: int = 0
    frames_dropped: int = 0


@dataclass(frozen=True, slots=True)
class StreamSource:
    """How to open one camera's stream."""

    camera_id: str
    url: str
    """May carry credentials: only ``av.open`` sees it."""
    transport: str = "tcp"
    loop: bool = False
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***``."""
        return redact_url(self.url)

    @property
    def is_file(self) -> bool:
        """Whether the source is a local file (paced to real time, optionally looped)."""
        return "://" not in self.url or self.url.startswith("file://")


class StreamEndedError(Exception):
    """The stream reached its end (a live camera should never do that)."""


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Capped exponential backoff with jitter: about 1, 2, 4 ... 30 s, each 50-100 %."""
    ceiling: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(attempt, 10))
    return ceiling * rng.uniform(0.5, 1.0)


class CameraReader:
    """Reads one camera in a thread of its own; ``latest()`` gives the newest frame."""

    def __init__(
        self,
        source: StreamSource,
        on_status: Callable[[StreamStatus], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self._on_status = on_status
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: CapturedFrame | None = None
        self._sequence = 0
        self._status = StreamStatus(camera_id=source.camera_id, url=source.redacted_url)
        self._thread = threading.Thread(
            target=self._run, name=f"camera[{source.camera_id}].reader", daemon=True
        )

    @property
    def status(self) -> StreamStatus:
        """The stream's current status."""
        return self._status

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
        with self._lock:
            return self._latest

    def _set_status(self, **changes: Any) -> None:
        previous = self._status
        self._status = replace(previous, **changes)
        if self._on_status is not None and (
            previous.online != self._status.online
            or previous.last_error != self._status.last_error
            or previous.width != self._status.width
        ):
            self._on_status(self._status)

    def _run(self) -> None:
        camera = self.source.camera_id
        attempt = 0
        while not self._stop.is_set():
            delivered = False
            try:
                delivered = self._read_once()
                if self._stop.is_set():
                    break
                self._raise_ended()
            except (av.error.FFmpegError, OSError, StreamEndedError, ValueError) as exc:
                if self._stop.is_set():
                    break
                message = self._describe(exc)
                if delivered:
                    attempt = 0
                if self.source.is_file and self.source.loop and isinstance(exc, StreamEndedError):
                    continue  # play the file again at once: that is what loop means
                delay = backoff_delay(attempt, self._rng)
                attempt += 1
                self._set_status(online=False, last_error=message,
                                 reconnects=self._status.reconnects + 1)
                logger.warning("camera %s: %s; reconnecting in %.1f s", camera, message, delay)
                self._stop.wait(delay)
        self._set_status(online=False, last_error="stopped")
        logger.info("camera %s: reader stopped", camera)

    @staticmethod
    def _raise_ended() -> None:
        raise StreamEndedError("stream ended")

    def _describe(self, exc: BaseException) -> str:
        """An error text with the stream's password scrubbed from it."""
        text = str(exc) or type(exc).__name__
        if isinstance(exc, av.error.ExitError):
            text = (f"no data within the timeout (open {self.source.open_timeout_s:g} s, "
                    f"read {self.source.read_timeout_s:g} s)")
        text = text.replace(self.source.url, self.source.redacted_url)
        password = url_password(self.source.url)
        if password:
            # FFmpeg may print the URL as given (percent-encoded) or decoded: scrub both.
            for form in {password, unquote(password)}:
                text = text.replace(form, REDACTED)
        return text

    def _open(self) -> Any:
        options: dict[str, str] = {}
        url = self.source.url
        if url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.source.transport
        if url.startswith("file://"):
            url = url.removeprefix("file://")
        if self.source.is_file and not Path(url).is_file():
            raise FileNotFoundError(f"no such file: {url}")
        return av.open(url, options=options,
                       timeout=(self.source.open_timeout_s, self.source.read_timeout_s))

    def _read_once(self) -> bool:
        """Open the stream and read it until it ends; ``True`` if it delivered frames."""
        camera = self.source.camera_id
        container = self._open()
        delivered = False
        try:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            pace = self.source.is_file
            first_pts_time: float | None = None
            anchor = time.monotonic()
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return delivered
                for frame in packet.decode():
                    if pace and frame.time is not None:
                        # Local files play in real time, as a camera would deliver them.
                        if first_pts_time is None:
                            first_pts_time = float(frame.time)
                        due = anchor + float(frame.time) - first_pts_time
                        if self._stop.wait(max(0.0, due - time.monotonic())):
                            return delivered
                    self._publish(frame)
                    if not delivered:
                        delivered = True
                        logger.info("camera %s: online (%dx%d %s, %s fps) at %s", camera,
                                    frame.width, frame.height, codec,
                                    f"{fps:.1f}" if fps else "?", self.source.redacted_url)
                        self._set_status(online=True, last_error=None, width=frame.width,
                                         height=frame.height, codec=codec, fps=fps)
        finally:
            container.close()
        return delivered

    def _publish(self, frame: Any) -> None:
        self._sequence += 1
        captured = CapturedFrame(
            camera_id=self.source.camera_id, sequence=self._sequence, captured_at=time.time(),
            captured_monotonic=time.monotonic(), width=frame.width, height=frame.height,
            _frame=frame,
        )
        with self._lock:
            dropped = self._latest is not None
            self._latest = captured
        # Counters are only read for status; plain attribute updates from this one thread.
        self._status = replace(
            self._status, frames_read=self._status.frames_read + 1,
            frames_dropped=self._status.frames_dropped + int(dropped),
        )
