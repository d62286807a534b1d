"""The receivers the reader's one read loop takes packets from, behind one small interface.

A receiver opens a stream (``with``), yields its video as :class:`StreamPacket` values (data,
stream time, keyframe flag) and decodes the ones the loop's :class:`~monitor.ingest.decode.
DecodePolicy` picks. Two implement it:

- :class:`BuiltinRtspReceiver`: the lean built-in RTSP/RTP receiver (:mod:`monitor.ingest.rtsp`)
  with PyAV's decoders for its Annex B frames; RTSP over TCP, H.264 and H.265.
- :class:`PyavReceiver`: FFmpeg's demuxer through PyAV: every other URL, file and device (and
  the RTSP cameras the built-in receiver hands over).

The OpenCV backend delivers decoded pictures, not packets: :func:`open_opencv` opens it and the
reader has a small loop of its own for it. The URL with credentials is built here, in the call
that opens the stream, and nowhere else.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import av.error
import cv2

from monitor.ingest.clips import RtpFraming
from monitor.ingest.decode import KEYFRAME_EARLY_S, opencv_refusal, video_refusal
from monitor.ingest.decoders import annex_b_decoder, keyframe_decoder
from monitor.ingest.rtsp import START_CODE, RtspSession
from monitor.ingest.source import NOT_VIDEO, DecodeChoice, NotVideoError, StreamError, StreamSource

_OPENCV_OPTIONS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """One video packet (or, from the built-in receiver, one frame) as the read loop sees it."""

    data: Any
    """What the receiver's :meth:`Receiver.decode` takes; ``None``: damaged, not decodable."""
    keyframe: bool
    meter_pts_s: float | None
    """Stream time in seconds for the frame-rate meter (``None``: the arrival time stands in)."""
    pts_s: float | None = None
    """Stream time of the pictures it decodes to (``None``: the picture's own)."""
    dts_s: float | None = None
    """Decoding time in seconds when the demuxer gives one (evidence clips' muxing)."""
    raw: bytes | None = None
    """What an evidence clip's ring keeps of it when that is not ``data``: the built-in
    receiver's interleaved RTP bytes (:attr:`~monitor.ingest.rtsp.AccessUnit.raw`)."""


class Receiver(Protocol):
    """An open stream that the reader's read loop consumes."""

    codec: str
    """The video codec, as FFmpeg names it."""
    idr_only: bool
    """Recognises only IDR keyframes: a stream that never sends one needs FFmpeg."""
    extradata: bytes | None
    """The codec parameters outside the packets (FFmpeg's extradata), once open."""
    rtp: RtpFraming | None
    """How :attr:`StreamPacket.raw` is framed (``None``: packets are kept as ``data``)."""

    def __enter__(self) -> Receiver:
        """Open the stream."""
    def __exit__(self, *_exc: object) -> None:
        """Close it."""
    def packets(self) -> Iterator[StreamPacket]:
        """The stream's packets until it ends (raises when the connection fails)."""
    def at_keyframe(self, mode: DecodeChoice, now: float, gop_s: float | None) -> None:
        """The decode mode chosen at a keyframe (the receiver may read more lazily)."""
    def decode(self, data: Any, mode: DecodeChoice) -> list[Any]:
        """The pictures ``data`` decodes to (``av.error.InvalidDataError`` when damaged)."""


class BuiltinRtspReceiver:
    """RTSP over TCP by :class:`~monitor.ingest.rtsp.RtspSession`, decoded by PyAV."""

    idr_only = True

    def __init__(self, source: StreamSource, read_timeout_s: float, mode: DecodeChoice,
                 *, keep_raw: bool = False) -> None:
        self._session = RtspSession(source.url, username=source.username,
                                    password=source.password,
                                    open_timeout_s=source.open_timeout_s,
                                    read_timeout_s=read_timeout_s,
                                    keyframes_only=mode == "keyframes", keep_raw=keep_raw)
        """``keep_raw``: every frame's bytes as received, for an evidence clip's ring, at
        one copy per frame; the depacketizer still assembles only the frames decoded."""
        self.extradata: bytes | None = None
        """The session description's parameter sets (Annex B), once open; in-band ones
        travel in front of keyframes as well."""
        self.rtp: RtpFraming | None = None
        self._decoders: dict[DecodeChoice, Any] = {}
        self.codec = "h264"
        self._clock = 90000.0

    def __enter__(self) -> BuiltinRtspReceiver:
        self._session.connect()
        track = self._session.track
        if track is not None:
            self.codec, self._clock = track.syntax.codec, float(track.clock_rate)
            self.extradata = b"".join(START_CODE + nal for nal in track.parameter_sets) or None
            if self._session.keep_raw:
                self.rtp = RtpFraming(channel=self._session.rtp_channel,
                                      clock_rate=track.clock_rate)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._session.close()

    def packets(self) -> Iterator[StreamPacket]:
        first_time: int | None = None
        for unit in self._session.access_units():
            if first_time is None:
                first_time = unit.rtp_time
            # Stream time from the connection's first frame (RTP timestamps start at a
            # random value), as FFmpeg gives it.
            pts_s = (unit.rtp_time - first_time) / self._clock
            yield StreamPacket(unit.data, unit.keyframe, pts_s, pts_s, raw=unit.raw)

    def at_keyframe(self, mode: DecodeChoice, now: float, gop_s: float | None) -> None:
        self._session.depacketizer.keyframes_only = mode == "keyframes"
        # Keyframes only: nothing is wanted before the next one, so the receiver may read
        # lazily until shortly before it is due.
        self._session.idle_until = now + gop_s - KEYFRAME_EARLY_S \
            if mode == "keyframes" and gop_s else 0.0

    def decode(self, data: Any, mode: DecodeChoice) -> list[Any]:
        decoder = self._decoders.get(mode)
        if decoder is None:
            decoder = self._decoders[mode] = annex_b_decoder(self.codec, mode == "keyframes")
        return list(decoder.decode(av.Packet(data)))


class PyavReceiver:
    """FFmpeg's demuxer and decoder through PyAV; local files are paced to real time."""

    idr_only = False

    def __init__(self, source: StreamSource, read_timeout_s: float, stop: threading.Event,
                 ) -> None:
        self._source = source
        self._read_timeout_s = read_timeout_s
        self._stop = stop
        self._container: Any = None
        self._stream: Any = None
        self._keyframe_decoder: Any = None
        self.codec = "?"
        self.extradata: bytes | None = None
        self.rtp: RtpFraming | None = None  # FFmpeg's packets are kept as they are
        self._offset_ticks = 0
        """A looped file's loops so far, in stream ticks (added to its pictures' times)."""

    def __enter__(self) -> PyavReceiver:
        self._container = open_pyav(self._source, self._read_timeout_s)
        try:
            self._stream = video_stream(self._container)
        except BaseException:
            self._container.close()
            raise
        context = self._stream.codec_context
        context.thread_count = 1
        self._keyframe_decoder = keyframe_decoder(context)
        self.codec = context.name
        self.extradata = context.extradata
        return self

    def __exit__(self, *_exc: object) -> None:
        self._container.close()

    def packets(self) -> Iterator[StreamPacket]:
        stream = self._stream
        time_base = float(stream.time_base) if stream.time_base else None
        # FFmpeg's multipart-JPEG demuxer numbers parts as if at 25 fps whatever the camera
        # sends: its timestamps say nothing, arrival times tell the real rate.
        stamped = self._container.format.name != "mpjpeg"
        pace = self._source.is_file
        first_pts: float | None = None
        anchor = time.monotonic()
        offset = 0.0
        """Stream time added to the file's own on each loop, so that time goes on."""
        while True:
            end_s = offset
            for packet in self._container.demux(stream):
                if not packet.size:  # the empty flush packet at the end carries no picture
                    continue
                pts = packet.pts
                pts_s = pts * time_base + offset \
                    if pts is not None and time_base is not None else None
                if pace and pts_s is not None:
                    # Local files play in real time, as a camera would deliver them.
                    if first_pts is None:
                        first_pts = pts_s
                    if self._stop.wait(max(0.0, anchor + pts_s - first_pts - time.monotonic())):
                        return
                    duration = packet.duration * time_base if packet.duration and time_base \
                        else 0.0
                    end_s = max(end_s, pts_s + duration)
                dts = packet.dts
                yield StreamPacket(packet, packet.is_keyframe, pts_s if stamped else None,
                                   dts_s=dts * time_base + offset
                                   if dts is not None and time_base else None)
            if not (pace and self._source.loop) or end_s <= offset or not self._rewind():
                return  # the end: the reader reopens a looped file it could not rewind
            offset = end_s
            if time_base:
                self._offset_ticks = round(offset / time_base)

    def _rewind(self) -> bool:
        """A looped file starts over: back to its first keyframe in the same container, with
        the same decoders (reopening costs a demuxer, decoder and scaler set-up each time, and
        their memory churn, a looped clip every few seconds). ``False`` when it cannot seek."""
        try:
            self._container.seek(0, backward=True, any_frame=False, stream=self._stream)
        except (av.error.FFmpegError, OSError, ValueError):
            return False
        # The stream's own decoder holds references to the end's frames; keyframes decode
        # on their own and need nothing flushed.
        self._stream.codec_context.flush_buffers()
        return True

    def at_keyframe(self, mode: DecodeChoice, now: float, gop_s: float | None) -> None:
        pass  # FFmpeg reads at its own pace

    def decode(self, data: Any, mode: DecodeChoice) -> list[Any]:
        decoder = self._keyframe_decoder if mode == "keyframes" else self._stream.codec_context
        pictures = list(decoder.decode(data))
        if self._offset_ticks:
            for picture in pictures:  # a looped file's time goes on (see packets())
                if picture.pts is not None:
                    picture.pts += self._offset_ticks
        return pictures


def open_pyav(source: StreamSource, read_timeout_s: float) -> Any:
    """Open ``source`` with FFmpeg (PyAV), its timeouts set for the protocol."""
    options: dict[str, str] = {}
    url = source.opening_url()
    fmt: str | None = None
    pyav_read_timeout: float | None = read_timeout_s
    microseconds = str(round(read_timeout_s * 1_000_000))
    if url.startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = source.transport
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
    elif source.is_device:
        fmt = "v4l2"
        url = url.removeprefix("v4l2://")
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    if source.is_file and not Path(url).is_file():
        raise FileNotFoundError(f"no such file: {url}")
    try:
        return av.open(url, format=fmt, options=options,
                       timeout=(source.open_timeout_s, pyav_read_timeout))
    except av.error.InvalidDataError as exc:
        # A file, or an HTTP answer, in which FFmpeg finds nothing it can read (timeouts
        # end in other errors there). Over RTSP this is also how a silent camera ends.
        if source.is_file:
            raise NotVideoError(f"{NOT_VIDEO}: the file cannot be decoded "
                                f"({exc.strerror})") from exc
        if url.startswith(("http://", "https://")):
            raise NotVideoError(f"{NOT_VIDEO}: what the server sends cannot be decoded "
                                f"({exc.strerror})") from exc
        raise


def video_stream(container: Any) -> Any:
    """The container's video stream, or :class:`NotVideoError` if it is no camera's."""
    video = container.streams.video
    refusal = video_refusal(container.format.name,
                            video[0].codec_context.name if video else None)
    if refusal is not None:
        raise NotVideoError(refusal)
    return video[0]


def open_opencv(source: StreamSource) -> Any:
    """Open ``source`` with OpenCV's FFmpeg (or V4L2) backend: a ``cv2.VideoCapture``."""
    url = source.opening_url()
    api = cv2.CAP_FFMPEG
    # Timeouts are FFmpeg-backend parameters; the V4L2 backend would refuse to open.
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(source.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(source.read_timeout_s * 1000)]
    if source.is_device:
        api, params = cv2.CAP_V4L2, []
        url = url.removeprefix("v4l2://")
    with _OPENCV_OPTIONS_LOCK:
        # OpenCV takes FFmpeg options only from this process-wide variable, read when a
        # capture opens: set it per open, under a lock.
        previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{source.transport}"
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
    refusal = opencv_refusal(int(capture.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF)
    if refusal is not None:
        capture.release()
        raise NotVideoError(refusal)
    return capture
