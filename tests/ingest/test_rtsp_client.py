"""The built-in RTSP/RTP receiver (``monitor.ingest.rtsp``): depacketizing, SDP, authentication, and
the protocol's edges against a scripted RTSP server on a real socket.

The main path (a real GStreamer RTSP server sending real H.264) is tested in
``test_capture_rtsp.py``; here are the cases a real server cannot be made to produce on
demand: lost and reordered packets, missing marker bits, padding, header extensions,
timestamp wrap-around, keep-alive, answers interleaved with media, non-H.264 cameras.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from monitor.ingest.reader import CameraReader
from monitor.ingest.rtsp import (
    H265,
    START_CODE,
    Depacketizer,
    RtspSession,
    RtspUnsupportedError,
    RtspUrl,
    digest_response,
    parse_challenges,
    parse_sdp,
    replay_units,
)
from monitor.ingest.source import StreamSource
from tests.support.readers import running, wait_until

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR_HEADER = 0x65  # nal_ref_idc 3, type 5
P_HEADER = 0x41  # nal_ref_idc 2, type 1


def rtp(sequence: int, stamp: int, payload: bytes, *, marker: bool = False,
        extension_words: int = 0, padding: int = 0, csrc: int = 0) -> bytes:
    """An RTP packet (RFC 3550) around ``payload``."""
    first = 0x80 | (0x10 if extension_words else 0) | (0x20 if padding else 0) | csrc
    header = struct.pack(">BBHII", first, (0x80 if marker else 0) | 96, sequence & 0xFFFF,
                         stamp & 0xFFFFFFFF, 0x1234)
    header += b"\0\0\0\1" * csrc
    if extension_words:
        header += struct.pack(">HH", 0xBEDE, extension_words) + b"\xaa" * 4 * extension_words
    tail = (b"\0" * (padding - 1) + bytes([padding])) if padding else b""
    return header + payload + tail


def fu_a(nal: bytes, size: int) -> list[bytes]:
    """``nal`` cut into FU-A fragments of at most ``size`` payload bytes."""
    indicator = (nal[0] & 0xE0) | 28
    body = nal[1:]
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    fragments = []
    for index, piece in enumerate(pieces):
        header = nal[0] & 0x1F
        if index == 0:
            header |= 0x80
        if index == len(pieces) - 1:
            header |= 0x40
        fragments.append(bytes([indicator, header]) + piece)
    return fragments


def stap_a(*nals: bytes) -> bytes:
    return bytes([0x18]) + b"".join(struct.pack(">H", len(n)) + n for n in nals)


def feed(depacketizer: Depacketizer, packets: list[bytes]) -> list[tuple[int, bool, bytes | None]]:
    units = []
    for packet in packets:
        unit = depacketizer.packet(packet, 0, len(packet))
        if unit is not None:
            units.append((unit.rtp_time, unit.keyframe, unit.data))
    return units


class Sender:
    """Numbers RTP packets in sequence, as a camera does."""

    def __init__(self, first_sequence: int = 0) -> None:
        self.sequence = first_sequence

    def frame(self, stamp: int, nal: bytes, *, size: int = 100,
              with_parameters: bool = False) -> list[bytes]:
        """One frame: optional STAP-A with SPS/PPS, then ``nal`` in FU-A fragments."""
        payloads = ([stap_a(SPS, PPS)] if with_parameters else []) + fu_a(nal, size)
        packets = [rtp(self.sequence + i, stamp, payload, marker=i == len(payloads) - 1)
                   for i, payload in enumerate(payloads)]
        self.sequence += len(packets)
        return packets


IDR = bytes([IDR_HEADER]) + bytes(range(256)) * 3
P_SLICE = bytes([P_HEADER]) + b"\x9a" * 500


def test_keyframes_only_assembles_idr_frames_and_reports_the_others_without_copying() -> None:
    depacketizer = Depacketizer(keyframes_only=True)
    camera = Sender()
    packets = (camera.frame(3000, IDR, with_parameters=True) + camera.frame(6000, P_SLICE)
               + camera.frame(9000, IDR))
    units = feed(depacketizer, packets)
    assert [(stamp, key) for stamp, key, _ in units] == [(3000, True), (6000, False),
                                                         (9000, True)]
    expected = START_CODE + START_CODE.join([SPS, PPS, IDR])
    assert units[0][2] == expected
    assert units[1][2] is None  # a P frame: reported (for fps and GOP), never copied
    # The second keyframe came without parameter sets: the remembered ones are put in front.
    assert units[2][2] == expected
    assert depacketizer.lost_packets == 0


def test_all_mode_assembles_every_frame() -> None:
    depacketizer = Depacketizer(keyframes_only=False)
    depacketizer.set_parameter_sets((SPS, PPS))
    camera = Sender(first_sequence=65530)  # and the 16-bit sequence number wraps
    units = feed(depacketizer, camera.frame(0, IDR) + camera.frame(3600, P_SLICE))
    assert depacketizer.lost_packets == 0
    assert units[1] == (3600, False, START_CODE + P_SLICE)
    assert units[0][2] == START_CODE + START_CODE.join([SPS, PPS, IDR])


def test_all_mode_gives_a_frame_with_a_lost_middle_fragment_no_data() -> None:
    # Middle fragments of kept frames take a fast path (an evidence clip's ring keeps every
    # frame): a gap there must still mark the frame damaged, and the next one is whole.
    depacketizer = Depacketizer(keyframes_only=False)
    camera = Sender()
    damaged = camera.frame(0, IDR, with_parameters=True)
    whole = camera.frame(3600, P_SLICE)
    units = feed(depacketizer, damaged[:3] + damaged[4:] + whole)
    assert [(stamp, data) for stamp, _, data in units] == [(0, None),
                                                           (3600, START_CODE + P_SLICE)]
    assert depacketizer.lost_packets == 1


def test_single_nal_packets_padding_extensions_and_csrcs() -> None:
    depacketizer = Depacketizer(keyframes_only=True)
    depacketizer.set_parameter_sets((SPS, PPS))
    small_idr = bytes([IDR_HEADER]) + b"\x11" * 40
    packet = rtp(7, 100, small_idr, marker=True, extension_words=2, padding=3, csrc=2)
    assert feed(depacketizer, [packet]) == [(100, True, START_CODE + START_CODE.join(
        [SPS, PPS, small_idr]))]


def test_a_lost_packet_damages_the_frame_and_is_counted() -> None:
    depacketizer = Depacketizer(keyframes_only=True)
    depacketizer.set_parameter_sets((SPS, PPS))
    camera = Sender()
    packets = camera.frame(0, IDR)
    del packets[2]
    units = feed(depacketizer, packets + camera.frame(3600, IDR))
    assert units[0] == (0, True, None)  # half a keyframe is not decoded
    assert units[1][2] is not None  # the next one is whole again
    assert depacketizer.lost_packets == 1
    assert depacketizer.damaged_frames == 1


def test_skipped_frames_still_count_lost_packets_and_end_at_their_marker() -> None:
    # Keyframe mode walks the middle of a skipped slice on a fast path: losses there are
    # still counted, a missing marker still ends the frame, and the next keyframe is whole.
    depacketizer = Depacketizer(keyframes_only=True)
    depacketizer.set_parameter_sets((SPS, PPS))
    camera = Sender()
    skipped = camera.frame(3600, P_SLICE, size=50)
    del skipped[4]
    unmarked = camera.frame(7200, P_SLICE, size=50)
    last = unmarked[-1]
    unmarked[-1] = last[:1] + bytes([last[1] & 0x7F]) + last[2:]
    units = feed(depacketizer, skipped + unmarked + camera.frame(10800, IDR))
    assert [(stamp, key, data is None) for stamp, key, data in units] == [
        (3600, False, True), (7200, False, True), (10800, True, False)]
    assert units[2][2] == START_CODE + START_CODE.join([SPS, PPS, IDR])
    assert depacketizer.lost_packets == 1
    assert depacketizer.damaged_frames == 0  # nothing of the skipped frame was wanted


def test_a_lost_marker_ends_the_frame_at_the_next_timestamp() -> None:
    depacketizer = Depacketizer(keyframes_only=True)
    depacketizer.set_parameter_sets((SPS, PPS))
    camera = Sender()
    first = camera.frame(0, IDR)
    last = first[-1]
    first[-1] = last[:1] + bytes([last[1] & 0x7F]) + last[2:]  # marker bit cleared
    units = feed(depacketizer, first + camera.frame(3600, P_SLICE))
    assert [(stamp, key) for stamp, key, _ in units] == [(0, True), (3600, False)]
    assert units[0][2] is not None


def test_timestamps_unwrap_across_the_32_bit_boundary() -> None:
    depacketizer = Depacketizer(keyframes_only=True)
    start = 0xFFFFFFFF - 1000
    stamps = [start, start + 3600, start + 7200]
    units = feed(depacketizer, [
        rtp(i, stamp, bytes([P_HEADER, 1, 2, 3]), marker=True) for i, stamp in enumerate(stamps)])
    assert [stamp for stamp, _, _ in units] == stamps  # increasing, not wrapped to small
    assert units[1][0] > 0xFFFFFFFF


def test_malformed_packets_are_ignored_and_counted() -> None:
    depacketizer = Depacketizer()
    assert feed(depacketizer, [b"\x80\x60", rtp(0, 0, b"")[:12]]) == []
    assert depacketizer.lost_packets == 2


def test_a_frame_larger_than_the_limit_ends_the_stream() -> None:
    depacketizer = Depacketizer(keyframes_only=False)
    huge = bytes([P_HEADER]) + b"\0" * 60_000
    with pytest.raises(Exception, match="larger than"):
        feed(depacketizer, [rtp(i, 0, huge) for i in range(300)])


def test_digest_response_matches_rfc_2617() -> None:
    # The worked example of RFC 2617 section 3.5 (HTTP, but RTSP uses the same computation).
    challenge = parse_challenges([
        ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
         'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
         'opaque="5ccc069c403ebaf9f0171e9517f40e41"')])
    value = digest_response(username="Mufasa", password="Circle Of Life", method="GET",
                            uri="/dir/index.html", challenge=challenge["digest"],
                            nonce_count=1, cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "nc=00000001" in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_digest_without_qop_and_challenges_of_several_schemes() -> None:
    challenges = parse_challenges(['Basic realm="cam"', 'Digest realm="cam", nonce="abc"'])
    assert set(challenges) == {"basic", "digest"}
    value = digest_response(username="u", password="p", method="DESCRIBE", uri="rtsp://h/s",
                            challenge=challenges["digest"], nonce_count=1, cnonce="x")
    assert "qop" not in value
    assert "response=" in value
    offered = parse_challenges(['Digest realm="c", nonce="1", algorithm=SHA-256',
                                'Digest realm="c", nonce="2", algorithm=MD5'])
    assert offered["digest"]["nonce"] == "2"
    with pytest.raises(RtspUnsupportedError, match="SHA-256"):
        digest_response(username="u", password="p", method="GET", uri="/",
                        challenge={"nonce": "n", "algorithm": "SHA-256"}, nonce_count=1,
                        cnonce="x")


def test_url_keeps_credentials_out_of_the_request_url() -> None:
    url = RtspUrl.parse("rtsp://admin:p%40ss%3Aword@192.0.2.10/Streaming/Channels/101?x=1")
    assert (url.host, url.port) == ("192.0.2.10", 554)
    assert url.request_url == "rtsp://192.0.2.10/Streaming/Channels/101?x=1"
    assert (url.username, url.password) == ("admin", "p@ss:word")
    assert RtspUrl.parse("rtsp://[::1]:8554/cam").request_url == "rtsp://[::1]:8554/cam"
    with pytest.raises(RtspUnsupportedError):
        RtspUrl.parse("rtsps://host/cam")


HIKVISION_SDP = """v=0
o=- 1109162014219182 1109162014219192 IN IP4 x.y.z.w
s=Media Presentation
c=IN IP4 0.0.0.0
t=0 0
a=control:*
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=420029; packetization-mode=1; sprop-parameter-sets={sps},{pps}
a=control:trackID=1
m=audio 0 RTP/AVP 8
a=rtpmap:8 PCMA/8000
a=control:trackID=2
"""


def test_sdp_gives_the_h264_track_its_control_url_and_parameter_sets() -> None:
    sdp = HIKVISION_SDP.format(sps=base64.b64encode(SPS).decode(),
                               pps=base64.b64encode(PPS).decode())
    track = parse_sdp(sdp, "rtsp://cam/Streaming/Channels/101/")
    assert track.control_url == "rtsp://cam/Streaming/Channels/101/trackID=1"
    assert (track.payload_type, track.clock_rate) == (96, 90000)
    assert track.parameter_sets == (SPS, PPS)
    absolute = sdp.replace("a=control:trackID=1", "a=control:rtsp://other/track")
    assert parse_sdp(absolute, "rtsp://cam/x").control_url == "rtsp://other/track"
    # No trailing slash on the base: the control is still appended, as FFmpeg does.
    assert parse_sdp(sdp, "rtsp://cam/live").control_url == "rtsp://cam/live/trackID=1"


def test_sdp_without_h264_or_h265_video_is_unsupported() -> None:
    mpeg4 = HIKVISION_SDP.replace("H264/90000", "MP4V-ES/90000")
    with pytest.raises(RtspUnsupportedError, match=r"not H\.264 or H\.265 \(MP4V-ES/90000\)"):
        parse_sdp(mpeg4, "rtsp://cam/")
    audio_only = "v=0\nm=audio 0 RTP/AVP 8\na=rtpmap:8 PCMA/8000\n"
    with pytest.raises(RtspUnsupportedError, match="no video track"):
        parse_sdp(audio_only, "rtsp://cam/")


# --- A scripted RTSP server on a real socket. --------------------------------------------------


class ScriptedCamera:
    """Answers OPTIONS/DESCRIBE/SETUP/PLAY like a camera, then streams ``media`` packets.

    Records every request line it receives. ``sdp`` is what DESCRIBE returns; ``session``
    the Session header of SETUP. Media packets go out every 40 ms (25 fps), with an RTSP
    answer to each keep-alive request interleaved between them.
    """

    def __init__(self, sdp: str, media: Callable[[int], list[bytes]],
                 session: str = "4242;timeout=60", *, rtcp: bool = True,
                 camera_request: bytes = b"") -> None:
        self.sdp = sdp
        self.media = media
        self.session = session
        self.rtcp = rtcp
        self.camera_request = camera_request
        """Sent once between media packets, as a camera asking something of its client."""
        self.requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedCamera:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(3)

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with connection:
                self._converse(connection)

    def _answer(self, connection: socket.socket, request: str) -> None:
        lines = request.split("\r\n")
        self.requests.append(lines[0])
        cseq = next(line.split(":", 1)[1].strip() for line in lines
                    if line.lower().startswith("cseq"))
        method = lines[0].split(" ")[0]
        headers = [f"CSeq: {cseq}"]
        body = b""
        if method == "OPTIONS":
            headers.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN")
        elif method == "DESCRIBE":
            body = self.sdp.encode()
            headers += ["Content-Type: application/sdp", "Content-Base: rtsp://cam/live/"]
        elif method == "SETUP":
            headers += [f"Session: {self.session}",
                        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1"]
        headers.append(f"Content-Length: {len(body)}")
        connection.sendall(("RTSP/1.0 200 OK\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode()
                           + body)

    def _converse(self, connection: socket.socket) -> None:
        connection.settimeout(0.04)
        pending = b""
        playing = False
        sequence = 0
        while not self._stop.is_set():
            try:
                data = connection.recv(65536)
                if not data:
                    return
                pending += data
            except TimeoutError:
                pass
            except OSError:
                return
            while b"\r\n\r\n" in pending:
                request, pending = pending.split(b"\r\n\r\n", 1)
                text = request.decode()
                try:
                    self._answer(connection, text)
                except OSError:
                    return  # the client hung up (after its TEARDOWN, say)
                if text.startswith("PLAY"):
                    playing = True
            if playing:
                try:
                    for packet in self.media(sequence):
                        connection.sendall(b"$\x00" + struct.pack(">H", len(packet)) + packet)
                        sequence += 1
                    if sequence == 10 and self.camera_request:
                        connection.sendall(self.camera_request)
                    if self.rtcp:  # sender reports on channel 1: skipped by the receiver
                        connection.sendall(b"$\x01\x00\x08" + b"\x80\xc8\x00\x01\0\0\0\0")
                except OSError:
                    return


def gop_media(sequence: int) -> list[bytes]:
    """A frame every call (40 ms): a keyframe every 5th, P frames between."""
    frame = sequence  # one packet per frame here, so packet number = frame number
    nal = bytes([IDR_HEADER]) + b"\x22" * 64 if frame % 5 == 0 else bytes([P_HEADER, 9, 9])
    return [rtp(sequence, frame * 3600, nal, marker=True)]


SIMPLE_SDP = ("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
              "a=control:trackID=0\r\n")


def units_for(session: RtspSession, seconds: float) -> Iterator[tuple[float, bool]]:
    end = time.monotonic() + seconds
    for unit in session.access_units():
        yield time.monotonic(), unit.keyframe
        if time.monotonic() > end:
            return


def test_session_sets_up_streams_and_sends_keepalives() -> None:
    with ScriptedCamera(SIMPLE_SDP, gop_media, session="4242;timeout=1") as camera:
        session = RtspSession(f"rtsp://127.0.0.1:{camera.port}/live", open_timeout_s=3,
                              read_timeout_s=3)
        with session:
            frames = list(units_for(session, 1.6))
        methods = [line.split(" ")[0] for line in camera.requests]
    assert methods[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]
    # SETUP went to the track's control URL under the Content-Base.
    assert camera.requests[2].startswith("SETUP rtsp://cam/live/trackID=0 ")
    # A 1 s session timeout: keep-alives every half of it, while media kept flowing, and the
    # answers to them (interleaved with the media) did not disturb the stream.
    assert methods.count("GET_PARAMETER") >= 2
    keyframes = sum(key for _, key in frames)
    assert len(frames) >= 20
    assert keyframes == pytest.approx(len(frames) / 5, abs=2)
    assert session.depacketizer.lost_packets == 0


def test_a_camera_sending_no_video_times_out() -> None:
    # Only RTCP sender reports keep coming: that is no video, and no sign of life.
    with ScriptedCamera(SIMPLE_SDP, lambda _sequence: []) as camera:
        session = RtspSession(f"rtsp://127.0.0.1:{camera.port}/live", open_timeout_s=3,
                              read_timeout_s=0.5)
        started = time.monotonic()
        with session, pytest.raises(TimeoutError, match="read timeout"):
            list(session.access_units())
        assert time.monotonic() - started < 3


def wait_for_handover(caplog: pytest.LogCaptureFixture, timeout_s: float = 10) -> None:
    """Wait until the reader says it hands the camera to FFmpeg."""
    deadline = time.monotonic() + timeout_s
    while "reading it with FFmpeg instead" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)


MJPEG_SDP = "v=0\r\nm=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\na=control:t\r\n"
"""A camera sending RTP/JPEG, which the built-in receiver hands to FFmpeg."""


@contextlib.contextmanager
def handed_to_ffmpeg(caplog: pytest.LogCaptureFixture, *, rtcp: bool,
                     timeout_s: float) -> Iterator[tuple[ScriptedCamera, CameraReader]]:
    """An RTP/JPEG camera and a reader of it (password ``secret`` in the URL), running, once
    the built-in receiver has handed the camera to FFmpeg."""
    caplog.set_level(logging.INFO, logger="monitor")
    with ScriptedCamera(MJPEG_SDP, lambda _sequence: [], rtcp=rtcp) as camera:
        reader = CameraReader(StreamSource("cam", f"rtsp://u:secret@127.0.0.1:{camera.port}/l",
                                           open_timeout_s=timeout_s, read_timeout_s=timeout_s))
        with running(reader):
            wait_for_handover(caplog)
            yield camera, reader


def test_a_camera_that_is_not_h264_is_read_by_ffmpeg_instead(
        caplog: pytest.LogCaptureFixture) -> None:
    with handed_to_ffmpeg(caplog, rtcp=False, timeout_s=2) as (camera, _reader):
        # FFmpeg then talks to the same camera (its DESCRIBE arrives after ours).
        wait_until(lambda: sum(line.startswith("DESCRIBE") for line in camera.requests) > 1,
                   10, f"FFmpeg's DESCRIBE (requests: {camera.requests})")
    assert "not H.264 or H.265 (JPEG/90000)" in caplog.text
    assert "secret" not in caplog.text


def test_a_camera_handed_to_ffmpeg_that_sends_only_rtcp_times_out_and_stops(
        caplog: pytest.LogCaptureFixture) -> None:
    # FFmpeg's RTSP demuxer swallows RTCP inside one read: without PyAV's read timeout that
    # read (and the thread, deaf to stop()) never ended.
    with handed_to_ffmpeg(caplog, rtcp=True, timeout_s=1.5) as (_camera, reader):
        # The hand-over itself counts no reconnect: two are two timeouts on FFmpeg's side.
        wait_until(lambda: reader.status.reconnects >= 2, 15, "two reconnects")
        status = reader.status
    assert status.state == "offline"
    assert status.last_error is not None
    assert status.last_error.startswith("no video for "), status.last_error
    assert "secret" not in caplog.text


def test_a_request_from_the_camera_inside_the_media_is_skipped() -> None:
    request = (b"SET_PARAMETER rtsp://cam/live RTSP/1.0\r\nCSeq: 1\r\n"
               b"Content-Length: 9\r\n\r\n$\x00\xff\xffjunk!")  # a body that looks like media
    with ScriptedCamera(SIMPLE_SDP, gop_media, camera_request=request) as camera:
        session = RtspSession(f"rtsp://127.0.0.1:{camera.port}/live", open_timeout_s=3,
                              read_timeout_s=3)
        with session:
            frames = list(units_for(session, 1.2))
    assert len(frames) >= 20  # the stream went on past the request (sent after frame 10)
    assert session.depacketizer.lost_packets == 0


def test_kept_raw_bytes_replay_into_every_frame_while_only_keyframes_are_assembled() -> None:
    # What an evidence clip's ring gets from the built-in receiver: each unit's bytes as they
    # came (fragmented frames, RTCP, a request of the camera whose body looks like media,
    # keep-alive answers), read back into frames only when a clip is cut.
    sender = Sender()
    frames = itertools.count()

    def media(_sequence: int) -> list[bytes]:
        frame = next(frames)
        nal = IDR if frame % 5 == 0 else P_SLICE
        return sender.frame(frame * 3600, nal, size=300, with_parameters=frame % 5 == 0)

    request = (b"SET_PARAMETER rtsp://cam/live RTSP/1.0\r\nCSeq: 1\r\n"
               b"Content-Length: 9\r\n\r\n$\x00\xff\xffjunk!")
    with ScriptedCamera(SIMPLE_SDP, media, session="4242;timeout=1",
                        camera_request=request) as camera:
        session = RtspSession(f"rtsp://127.0.0.1:{camera.port}/live", open_timeout_s=3,
                              read_timeout_s=3, keep_raw=True)
        with session:
            units = []
            for unit in session.access_units():
                units.append(unit)
                if len(units) >= 40:
                    break
        methods = [line.split(" ")[0] for line in camera.requests]
    assert methods.count("GET_PARAMETER") >= 2  # keep-alive answers came between the media
    # Live: only keyframes assembled; every unit carries its raw bytes.
    assert all((unit.data is not None) == unit.keyframe for unit in units)
    assert all(unit.raw for unit in units)
    replayed = list(replay_units([unit.raw or b"" for unit in units], channel=0,
                                 syntax=session.depacketizer.syntax))
    # One frame per chunk, in order, each complete in the chunk of the live unit.
    assert [index for index, _ in replayed] == list(range(len(units)))
    assert [u.rtp_time for _, u in replayed] == [u.rtp_time for u in units]
    for (_, again), live in zip(replayed, units, strict=True):
        if live.keyframe:
            assert again.data == live.data  # parameter sets in front, as decoded live
        else:
            assert again.data == START_CODE + P_SLICE
    assert session.depacketizer.lost_packets == 0


def test_a_camera_without_idr_keyframes_is_read_by_ffmpeg_instead(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="monitor")

    def no_idr(sequence: int) -> list[bytes]:
        return [rtp(sequence, sequence * 3600, bytes([P_HEADER, 9, 9]), marker=True)]

    with ScriptedCamera(SIMPLE_SDP, no_idr, rtcp=False) as camera:
        reader = CameraReader(StreamSource("open-gop", f"rtsp://127.0.0.1:{camera.port}/l",
                                           open_timeout_s=2, read_timeout_s=1))
        with running(reader):
            wait_for_handover(caplog)
    assert "no IDR keyframe in" in caplog.text
    assert reader.status.state != "unauthorized"



# --- H.265 (RFC 7798). ---

VPS = bytes([0x40, 0x01, 0x0C, 0x01, 0xFF, 0xFF])
HSPS = bytes([0x42, 0x01, 0x01, 0x01, 0x60, 0x00])
HPPS = bytes([0x44, 0x01, 0xC1, 0x73])
IDR_W_RADL = bytes([0x26, 0x01]) + bytes(range(200)) * 2  # type 19
TRAIL_R = bytes([0x02, 0x01]) + b"\x5a" * 300  # type 1


def h265_fragments(nal: bytes, size: int) -> list[bytes]:
    """``nal`` as H.265 fragmentation units (payload header type 49, then the FU header)."""
    nal_type = (nal[0] >> 1) & 0x3F
    payload_header = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]])
    body = nal[2:]
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return [payload_header + bytes([nal_type | (0x80 if i == 0 else 0)
                                    | (0x40 if i == len(pieces) - 1 else 0)]) + piece
            for i, piece in enumerate(pieces)]


def h265_aggregate(*nals: bytes) -> bytes:
    return bytes([48 << 1, 0x01]) + b"".join(struct.pack(">H", len(n)) + n for n in nals)


def test_h265_keyframes_are_assembled_with_vps_sps_pps_and_other_frames_skipped() -> None:
    depacketizer = Depacketizer(keyframes_only=True, syntax=H265)
    payloads = [(0, h265_aggregate(VPS, HSPS, HPPS), False)]
    payloads += [(0, f, i == 3) for i, f in enumerate(h265_fragments(IDR_W_RADL, 100))]
    payloads += [(3600, f, i == 2) for i, f in enumerate(h265_fragments(TRAIL_R, 100))]
    payloads += [(7200, f, i == 3) for i, f in enumerate(h265_fragments(IDR_W_RADL, 100))]
    packets = [rtp(i, stamp, payload, marker=marker)
               for i, (stamp, payload, marker) in enumerate(payloads)]
    units = feed(depacketizer, packets)
    expected = START_CODE + START_CODE.join([VPS, HSPS, HPPS, IDR_W_RADL])
    assert units == [(0, True, expected), (3600, False, None), (7200, True, expected)]
    assert depacketizer.lost_packets == 0


def test_sdp_with_h265_gives_its_parameter_sets() -> None:
    sdp = ("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n"
           f"a=fmtp:96 sprop-vps={base64.b64encode(VPS).decode()}; "
           f"sprop-sps={base64.b64encode(HSPS).decode()}; "
           f"sprop-pps={base64.b64encode(HPPS).decode()}\r\na=control:stream=0\r\n")
    track = parse_sdp(sdp, "rtsp://cam/live/")
    assert track.syntax is H265
    assert track.parameter_sets == (VPS, HSPS, HPPS)
    with pytest.raises(RtspUnsupportedError, match="decoding-order"):
        parse_sdp(sdp.replace("sprop-pps", "sprop-max-don-diff=2; sprop-pps"), "rtsp://c/")
