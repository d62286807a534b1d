"""The mailbox value: a decoded frame as the reader stored it, converted only when sampled.

Frames stay in the decoder's format (``av.VideoFrame``; a BGR array from the OpenCV backend)
in a one-slot mailbox (:class:`FrameMailbox`): the newest overwrites the previous one
(counted). Colour conversion and scaling happen once, for the sampled frame, straight to the
size the model gets (:meth:`CapturedFrame.to_bgr`, :meth:`CapturedFrame.yuv_planes`), on an
encoder thread. JPEG encoding is the model's (:mod:`monitor.model.imaging`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from monitor.pixels import BgrImage, GreyImage, YuvPlanes

SHRINK_FILTER = "BILINEAR"
"""swscale filter for shrinking to the model's size. swscale widens its bilinear filter by
the shrink factor, so it does not alias: 1080p to the default budget comes out within 0.15
grey levels (mean) of the area filter, at 1.1 ms instead of 1.9 ms."""
_REFORMATTERS = threading.local()
"""Per thread: one swscale context, reused from one sampled frame to the next (see
:func:`_reformatter`)."""

THUMBNAIL_ROWS_PER_ROW = 5
"""Source rows read per row of a change-gate thumbnail. Each thumbnail pixel still averages
hundreds of source pixels (5 rows of 30 columns at 1080p), so noise stays far below the gate's
threshold, and the thumbnail reads a sixth of the luma plane's rows instead of half: in the
ingest benchmark's client 0.7 ms per sampled 1080p frame became about 0.2 ms, with thumbnails
within 0.2 grey levels (mean) of those from every other row."""


def thumbnail_row_step(height: int, thumbnail_height: int) -> int:
    """Every how many rows a frame ``height`` rows tall is read for a thumbnail of
    ``thumbnail_height`` rows (see :data:`THUMBNAIL_ROWS_PER_ROW`; 1 for small frames)."""
    return max(1, height // max(1, thumbnail_height * THUMBNAIL_ROWS_PER_ROW))


def _reformatter() -> VideoReformatter:
    """This thread's swscale context (contexts are not thread-safe; encoder threads live long).

    ``VideoFrame.reformat`` builds a new context for every frame, and with swscale's default
    ``threads=0`` a pool of worker threads with it: reusing one context and scaling in the
    calling thread (``threads=1``) takes a 1080p frame to JPEG in about 3.5 ms instead of 4.6
    (the same bytes out; the encoder pool already runs one frame per core).
    """
    reformatter: VideoReformatter | None = getattr(_REFORMATTERS, "reformatter", None)
    if reformatter is None:
        reformatter = _REFORMATTERS.reformatter = VideoReformatter()
    return reformatter


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
    _frame: Any  # av.VideoFrame or, from the OpenCV backend, a BGR array
    pts_s: float | None = None
    """The frame's stream time in seconds (how far behind real time it is can be told)."""

    def to_bgr(self, width: int | None = None, height: int | None = None) -> BgrImage:
        """The frame as a BGR ``uint8`` array, scaled to ``width`` x ``height`` if given.

        CPU work: call it off the event loop. A 1080p frame is scaled while still in YUV 4:2:0
        (swscale, :data:`SHRINK_FILTER`: half the bytes of BGR) and converted by OpenCV at the small
        size: about 2.5 ms instead of 16 ms for BGR at full size plus a resize, or 5 ms for
        swscale's own scaled BGR output (measured with ``bench/ingest.py``'s clip).
        """
        frame = self._frame
        if not width or not height:
            width, height = self.width, self.height
        resize = (width, height) != (self.width, self.height)
        if isinstance(frame, np.ndarray):
            image = frame
            if resize:
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            return np.asarray(image, dtype=np.uint8)
        if resize and frame.format.name == "yuv420p" and not width % 2 and not height % 2:
            small = _reformatter().reformat(frame, width=width, height=height,
                                            format="yuv420p", interpolation=SHRINK_FILTER,
                                            threads=1)
            return np.asarray(cv2.cvtColor(small.to_ndarray(), cv2.COLOR_YUV2BGR_I420),
                              dtype=np.uint8)
        if resize:
            frame = _reformatter().reformat(frame, width=width, height=height,
                                            format="bgr24", interpolation="AREA", threads=1)
            return np.asarray(frame.to_ndarray(), dtype=np.uint8)
        return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)


    def yuv_planes(self, width: int, height: int) -> YuvPlanes | None:
        """The frame scaled to ``width`` x ``height`` as full-range 4:2:0 Y, U and V planes
        (for :func:`monitor.model.imaging.encode_yuv_jpeg`), or ``None`` when it is not 4:2:0
        (or the size is odd): then :meth:`to_bgr`. CPU work: off the loop.

        A 4:2:0 frame never becomes BGR: swscale scales it and stretches its video range
        (16-235) to JPEG's full range in one pass, and the planes are views of its rows, not
        copies (about 3 ms instead of 5.3 ms for 1080p to the default budget as JPEG, the same
        picture within JPEG's own rounding; measured on ``bench/ingest.py``'s clip).
        """
        frame = self._frame
        if isinstance(frame, np.ndarray) or frame.format.name not in {"yuv420p", "yuvj420p"} \
                or width % 2 or height % 2:
            return None
        small: Any = _reformatter().reformat(frame, width=width, height=height,
                                             format="yuvj420p", interpolation=SHRINK_FILTER,
                                             threads=1)
        sizes = ((width, height), (width // 2, height // 2), (width // 2, height // 2))
        luma, blue, red = (
            np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[:rows, :columns]
            for plane, (columns, rows) in zip(small.planes, sizes, strict=True))
        return luma, blue, red


    def grey_thumbnail(self, width: int, height: int) -> GreyImage:
        """A tiny grey version of the frame (for the change gate); reads only the luma plane."""
        frame = self._frame
        if isinstance(frame, np.ndarray):
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        elif frame.format.name in {"yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p",
                                   "yuv444p", "yuvj444p"}:
            plane = frame.planes[0]
            rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
            # About THUMBNAIL_ROWS_PER_ROW source rows per thumbnail row, whole rows (a view:
            # OpenCV reads rows at any stride, but a column stride would make it copy).
            grey = rows[: self.height : thumbnail_row_step(self.height, height), : self.width]
        else:
            grey = frame.to_ndarray(format="gray")
        small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
        return np.asarray(small, dtype=np.uint8)



class FrameMailbox:
    """One camera's newest frame: the reader thread puts, the sampler takes. Thread-safe.

    A frame that is replaced before the sampler took it counts as dropped. A sampler that
    is due but has no new frame asks to be woken by the next one (:meth:`notify_next`).
    """

    def __init__(self, camera_id: str) -> None:
        self._camera_id = camera_id
        self._lock = threading.Lock()
        self._latest: CapturedFrame | None = None
        self._sequence = 0
        self._taken = 0
        self._waiter: Callable[[], None] | None = None

    def put(self, frame: Any, width: int, height: int, pts_s: float | None) -> bool:
        """Store a decoded picture as the newest frame; whether it replaced one not taken."""
        self._sequence += 1
        captured = CapturedFrame(
            camera_id=self._camera_id, sequence=self._sequence, captured_at=time.time(),
            captured_monotonic=time.monotonic(), width=width, height=height, _frame=frame,
            pts_s=pts_s,
        )
        with self._lock:
            dropped = self._latest is not None and self._latest.sequence != self._taken
            self._latest = captured
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()
        return dropped

    def latest(self) -> CapturedFrame | None:
        """The newest frame, or ``None`` before the first one."""
        with self._lock:
            return self._latest

    def notify_next(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once, from the reader thread, when the next frame arrives.

        Lets a sampler that is due but has no new frame sleep until one exists instead of
        polling (one wake-up per sample, not one per decoded frame). ``None`` cancels.
        """
        with self._lock:
            self._waiter = callback

    def mark_taken(self, sequence: int) -> None:
        """The sampler took frame ``sequence`` (so its replacement is not counted as dropped)."""
        self._taken = sequence
