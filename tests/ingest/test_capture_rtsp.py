"""Camera readers against the real RTSP test server (GStreamer): decode modes, stalls, hung
servers, isolation between cameras, authentication.

The clip is 640x360 at 10 fps with a keyframe every 5 frames (a 0.5 s GOP), so keyframe-only
decoding shows as 2 pictures a second against 10 for all frames, within a few seconds.
Waits poll a condition against a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pytest

from monitor.ingest.reader import CameraReader
from monitor.ingest.sampling import IntervalSampler
from monitor.ingest.source import DecodeMode, RtspClient, StreamSource, StreamStatus
from monitor.ingest.urls import with_credentials
from monitor.sim.scenes import PRESETS, write_scene
from tests.support.readers import stopped, wait_until
from tests.support.rtsp import RtspServer, rtsp_server_available

pytestmark = [pytest.mark.rtsp]

GOP_FRAMES = 5
FPS = 10
GOP_S = GOP_FRAMES / FPS
USER = "viewer"
PASSWORD = "pa:ss@w0rd"  # ':' and '@' exercise percent-encoding in every form


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short looping scene with a 0.5 s GOP."""
    available, reason = rtsp_server_available()
    if not available:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("capture") / "quiet-gop5.mp4"
    return write_scene(PRESETS["quiet"](fps=FPS, gop=GOP_FRAMES), path)


@pytest.fixture
def server(clip: Path) -> Iterator[RtspServer]:
    """One shared mount (readers join mid-stream, as with a camera)."""
    with RtspServer({"cam": clip}, shared=True) as running:
        yield running


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A TCP listener that accepts connections and never says a word of RTSP."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)  # held open, never answered

    thread = threading.Thread(target=accept, name="hung-rtsp-server", daemon=True)
    thread.start()
    try:
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        stop.set()
        thread.join(2)
        for connection in accepted:
            connection.close()
        listener.close()




def reader_for(url: str, *, decode: DecodeMode = "auto", interval_s: float = 2.0,
               open_timeout_s: float = 5.0, camera_id: str = "cam",
               rtsp_client: RtspClient = "builtin") -> CameraReader:
    return CameraReader(StreamSource(camera_id, url, decode=decode, interval_s=interval_s,
                                     open_timeout_s=open_timeout_s, read_timeout_s=5.0,
                                     rtsp_client=rtsp_client))




def stream_times(reader: CameraReader, seconds: float) -> list[float]:
    """The stream times of the frames the reader delivers during ``seconds``."""
    seen: dict[int, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = reader.latest()
        if frame is not None and frame.pts_s is not None:
            seen[frame.sequence] = frame.pts_s
        time.sleep(0.01)
    return [seen[sequence] for sequence in sorted(seen)]


def sample_for(readers: list[CameraReader], interval_s: float, seconds: float) -> list[int]:
    """Run the daemon's sampling rule on each reader for ``seconds``; samples per reader."""
    samplers = [IntervalSampler(interval_s, idle_poll_s=0.01) for _ in readers]
    counts = [0] * len(readers)
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for index, (reader, sampler) in enumerate(zip(readers, samplers, strict=True)):
            frame = reader.latest()
            if sampler.decide(now, frame.sequence if frame else None).take and frame:
                sampler.taken(now, frame.sequence)
                counts[index] += 1
        time.sleep(0.01)
    return counts


@pytest.mark.parametrize("client", ["builtin", "ffmpeg"])
def test_keyframe_mode_delivers_frames_at_the_gop_rate(server: RtspServer,
                                                       client: RtspClient) -> None:
    reader = reader_for(server.url("cam"), decode="keyframes", rtsp_client=client)
    reader.start()
    try:
        # The GOP is measured between keyframes; the test server sends a new client its
        # preroll keyframe and then the current one, a first "GOP" of one frame that the
        # next complete GOP corrects.
        wait_until(lambda: reader.status.online and reader.status.gop_frames == GOP_FRAMES,
                   10, "online with the stream's GOP measured")
        status = reader.status
        assert status.decode == "keyframes"
        assert status.gop_s == pytest.approx(GOP_S, abs=0.05)
        assert status.fps == pytest.approx(FPS, rel=0.1)
        assert (status.width, status.height, status.codec) == (640, 360, "h264")
        frame = reader.latest()
        assert frame is not None
        assert frame.grey_thumbnail(64, 36).shape == (36, 64)
        assert frame.to_bgr(448, 252).shape == (252, 448, 3)  # the YUV-scaled fast path
        assert frame.to_bgr().shape == (360, 640, 3)
        # Every picture is a keyframe, one per GOP: stream times 0.5 s apart, 2 a second.
        times = stream_times(reader, 4.0)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert gaps
        # (A poll can miss one of two frames decoded back to back from the start-up buffer:
        # a gap of two GOPs is fine, a gap of less than one is a non-key frame.)
        assert all(round(gap / GOP_S) >= 1 and gap == pytest.approx(round(gap / GOP_S) * GOP_S,
                                                                    abs=0.01)
                   for gap in gaps), gaps
        assert 6 <= len(times) <= 11  # 8 in 4 s, give or take the buffered start
    finally:
        stopped(reader)


def test_all_mode_is_sampled_at_the_interval_not_the_gop(server: RtspServer) -> None:
    interval = 0.2  # shorter than the 0.5 s GOP
    every_frame = reader_for(server.url("cam"), decode="all", interval_s=interval)
    automatic = reader_for(server.url("cam"), decode="auto", interval_s=interval)
    keyframes = reader_for(server.url("cam"), decode="keyframes", interval_s=interval)
    readers = [every_frame, automatic, keyframes]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: all(r.status.online for r in readers), 10, "all three online")
        wait_until(lambda: automatic.status.decode == "all", 5, "auto switching to all frames")
        counts = sample_for(readers, interval, 3.0)
        # 3 s at 0.2 s: 15 samples where every frame is decoded; keyframes give at most 7.
        assert counts[0] >= 13, counts
        assert counts[1] >= 12, counts  # auto: a keyframe to switch at, then like "all"
        assert counts[2] <= 8, counts
        assert every_frame.status.frames_read > 3 * keyframes.status.frames_read
    finally:
        for reader in readers:
            stopped(reader)


def test_killed_server_goes_offline_within_the_stall_timeout_and_comes_back(
        server: RtspServer) -> None:
    reader = reader_for(server.url("cam"))
    reader.start()
    try:
        wait_until(lambda: reader.status.online and reader.status.fps is not None, 10,
                   "online")
        stall_timeout = reader.status.stall_timeout_s
        assert stall_timeout is not None
        assert stall_timeout == pytest.approx(2.0)  # 10 frame intervals at 10 fps, at least 2 s
        os.kill(server.pid, signal.SIGKILL)
        took = wait_until(lambda: not reader.check(time.monotonic()).online,
                          stall_timeout + 1.0, "offline after the server was killed")
        assert took <= stall_timeout + 1.0
        assert reader.status.last_error
        server.stop()
        server.start()  # the same port: the camera is back
        wait_until(lambda: reader.check(time.monotonic()).online, 20, "online again")
        assert reader.status.reconnects >= 1
        assert reader.status.last_error is None
    finally:
        stopped(reader)


def test_server_that_never_answers_ends_in_timeouts_and_reconnects(hung_server: str) -> None:
    reader = reader_for(hung_server, open_timeout_s=1.0)
    reader.start()
    try:
        wait_until(lambda: reader.status.reconnects >= 2, 10, "two failed connects")
        status = reader.status
        assert not status.online
        assert status.state == "offline"
        assert status.last_error is not None
        assert "timeout" in status.last_error
    finally:
        stopped(reader)  # no stuck thread: it ends while the server still says nothing


def test_one_broken_camera_leaves_the_others_sampling_rate_unchanged(
        clip: Path, hung_server: str) -> None:
    interval = 0.5
    with RtspServer({f"cam{i}": clip for i in range(8)}, shared=True) as eight:
        healthy = [reader_for(eight.url(f"cam{i}"), interval_s=interval, camera_id=f"cam{i}")
                   for i in range(8)]
        broken = reader_for(hung_server, interval_s=interval, open_timeout_s=1.0,
                            camera_id="broken")
        readers = [*healthy, broken]
        for reader in readers:
            reader.start()
        try:
            wait_until(lambda: all(r.status.online for r in healthy), 15, "eight online")
            counts = sample_for(readers, interval, 4.0)
            # 4 s at 0.5 s: 8 samples each, as if the broken camera were not there.
            assert all(count >= 7 for count in counts[:8]), counts
            assert counts[8] == 0
            assert not broken.status.online
        finally:
            for reader in readers:
                stopped(reader)


@pytest.mark.parametrize(("client", "scheme"), [("builtin", "basic"), ("builtin", "digest"),
                                               ("ffmpeg", "digest")])
def test_rtsp_authentication(clip: Path, caplog: pytest.LogCaptureFixture, client: RtspClient,
                             scheme: Literal["basic", "digest"]) -> None:
    caplog.set_level(logging.DEBUG, logger="monitor")
    with RtspServer({"cam": clip}, shared=True, user=USER, password=PASSWORD,
                    auth=scheme) as secured:
        plain = secured.url("cam")
        right = reader_for(with_credentials(plain, USER, PASSWORD), camera_id="right",
                           rtsp_client=client)
        wrong = reader_for(with_credentials(plain, USER, "not-" + PASSWORD), camera_id="wrong",
                           rtsp_client=client)
        for reader in (right, wrong):
            reader.start()
        try:
            wait_until(lambda: right.status.online, 10, "online with the right password")
            wait_until(lambda: wrong.status.reconnects >= 1, 10, "wrong password refused")
            status: StreamStatus = wrong.status
            assert status.state == "unauthorized"
            assert status.last_error is not None
            assert status.last_error.startswith("unauthorized")
            assert not status.online
        finally:
            for reader in (right, wrong):
                stopped(reader)
    encoded = quote(PASSWORD, safe="")
    for text in (caplog.text, repr(right.status), repr(wrong.status)):
        assert PASSWORD not in text
        assert encoded not in text
    assert f"{USER}:***@" in right.status.url


def test_stalled_stream_is_offline_within_the_stall_timeout(server: RtspServer) -> None:
    reader = reader_for(server.url("cam"))
    reader.start()
    try:
        wait_until(lambda: reader.status.online and reader.status.fps is not None, 10,
                   "online")
        stall_timeout = reader.status.stall_timeout_s
        assert stall_timeout is not None
        os.kill(server.pid, signal.SIGSTOP)  # the camera hangs: TCP stays open, no data
        try:
            took = wait_until(lambda: not reader.check(time.monotonic()).online,
                              stall_timeout + 1.0, "offline while the server is frozen")
            assert took >= stall_timeout - 0.5  # not before the stream is actually overdue
            assert reader.status.last_error is not None
            assert reader.status.last_error.startswith("stalled")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        wait_until(lambda: reader.check(time.monotonic()).online, 20, "online again")
    finally:
        stopped(reader)


def test_opencv_backend_reads_and_converts_only_a_few_frames(server: RtspServer) -> None:
    reader = CameraReader(StreamSource("cam", server.url("cam"), backend="opencv",
                                       interval_s=1.0, open_timeout_s=5.0, read_timeout_s=5.0))
    reader.start()
    try:
        wait_until(lambda: reader.status.online, 15, "online through OpenCV")
        first = reader.latest()
        assert first is not None
        assert first.to_bgr().shape == (360, 640, 3)
        assert first.to_bgr(320, 180).shape == (180, 320, 3)
        assert reader.status.backend == "opencv"
        assert reader.status.decode == "all"
        # Frames are grabbed at 10 fps but converted at most every interval/4 (0.25 s).
        times = stream_times(reader, 2.0)
        assert 4 <= len(times) <= 10, times
    finally:
        stopped(reader)


def test_rtsp_over_udp(server: RtspServer) -> None:
    reader = CameraReader(StreamSource("cam", server.url("cam"), transport="udp",
                                       open_timeout_s=5.0, read_timeout_s=5.0))
    reader.start()
    try:
        wait_until(lambda: reader.status.online, 10, "online over UDP")
        assert reader.latest() is not None
    finally:
        stopped(reader)


def test_keyframes_the_sampler_will_not_take_are_not_decoded(server: RtspServer) -> None:
    reader = reader_for(server.url("cam"), decode="keyframes")
    reader.start()
    try:
        wait_until(lambda: reader.status.online and reader.status.gop_s is not None, 10,
                   "online with a measured GOP")
        due = time.monotonic() + 3.0
        reader.want_next_frame_at(due)
        before = reader.status.frames_read
        # Until 1.25 GOPs before the sample is due, keyframes arrive (every 0.5 s) undecoded.
        wait_until(lambda: time.monotonic() >= due - 1.25 * GOP_S - 0.2, 5, "the quiet part")
        assert reader.status.frames_read - before <= 1  # at most one already in the decoder
        wait_until(lambda: reader.status.frames_read > before + 1, 3, "decoding again")
        frame = reader.latest()
        assert frame is not None
        assert frame.captured_monotonic >= due - 1.25 * GOP_S - 0.1
    finally:
        stopped(reader)


def test_h265_camera_is_read_by_the_builtin_receiver(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    clip = write_scene(PRESETS["quiet"](fps=FPS, gop=GOP_FRAMES), tmp_path / "hevc.mp4",
                       codec="h265")
    with RtspServer({"cam": clip}, shared=True) as hevc:
        reader = reader_for(hevc.url("cam"), decode="keyframes")
        reader.start()
        try:
            wait_until(lambda: reader.status.online and reader.status.gop_frames == GOP_FRAMES,
                       10, "online with the stream's GOP measured")
            status = reader.status
            assert (status.width, status.height, status.codec) == (640, 360, "hevc")
            frame = reader.latest()
            assert frame is not None
            assert frame.to_bgr(448, 252).shape == (252, 448, 3)
            times = stream_times(reader, 2.0)
            assert len(times) >= 3  # keyframes at the GOP rate (2 a second)
            assert all(later - earlier == pytest.approx(GOP_S, abs=0.01)
                       for earlier, later in itertools.pairwise(times))
        finally:
            stopped(reader)
    assert "FFmpeg instead" not in caplog.text  # read by monitor.ingest.rtsp, not handed over
