"""A lean RTSP/RTP receiver for H.264 and H.265 over TCP: the cheap path from a camera to the
decoder.

Why not FFmpeg's RTSP demuxer for the common case: it reads RTSP-over-TCP with three ``recv``
calls per RTP packet (the ``$`` header, the RTP header, the payload) and builds a packet for
every frame, about 1,000 system calls and 25 packet objects a second for a 4 Mbit/s camera.
With keyframe-only decoding that receive path became the largest cost of a camera
(``bench/ingest.py``). This receiver asks the kernel to hand data over in batches
(``SO_RCVLOWAT`` with ``SO_RCVTIMEO``: a ``recv`` returns once 128 KiB have arrived or
200 ms have passed), walks the interleaved RTP packets in place, and copies only the NAL
units of the frames that will be decoded: in keyframe mode the other frames' slices are never
copied.

Scope, on purpose: RTSP 1.0 over TCP (interleaved), one H.264 or H.265 video track, Basic and
Digest authentication (MD5, ``qop=auth``), keep-alive requests. Anything else (UDP,
``rtsps://``, MJPEG, redirects) raises :class:`RtspUnsupportedError` and the caller falls back
to FFmpeg, which reads every protocol FFmpeg knows.

Exceptions::

    Exception
    └── RtspError                  (the connection failed or ended)
        ├── RtspUnauthorizedError  (the camera refused the credentials)
        ├── RtspTimeoutError       (no answer or no data in time)
        └── RtspUnsupportedError   (a camera this receiver does not handle: use FFmpeg)
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from pydantic import SecretStr

USER_AGENT = "monitor"
RECV_BATCH_BYTES = 128 * 1024
"""A ``recv`` returns once this much has arrived (``SO_RCVLOWAT``) ..."""
RECV_BATCH_WAIT_S = 0.2
"""... or after this long with whatever there is (``SO_RCVTIMEO``). Each wake-up costs far
more than the bytes it copies (measured: a 4 Mbit/s camera read every 50 ms costs 2.5 times
what it costs read every 200 ms), and 200 ms is nothing next to a 2 s sampling interval."""
IDLE_WAIT_MAX_S = 1.0
"""Longest lazy read while no frame is wanted (see :attr:`RtspSession.idle_until`): a 4 Mbit/s
camera then queues about 500 KB in the kernel, well inside TCP's auto-tuned receive buffer."""
BUFFER_BYTES = 512 * 1024
"""Receive buffer per camera: the largest interleaved packet (64 KiB) fits several times."""
MAX_FRAME_BYTES = 16 << 20
"""A frame larger than this is damaged or hostile: the stream is given up."""
MAX_HEADER_BYTES = 64 * 1024
KEEPALIVE_FRACTION = 0.5
"""Keep-alive requests go out after this fraction of the session timeout."""
START_CODE = b"\x00\x00\x00\x01"
_SEQUENCE_AND_TIME = struct.Struct(">HI")
"""An RTP header's sequence number and timestamp (from its third byte)."""



@dataclass(frozen=True, slots=True)
class NalSyntax:
    """What differs between H.264 (RFC 6184) and H.265 (RFC 7798) RTP payloads."""

    codec: str
    """The decoder's name in FFmpeg."""
    header_bytes: int
    """Size of a NAL unit header (and of an aggregation/fragmentation payload header)."""
    aggregation: int
    """NAL type of an aggregation packet (STAP-A / AP)."""
    fragmentation: int
    """NAL type of a fragmentation unit (FU-A / FU)."""
    keyframe_types: frozenset[int]
    """Random-access pictures: decodable on their own (IDR; IDR, CRA, BLA)."""
    slice_types: frozenset[int]
    parameter_types: tuple[int, ...]
    """In the order they go in front of a keyframe (SPS, PPS; VPS, SPS, PPS)."""
    other_types: frozenset[int]
    """Non-picture NAL units that the full decoder gets (SEI, delimiters)."""

    def nal_type(self, first_byte: int) -> int:
        """The NAL unit type from the first header byte."""
        return first_byte & 0x1F if self.header_bytes == 1 else (first_byte >> 1) & 0x3F


H264 = NalSyntax(codec="h264", header_bytes=1, aggregation=24, fragmentation=28,
                 keyframe_types=frozenset({5}), slice_types=frozenset({1, 2, 3, 4, 5}),
                 parameter_types=(7, 8), other_types=frozenset({6, 9, 10, 11, 12, 13}))
H265 = NalSyntax(codec="hevc", header_bytes=2, aggregation=48, fragmentation=49,
                 keyframe_types=frozenset(range(16, 22)), slice_types=frozenset(range(22)),
                 parameter_types=(32, 33, 34), other_types=frozenset(range(35, 41)))
SYNTAXES = {"H264": H264, "H265": H265}
"""By the encoding name of an SDP ``rtpmap``."""


class RtspError(Exception):
    """The RTSP connection failed or ended."""


class RtspUnauthorizedError(RtspError):
    """The camera answered 401: wrong or missing credentials."""


class RtspTimeoutError(RtspError, TimeoutError):
    """The camera did not answer, or sent nothing, within the timeout."""


class RtspUnsupportedError(RtspError):
    """The stream needs something this receiver does not do (the caller uses FFmpeg)."""


# --- Pure parts: URLs, authentication, SDP. ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtspUrl:
    """An ``rtsp://`` URL split into what the connection needs; credentials kept apart."""

    host: str
    port: int
    request_url: str
    """The URL without user information (requests never carry the password)."""
    username: str | None
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> RtspUrl:
        """Split ``url``; ``RtspUnsupportedError`` for any scheme but ``rtsp``."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "rtsp":
            raise RtspUnsupportedError(f"scheme {parts.scheme!r} is not plain rtsp")
        if not parts.hostname:
            raise RtspError("the URL names no host")
        host = parts.hostname
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return cls(host=host, port=parts.port or 554,
                   request_url=urlunsplit(parts._replace(netloc=netloc)),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None)


_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenges(values: list[str]) -> dict[str, dict[str, str]]:
    """``WWW-Authenticate`` header values as ``{scheme: {param: value}}`` (scheme lower case;
    of several Digest challenges, the MD5 one)."""
    challenges: dict[str, dict[str, str]] = {}
    for value in values:
        scheme, _, rest = value.strip().partition(" ")
        params = {match.group(1).lower(): match.group(2) if match.group(2) is not None
                  else match.group(3) for match in _AUTH_PARAM.finditer(rest)}
        scheme = scheme.lower()
        known = challenges.get(scheme)
        # Cameras may offer Digest with SHA-256 and with MD5: keep the MD5 one, spoken here.
        if known is None or (known.get("algorithm", "MD5").upper().startswith("SHA")
                             and not params.get("algorithm", "MD5").upper().startswith("SHA")):
            challenges[scheme] = params
    return challenges


def _md5(text: str) -> str:
    # MD5 is what RTSP Digest authentication (RFC 2617) specifies; not used for security here.
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_response(*, username: str, password: str, method: str, uri: str,
                    challenge: dict[str, str], nonce_count: int, cnonce: str) -> str:
    """The ``Authorization: Digest ...`` value answering ``challenge`` (RFC 2617, MD5)."""
    realm = challenge.get("realm", "")
    nonce = challenge.get("nonce", "")
    algorithm = challenge.get("algorithm", "MD5")
    if algorithm.upper() not in {"MD5", "MD5-SESS"}:
        raise RtspUnsupportedError(f"digest algorithm {algorithm} is not supported")
    ha1 = _md5(f"{username}:{realm}:{password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in qops:
        count = f"{nonce_count:08x}"
        response = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    if "algorithm" in challenge:
        fields.append(f"algorithm={algorithm}")
    return "Digest " + ", ".join(fields)


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """The H.264 or H.265 track of a session description."""

    control_url: str
    payload_type: int
    clock_rate: int
    parameter_sets: tuple[bytes, ...]
    """From ``sprop-parameter-sets`` (H.264) or ``sprop-vps/sps/pps`` (H.265): raw NAL
    units, without start codes."""
    syntax: NalSyntax = H264


def parse_sdp(sdp: str, base_url: str) -> VideoTrack:
    """The first video track of ``sdp``; ``RtspUnsupportedError`` unless it is H.264 or
    H.265 (without decoding-order numbers, which interleaved packetization needs)."""
    sections: list[list[str]] = [[]]
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    for section in sections[1:]:
        media = section[0][2:].split()
        if not media or media[0] != "video":
            continue
        payload_types = media[3:]
        rtpmap: dict[str, str] = {}
        fmtp: dict[str, str] = {}
        control = ""
        for line in section[1:]:
            if line.startswith("a=rtpmap:"):
                pt, _, encoding = line[9:].partition(" ")
                rtpmap[pt] = encoding.strip()
            elif line.startswith("a=fmtp:"):
                pt, _, params = line[7:].partition(" ")
                fmtp[pt] = params
            elif line.startswith("a=control:"):
                control = line[10:].strip()
        for pt in payload_types:
            encoding = rtpmap.get(pt, "")
            name, _, rate = encoding.partition("/")
            syntax = SYNTAXES.get(name.upper())
            if syntax is None:
                continue
            sets: list[bytes] = []
            for param in fmtp.get(pt, "").split(";"):
                key, _, value = param.strip().partition("=")
                key = key.lower()
                if key == "sprop-max-don-diff" and value.strip() not in {"", "0"}:
                    raise RtspUnsupportedError("H.265 with decoding-order numbers "
                                               "(sprop-max-don-diff) is not supported")
                if key in {"sprop-parameter-sets", "sprop-vps", "sprop-sps", "sprop-pps"}:
                    for item in value.split(","):
                        try:
                            sets.append(base64.b64decode(item.strip(), validate=False))
                        except ValueError:
                            continue
            clock = int(rate.split("/")[0]) if rate.split("/")[0].isdigit() else 90000
            url = base_url if control in {"", "*"} else (
                control if "://" in control else
                urljoin(base_url if base_url.endswith("/") else base_url + "/", control))
            return VideoTrack(control_url=url, payload_type=int(pt), clock_rate=clock,
                              parameter_sets=tuple(s for s in sets if s), syntax=syntax)
        names = ", ".join(rtpmap.get(pt, pt) for pt in payload_types)
        raise RtspUnsupportedError(f"the video track is not H.264 or H.265 ({names})")
    raise RtspUnsupportedError("the session description has no video track")


# --- Pure parts: RTP depacketizing into access units. ------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One frame of the stream; ``data`` (Annex B) only for the frames that were wanted."""

    rtp_time: int
    """Unwrapped RTP timestamp (the track's clock rate)."""
    keyframe: bool
    data: bytes | None
    raw: bytes | None = None
    """The interleaved bytes received since the previous unit, as they came (``$``-framed RTP
    and RTCP packets, the odd RTSP message), when the session keeps them
    (:attr:`RtspSession.keep_raw`): an evidence clip's ring stores them undecoded and
    :func:`replay_units` turns them into frames only when a clip is cut."""


@dataclass(slots=True)
class Depacketizer:
    """Turns H.264 (RFC 6184) or H.265 (RFC 7798) RTP payloads into access units, copying
    only wanted frames.

    ``keyframes_only``: slices of other frames are skipped without a copy; their frames are
    still reported (with ``data = None``) so the frame rate and GOP can be measured.
    Parameter sets are remembered and put in front of every keyframe, so each keyframe decodes
    on its own. A frame that lost packets (a sequence gap) is reported without data: decoding
    half a keyframe gives a grey smear, not a picture.
    """

    keyframes_only: bool = True
    syntax: NalSyntax = H264
    parameter_sets: dict[int, bytes] = field(default_factory=dict)
    lost_packets: int = 0
    damaged_frames: int = 0
    _time: int | None = None
    """RTP timestamp of the frame being assembled (or of the last one)."""
    _open: bool = False
    """A frame is being assembled (its marker bit has not come yet)."""
    _unwrapped: int = 0
    _nals: list[bytes] = field(default_factory=list)
    _size: int = 0
    _keyframe: bool = False
    _damaged: bool = False
    _skipping_fragment: bool = False
    _fragment: list[bytes] | None = None
    _sequence: int | None = None

    def set_parameter_sets(self, sets: tuple[bytes, ...]) -> None:
        """Parameter sets from the session description (in-band ones replace them)."""
        for nal in sets:
            if nal and self.syntax.nal_type(nal[0]) in self.syntax.parameter_types:
                self.parameter_sets[self.syntax.nal_type(nal[0])] = nal

    def packet(self, buffer: bytes | bytearray | memoryview, start: int, length: int,
               ) -> AccessUnit | None:
        """Feed one RTP packet (``buffer[start:start + length]``); returns the frame that it
        completed, if any. Malformed packets are ignored (counted as lost)."""
        if self._skipping_fragment and self._open and buffer[start] == 0x80 \
                and not buffer[start + 1] & 0x80 and length > 13 + self.syntax.header_bytes:
            # Fast path for most packets in keyframe mode: the middle or end of a fragmented
            # slice nobody decodes, in a plain RTP header (no CSRC, extension, padding or
            # marker). Only its sequence number and timestamp matter.
            sequence, stamp = _SEQUENCE_AND_TIME.unpack_from(buffer, start + 2)
            if stamp == self._time and self._sequence is not None \
                    and sequence == (self._sequence + 1) & 0xFFFF \
                    and self.syntax.nal_type(buffer[start + 12]) == self.syntax.fragmentation \
                    and not buffer[start + 12 + self.syntax.header_bytes] & 0x80:
                self._sequence = sequence
                return None
        elif self._fragment is not None and self._open and buffer[start] == 0x80 \
                and not buffer[start + 1] & 0x80 and length > 13 + self.syntax.header_bytes:
            # The same for a fragment that is kept (all frames: an evidence clip's ring keeps
            # them): a middle fragment's payload is appended, nothing else parsed.
            sequence, stamp = _SEQUENCE_AND_TIME.unpack_from(buffer, start + 2)
            fu_header = start + 12 + self.syntax.header_bytes
            if stamp == self._time and self._sequence is not None \
                    and sequence == (self._sequence + 1) & 0xFFFF \
                    and self.syntax.nal_type(buffer[start + 12]) == self.syntax.fragmentation \
                    and not buffer[fu_header] & 0xC0:
                self._sequence = sequence
                self._fragment.append(bytes(buffer[fu_header + 1:start + length]))
                return None
        if length < 13:
            self.lost_packets += 1
            return None
        first = buffer[start]
        header = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension
            if length < header + 4:
                self.lost_packets += 1
                return None
            header += 4 + 4 * ((buffer[start + header + 2] << 8) | buffer[start + header + 3])
        end = length
        if first & 0x20:  # padding: the last byte says how much
            end -= buffer[start + length - 1]
        if header >= end:
            self.lost_packets += 1
            return None
        marker = buffer[start + 1] & 0x80
        sequence, stamp = struct.unpack_from(">HI", buffer, start + 2)
        done: AccessUnit | None = None
        if self._open and stamp != self._time:
            done = self._finish()  # the marker bit of the last frame was lost
        if not self._open:
            self._begin(stamp)
        if self._sequence is not None and sequence != (self._sequence + 1) & 0xFFFF:
            gap = (sequence - self._sequence - 1) & 0xFFFF
            if gap < 0x8000:  # a reordered or repeated packet is not a loss
                self.lost_packets += gap
                self._damaged = True
        self._sequence = sequence
        self._payload(buffer, start + header, start + end)
        if marker:
            finished = self._finish()
            return finished if done is None else done  # (a lost marker and a marker: rare)
        return done

    def _begin(self, stamp: int) -> None:
        if self._time is None:
            self._unwrapped = stamp
        else:  # 32-bit timestamps wrap (every 13 h at 90 kHz): follow them across
            delta = (stamp - self._time) & 0xFFFFFFFF
            self._unwrapped += delta - (1 << 32) if delta >= 0x80000000 else delta
        self._time = stamp
        self._open = True
        self._nals = []
        self._size = 0
        self._keyframe = False
        self._damaged = False
        self._fragment = None
        self._skipping_fragment = False

    def _wanted(self, nal_type: int) -> bool:
        return nal_type in self.syntax.keyframe_types or not self.keyframes_only

    def _add(self, nal: bytes) -> None:
        self._size += len(nal) + 4
        if self._size > MAX_FRAME_BYTES:
            raise RtspError(f"a frame larger than {MAX_FRAME_BYTES >> 20} MiB: damaged stream")
        self._nals.append(nal)

    def _single(self, buffer: bytes | bytearray | memoryview, start: int, end: int) -> None:
        syntax = self.syntax
        nal_type = syntax.nal_type(buffer[start])
        if nal_type in syntax.parameter_types:
            self.parameter_sets[nal_type] = bytes(buffer[start:end])
        elif nal_type in syntax.slice_types:
            if nal_type in syntax.keyframe_types:
                self._keyframe = True
            if self._wanted(nal_type):
                self._add(bytes(buffer[start:end]))
        elif not self.keyframes_only and nal_type in syntax.other_types:
            self._add(bytes(buffer[start:end]))  # SEI and the like, for the full decoder

    def _payload(self, buffer: bytes | bytearray | memoryview, start: int, end: int) -> None:
        syntax = self.syntax
        nal_type = syntax.nal_type(buffer[start])
        if nal_type == syntax.fragmentation:
            self._fragment_unit(buffer, start, end)
        elif nal_type == syntax.aggregation:
            position = start + syntax.header_bytes
            while position + 2 <= end:
                size = (buffer[position] << 8) | buffer[position + 1]
                position += 2
                if not size or position + size > end:
                    self.lost_packets += 1
                    self._damaged = True
                    return
                self._single(buffer, position, position + size)
                position += size
        elif nal_type < syntax.aggregation:
            self._single(buffer, start, end)
        # H.264's STAP-B, MTAP and FU-B (interleaved mode), H.265's PACI: ignored.

    def _fragment_unit(self, buffer: bytes | bytearray | memoryview, start: int,
                       end: int) -> None:
        syntax = self.syntax
        payload = start + syntax.header_bytes + 1  # after the payload and FU headers
        if end - payload < 0:
            return
        fu_header = buffer[payload - 1]
        nal_type = fu_header & (0x1F if syntax.header_bytes == 1 else 0x3F)
        if fu_header & 0x80:  # start of a fragmented NAL unit
            if nal_type in syntax.keyframe_types:
                self._keyframe = True
            self._skipping_fragment = not self._wanted(nal_type) \
                or nal_type not in syntax.slice_types
            if self._skipping_fragment:
                self._fragment = None
            else:
                # The NAL unit header, rebuilt from the payload header and the FU's type.
                header = bytes(((buffer[start] & 0xE0) | nal_type,)) if syntax.header_bytes == 1 \
                    else bytes(((buffer[start] & 0x81) | (nal_type << 1), buffer[start + 1]))
                self._fragment = [header, bytes(buffer[payload:end])]
        elif self._skipping_fragment:
            return  # a slice of a frame nobody decodes: not even copied
        elif self._fragment is None:
            self._damaged = True  # its start was lost
            return
        else:
            self._fragment.append(bytes(buffer[payload:end]))
        if fu_header & 0x40 and self._fragment is not None:  # end of the NAL unit
            self._add(b"".join(self._fragment))
            self._fragment = None

    def _finish(self) -> AccessUnit:
        data: bytes | None = None
        wanted = self._keyframe or not self.keyframes_only
        if wanted and self._nals and not self._damaged and self._fragment is None:
            nals = self._nals
            if self._keyframe:
                nals = [self.parameter_sets[t] for t in self.syntax.parameter_types
                        if t in self.parameter_sets] + nals
            data = START_CODE + START_CODE.join(nals)
        elif wanted and self._nals:
            self.damaged_frames += 1
        unit = AccessUnit(rtp_time=self._unwrapped, keyframe=self._keyframe, data=data)
        self._nals = []
        self._size = 0
        self._fragment = None
        self._open = False
        return unit


def replay_units(chunks: Iterable[bytes], *, channel: int, syntax: NalSyntax,
                 parameter_sets: tuple[bytes, ...] = ()) -> Iterator[tuple[int, AccessUnit]]:
    """Every frame in ``chunks`` (:attr:`AccessUnit.raw` values, consecutive, the first one
    beginning a frame) with the index of the chunk it completed in: what a session that
    decoded all frames would have delivered. Interleaved packets of other channels (RTCP) and
    RTSP messages between them are skipped; a frame that lost packets comes without data."""
    depacketizer = Depacketizer(keyframes_only=False, syntax=syntax)
    depacketizer.set_parameter_sets(parameter_sets)
    for index, chunk in enumerate(chunks):
        start, end = 0, len(chunk)
        while end - start >= 4:
            if chunk[start] != 0x24:  # an RTSP message (a keep-alive's answer), or garbage
                try:
                    message, after = parse_message(chunk, start, end)
                except RtspError:
                    message, after = None, start
                if message is None:
                    found = chunk.find(b"$", start + 1)
                    after = end if found < 0 else found
                start = after
                continue
            length = (chunk[start + 2] << 8) | chunk[start + 3]
            if end - start - 4 < length:
                break  # not cut at a packet's end: not a session's chunk
            if chunk[start + 1] == channel:
                unit = depacketizer.packet(chunk, start + 4, length)
                if unit is not None:
                    yield index, unit
            start += 4 + length


# --- Pure parts: RTSP messages (responses, requests, authorization, setup answers). ------------


@dataclass(slots=True)
class RtspResponse:
    """One RTSP message from the camera; ``status`` 0 for a request of the camera's own."""

    status: int
    reason: str
    headers: dict[str, list[str]]
    """By lower-case name, every value in the order they came."""
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


def skip_interleaved(buffer: bytes | bytearray, start: int, end: int) -> int:
    """Where ``buffer[start:end]`` goes on after the complete interleaved packets (``$``)
    in front of it."""
    while end - start >= 4 and buffer[start] == 0x24:
        length = (buffer[start + 2] << 8) | buffer[start + 3]
        if end - start < 4 + length:
            break
        start += 4 + length
    return start


def parse_head(head: bytes) -> tuple[int, str, dict[str, list[str]]]:
    """Status, reason and headers of a message head (up to, not including, the blank line).
    A request of the camera (ANNOUNCE ...) gives status 0 and its request line as reason."""
    lines = head.decode("utf-8", "replace").split("\r\n")
    status_line = lines[0].split(" ", 2)
    request = lines[0].endswith(" RTSP/1.0")  # the camera asks something (ANNOUNCE ...)
    if not request and (len(status_line) < 2 or not status_line[0].startswith("RTSP/")
                        or not status_line[1].isdigit()):
        raise RtspError(f"the camera's answer is not RTSP: {lines[0][:80]!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if request:
        # Requests from the camera are skipped (status 0): nothing here needs them.
        return 0, lines[0], headers
    return int(status_line[1]), status_line[2] if len(status_line) > 2 else "", headers


def content_length(headers: dict[str, list[str]]) -> int:
    """The body's length by ``Content-Length`` (0 when absent or not a number)."""
    length_text = (headers.get("content-length") or ["0"])[0]
    return int(length_text) if length_text.isdigit() else 0


def parse_message(buffer: bytes | bytearray, start: int, end: int,
                  ) -> tuple[RtspResponse | None, int]:
    """The RTSP message at ``buffer[start]`` (after :func:`skip_interleaved`) if it is all
    there, and where the unread data then starts; ``(None, start)`` while it is not."""
    if end - start >= 4 and buffer[start] == 0x24:
        return None, start  # an interleaved packet not all there yet
    head_end = buffer.find(b"\r\n\r\n", start, end)
    if head_end < 0:
        if end - start > MAX_HEADER_BYTES:
            raise RtspError("the camera's answer is not RTSP (no header end)")
        return None, start
    status, reason, headers = parse_head(bytes(buffer[start:head_end]))
    length = content_length(headers)
    body_start = head_end + 4
    if end - body_start < length:
        if length > MAX_HEADER_BYTES:
            raise RtspError("the camera's answer body is too large")
        return None, start
    body = bytes(buffer[body_start:body_start + length])
    return RtspResponse(status, reason, headers, body), body_start + length


def take_response(buffer: bytes | bytearray, start: int, end: int,
                  ) -> tuple[RtspResponse | None, int]:
    """:func:`skip_interleaved`, then :func:`parse_message`."""
    return parse_message(buffer, skip_interleaved(buffer, start, end), end)


_MESSAGE_STARTS = (b"RTSP", b"ANNO", b"GET_", b"OPTI", b"SET_", b"REDI", b"TEAR")


def is_message_start(data: bytes) -> bool:
    """Whether four bytes can begin an RTSP message (an answer or a camera's request)."""
    return data in _MESSAGE_STARTS


def encode_request(method: str, uri: str, *, cseq: int, session: str | None,
                   headers: dict[str, str]) -> bytes:
    """An RTSP request on the wire: request line, CSeq, User-Agent, Session, ``headers``."""
    lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}", f"User-Agent: {USER_AGENT}"]
    if session is not None:
        lines.append(f"Session: {session}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


Challenge = tuple[str, dict[str, str]]
"""An authentication challenge: ``"digest"`` or ``"basic"`` and its parameters."""


def choose_challenge(values: list[str]) -> Challenge:
    """Of a 401's ``WWW-Authenticate`` values, the one to answer: Digest before Basic."""
    challenges = parse_challenges(values)
    if "digest" in challenges:
        return "digest", challenges["digest"]
    if "basic" in challenges:
        return "basic", challenges["basic"]
    raise RtspUnsupportedError("the camera asks for an unknown authentication")


def authorization(challenge: Challenge, *, username: str, password: str | None, method: str,
                  uri: str, nonce_count: int, cnonce: str) -> str:
    """The ``Authorization`` value answering ``challenge`` (``nonce_count`` and ``cnonce``
    are used by Digest only)."""
    scheme, params = challenge
    if scheme == "basic":
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        return f"Basic {token}"
    return digest_response(username=username, password=password or "", method=method,
                           uri=uri, challenge=params, nonce_count=nonce_count, cnonce=cnonce)


def check_response(method: str, response: RtspResponse) -> None:
    """Raise the error an answer other than 200 means (a 401 here: the credentials)."""
    if response.status == 401:
        raise RtspUnauthorizedError(
            "unauthorized: the camera refused the credentials (401); check the "
            "camera's username and password")
    if 300 <= response.status < 400:
        raise RtspUnsupportedError(f"{method} redirected ({response.status})")
    if response.status == 461 or (method == "SETUP" and response.status == 400):
        raise RtspUnsupportedError(f"SETUP over TCP refused ({response.status} "
                                   f"{response.reason})")
    if response.status != 200:
        raise RtspError(f"{method} failed: {response.status} {response.reason}")


def keepalive_method(public: str | None) -> str:
    """The keep-alive request, by the OPTIONS answer's ``Public`` header."""
    return "GET_PARAMETER" if "GET_PARAMETER" in (public or "").upper() else "OPTIONS"


def described_track(response: RtspResponse, request_url: str) -> tuple[str, VideoTrack]:
    """A DESCRIBE answer's base URL (``Content-Base``, ``Content-Location`` or the request's)
    and its video track."""
    base = (response.header("content-base") or response.header("content-location")
            or request_url)
    return base, parse_sdp(response.body.decode("utf-8", "replace"), base)


def parse_session(value: str | None) -> tuple[str, float | None]:
    """A SETUP answer's ``Session`` header: the session id and its timeout (``None`` when
    not given or 0)."""
    if not value:
        raise RtspError("the camera's SETUP answer carries no session")
    session, _, params = value.partition(";")
    match = re.search(r"timeout\s*=\s*(\d+)", params)
    timeout_s = float(match.group(1)) if match and int(match.group(1)) > 0 else None
    return session.strip(), timeout_s


def interleaved_channel(transport: str | None) -> int | None:
    """A SETUP answer's ``Transport`` header: the RTP channel (``None`` when not named);
    ``RtspUnsupportedError`` unless it is TCP."""
    transport = transport or ""
    if "TCP" not in transport.upper():
        raise RtspUnsupportedError(f"the camera refused TCP interleaving ({transport})")
    match = re.search(r"interleaved=(\d+)", transport)
    return int(match.group(1)) if match else None


def read_batching(now: float, *, idle_until: float, next_keepalive: float,
                  ) -> tuple[float, int]:
    """How long the next read may wait, and for how many bytes: prompt 200 ms batches,
    or one long lazy read while no frame is wanted (never past a keep-alive)."""
    idle_s = min(idle_until - now, IDLE_WAIT_MAX_S, next_keepalive - now)
    if idle_s > RECV_BATCH_WAIT_S:
        return idle_s, BUFFER_BYTES // 2
    return RECV_BATCH_WAIT_S, RECV_BATCH_BYTES


# --- The connection. ---------------------------------------------------------------------------


class _RawBytes:
    """:attr:`RtspSession.keep_raw`'s bookkeeping: where in the receive buffer the bytes of
    the unit being received begin, and those of them that came in earlier reads."""

    __slots__ = ("_earlier", "_view", "start")

    def __init__(self, view: memoryview) -> None:
        self._view = view  # copies without an intermediate one
        self._earlier: list[bytes] = []
        self.start = 0

    def take(self, end: int) -> bytes:
        """The unit that ends at ``end`` is complete: its bytes (the next one's begin there)."""
        piece = bytes(self._view[self.start:end])
        self.start = end
        if not self._earlier:
            return piece
        self._earlier.append(piece)
        whole = b"".join(self._earlier)
        self._earlier.clear()
        return whole

    def keep(self, end: int) -> None:
        """Before the next read: copy what arrived up to ``end`` of the unfinished unit."""
        if end > self.start:
            self._earlier.append(bytes(self._view[self.start:end]))
            self.start = end


class RtspSession:
    """One RTSP session reading an H.264 or H.265 track over TCP; iterate
    :meth:`access_units`.

    ``username`` and ``password``, when given, replace credentials in ``url``.
    ``with RtspSession(url, ...) as session:`` connects (OPTIONS, DESCRIBE, SETUP, PLAY) and
    closes (TEARDOWN, best effort). All blocking calls end within ``open_timeout_s`` while
    setting up and within ``read_timeout_s`` of silence while streaming.
    """

    def __init__(self, url: str, *, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0,
                 keyframes_only: bool = True, username: str | None = None,
                 password: SecretStr | None = None, keep_raw: bool = False) -> None:
        self.url = RtspUrl.parse(url)
        if username is not None:
            # Typed credentials of the caller win over any in the URL.
            self.url = replace(self.url, username=username,
                               password=password.get_secret_value() if password else None)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.depacketizer = Depacketizer(keyframes_only=keyframes_only)
        self.track: VideoTrack | None = None
        self._socket: socket.socket | None = None
        self._cseq = 0
        self._session: str | None = None
        self._session_timeout_s = 60.0
        self._keepalive_method = "OPTIONS"
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._nonce_count = 0
        self._buffer = bytearray(BUFFER_BYTES)
        self._start = 0
        self._end = 0
        self._rtp_channel = 0
        self.idle_until = 0.0
        """Monotonic time before which no frame is wanted (the next keyframe is due later):
        until then the socket is read in long, lazy batches. Set by the consumer."""
        self.keep_raw = keep_raw
        """Every unit carries the bytes it came in (:attr:`AccessUnit.raw`): one copy per
        frame and per read, no work per RTP packet, whatever frames are decoded."""

    @property
    def rtp_channel(self) -> int:
        """The interleaved channel the video's RTP packets come on."""
        return self._rtp_channel

    def __enter__(self) -> RtspSession:
        self.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- Setup. ---

    def connect(self) -> VideoTrack:
        """Connect and start playing; returns the video track."""
        deadline = time.monotonic() + self.open_timeout_s
        try:
            self._socket = socket.create_connection((self.url.host, self.url.port),
                                                    timeout=self.open_timeout_s)
        except TimeoutError as exc:
            raise RtspTimeoutError(f"no connection within the open timeout "
                                   f"({self.open_timeout_s:g} s)") from exc
        try:
            return self._set_up(deadline)
        except BaseException:
            self.close()
            raise

    def _set_up(self, deadline: float) -> VideoTrack:
        sock = self._require_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        options = self._request("OPTIONS", self.url.request_url, deadline)
        self._keepalive_method = keepalive_method(options.header("public"))
        described = self._request("DESCRIBE", self.url.request_url, deadline,
                                  {"Accept": "application/sdp"})
        base, track = described_track(described, self.url.request_url)
        self.depacketizer.syntax = track.syntax
        self.depacketizer.set_parameter_sets(track.parameter_sets)
        setup = self._request("SETUP", track.control_url, deadline,
                              {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        self._session, timeout_s = parse_session(setup.header("session"))
        if timeout_s is not None:
            self._session_timeout_s = timeout_s
        channel = interleaved_channel(setup.header("transport"))  # after the session is kept
        if channel is not None:
            self._rtp_channel = channel
        self._request("PLAY", base, deadline, {"Range": "npt=0.000-"})
        self.track = track
        return track

    def close(self) -> None:
        """TEARDOWN (best effort, no waiting for the answer) and close the socket."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        if self._session is not None:
            try:
                sock.settimeout(0.5)
                sock.sendall(self._encode("TEARDOWN", self.url.request_url, {}))
            except OSError:
                pass
        sock.close()

    def _authorization(self, method: str, uri: str) -> dict[str, str]:
        if self._challenge is None or self.url.username is None:
            return {}
        if self._challenge[0] != "basic":
            self._nonce_count += 1
        return {"Authorization": authorization(
            self._challenge, username=self.url.username, password=self.url.password,
            method=method, uri=uri, nonce_count=self._nonce_count, cnonce=os.urandom(8).hex())}

    def _encode(self, method: str, uri: str, headers: dict[str, str]) -> bytes:
        self._cseq += 1
        return encode_request(method, uri, cseq=self._cseq, session=self._session,
                              headers={**headers, **self._authorization(method, uri)})

    def _request(self, method: str, uri: str, deadline: float,
                 headers: dict[str, str] | None = None) -> RtspResponse:
        for attempt in range(2):
            sock = self._require_socket()
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                sock.sendall(self._encode(method, uri, headers or {}))
                response = self._read_response(deadline)
            except TimeoutError as exc:
                raise RtspTimeoutError(f"no answer to {method} within the open timeout "
                                       f"({self.open_timeout_s:g} s)") from exc
            if response.status == 401 and attempt == 0 and self.url.username is not None:
                self._challenge = choose_challenge(response.headers.get("www-authenticate", []))
                continue
            check_response(method, response)
            return response
        raise RtspUnauthorizedError("unauthorized")  # not reached: the loop returns or raises

    def _require_socket(self) -> socket.socket:
        if self._socket is None:
            raise RtspError("not connected")
        return self._socket

    def _fill(self) -> int:
        """Read what the socket has into the buffer; 0 at the end of the stream."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end > len(self._buffer) // 2:
            remaining = self._end - self._start
            self._buffer[:remaining] = self._buffer[self._start:self._end]
            self._start, self._end = 0, remaining
        view = memoryview(self._buffer)[self._end:]
        if not view:
            raise RtspError("an interleaved packet larger than the receive buffer")
        count = self._require_socket().recv_into(view)
        self._end += count
        return count

    def _read_response(self, deadline: float) -> RtspResponse:
        """Read one RTSP response, skipping interleaved data in front of it."""
        while True:
            response = self._take_response()
            if response is not None:
                if response.status:
                    return response
                continue  # a request from the camera: skipped; the answer may follow
            if time.monotonic() > deadline:
                raise TimeoutError
            if not self._fill():
                raise RtspError("the camera closed the connection")

    def _take_response(self) -> RtspResponse | None:
        """Parse one response from the buffer if it is all there (interleaved data skipped)."""
        # In two steps, so that the skipped data stays skipped when the message is not RTSP.
        self._start = skip_interleaved(self._buffer, self._start, self._end)
        response, self._start = parse_message(self._buffer, self._start, self._end)
        return response

    # --- Streaming. ---

    def _batch_reads(self, sock: socket.socket, wait_s: float, low_water: int) -> None:
        """Blocking reads that return once ``low_water`` bytes are there or ``wait_s`` has
        passed, with whatever came (``SO_RCVLOWAT`` + ``SO_RCVTIMEO``)."""
        seconds = int(wait_s)
        micro = int((wait_s - seconds) * 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micro))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low_water)

    def access_units(self) -> Iterator[AccessUnit]:
        """The stream's frames as they complete. Raises :class:`RtspTimeoutError` after
        ``read_timeout_s`` without data and :class:`RtspError` when the camera hangs up."""
        sock = self._require_socket()
        sock.settimeout(None)
        batching = (RECV_BATCH_WAIT_S, RECV_BATCH_BYTES)
        self._batch_reads(sock, *batching)
        buffer = self._buffer
        depacketizer = self.depacketizer
        channel = self._rtp_channel
        raw = _RawBytes(memoryview(buffer)) if self.keep_raw else None
        last_media = time.monotonic()
        keepalive_every = self._session_timeout_s * KEEPALIVE_FRACTION
        next_keepalive = last_media + keepalive_every
        while True:
            media = False  # a video packet in this batch (RTCP alone is no sign of life)
            start, end = self._start, self._end
            if raw is not None:
                raw.start = start
            while end - start >= 4:
                if buffer[start] != 0x24:  # not interleaved data: an RTSP message
                    after = self._skip_message(start, end)
                    if after is None:
                        break  # not all there yet
                    start = after
                    continue
                length = (buffer[start + 2] << 8) | buffer[start + 3]
                if end - start - 4 < length:
                    break
                if buffer[start + 1] == channel:
                    media = True
                    unit = depacketizer.packet(buffer, start + 4, length)
                    if unit is not None:
                        self._start = start + 4 + length
                        if raw is not None:
                            unit = AccessUnit(unit.rtp_time, unit.keyframe, unit.data,
                                              raw.take(self._start))
                        yield unit
                        # The consumer may have taken its time: the buffer did not move.
                start += 4 + length
            self._start = start
            if raw is not None:
                raw.keep(start)  # the next read may move what is in the buffer
            now = time.monotonic()
            if media:
                last_media = now
            elif now - last_media > self.read_timeout_s:
                raise RtspTimeoutError(f"no data within the read timeout "
                                       f"({self.read_timeout_s:.1f} s)")
            if now >= next_keepalive:
                sock.sendall(self._encode(self._keepalive_method, self.url.request_url, {}))
                next_keepalive = now + keepalive_every
            batching = self._read_more(sock, now, next_keepalive, batching)

    def _read_more(self, sock: socket.socket, now: float, next_keepalive: float,
                   batching: tuple[float, int]) -> tuple[float, int]:
        """One batched read into the buffer (as lazy as :attr:`idle_until` allows); returns
        the batching now set on the socket."""
        wanted = read_batching(now, idle_until=self.idle_until, next_keepalive=next_keepalive)
        if wanted != batching:
            batching = wanted
            self._batch_reads(sock, *batching)
        try:
            if not self._fill():
                raise RtspError("the camera closed the connection")
        except BlockingIOError:  # SO_RCVTIMEO passed with nothing at all
            pass
        return batching

    def _skip_message(self, start: int, end: int) -> int | None:
        """Skip the RTSP message (a keep-alive answer) or garbage at ``start``: where the
        media goes on, or ``None`` while the message has not all arrived."""
        self._start = start
        if self._take_response() is not None:
            return self._start
        if is_message_start(bytes(self._buffer[start:start + 4])):
            return None
        return self._resync(start, end)

    def _resync(self, start: int, end: int) -> int:
        """Skip garbage up to the next ``$`` (a damaged stream); counted as lost packets."""
        found = self._buffer.find(b"$", start + 1, end)
        self.depacketizer.lost_packets += 1
        return end if found < 0 else found
