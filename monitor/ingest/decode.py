"""Pure decisions of the camera reader: frame rate and GOP, stall and picture timeouts, which
frames to decode, whether a source is camera video, reconnect ceilings, and the per-packet
decode policy that the reader's one read loop follows (:class:`DecodePolicy`).

Nothing here does I/O or reads a clock: times are passed in.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from monitor.backoff import full_jitter_s
from monitor.ingest.source import NOT_VIDEO, DecodeChoice, DecodeMode

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
VIDEO_CODECS = frozenset({"h264", "hevc", "mjpeg", "mpeg4", "mpeg2video", "mpeg1video", "h263",
                          "vp8", "vp9", "av1", "rawvideo"})
"""Codecs cameras, their recordings and V4L2 devices send. FFmpeg turns much else into
pictures (text as ANSI art, GIFs, subtitles), none of which is a camera."""
STILL_DEMUXERS = frozenset({"tty", "bin", "xbin", "idf", "adf", "image2", "image2pipe",
                            "gif", "apng"})
"""Demuxers of text-mode art and still images; ``*_pipe`` (single images) too."""


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


NOT_CAMERA_FOURCCS = frozenset({"ansi", "bint", "xbin", "idf", "tty", "gif", "png", "apng",
                                "bmp", "tiff", "webp", "qoi", "text", "srt", "ass", "subr"})
"""What OpenCV's FFmpeg backend reports as ``CAP_PROP_FOURCC`` (a container's codec tag, or
the first four letters of FFmpeg's codec name) for text-mode art, still images and subtitles.
OpenCV says nothing of the demuxer and a tag is the container's own spelling of a codec
(``avc1``, ``H264``, ``XVID`` ...), so its backend refuses these rather than allow-listing."""


def opencv_refusal(fourcc: int) -> str | None:
    """Why a source that OpenCV opened with this ``CAP_PROP_FOURCC`` is not a camera, as the
    status text; ``None`` when nothing says so (see :data:`NOT_CAMERA_FOURCCS`)."""
    tag = fourcc.to_bytes(4, "little", signed=False).decode("latin-1")
    name = tag.replace("\0", "").strip().lower()
    if name in NOT_CAMERA_FOURCCS:
        return f"{NOT_VIDEO}: {name} (text or a still image, as OpenCV reads it)"
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
    full jitter under :func:`backoff_ceiling_s` (:func:`monitor.backoff.full_jitter_s`, the
    process's one backoff rule), so that cameras that failed together do not retry in step."""
    return full_jitter_s(backoff_ceiling_s(attempt, outage_s), rng)


Step = Literal["decode", "skip", "overdue"]
"""What the read loop does with a packet: decode it, pass it over, or give the connection up
(packets keep coming but no picture has decoded within the picture timeout)."""


@dataclass(slots=True)
class DecodePolicy:
    """Per packet, which to decode: the read loop's decisions for one connection. Pure.

    Decoding starts at a keyframe (earlier frames would be garbage). At every keyframe the
    decode mode is chosen again (:func:`choose_decode`; switching to ``all`` is only safe
    there); with keyframes only, a keyframe that a newer one will replace before the
    sampler's next frame is due is passed over (:func:`keyframe_needed`), and the stream
    counts as healthy all the same. Packets that are not decoded are checked against the
    picture timeout (:func:`picture_timeout_s`).
    """

    setting: DecodeMode
    interval_s: float
    read_timeout_s: float
    meter: StreamMeter
    mode: DecodeChoice
    last_picture: float
    """Monotonic time of the last picture (or of a keyframe passed over on purpose)."""
    synced: bool = False
    """A keyframe has arrived on this connection."""

    @classmethod
    def start(cls, setting: DecodeMode, interval_s: float, read_timeout_s: float,
              meter: StreamMeter, now: float) -> DecodePolicy:
        """The policy of a new connection (the mode from the GOP measured so far)."""
        return cls(setting=setting, interval_s=interval_s, read_timeout_s=read_timeout_s,
                   meter=meter, mode=choose_decode(setting, interval_s, meter.gop_s),
                   last_picture=now)

    def packet(self, keyframe: bool, now: float, wanted_at: float) -> Step:
        """What to do with a packet (already counted by :attr:`meter`) that arrived at
        ``now``, the sampler's next frame being due at ``wanted_at``."""
        if keyframe:
            self.synced = True
            self.mode = choose_decode(self.setting, self.interval_s, self.meter.gop_s,
                                      self.meter.since_keyframe_s)
            if self.mode == "keyframes" and not keyframe_needed(now, wanted_at,
                                                                self.meter.gop_s):
                self.last_picture = now  # skipped on purpose: the stream is healthy
                return "skip"
            return "decode"
        if self.mode == "keyframes" or not self.synced:
            return "overdue" if self.since_picture_s(now) > self.picture_timeout_s() \
                else "skip"
        return "decode"

    def pictured(self, now: float) -> None:
        """A picture came out of the decoder."""
        self.last_picture = now

    def since_picture_s(self, now: float) -> float:
        """Seconds since the last picture."""
        return now - self.last_picture

    def picture_timeout_s(self) -> float:
        """How long packets may come without a picture (see :func:`picture_timeout_s`)."""
        return picture_timeout_s(self.meter.known_fps, self.meter.gop_s, self.read_timeout_s)
