"""Camera readers (PyAV backend) against the other sources cameras offer: MJPEG over HTTP, HLS
over HTTP (live and VOD playlists), and RTSP over TLS (``rtsps://``).

Every source is a real server on 127.0.0.1: Python's ``http.server`` in a thread
(:mod:`tests.support.http_camera`) for MJPEG and HLS, GStreamer's gst-rtsp-server with a
self-signed certificate for ``rtsps://``. The HLS segments and the RTSP clip are a synthetic
scene encoded as H.264 (320x180, 10 fps, a keyframe every second), segmented by the system
``ffmpeg``. Waits poll a condition against a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from monitor.ingest.reader import CameraReader
from monitor.ingest.source import StreamSource
from monitor.pixels import BgrImage
from monitor.sim.scenes import PRESETS, render_frame, write_scene
from tests.support.http_camera import HttpCamera, LiveHls, MjpegStream, read_vod_playlist
from tests.support.readers import running, wait_until
from tests.support.rtsp import RtspServer, rtsps_available

WIDTH, HEIGHT, FPS, GOP_FRAMES = 320, 180, 10, 10
CLIP_S = 8.0
MJPEG_WIDTH, MJPEG_HEIGHT = 352, 288  # CIF, as old MJPEG cameras send; unlike the clip's size


# --- Helpers. -----------------------------------------------------------------------------------


def reader_for(url: str, *, interval_s: float = 1.0, camera_id: str = "cam") -> CameraReader:
    """A PyAV reader with 5 s open and read timeouts."""
    return CameraReader(StreamSource(camera_id, url, interval_s=interval_s, open_timeout_s=5.0,
                                     read_timeout_s=5.0))


def decode_jpeg(jpeg: bytes) -> BgrImage:
    """A JPEG file as a BGR image, decoded by OpenCV (libjpeg-turbo), not FFmpeg."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, dtype=np.uint8)


def sequence(reader: CameraReader) -> int:
    """The newest frame's sequence number, 0 before the first frame."""
    frame = reader.latest()
    return frame.sequence if frame is not None else 0


# --- Fixtures. -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8 s H.264 MP4: 320x180, 10 fps, a keyframe every second."""
    scene = dataclasses.replace(PRESETS["quiet"](width=WIDTH, height=HEIGHT, fps=FPS,
                                                 gop=GOP_FRAMES), duration_s=CLIP_S)
    return write_scene(scene, tmp_path_factory.mktemp("sources") / "quiet.mp4")


@pytest.fixture(scope="module")
def hls_directory(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip as HLS: ``index.m3u8`` (VOD, every segment) and 1 s MPEG-TS segments."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg command is needed to write HLS segments")
    directory = tmp_path_factory.mktemp("hls")
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(clip), "-c", "copy",
                    "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    str(directory / "index.m3u8")], check=True, timeout=60)
    return directory


@pytest.fixture(scope="module")
def mjpeg_frames() -> list[bytes]:
    """One second of the scene as JPEG files (the MJPEG stream loops them)."""
    scene = PRESETS["quiet"](width=MJPEG_WIDTH, height=MJPEG_HEIGHT, fps=FPS)
    jpegs = []
    for index in range(FPS):
        ok, buffer = cv2.imencode(".jpg", render_frame(scene, index / FPS),
                                  [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        jpegs.append(buffer.tobytes())
    return jpegs


@pytest.fixture(scope="module")
def tls_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for 127.0.0.1 and its private key, in one PEM file."""
    available, reason = rtsps_available()
    if not available:
        pytest.skip(reason)
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    both = directory / "cert-and-key.pem"
    both.write_text(cert.read_text() + key.read_text())
    return both


# --- MJPEG over HTTP. ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_length", [True, False],
                         ids=["with-content-length", "without-content-length"])
def test_http_mjpeg_stream_is_read(mjpeg_frames: list[bytes], content_length: bool) -> None:
    originals = [decode_jpeg(jpeg) for jpeg in mjpeg_frames]
    assert originals[0].shape == (MJPEG_HEIGHT, MJPEG_WIDTH, 3)
    stream = MjpegStream(mjpeg_frames, fps=10.0, content_length=content_length)
    with HttpCamera(stream) as camera:
        with running(reader_for(camera.url("/video.mjpg"))) as reader:
            wait_until(lambda: reader.status.online, 5, "online")
            status = reader.status
            assert status.state == "online"
            assert status.last_error is None
            assert (status.codec, status.width, status.height) == (
                "mjpeg", MJPEG_WIDTH, MJPEG_HEIGHT)
            first = sequence(reader)
            # 10 parts a second: five more frames within a second, give or take a busy machine.
            wait_until(lambda: sequence(reader) >= first + 5, 3, "five more frames")
            frame = reader.latest()
            assert frame is not None
            assert (frame.width, frame.height) == (MJPEG_WIDTH, MJPEG_HEIGHT)
            picture = frame.to_bgr()
            assert picture.shape == (MJPEG_HEIGHT, MJPEG_WIDTH, 3)
            # The picture is one of the JPEGs served: about 0.8 grey levels from its own (two
            # decoders round differently), 2 from its neighbours, 7 from another scene.
            difference = min(float(np.mean(cv2.absdiff(picture, original)))
                             for original in originals)
            assert difference < 1.5, difference
            assert reader.status.state == "online"
        assert camera.requests == ["/video.mjpg"]  # one connection, never reopened


def test_http_mjpeg_frame_rate_is_the_cameras(mjpeg_frames: list[bytes]) -> None:
    with HttpCamera(MjpegStream(mjpeg_frames, fps=2.0)) as camera, \
            running(reader_for(camera.url("/video.mjpg"), interval_s=2.0)) as reader:
        wait_until(lambda: reader.status.frames_read >= 5, 6, "five frames")
        status = reader.status
        assert status.fps == pytest.approx(2.0, rel=0.3)
        # 10 frame intervals of a 2 fps camera: a frame 0.6 s late is no stall.
        assert status.stall_timeout_s == pytest.approx(5.0, rel=0.3)


# --- HLS over HTTP. ------------------------------------------------------------------------------


def test_hls_live_playlist_is_followed(hls_directory: Path) -> None:
    hls = LiveHls(hls_directory, window=4, head_start=3)
    assert len(hls.segments) == round(CLIP_S)  # one segment per 1 s GOP
    with HttpCamera(hls) as camera, running(reader_for(camera.url("/live.m3u8"))) as reader:
        wait_until(lambda: reader.status.online, 5, "online")
        status = reader.status
        assert status.state == "online"
        assert (status.codec, status.width, status.height) == ("h264", WIDTH, HEIGHT)
        frame = reader.latest()
        assert frame is not None
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
        assert frame.to_bgr().shape == (HEIGHT, WIDTH, 3)
        # Segments published after the start arrive too: the reader follows the live edge.
        wait_until(lambda: hls.published(time.monotonic()) >= 5, 3, "two more segments")
        wait_until(lambda: f"/{hls.segments[4].name}" in camera.requests, 4,
                   "the fifth segment fetched")
        at_fifth = sequence(reader)
        wait_until(lambda: sequence(reader) > at_fifth, 3, "a frame from a new segment")
        status = reader.status
        assert status.state == "online"
        assert status.fps == pytest.approx(FPS, rel=0.1)  # from the segments' timestamps
        assert status.gop_s == pytest.approx(GOP_FRAMES / FPS, abs=0.05)
        assert camera.requests.count("/live.m3u8") >= 2  # the playlist was reloaded


def test_hls_vod_playlist_is_read_to_its_end(hls_directory: Path) -> None:
    segments = read_vod_playlist(hls_directory / "index.m3u8")
    with HttpCamera(LiveHls(hls_directory)) as camera, \
            running(reader_for(camera.url("/index.m3u8"))) as reader:
        # A VOD playlist is read as fast as it downloads and then ends like a file.
        wait_until(lambda: reader.status.reconnects >= 1, 10, "the playlist's end")
        status = reader.status
        assert status.last_error == "stream ended"
        assert (status.codec, status.width, status.height) == ("h264", WIDTH, HEIGHT)
        assert status.gop_s == pytest.approx(GOP_FRAMES / FPS, abs=0.05)
        # One keyframe per segment, each decoded (nothing asked to skip any).
        assert sequence(reader) >= len(segments)
        for segment in segments:
            assert f"/{segment.name}" in camera.requests


# --- RTSP over TLS. ------------------------------------------------------------------------------


def rtsp_options_reply(port: int, context: ssl.SSLContext | None) -> bytes:
    """The first bytes answered to an RTSP OPTIONS request, over TLS if ``context`` is given
    (the server's certificate is then verified against it)."""
    request = (f"OPTIONS rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if context is None:
            raw.sendall(request)
            with contextlib.suppress(ConnectionResetError):
                return raw.recv(64)
            return b""
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
            secure.sendall(request)
            return secure.recv(64)


def test_rtsps_stream_is_read(clip: Path, tls_pem: Path) -> None:
    with RtspServer({"cam": clip}, shared=True, tls_cert=tls_pem) as server:
        url = server.url("cam")
        assert url.startswith("rtsps://")
        # The server speaks TLS with our certificate, and nothing but TLS.
        verified = ssl.create_default_context(cafile=str(tls_pem))
        assert rtsp_options_reply(server.port, verified).startswith(b"RTSP/1.0 200 OK")
        assert not rtsp_options_reply(server.port, None).startswith(b"RTSP/")
        # FFmpeg does not verify the certificate by default.
        with running(reader_for(url)) as reader:
            wait_until(lambda: reader.status.online, 15, "online over TLS")
            status = reader.status
            assert status.state == "online"
            assert status.url == url
            assert (status.codec, status.width, status.height) == ("h264", WIDTH, HEIGHT)
            first = sequence(reader)
            wait_until(lambda: sequence(reader) >= first + 2, 4, "two more keyframes")
            frame = reader.latest()
            assert frame is not None
            assert frame.to_bgr().shape == (HEIGHT, WIDTH, 3)


def test_a_looped_file_starts_over_in_the_same_connection_with_time_going_on(
        tmp_path: Path) -> None:
    # A looped clip is rewound, not reopened, at each end (a demuxer, decoder and scaler
    # set-up each time, every few seconds, with the demo's and the soak's short scenes).
    scene = dataclasses.replace(PRESETS["quiet"](fps=10, gop=10), duration_s=2.0)
    path = write_scene(scene, tmp_path / "short.mp4")
    with av.open(str(path)) as container:
        length_s = float(container.duration or 0) / av.time_base
    assert 1.5 < length_s < 2.5
    reader = CameraReader(StreamSource(camera_id="loop", url=str(path), loop=True,
                                       decode="all", interval_s=1.0))
    seen: list[float] = []

    def newest_time() -> float:
        frame = reader.latest()
        if frame is not None and frame.pts_s is not None and \
                (not seen or frame.pts_s != seen[-1]):
            seen.append(frame.pts_s)
        return seen[-1] if seen else 0.0

    with running(reader):
        wait_until(lambda: newest_time() > 2 * length_s + 0.5, 3 * length_s + 10,
                   "the third loop")
        status = reader.status
    assert status.reconnects == 0  # one connection, rewound
    assert status.online
    assert all(b > a for a, b in itertools.pairwise(seen))  # no jump back at the seam
