"""Evidence clips: the last seconds of a camera's compressed packets, and MP4s cut from them.

Nothing here decodes a picture. The reader's one read loop hands every packet it receives to
the camera's :class:`PacketRing` (a list append under a lock); when an alert starts the
service takes the packets around the alert (:meth:`PacketRing.take`) and :func:`write_mp4`
remuxes them into an MP4 with PyAV (no transcoding), in a worker thread.

What a "packet" is depends on the receiver. FFmpeg's demuxer gives each frame's data. The
built-in RTSP receiver assembles only the frames it decodes (keyframes, mostly), so for the
ring it hands over each frame's bytes *as they arrived* (interleaved RTP, one copy per frame,
:attr:`monitor.ingest.rtsp.AccessUnit.raw`) and the frames are assembled from them only when a
clip is written (:func:`depacketized`): keeping every frame then costs no work per RTP packet.

The ring (pure bookkeeping, unit-tested without a stream):

- holds whole GOPs, each from a keyframe on, so a clip can always start on a keyframe;
  packets before a connection's first keyframe are not kept;
- drops its oldest GOP as soon as the GOPs after it still cover ``keep_s`` (the pre-roll plus
  :data:`RING_SLACK_S`), so it holds about ``keep_s`` plus one GOP;
- never holds more than ``max_bytes`` (oldest GOPs go first; a single GOP larger than that is
  dropped whole and the ring waits for the next keyframe, counted in ``overflows``);
- shares a :class:`RingBudget` with every other camera's ring: while the total is over the
  budget, the ring that is growing gives up its oldest GOPs (never its newest);
- starts afresh on every connection (:meth:`PacketRing.reset`): timestamps and codec
  parameters are the connection's.

Memory is counted as payload bytes plus :data:`PACKET_OVERHEAD_BYTES` per packet (the Python
objects around it), the figure the ``monitor_clip_ring_bytes`` metric shows.

Muxing needs the codec parameters (H.264 SPS/PPS, H.265 VPS/SPS/PPS): they travel in-band in
the built-in receiver's keyframes and in FFmpeg's extradata for its demuxers (kept by
:meth:`PacketRing.reset`); :func:`write_mp4` puts them in front of the first keyframe and lets
FFmpeg's own raw-stream demuxer describe the stream (size, profile, ``avcC``). H.264 and H.265
are cut, in Annex B (RTSP) or length-prefixed (MP4/MKV files: packets and the ``avcC``/``hvcC``
record are turned into Annex B when the clip is written, off the read loop); other codecs
(MJPEG) keep no ring.
"""

from __future__ import annotations

import io
import itertools
import statistics
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from monitor.ingest.rtsp import H264, H265, NalSyntax, replay_units

PACKET_OVERHEAD_BYTES = 160
"""Bookkeeping per kept packet (its :class:`RingPacket` and list slot), counted in memory."""
RING_SLACK_S = 2.0
"""Kept beyond the pre-roll: an alert's time is its frame's capture time, which is up to a
model request (and a lazy read) older than the moment the clip is taken."""
CLIP_CODECS = {"h264": "h264", "hevc": "hevc"}
"""Codec (as FFmpeg names it) -> FFmpeg's raw-stream demuxer that describes it for muxing."""
SYNTAXES: dict[str, NalSyntax] = {"h264": H264, "hevc": H265}
"""Codec -> its RTP payload syntax (rings of the built-in receiver, :class:`RtpFraming`)."""
MUX_TIME_BASE = Fraction(1, 90000)
_START_CODES = (b"\x00\x00\x01", b"\x00\x00\x00\x01")
START_CODE = b"\x00\x00\x00\x01"


class ClipError(Exception):
    """A clip could not be cut or written (the reason, without secrets)."""


@dataclass(frozen=True, slots=True)
class RingPacket:
    """One compressed packet as the ring keeps it."""

    sequence: int
    """Counts packets of the ring across connections (a clip's packets are consecutive)."""
    data: bytes
    keyframe: bool
    pts_s: float
    """Presentation time, stream seconds (the connection's clock)."""
    dts_s: float | None
    """Decoding time when the receiver knows it (``None``: derived from the presentation
    times, see :func:`decoding_times`)."""
    arrived: float
    """Monotonic arrival time."""


@dataclass(frozen=True, slots=True)
class RtpFraming:
    """A ring of the built-in RTSP receiver keeps each frame as the interleaved bytes it came
    in (:attr:`monitor.ingest.rtsp.AccessUnit.raw`), not as a frame: this says how to read them
    back (:func:`depacketized`)."""

    channel: int
    """The interleaved channel of the video's RTP packets."""
    clock_rate: int
    """The RTP timestamps' clock (90 kHz for video)."""


@dataclass(frozen=True, slots=True)
class ClipPackets:
    """What :meth:`PacketRing.take` returns: packets of one connection, from a keyframe on."""

    codec: str
    extradata: bytes | None
    """Annex B parameter sets to put in front of the first keyframe (or ``None``)."""
    packets: tuple[RingPacket, ...]
    length_size: int | None = None
    """Packets are length-prefixed NAL units with this many length bytes (``None``: Annex B)."""
    rtp: RtpFraming | None = None
    """Packets are received RTP bytes, one frame each (``None``: each is a frame's data)."""

    @property
    def duration_s(self) -> float:
        """Stream time from the first packet to the last."""
        if not self.packets:
            return 0.0
        return self.packets[-1].pts_s - self.packets[0].pts_s


class RingBudget:
    """The memory cap all cameras' rings share (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the total clip memory must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes held by all rings together."""
        return self._used

    def change(self, delta: int) -> bool:
        """Count ``delta`` more (or fewer) bytes; ``True`` while over the cap."""
        with self._lock:
            self._used += delta
            return self._used > self.max_bytes


@dataclass(slots=True)
class _Gop:
    packets: list[RingPacket] = field(default_factory=list)
    bytes: int = 0


class PacketRing:
    """The last ``keep_s`` seconds (plus one GOP) of one camera's packets, bounded in bytes.

    :meth:`add` is called from the reader thread for every packet; :meth:`take` from anyone.
    """

    def __init__(self, camera_id: str, *, keep_s: float, max_bytes: int,
                 budget: RingBudget | None = None) -> None:
        if keep_s <= 0:
            raise ValueError(f"keep_s must be positive, got {keep_s}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.camera_id = camera_id
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self._budget = budget
        self._lock = threading.Lock()
        self._gops: deque[_Gop] = deque()
        self._bytes = 0
        self._sequence = 0
        self.codec: str | None = None
        """The connection's codec; ``None``: no ring for this connection (see :meth:`reset`)."""
        self.extradata: bytes | None = None
        self.length_size: int | None = None
        self.rtp: RtpFraming | None = None
        """The connection's packets are RTP as received (see :class:`RtpFraming`)."""
        self.overflows = 0
        """GOPs dropped whole because one GOP alone was over ``max_bytes``."""
        self.refused: str | None = None
        """Why the current connection keeps no packets (``None`` while it does)."""

    @property
    def used_bytes(self) -> int:
        """Memory held: payload plus :data:`PACKET_OVERHEAD_BYTES` per packet."""
        return self._bytes

    @property
    def packets(self) -> int:
        """Packets held."""
        return sum(len(gop.packets) for gop in self._gops)

    def reset(self, codec: str, extradata: bytes | None = None,
              rtp: RtpFraming | None = None) -> None:
        """A new connection: forget what the last one sent. A codec that cannot be cut
        (:data:`CLIP_CODECS`) keeps nothing, with the reason in :attr:`refused`. ``rtp``:
        the connection's packets will be received RTP bytes, framed so."""
        with self._lock:
            self._clear()
            self._sequence += 1  # a gap: a clip's continuation cannot cross connections
            self.length_size = None
            self.rtp = rtp
            if codec in CLIP_CODECS:
                self.codec, self.refused, self.extradata = codec, None, None
                if extradata and _annex_b(extradata):
                    self.extradata = extradata
                elif extradata and extradata[0] == 1:  # an avcC / hvcC record (a file)
                    try:
                        self.length_size = nal_length_size(codec, extradata)
                        self.extradata = parameter_sets(codec, extradata)
                    except (IndexError, ValueError):
                        self.codec = None
                        self.refused = f"the stream's {codec} parameters cannot be read"
            else:
                self.codec = None
                self.refused = f"clips need H.264 or H.265, the stream is {codec}"

    def add(self, data: bytes, keyframe: bool, pts_s: float, dts_s: float | None,
            arrived: float) -> None:
        """Keep one packet (called by the reader for every packet it receives)."""
        if self.codec is None:
            return
        with self._lock:
            if keyframe:
                if not self._gops and self.length_size is None and self.rtp is None \
                        and not _annex_b(data):
                    # Length-prefixed packets without the record that says how: nothing to
                    # turn them into Annex B with (FFmpeg's raw demuxer reads only that).
                    self.codec = None
                    self.refused = ("the stream's packets are neither Annex B nor "
                                    "described by an avcC/hvcC record")
                    return
                self._gops.append(_Gop())
            elif not self._gops:
                return  # nothing decodable before the first keyframe
            self._sequence += 1
            packet = RingPacket(self._sequence, data, keyframe, pts_s, dts_s, arrived)
            size = len(data) + PACKET_OVERHEAD_BYTES
            gop = self._gops[-1]
            gop.packets.append(packet)
            gop.bytes += size
            self._count(size)
            self._trim_time(pts_s)
            while self._bytes > self.max_bytes and self._gops:
                if len(self._gops) == 1:
                    self.overflows += 1  # one GOP over the cap: wait for the next keyframe
                self._drop_oldest()
            while self._over_budget() and len(self._gops) > 1:
                self._drop_oldest()

    def take(self, since: float, after: int = 0) -> ClipPackets | None:
        """The packets from the last keyframe at or before monotonic time ``since`` on
        (from the oldest keyframe if the ring does not reach back that far), only those with
        a sequence number above ``after`` (a clip's second half continues its first); ``None``
        when the ring holds nothing usable."""
        with self._lock:
            if self.codec is None or not self._gops:
                return None
            packets = [p for gop in self._gops for p in gop.packets]
            codec, extradata, length_size = self.codec, self.extradata, self.length_size
            rtp = self.rtp
        if after:
            kept = [p for p in packets if p.sequence > after]
            # A reconnect in between restarted the sequence of keyframes: the continuation
            # must follow on directly, or it is not the same stream.
            if kept and kept[0].sequence != after + 1:
                return None
            return ClipPackets(codec, extradata, tuple(kept), length_size, rtp) if kept \
                else None
        start = start_index(packets, since, stream_offset(packets))
        return ClipPackets(codec, extradata, tuple(packets[start:]), length_size, rtp)

    def _trim_time(self, newest_pts_s: float) -> None:
        # The oldest GOP goes once the ones after it still reach keep_s back.
        while len(self._gops) > 1 and \
                newest_pts_s - self._gops[1].packets[0].pts_s >= self.keep_s:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        gop = self._gops.popleft()
        self._count(-gop.bytes)

    def _clear(self) -> None:
        self._count(-self._bytes)
        self._gops.clear()

    def _count(self, delta: int) -> None:
        self._bytes += delta
        if self._budget is not None:
            self._budget.change(delta)

    def _over_budget(self) -> bool:
        return self._budget is not None and self._budget.used > self._budget.max_bytes


def _annex_b(data: bytes) -> bool:
    return data.startswith(_START_CODES)


def nal_length_size(codec: str, record: bytes) -> int:
    """Length bytes before each NAL unit, from an avcC (H.264) or hvcC (H.265) record."""
    return (record[4 if codec == "h264" else 21] & 0x03) + 1


def parameter_sets(codec: str, record: bytes) -> bytes:
    """The parameter sets of an avcC (H.264) or hvcC (H.265) record, as Annex B."""
    nals: list[bytes] = []

    def take(position: int, count: int) -> int:
        for _ in range(count):
            size = int.from_bytes(record[position:position + 2], "big")
            nal = record[position + 2:position + 2 + size]
            if len(nal) != size:
                raise ValueError("truncated parameter set")
            nals.append(nal)
            position += 2 + size
        return position

    if codec == "h264":  # SPS count at byte 5, then the PPS count after the SPSs
        position = take(6, record[5] & 0x1F)
        take(position + 1, record[position])
    else:  # arrays from byte 23: type, count, units
        position = 23
        for _ in range(record[22]):
            position = take(position + 3, int.from_bytes(record[position + 1:position + 3],
                                                         "big"))
    return b"".join(START_CODE + nal for nal in nals)


def annex_b(data: bytes, length_size: int) -> bytes:
    """Length-prefixed NAL units (MP4) as Annex B."""
    nals = []
    position = 0
    while position + length_size <= len(data):
        size = int.from_bytes(data[position:position + length_size], "big")
        position += length_size
        nals.append(data[position:position + size])
        position += size
    return b"".join(START_CODE + nal for nal in nals)


def stream_offset(packets: Sequence[RingPacket]) -> float:
    """Monotonic time minus stream time, from the packet that arrived least delayed (reads
    come in batches: the earliest arrival relative to its timestamp is the closest)."""
    return min(p.arrived - p.pts_s for p in packets)


def start_index(packets: Sequence[RingPacket], since: float, offset: float) -> int:
    """Index of the last keyframe presented at or before monotonic ``since`` (stream time =
    ``since - offset``), or of the first keyframe when none is that old."""
    target = since - offset
    chosen = 0
    for index, packet in enumerate(packets):
        if packet.pts_s > target:
            break
        if packet.keyframe:
            chosen = index
    return chosen


def decoding_times(pts: Sequence[float]) -> list[float]:
    """Decoding times for packets in decoding order that only carry presentation times.

    Without B-frames they are the presentation times; with them, the presentation times in
    sorted order, shifted back just enough that no packet is decoded after it is shown.
    """
    ordered = sorted(pts)
    shift = max((o - p for o, p in zip(ordered, pts, strict=True)), default=0.0)
    shift = max(shift, 0.0)
    return [o - shift for o in ordered]


def frame_interval_s(pts: Sequence[float]) -> float:
    """The typical time between frames (the last frame is shown this long)."""
    ordered = sorted(pts)
    steps = [b - a for a, b in itertools.pairwise(ordered) if b > a]
    return statistics.median(steps) if steps else 0.04


def depacketized(clip: ClipPackets) -> ClipPackets:
    """``clip`` with RTP as received (:attr:`ClipPackets.rtp`) turned into one Annex B packet
    per frame, from its first intact keyframe on, as a receiver decoding every frame would
    have made them (:func:`monitor.ingest.rtsp.replay_units`); other clips as they are.
    Presentation times follow the RTP timestamps from the first frame's time in the ring."""
    framing = clip.rtp
    if framing is None or not clip.packets:
        return clip
    syntax = SYNTAXES[clip.codec]
    chunks = clip.packets
    frames: list[RingPacket] = []
    first: tuple[float, int] | None = None  # (ring time, RTP time) of the first frame
    for index, unit in replay_units((p.data for p in chunks), channel=framing.channel,
                                    syntax=syntax):
        if first is None:
            first = (chunks[index].pts_s, unit.rtp_time)
        if unit.data is None or (not frames and not unit.keyframe):
            continue  # damaged (lost packets), or before the first keyframe
        chunk = chunks[index]
        frames.append(RingPacket(chunk.sequence, unit.data, unit.keyframe,
                                 first[0] + (unit.rtp_time - first[1]) / framing.clock_rate,
                                 None, chunk.arrived))
    return ClipPackets(clip.codec, clip.extradata, tuple(frames), None, None)


def write_mp4(clip: ClipPackets, path: Path) -> float:
    """Remux ``clip`` into an MP4 at ``path`` (written to a temporary name, then renamed);
    returns its duration in seconds. Blocking: call it from a worker thread.

    Raises:
        ClipError: nothing to write, the stream cannot be described, or the file cannot be
            written.
    """
    clip = depacketized(clip)
    packets = clip.packets
    if not packets or not packets[0].keyframe:
        raise ClipError("no packets from a keyframe on")
    temporary = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        duration = _mux(clip, temporary)
        temporary.replace(path)
    except ClipError:
        temporary.unlink(missing_ok=True)
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        temporary.unlink(missing_ok=True)
        raise ClipError(f"{path}: {type(exc).__name__}: {exc}") from exc
    return duration


def _mux(clip: ClipPackets, path: Path) -> float:
    packets = clip.packets
    pts = [p.pts_s for p in packets]
    known = [p.dts_s for p in packets if p.dts_s is not None]
    decode = known if len(known) == len(packets) else decoding_times(pts)
    base = min(decode[0], *pts)
    step = frame_interval_s(pts)
    ticks = 1 / MUX_TIME_BASE
    # FFmpeg's raw-stream demuxer reads the parameter sets and first keyframe and describes
    # the stream (size, profile, avcC) as its muxer needs it.
    size = clip.length_size
    payloads = [p.data if size is None else annex_b(p.data, size) for p in packets]
    header = (clip.extradata or b"") + payloads[0]
    with av.open(io.BytesIO(header), format=CLIP_CODECS[clip.codec]) as template_file:
        template = template_file.streams.video[0]
        if not template.codec_context.width:
            raise ClipError("the stream's parameter sets give no picture size")
        with av.open(str(path), "w", format="mp4") as output:
            stream: Any = output.add_stream_from_template(template)
            last_dts = -1
            for packet, payload, shown, decoded in zip(packets, payloads, pts, decode,
                                                       strict=True):
                out = av.Packet(payload)
                out.dts = last_dts = max(round((decoded - base) * ticks), last_dts + 1)
                out.pts = max(round((shown - base) * ticks), last_dts)
                out.duration = round(step * ticks)
                out.time_base = MUX_TIME_BASE
                out.is_keyframe = packet.keyframe
                out.stream = stream
                output.mux(out)
    return pts[-1] - pts[0] + step
