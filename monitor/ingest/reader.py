"""Camera ingest: one thread per camera owns its decoder and keeps only the newest frame.

Why a thread and not the event loop: FFmpeg's demuxing and decoding block. Each camera gets a
thread of its own (never the default executor, where a hung connect would starve everyone).
PyAV's ``timeout=(open, read)`` installs FFmpeg's interrupt callback, so a connect that hangs or
a stream that stops delivering ends in an exception and a reconnect, never a stuck thread.

What it costs, and why it is cheap (``bench/ingest.py`` measures it):

- **Keyframe-only decoding.** When the sampling interval is at least the stream's GOP duration,
  every sample can be a keyframe, so only keyframe packets reach the decoder (the others are
  dropped at the packet level, and the decoder's ``skip_frame = "NONKEY"`` guards the rest).
  A 1080p25 stream with a 2 s GOP then costs one decode in 50 instead of 50. ``decode = "auto"``
  measures the GOP from the packets' keyframe flags and timestamps and decides; ``"keyframes"``
  and ``"all"`` force it. When the GOP is shorter than the interval, the sampler says when it
  will want its next frame (:meth:`CameraReader.want_next_frame_at`) and keyframes that a newer
  one will replace before then are not decoded either (:func:`keyframe_needed`).
- **Nothing converted until sampled.** Frames stay in the decoder's format (``av.VideoFrame``)
  in a one-slot mailbox; the newest overwrites the previous one (counted). Colour conversion and
  scaling happen once, for the sampled frame, straight to the size the model gets
  (:meth:`CapturedFrame.to_bgr`), on an encoder thread.
- **One decoder thread per camera.** FFmpeg's own decoder threads would multiply threads by
  cores for no gain on one keyframe every few seconds (and frame threading delays output).

Stall detection comes from the stream's own frame rate (:func:`stall_timeout_s`): a stream
that delivers no packet for several frame intervals is reported offline (``check()``, polled by
the daemon) and, once the rate is known, reopened after that long (FFmpeg's read timeout of the
next connection is derived from it). Reconnects use capped exponential backoff with jitter and
log the delay; the cap is a few seconds in the first minute of an outage (short outages end
fast), and only a connection that stayed up (``STABLE_CONNECTION_S``) ends an outage (a source
that gives a frame and hangs up is not reopened every second). Credentials are injected into
the URL only for opening; every log line, status and error shows the redacted URL
(:func:`~monitor.ingest.urls.redact_url`).

Exceptions::

    Exception
    └── StreamError            (a connection ended; the reader reconnects)
        ├── StreamEndedError   (the stream reached its end)
        ├── StreamStalledError (packets arrive but no picture decodes)
        └── NotVideoError      (the source is no camera video: a text file, a still image)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import av
import av.error
import cv2
import numpy as np
import simplejpeg
from av.video.reformatter import VideoReformatter

from monitor.errors import exception_reason
from monitor.ingest.rtsp import (
    START_CODE,
    RtspError,
    RtspSession,
    RtspUnauthorizedError,
    RtspUnsupportedError,
)
from monitor.ingest.urls import REDACTED, redact_url, url_password
from monitor.pixels import BgrImage, GreyImage

logger = logging.getLogger(__name__)

Backend = Literal["pyav", "opencv"]
RtspClient = Literal["builtin", "ffmpeg"]
DecodeMode = Literal["auto", "keyframes", "all"]
DecodeChoice = Literal["keyframes", "all"]
StreamState = Literal["connecting", "online", "offline", "unauthorized", "stopped"]

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
BACKOFF_EARLY_CAP_S = 4.0
"""Longest reconnect delay in the first ``BACKOFF_EARLY_S`` of an outage: with the time a
connection takes, a camera that was gone up to a minute is read again within 5 s of answering."""
BACKOFF_EARLY_S = 60.0
STABLE_CONNECTION_S = 30.0
"""A connection that delivered frames and lasted this long ends the outage (the backoff starts
afresh when it breaks); a shorter one, however many frames it gave, does not: a source that
gives a frame and hangs up would otherwise be reopened about once a second for ever."""

STALL_MIN_S = 2.0
"""Shortest stall timeout: network jitter on a healthy high-fps stream stays well below it."""
STALL_FRAME_INTERVALS = 10
"""A stream is stalled after this many frame intervals without a packet."""
GOP_TOLERANCE = 0.05
"""``auto``: keyframes suffice when the interval is at least 95 % of the GOP (timestamp jitter)."""
KEYFRAME_SKIP_MARGIN = 1.25
"""A keyframe is skipped only if at least this many GOPs remain before the next sample."""
KEYFRAME_EARLY_S = 0.3
"""Built-in RTSP receiver, keyframes only: back to prompt reads this long before the next
keyframe is due (its arrival is measured up to one 200 ms read batch late)."""
PICTURE_GOP_FLOOR_S = 1.0
"""The first "GOP" of a connection can be one frame (many cameras, and the test server, send
a keyframe at once on PLAY and then keep their own schedule): a picture timeout computed from
it would reconnect a healthy camera. Measured under load at 96 cameras."""
METER_WINDOW = 64
"""Packets the frame-rate estimate is taken over."""
SHRINK_FILTER = "BILINEAR"
"""swscale filter for shrinking to the model's size. swscale widens its bilinear filter by
the shrink factor, so it does not alias: 1080p to the default budget comes out within 0.15
grey levels (mean) of the area filter, at 1.1 ms instead of 1.9 ms."""
VIDEO_CODECS = frozenset({"h264", "hevc", "mjpeg", "mpeg4", "mpeg2video", "mpeg1video", "h263",
                          "vp8", "vp9", "av1", "rawvideo"})
"""Codecs cameras, their recordings and V4L2 devices send. FFmpeg turns much else into
pictures (text as ANSI art, GIFs, subtitles), none of which is a camera."""
STILL_DEMUXERS = frozenset({"tty", "bin", "xbin", "idf", "adf", "image2", "image2pipe",
                            "gif", "apng"})
"""Demuxers of text-mode art and still images; ``*_pipe`` (single images) too."""
NOT_VIDEO = "not a video stream"
"""How the status and the log say that a source is no camera video (:class:`NotVideoError`)."""
OPENCV_RETRIEVE_FRACTION = 0.25
"""OpenCV backend: convert a grabbed frame at most every interval x this (it cannot defer)."""

SHARED_DECODER_KEYS = 16
"""Stream set-ups (H.264 parameter sets) whose idle keyframe decoders are kept for sharing."""
DECODER_WAIT_S = 0.25
"""Longest wait for a shared keyframe decoder before decoding with one of the camera's own.
Short: handing decoders from camera to camera is a chain of thread wake-ups, and on an
overloaded machine (load average 20-40 here) each wake-up waits its turn for a core; threads
decoding side by side do not. 8 cameras' keyframes at once on 2 cores take about 50 ms."""
PARAMETER_SETS_MAX_BYTES = 4096
"""How far into an Annex B keyframe its parameter sets are looked for."""
MMAP_THRESHOLD_BYTES = 256 * 1024
"""Blocks this large are mapped, not carved from a heap (see
:func:`keep_pictures_out_of_the_heap`)."""
_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (``malloc.h``)."""
_HEAP_TUNED = False
_REFORMATTERS = threading.local()
"""Per thread: one swscale context, reused from one sampled frame to the next (see
:func:`_reformatter`)."""
_OPENCV_OPTIONS_LOCK = threading.Lock()
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)\S*@")
"""``scheme://user:password@`` in any text (greedy up to the last ``@``: a decoded password
may itself contain ``@``)."""


# --- Pure decisions: frame rate, GOP, stall timeout, decode mode. --------------------------------


@dataclass(slots=True)
class StreamMeter:
    """Measures a stream's frame rate and GOP from its packets. Pure: times are passed in.

    ``pts_s`` is the packet's presentation time in seconds (``None`` when the stream gives
    none: the arrival time stands in), ``keyframe`` its keyframe flag, ``now`` a monotonic
    arrival time.
    """

    window: int = METER_WINDOW
    gop_frames: int | None = None
    """Packets from one keyframe to the next (the last complete GOP)."""
    gop_s: float | None = None
    """Duration of the last complete GOP, from timestamps."""
    last_packet_at: float | None = None
    _times: deque[float] = field(default_factory=deque)
    _since_key: int | None = None
    _key_time: float | None = None
    _last_time: float | None = None
    _previous_fps: float | None = None
    """The rate the previous connection ended with (see :attr:`known_fps`)."""

    def packet(self, pts_s: float | None, keyframe: bool, now: float) -> None:
        """Record one packet."""
        stamp = pts_s if pts_s is not None else now
        self.last_packet_at = now
        if self._last_time is not None and stamp <= self._last_time - 1.0:
            # Timestamps jumped backwards (a looping file, a camera reboot): start over.
            self._previous_fps = self.known_fps
            self._times.clear()
            self._key_time = None
            self._since_key = None
        self._last_time = stamp
        self._times.append(stamp)
        if len(self._times) > self.window:
            self._times.popleft()
        if keyframe:
            if self._key_time is not None and self._since_key is not None \
                    and stamp > self._key_time:
                self.gop_frames = self._since_key
                self.gop_s = stamp - self._key_time
            self._key_time = stamp
            self._since_key = 1
        elif self._since_key is not None:
            self._since_key += 1

    @property
    def fps(self) -> float | None:
        """Packets per second over the last :attr:`window` packets, or ``None`` yet."""
        if len(self._times) < 3:
            return None
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else None

    @property
    def known_fps(self) -> float | None:
        """This connection's rate once measured, until then the previous connection's.

        A reconnected camera is the same camera: its stall timeout must not fall back to the
        configured read timeout while the new connection collects its first packets.
        """
        fps = self.fps
        return fps if fps is not None else self._previous_fps

    @property
    def since_keyframe_s(self) -> float | None:
        """Stream time since the last keyframe (tells early that a GOP is long)."""
        if self._key_time is None or self._last_time is None:
            return None
        return self._last_time - self._key_time

    def reset_connection(self) -> None:
        """Forget per-connection state (timestamps restart), keep the measured fps and GOP."""
        self._previous_fps = self.known_fps
        self._times.clear()
        self._since_key = None
        self._key_time = None
        self._last_time = None
        self.last_packet_at = None


def stall_timeout_s(fps: float | None, fallback_s: float) -> float:
    """How long a stream may deliver no packet before it counts as stalled.

    ``STALL_FRAME_INTERVALS`` frame intervals of the stream's own rate, at least
    ``STALL_MIN_S``; ``fallback_s`` (the configured read timeout) until the rate is known. A
    1 fps camera thus gets 10 s and a 25 fps one 2 s: no fixed threshold that either restarts
    slow cameras in a loop or notices a dead fast one late.
    """
    if not fps or fps <= 0:
        return fallback_s
    return max(STALL_MIN_S, STALL_FRAME_INTERVALS / fps)


def picture_timeout_s(fps: float | None, gop_s: float | None, read_timeout_s: float) -> float:
    """How long packets may arrive without a decoded picture before the stream counts as
    stalled: two GOPs (of at least ``PICTURE_GOP_FLOOR_S``) past the stall timeout, or the
    configured read timeout while the GOP is not known yet."""
    stall = stall_timeout_s(fps, read_timeout_s)
    if gop_s is None:
        return max(stall, read_timeout_s)
    return stall + 2.0 * max(gop_s, PICTURE_GOP_FLOOR_S)


def choose_decode(mode: DecodeMode, interval_s: float, gop_s: float | None,
                  since_keyframe_s: float | None = None) -> DecodeChoice:
    """Which frames to decode: keyframes only when every sample can be a keyframe.

    ``auto`` decodes keyframes only while the GOP is unknown (cheap, and a keyframe is always a
    valid sample) and once it is known to be no longer than ``interval_s``; a GOP longer than
    the interval (or a keyframe overdue by more than the interval) means all frames.
    """
    if mode != "auto":
        return mode
    longest = max(gop_s or 0.0, since_keyframe_s or 0.0)
    if longest and interval_s < longest * (1.0 - GOP_TOLERANCE):
        return "all"
    return "keyframes"


def video_refusal(format_name: str, codec: str | None) -> str | None:
    """Why a source that FFmpeg opened with this demuxer (``format_name``, as FFmpeg names it:
    ``tty``, ``mov,mp4,m4a,3gp,3g2,mj2`` ...) and video codec (``None``: no video track) is
    not a camera, as the status text; ``None`` when it is camera video."""
    if codec is None:
        return f"{NOT_VIDEO}: {format_name} (no video track)"
    if format_name in STILL_DEMUXERS or format_name.endswith("_pipe"):
        return f"{NOT_VIDEO}: {format_name}/{codec} (text or a still image)"
    if codec not in VIDEO_CODECS:
        return f"{NOT_VIDEO}: {format_name}/{codec} (not a camera's video codec)"
    return None


def keyframe_needed(now: float, wanted_at: float, gop_s: float | None) -> bool:
    """Whether a keyframe arriving at ``now`` may be the one sampled at ``wanted_at``.

    Not when another keyframe will surely arrive before then: with a 1 s GOP and a 4 s
    interval three keyframes in four need no decoding at all.
    """
    if gop_s is None:
        return True
    return now + KEYFRAME_SKIP_MARGIN * gop_s >= wanted_at


def backoff_ceiling_s(attempt: int, outage_s: float) -> float:
    """The longest wait before reconnect attempt ``attempt`` (0: the first) of an outage that
    began ``outage_s`` seconds ago.

    Exponential in the attempt (1, 2, 4 ... s), but at most ``BACKOFF_EARLY_CAP_S`` while the
    outage is younger than ``BACKOFF_EARLY_S`` (a camera back from a reboot or a switch restart
    is read again within seconds, not after a 16 s wait), then a cap that doubles every
    ``BACKOFF_EARLY_S / 2`` up to ``BACKOFF_CAP_S``: a camera that stays dead is tried less
    and less often.
    """
    exponential = BACKOFF_BASE_S * 2.0 ** min(attempt, 10)
    late_s = max(0.0, outage_s - BACKOFF_EARLY_S)
    cap = BACKOFF_EARLY_CAP_S * 2.0 ** min(late_s / (BACKOFF_EARLY_S / 2.0), 10.0) \
        if outage_s >= BACKOFF_EARLY_S else BACKOFF_EARLY_CAP_S
    return min(exponential, cap, BACKOFF_CAP_S)


def backoff_delay(attempt: int, outage_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` of an outage ``outage_s`` old:
    50-100 % of :func:`backoff_ceiling_s` (jitter, so that cameras that failed together do
    not retry in step, while the lower half keeps a flapping camera from retrying in a loop)."""
    return backoff_ceiling_s(attempt, outage_s) * rng.uniform(0.5, 1.0)


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


# --- Values handed between threads. --------------------------------------------------------------


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

    def to_jpeg(self, width: int, height: int, quality: int) -> bytes:
        """The frame scaled to ``width`` x ``height`` as JPEG bytes. CPU work: off the loop.

        A 4:2:0 frame never becomes BGR: swscale scales it and stretches its video range
        (16-235) to JPEG's full range in one pass, and libjpeg-turbo compresses the Y, U and
        V planes as they are, skipping two colour conversions (about 3 ms instead of 5.3 ms for
        1080p to the default budget, the same picture within JPEG's own rounding; measured
        on ``bench/ingest.py``'s clip). Anything else goes through :meth:`to_bgr`.
        """
        frame = self._frame
        if not isinstance(frame, np.ndarray) and frame.format.name in {"yuv420p", "yuvj420p"} \
                and not width % 2 and not height % 2:
            small: Any = _reformatter().reformat(frame, width=width, height=height,
                                                 format="yuvj420p",
                                                 interpolation=SHRINK_FILTER, threads=1)
            sizes = ((width, height), (width // 2, height // 2), (width // 2, height // 2))
            # libjpeg-turbo reads the planes' rows where they are (no contiguous copies).
            luma, blue, red = (
                np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[:rows, :columns]
                for plane, (columns, rows) in zip(small.planes, sizes, strict=True))
            return bytes(simplejpeg.encode_jpeg_yuv_planes(luma, blue, red, quality=quality))
        ok, buffer = cv2.imencode(".jpg", self.to_bgr(width, height),
                                  [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a {width}x{height} frame")
        return bytes(buffer.tobytes())

    def grey_thumbnail(self, width: int, height: int) -> GreyImage:
        """A tiny grey version of the frame (for the change gate); reads only the luma plane."""
        frame = self._frame
        if isinstance(frame, np.ndarray):
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        elif frame.format.name in {"yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p",
                                   "yuv444p", "yuvj444p"}:
            plane = frame.planes[0]
            rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
            # Every other row and column: each thumbnail pixel still averages hundreds of
            # source pixels, at a quarter of the memory traffic.
            grey = rows[: self.height : 2, : self.width : 2]
        else:
            grey = frame.to_ndarray(format="gray")
        small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
        return np.asarray(small, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """What is known about a camera's stream; published when it changes."""

    camera_id: str
    url: str
    """Redacted: never holds a password."""
    state: StreamState = "connecting"
    online: bool = False
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    fps: float | None = None
    """Measured from the packets' timestamps (not the stream's declared rate)."""
    gop_frames: int | None = None
    gop_s: float | None = None
    decode: DecodeChoice | None = None
    stall_timeout_s: float | None = None
    backend: Backend = "pyav"
    last_error: str | None = None
    reconnects: int = 0
    frames_read: int = 0
    frames_dropped: int = 0

    @property
    def not_video(self) -> bool:
        """Whether the last connection was refused as not camera video (see
        :func:`video_refusal`): retrying will not help until the configuration changes."""
        return self.last_error is not None and self.last_error.startswith(NOT_VIDEO)

    def signature(self) -> tuple[object, ...]:
        """The fields whose change is worth publishing (not the per-frame counters)."""
        return (self.state, self.online, self.width, self.height, self.codec,
                round(self.fps, 1) if self.fps else None, self.gop_frames,
                round(self.gop_s, 2) if self.gop_s else None, self.decode, self.last_error,
                self.reconnects)


@dataclass(frozen=True, slots=True)
class StreamSource:
    """How to open one camera's stream."""

    camera_id: str
    url: str
    """May carry credentials: only the opening call sees it."""
    transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = False
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    """Read timeout until the stream's frame rate is known (then :func:`stall_timeout_s`)."""
    backend: Backend = "pyav"
    decode: DecodeMode = "auto"
    interval_s: float = 2.0
    """The camera's sampling interval (``decode = "auto"`` compares the GOP with it)."""
    rtsp_client: RtspClient = "builtin"
    """pyav backend, ``rtsp://`` over TCP: the lean built-in receiver (:mod:`monitor.ingest.rtsp`)
    or FFmpeg's demuxer. The built-in one hands over to FFmpeg by itself for streams it does
    not handle (not H.264 or H.265, redirects ...)."""

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***``."""
        return redact_url(self.url)

    @property
    def is_device(self) -> bool:
        """Whether the source is a V4L2 device (``/dev/video0`` or ``v4l2:///dev/video0``)."""
        return self.url.startswith(("/dev/", "v4l2://"))

    @property
    def is_file(self) -> bool:
        """Whether the source is a local file (paced to real time, optionally looped)."""
        return ("://" not in self.url or self.url.startswith("file://")) and not self.is_device


class StreamError(Exception):
    """A connection ended and will be reopened."""


class StreamEndedError(StreamError):
    """The stream reached its end (a live camera should never do that)."""


class StreamStalledError(StreamError):
    """Packets keep arriving but no picture has decoded for too long."""


class NotVideoError(StreamError):
    """The source opens but is not camera video: a misconfiguration, not an outage (it is
    retried with the usual backoff all the same, in case the file or URL gets fixed)."""



def _keyframe_decoder(context: Any) -> Any:
    """A decoder for keyframes only, faster than the stream's own.

    Each keyframe decodes on its own, so the in-loop deblocking filter can be skipped: its
    small blur is invisible after shrinking to the model's budget, no later frame references
    the result (no drift), and it saves ~15 % of the decode. A separate context keeps the
    stream's decoder exact for ``all`` mode. Falls back to the stream's context (with
    ``skip_frame``) where the codec cannot be set up this way. H.264 keyframe decoders are
    shared between cameras whose streams have the same extradata
    (:class:`KeyframeDecoderPool`).
    """
    extradata = bytes(context.extradata or b"")
    if context.name == "h264" and extradata:
        return _SharedDecoder(_AVCC_KEYFRAME_DECODERS, extradata)
    try:
        decoder = av.CodecContext.create(context.name, "r")
        decoder.extradata = context.extradata
        decoder.options = {"skip_loop_filter": "all", "flags2": "+fast"}
    except (av.error.FFmpegError, ValueError):
        context.skip_frame = "NONKEY"
        return context
    decoder.thread_count = 1
    decoder.skip_frame = "NONKEY"
    return decoder


def _annex_b_decoder(codec: str, keyframes_only: bool) -> Any:
    """An H.264 or H.265 decoder for the built-in receiver's Annex B frames.

    ``low_delay``: a picture comes out of the decoder with its own packet, not one frame
    later (with keyframes only, "one frame later" is one GOP later). Keyframes-only decoders
    also skip the loop filter (see :func:`_keyframe_decoder`).
    """
    if keyframes_only and codec == "h264":
        return _SharedDecoder(_ANNEX_B_KEYFRAME_DECODERS)
    decoder = av.CodecContext.create(codec, "r")
    options = {"flags": "+low_delay", "flags2": "+fast"}
    if keyframes_only:
        options["skip_loop_filter"] = "all"
    decoder.options = options
    decoder.thread_count = 1
    return decoder


def h264_parameter_sets(data: bytes) -> bytes:
    """The SPS and PPS NAL units (with their start codes) in front of an Annex B H.264 frame,
    as the built-in receiver puts them before every keyframe; ``b""`` when there are none.

    Start codes (3 or 4 bytes) cannot occur inside a NAL unit (emulation prevention), so the
    next one ends each unit.
    """
    end = 0
    while True:
        header = end + (4 if data.startswith(START_CODE, end) else
                        3 if data.startswith(START_CODE[1:], end) else len(data))
        if header >= len(data) or data[header] & 0x1F not in {7, 8}:
            return data[:end]
        following = data.find(START_CODE[1:], header)
        if following < 0:
            return data[:end]
        end = following - 1 if data[following - 1] == 0 else following


class KeyframeDecoderPool:
    """Idle H.264 keyframe decoders, shared by all cameras whose streams have the same set-up
    (``key``: the parameter sets), so that memory does not grow by a decoder per camera.

    A decoder's frame pool and tables are most of what a camera held (about 10 MB at 1080p:
    two picture buffers of 3.1 MB with their motion tables, the context's tables): H.264
    keeps the last picture as a reference and needs a second buffer for the next, whatever
    ``refs`` says. Keyframes-only decoding carries no state from one keyframe to the next
    (each is an IDR picture: it clears the references and, with ``low_delay``, comes out with
    its own packet), so any idle decoder of the same set-up can decode any camera's next
    keyframe. A camera then holds only its newest picture, in its mailbox.

    The most recently used idle decoder is taken first, so one decoder does nearly all the
    work and its frame pool holds the cameras' pictures; another is created only when all
    are busy, up to ``per_key`` (by default one per core: decoding is CPU work), and then a
    camera waits for one to come free: in turn, a decoder is handed straight to the camera
    that waited longest (no herd of threads woken for one decoder). Without that bound, the
    cameras' first keyframes (all sent at once on PLAY) made a decoder each: a peak of 9.5
    MB per camera at 48 cameras against 4.9 MB steady. A camera that waited ``wait_s`` (a
    machine so loaded that a few decoding threads get too small a share of the CPU) decodes
    with a decoder of its own, not kept. A decode that fails or gives no picture leaves
    nothing behind for the next camera: the decoder is dropped or flushed. At most ``keys`` set-ups
    are remembered (the least recently used are forgotten).
    """

    def __init__(self, create: Callable[[bytes], Any], *, keys: int = SHARED_DECODER_KEYS,
                 per_key: int | None = None, wait_s: float = DECODER_WAIT_S) -> None:
        self._create = create
        self._keys = keys
        self._per_key = per_key or os.cpu_count() or 1
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._idle: dict[bytes, list[Any]] = {}
        """Insertion order is recency of use (a used key is re-inserted at the end)."""
        self._busy: dict[bytes, int] = {}
        """Decoders in use per key (a decoder handed straight to a waiter stays counted)."""
        self._waiting: dict[bytes, deque[_Waiter]] = {}

    def decode(self, key: bytes, packet: Any) -> list[Any]:
        """Decode ``packet`` with an idle decoder for ``key``, a new one while fewer than
        ``per_key`` exist, else the next one to come free: cameras wait in turn, for at most
        ``wait_s``, then decode with a decoder of their own that is not kept."""
        decoder, shared = self._acquire(key)
        try:
            if decoder is None:
                decoder = self._create(key)
            pictures = list(decoder.decode(packet))
            if not pictures:
                decoder.flush_buffers()  # nothing pending may come out for another camera
        except BaseException:
            decoder = None  # a decoder that failed is not handed to another camera
            raise
        finally:
            if shared:
                self._release(key, decoder)
        return pictures

    def _acquire(self, key: bytes) -> tuple[Any, bool]:
        """A decoder for ``key`` (``None``: create one) and whether it belongs to the pool."""
        with self._lock:
            idle = self._idle.get(key)
            if idle and not self._waiting.get(key):
                self._busy[key] = self._busy.get(key, 0) + 1
                return idle.pop(), True
            if self._busy.get(key, 0) < self._per_key:
                self._busy[key] = self._busy.get(key, 0) + 1
                return None, True
            waiter = _Waiter()
            self._waiting.setdefault(key, deque()).append(waiter)
        waiter.ready.wait(self._wait_s)
        with self._lock:
            if waiter.ready.is_set():
                return waiter.decoder, True  # handed over (None: make a new one in its place)
            queue = self._waiting[key]
            queue.remove(waiter)
            if not queue:
                del self._waiting[key]
        return None, False  # all busy for too long (an overloaded machine): decode apart

    def _release(self, key: bytes, decoder: Any) -> None:
        """Hand ``decoder`` (``None``: it failed) to the first waiting camera, or keep it."""
        with self._lock:
            queue = self._waiting.get(key)
            if queue:
                waiter = queue.popleft()
                if not queue:
                    del self._waiting[key]
                waiter.decoder = decoder
                waiter.ready.set()
                return
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
            if decoder is not None:
                idle = self._idle.pop(key, [])
                self._idle[key] = idle
                idle.append(decoder)
                while len(self._idle) > self._keys:
                    del self._idle[next(iter(self._idle))]

    def idle(self) -> int:
        """How many idle decoders are kept (all keys)."""
        with self._lock:
            return sum(len(decoders) for decoders in self._idle.values())


@dataclass(slots=True)
class _Waiter:
    """A camera waiting for a shared decoder (handed over directly, in turn)."""

    ready: threading.Event = field(default_factory=threading.Event)
    decoder: Any = None


@dataclass(slots=True)
class _SharedDecoder:
    """A camera's keyframe decoder, decoding with a :class:`KeyframeDecoderPool`; ``key``
    fixed (the stream's extradata) or, when ``None``, read from each Annex B keyframe.

    A keyframe without parameter sets in front is not self-contained (it decodes with the
    last SPS and PPS its decoder saw, which in a shared one may be another camera's): it goes
    to a decoder of this camera's own.
    """

    pool: KeyframeDecoderPool
    key: bytes | None = None
    _own: Any = None

    def decode(self, packet: Any) -> list[Any]:
        key = self.key
        if key is None:
            key = h264_parameter_sets(bytes(memoryview(packet)[:PARAMETER_SETS_MAX_BYTES]))
        if key:
            return self.pool.decode(key, packet)
        if self._own is None:
            self._own = _new_keyframe_decoder(None)
        return list(self._own.decode(packet))


def keep_pictures_out_of_the_heap() -> None:
    """Have glibc serve allocations of 256 KiB and more with ``mmap`` from now on (once per
    process; a no-op where the C library has no ``mallopt``).

    glibc's default threshold rises to the size of the largest block freed (up to 32 MB), so
    after the first picture is released every 1080p plane (2 MB, 0.5 MB) is carved from the
    heap of the thread that asked, between the receivers' and encoders' short-lived blocks;
    freed space there is rarely returned. Measured with 16 cameras read by the built-in
    receiver: 8.5 MB per camera with the default, 5.1 MB with this, for a picture of 3.1 MB.
    Decoders' frame pools keep their buffers, so pictures are not mapped afresh each time.
    """
    global _HEAP_TUNED  # noqa: PLW0603 - one process-wide setting, made once
    if _HEAP_TUNED:
        return
    _HEAP_TUNED = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        logger.debug("mallopt is not available: the C library's allocator keeps its defaults")


def _new_keyframe_decoder(extradata: bytes | None) -> Any:
    """An H.264 keyframes-only decoder (see :func:`_keyframe_decoder`): Annex B input with
    in-band parameter sets when ``extradata`` is ``None``, else the stream's ``avcC``."""
    keep_pictures_out_of_the_heap()
    decoder = av.CodecContext.create("h264", "r")
    if extradata:
        decoder.extradata = extradata
    decoder.options = {"flags": "+low_delay", "flags2": "+fast", "skip_loop_filter": "all"}
    decoder.thread_count = 1
    decoder.skip_frame = "NONKEY"
    return decoder


_ANNEX_B_KEYFRAME_DECODERS = KeyframeDecoderPool(lambda _key: _new_keyframe_decoder(None))
"""The built-in receiver's H.264 keyframes (parameter sets in band, the key read from them)."""
_AVCC_KEYFRAME_DECODERS = KeyframeDecoderPool(_new_keyframe_decoder)
"""FFmpeg's demuxer's H.264 keyframes (the key: the stream's extradata, given to the decoder)."""


# --- The reader. ---------------------------------------------------------------------------------


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
        self._taken = 0
        self._delivered = False
        """The current connection delivered a frame (a long one that did ends the outage)."""
        self._wanted_at = 0.0
        self._waiter: Callable[[], None] | None = None
        self._meter = StreamMeter()
        self._builtin_rtsp = (
            source.backend == "pyav" and source.rtsp_client == "builtin"
            and source.transport == "tcp" and source.url.lower().startswith("rtsp://"))
        """Read with :mod:`monitor.ingest.rtsp` (until the camera turns out to need FFmpeg)."""
        self._status = StreamStatus(camera_id=source.camera_id, url=source.redacted_url,
                                    backend=source.backend)
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
        status = self._status
        last = self._meter.last_packet_at
        timeout = status.stall_timeout_s
        if status.online and last is not None and timeout is not None and now - last > timeout:
            self._set_status(
                state="offline", online=False,
                last_error=f"stalled: no data for {now - last:.1f} s (stall timeout "
                           f"{timeout:.1f} s at {status.fps or 0:.1f} fps)")
            logger.warning("camera %s: stream stalled (no data for %.1f s); waiting for the "
                           "read timeout to reconnect", self.source.camera_id, now - last)
        return self._status

    def _set_status(self, **changes: Any) -> None:
        with self._lock:
            previous = self._status
            self._status = replace(previous, **changes)
            current = self._status
        if self._on_status is not None and previous.signature() != current.signature():
            self._on_status(current)

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
                self._set_status(state=state, online=False, last_error=message,
                                 reconnects=self._status.reconnects + 1)
                logger.warning("camera %s: %s; reconnecting in %.1f s", camera, message, delay)
                self._stop.wait(delay)
        self._set_status(state="stopped", online=False, last_error="stopped")
        logger.info("camera %s: reader stopped", camera)

    def _describe(self, exc: BaseException, quiet_s: float | None = None) -> str:
        """An error text with the stream's password scrubbed from it. ``quiet_s``: seconds
        since the last video packet (or since connecting, when none came)."""
        text = exception_reason(exc)
        timeout = self._status.stall_timeout_s or self.source.read_timeout_s
        if isinstance(exc, av.error.HTTPUnauthorizedError):
            text = ("unauthorized: the camera refused the credentials (401); check the "
                    "camera's username and password")
        elif isinstance(exc, av.error.ExitError | av.error.InvalidDataError) and \
                not self._status.online and self._meter.last_packet_at is None:
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
        text = text.replace(self.source.url, self.source.redacted_url)
        password = url_password(self.source.url)
        if password:
            # FFmpeg may print the URL as given (percent-encoded) or decoded: scrub both,
            # then any user:password@ left in a URL whatever its encoding.
            for form in {password, unquote(password)}:
                text = text.replace(form, REDACTED)
        return _URL_USERINFO.sub(rf"\1{REDACTED}@", text)

    def _read_once(self) -> bool:
        """Open the stream and read it until it ends; ``True`` if it delivered frames."""
        if self.source.backend == "opencv":
            return self._read_opencv()
        if self._builtin_rtsp:
            return self._read_builtin()
        return self._read_pyav()

    # --- Built-in RTSP receiver (monitor.ingest.rtsp) + PyAV's decoder. ---

    def _read_builtin(self) -> bool:
        self._meter.reset_connection()
        read_timeout = stall_timeout_s(self._meter.known_fps, self.source.read_timeout_s)
        self._set_status(stall_timeout_s=read_timeout)
        mode: DecodeChoice = choose_decode(self.source.decode, self.source.interval_s,
                                           self._meter.gop_s)
        session = RtspSession(self.source.url, open_timeout_s=self.source.open_timeout_s,
                              read_timeout_s=read_timeout,
                              keyframes_only=mode == "keyframes")
        delivered = False
        decoders: dict[DecodeChoice, Any] = {}
        with session:
            track = session.track
            clock = float(track.clock_rate) if track is not None else 90000.0
            codec = track.syntax.codec if track is not None else "h264"
            synced = False
            last_picture = time.monotonic()
            first_time: int | None = None
            for unit in session.access_units():
                if self._stop.is_set():
                    return delivered
                now = time.monotonic()
                if first_time is None:
                    first_time = unit.rtp_time
                # Stream time from the connection's first frame (RTP timestamps start at a
                # random value), as FFmpeg gives it.
                pts_s = (unit.rtp_time - first_time) / clock
                self._meter.packet(pts_s, unit.keyframe, now)
                if unit.keyframe:
                    synced = True
                    mode = self._at_keyframe(mode)
                    session.depacketizer.keyframes_only = mode == "keyframes"
                    gop = self._meter.gop_s
                    # Keyframes only: nothing is wanted before the next one, so the receiver
                    # may read lazily until shortly before it is due.
                    session.idle_until = now + gop - KEYFRAME_EARLY_S \
                        if mode == "keyframes" and gop else 0.0
                    if mode == "keyframes" and not keyframe_needed(now, self._wanted_at,
                                                                   self._meter.gop_s):
                        last_picture = now  # skipped on purpose: the stream is healthy
                        continue
                elif mode == "keyframes" or not synced:
                    self._check_pictures(now - last_picture, synced=synced, builtin=True)
                    continue
                if unit.data is None:
                    continue  # damaged (lost packets): nothing worth decoding
                decoder = decoders.get(mode)
                if decoder is None:
                    decoder = decoders[mode] = _annex_b_decoder(codec, mode == "keyframes")
                try:
                    pictures = decoder.decode(av.Packet(unit.data))
                except av.error.InvalidDataError:
                    continue
                for picture in pictures:
                    last_picture = now
                    self._store(picture, picture.width, picture.height, pts_s)
                    delivered = True
                    if not self._status.online:
                        self._on_online(picture.width, picture.height, codec, mode)
        return delivered

    # --- PyAV. ---

    def _open_pyav(self) -> Any:
        options: dict[str, str] = {}
        url = self.source.url
        fmt: str | None = None
        # Once this camera's frame rate is known, a silent stream is given up after its own
        # stall timeout rather than a fixed one (FFmpeg's timeout is fixed per connection).
        read_timeout = stall_timeout_s(self._meter.known_fps, self.source.read_timeout_s)
        self._set_status(stall_timeout_s=read_timeout)
        pyav_read_timeout: float | None = read_timeout
        microseconds = str(round(read_timeout * 1_000_000))
        if url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.source.transport
            # FFmpeg's socket timeout ends a connection that goes silent. PyAV's read timeout
            # is needed as well: FFmpeg's RTSP demuxer swallows RTCP packets inside one read,
            # so a camera that sends only RTCP would hold that read (and this thread, deaf to
            # stop()) for ever. Its interrupt callback takes the GIL on every socket read,
            # which is why RTSP cameras go to the built-in receiver by default and only the
            # ones it cannot read come here.
            options["timeout"] = microseconds
        elif url.startswith(("http://", "https://")):
            options["rw_timeout"] = microseconds
            pyav_read_timeout = None
        elif self.source.is_device:
            fmt = "v4l2"
            url = url.removeprefix("v4l2://")
        if url.startswith("file://"):
            url = url.removeprefix("file://")
        if self.source.is_file and not Path(url).is_file():
            raise FileNotFoundError(f"no such file: {url}")
        try:
            return av.open(url, format=fmt, options=options,
                           timeout=(self.source.open_timeout_s, pyav_read_timeout))
        except av.error.InvalidDataError as exc:
            # A file, or an HTTP answer, in which FFmpeg finds nothing it can read (timeouts
            # end in other errors there). Over RTSP this is also how a silent camera ends.
            if self.source.is_file:
                raise NotVideoError(f"{NOT_VIDEO}: the file cannot be decoded "
                                    f"({exc.strerror})") from exc
            if url.startswith(("http://", "https://")):
                raise NotVideoError(f"{NOT_VIDEO}: what the server sends cannot be decoded "
                                    f"({exc.strerror})") from exc
            raise

    def _read_pyav(self) -> bool:
        self._meter.reset_connection()
        container = self._open_pyav()
        delivered = False
        try:
            stream = self._video_stream(container)
            context = stream.codec_context
            context.thread_count = 1
            keyframe_decoder = _keyframe_decoder(context)
            time_base = float(stream.time_base) if stream.time_base else None
            # FFmpeg's multipart-JPEG demuxer numbers parts as if at 25 fps whatever the
            # camera sends: its timestamps say nothing, arrival times tell the real rate.
            stamped = container.format.name != "mpjpeg"
            codec = context.name
            pace = self.source.is_file
            first_pts: float | None = None
            anchor = time.monotonic()
            mode: DecodeChoice = choose_decode(self.source.decode, self.source.interval_s,
                                               self._meter.gop_s)
            synced = False  # decoding starts at a keyframe: earlier frames would be garbage
            last_picture = time.monotonic()
            for packet in self._packets(container, stream):
                if self._stop.is_set():
                    return delivered
                now = time.monotonic()
                pts = packet.pts
                pts_s = pts * time_base if pts is not None and time_base is not None else None
                keyframe = packet.is_keyframe
                self._meter.packet(pts_s if stamped else None, keyframe, now)
                if pace and pts_s is not None:
                    # Local files play in real time, as a camera would deliver them.
                    if first_pts is None:
                        first_pts = pts_s
                    if self._stop.wait(max(0.0, anchor + pts_s - first_pts - time.monotonic())):
                        return delivered
                if keyframe:
                    synced = True
                    mode = self._at_keyframe(mode)
                    if mode == "keyframes" and not keyframe_needed(now, self._wanted_at,
                                                                   self._meter.gop_s):
                        last_picture = now  # skipped on purpose: the stream is healthy
                        continue
                elif mode == "keyframes" or not synced:
                    self._check_pictures(now - last_picture, synced=synced, builtin=False)
                    continue
                decoder = keyframe_decoder if mode == "keyframes" else context
                try:
                    pictures = decoder.decode(packet)
                except av.error.InvalidDataError:
                    # One damaged packet (UDP loss) is no reason to reconnect; a stream that
                    # keeps failing trips the picture timeout above.
                    continue
                for picture in pictures:
                    last_picture = now
                    self._publish(picture)
                    delivered = True
                    if not self._status.online:  # first picture, or back after a stall
                        self._on_online(picture.width, picture.height, codec, mode)
        finally:
            container.close()
        return delivered

    def _at_keyframe(self, mode: DecodeChoice) -> DecodeChoice:
        """At a keyframe: pick the decode mode again (switching to ``all`` is only safe
        here) and publish the measurements."""
        wanted = choose_decode(self.source.decode, self.source.interval_s,
                               self._meter.gop_s, self._meter.since_keyframe_s)
        if wanted != mode:
            logger.info("camera %s: decoding %s (GOP %s s, interval %g s)",
                        self.source.camera_id,
                        "keyframes only" if wanted == "keyframes" else "all frames",
                        f"{self._meter.gop_s:.2f}" if self._meter.gop_s else "?",
                        self.source.interval_s)
        self._refresh_measurements(wanted)
        return wanted

    @staticmethod
    def _video_stream(container: Any) -> Any:
        """The container's video stream, or :class:`NotVideoError` if it is no camera's."""
        video = container.streams.video
        refusal = video_refusal(container.format.name,
                                video[0].codec_context.name if video else None)
        if refusal is not None:
            raise NotVideoError(refusal)
        return video[0]

    @staticmethod
    def _packets(container: Any, stream: Any) -> Iterator[Any]:
        for packet in container.demux(stream):
            if packet.size:  # the empty flush packet at the end carries nothing to decode
                yield packet

    def _check_pictures(self, since_picture_s: float, *, synced: bool, builtin: bool) -> None:
        """Raise when packets keep coming but no picture has decoded for too long."""
        if since_picture_s <= self._picture_timeout():
            return
        if builtin and not synced:
            # Video flows but never a random-access frame (H.264: IDR): a camera whose
            # keyframes are recovery points, which FFmpeg's parser recognises and the built-in
            # receiver does not.
            raise RtspUnsupportedError(f"no IDR keyframe in {since_picture_s:.1f} s of video")
        raise StreamStalledError(f"no picture decoded for {since_picture_s:.1f} s although data "
                                 f"arrives (no keyframe?)")

    def _picture_timeout(self) -> float:
        return picture_timeout_s(self._meter.known_fps, self._meter.gop_s,
                                 self.source.read_timeout_s)

    def _refresh_measurements(self, mode: DecodeChoice) -> None:
        fps = self._meter.fps
        status = self._status
        changes: dict[str, Any] = {}
        if mode != status.decode:
            changes["decode"] = mode
        if self._meter.gop_frames != status.gop_frames:
            changes["gop_frames"] = self._meter.gop_frames
        if self._meter.gop_s and (status.gop_s is None
                                  or abs(self._meter.gop_s - status.gop_s) > 0.05):
            changes["gop_s"] = self._meter.gop_s
        if fps and (status.fps is None or abs(fps - status.fps) > 0.2):
            changes["fps"] = fps
        # Whatever the connection started with (the read timeout, before any rate was
        # known), the stall timeout follows the rate the status shows.
        stall = stall_timeout_s(changes.get("fps", status.fps), self.source.read_timeout_s)
        if stall != status.stall_timeout_s:
            changes["stall_timeout_s"] = stall
        if changes:
            self._set_status(**changes)
        if status.fps is None and "fps" in changes:
            logger.info("camera %s: %.1f fps measured (stall timeout %.1f s)",
                        self.source.camera_id, changes["fps"], stall)

    def _on_online(self, width: int, height: int, codec: str, mode: DecodeChoice) -> None:
        fps = self._meter.known_fps or self._status.fps
        # The first picture often comes before the rate is measured (three packets): the
        # line then says so, and another one gives the rate once it is known.
        rate = f"{fps:.1f} fps" if fps else "frame rate not measured yet"
        logger.info("camera %s: online (%dx%d %s, %s, decoding %s) at %s",
                    self.source.camera_id, width, height, codec, rate, mode,
                    self.source.redacted_url)
        self._set_status(state="online", online=True, last_error=None, width=width,
                         height=height, codec=codec, decode=mode, fps=fps)

    # --- OpenCV. ---

    def _open_opencv(self) -> Any:
        url = self.source.url
        api = cv2.CAP_FFMPEG
        # Timeouts are FFmpeg-backend parameters; the V4L2 backend would refuse to open.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.source.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.source.read_timeout_s * 1000)]
        if self.source.is_device:
            api, params = cv2.CAP_V4L2, []
            url = url.removeprefix("v4l2://")
        with _OPENCV_OPTIONS_LOCK:
            # OpenCV takes FFmpeg options only from this process-wide variable, read when a
            # capture opens: set it per open, under a lock.
            previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = \
                f"rtsp_transport;{self.source.transport}"
            try:
                capture = cv2.VideoCapture(url, api, params)
            finally:
                if previous is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                else:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous
        if not capture.isOpened():
            capture.release()
            raise StreamError("cannot open the stream (OpenCV gave no reason; check the URL "
                              "and credentials)")
        return capture

    def _read_opencv(self) -> bool:
        self._meter.reset_connection()
        capture = self._open_opencv()
        delivered = False
        declared_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        # OpenCV decodes every frame (no keyframe-only mode) and converts in retrieve(): only
        # retrieve a few frames per interval, so conversion is not paid 25 times a second.
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
                position_ms = float(capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
                self._publish_array(np.asarray(image, dtype=np.uint8), position_ms / 1000.0)
                delivered = True
                if not self._status.online:
                    height, width = image.shape[:2]
                    self._on_online(width, height, "?", "all")
                self._refresh_measurements("all")
        finally:
            capture.release()
        return delivered

    # --- Mailbox. ---

    def _publish(self, frame: Any) -> None:
        pts = frame.time
        self._store(frame, frame.width, frame.height, float(pts) if pts is not None else None)

    def _publish_array(self, image: BgrImage, pts_s: float | None) -> None:
        self._store(image, image.shape[1], image.shape[0], pts_s)

    def _store(self, frame: Any, width: int, height: int, pts_s: float | None) -> None:
        self._sequence += 1
        captured = CapturedFrame(
            camera_id=self.source.camera_id, sequence=self._sequence, captured_at=time.time(),
            captured_monotonic=time.monotonic(), width=width, height=height, _frame=frame,
            pts_s=pts_s,
        )
        self._delivered = True
        with self._lock:
            dropped = self._latest is not None and self._latest.sequence != self._taken
            self._latest = captured
            # Counters are only read for status; updated under the lock the status uses.
            self._status = replace(
                self._status, frames_read=self._status.frames_read + 1,
                frames_dropped=self._status.frames_dropped + int(dropped),
            )
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()

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
