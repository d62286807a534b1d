"""Camera readers across reconnects, against the real RTSP test server (GStreamer): the stall
timeout kept from the camera's own frame rate, the backoff of a camera that keeps failing, and
how soon a camera that was gone is back.

The clip is 640x360 at 10 fps with a 0.5 s GOP, so its derived stall timeout is 2 s (10
frame intervals, at least 2 s), well below the 10 s read timeout these readers are given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from monitor.ingest.reader import CameraReader
from monitor.ingest.source import RtspClient, StreamSource
from monitor.sim.scenes import PRESETS, write_scene
from tests.support.readers import running, wait_until
from tests.support.rtsp import RtspServer, rtsp_server_available

FPS = 10
READ_TIMEOUT_S = 10.0
DERIVED_STALL_S = 2.0
OUTAGE_S = 9.5


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short looping scene at 10 fps with a 0.5 s GOP."""
    available, reason = rtsp_server_available()
    if not available:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("reconnect") / "quiet.mp4"
    return write_scene(PRESETS["quiet"](fps=FPS, gop=5), path)


def reader_for(url: str, *, rtsp_client: RtspClient = "builtin",
               rng: random.Random | None = None) -> CameraReader:
    return CameraReader(StreamSource("cam", url, open_timeout_s=5.0,
                                     read_timeout_s=READ_TIMEOUT_S, rtsp_client=rtsp_client),
                        rng=rng)


@pytest.mark.rtsp
@pytest.mark.parametrize("client", ["builtin", "ffmpeg"])
def test_a_camera_that_hangs_after_a_reconnect_is_offline_within_its_derived_timeout(
        clip: Path, client: RtspClient) -> None:
    with RtspServer({"cam": clip}, shared=True) as server, \
            running(reader_for(server.url("cam"), rtsp_client=client)) as reader:
        wait_until(lambda: reader.status.online and reader.status.fps is not None, 10,
                   "online with the frame rate measured")
        assert reader.status.stall_timeout_s == pytest.approx(DERIVED_STALL_S)
        server.stop()
        server.start()  # the same port: the camera restarted
        wait_until(lambda: reader.status.reconnects >= 1 and reader.check(time.monotonic()).online,
                   15, "online again after the restart")
        # The new connection has not measured its own rate yet: the last one stands in.
        assert reader.status.stall_timeout_s == pytest.approx(DERIVED_STALL_S)
        # FFmpeg's RTSP demuxer still hands out the packet its reorder queue held when the
        # socket went quiet, up to one timeout later (measured): that much slack for it.
        slack = DERIVED_STALL_S if client == "ffmpeg" else 0.0
        os.kill(server.pid, signal.SIGSTOP)  # the camera hangs: TCP stays open, no data
        try:
            took = wait_until(lambda: not reader.check(time.monotonic()).online,
                              DERIVED_STALL_S + slack + 1.5, "offline while the server is frozen")
            stalled = reader.status
            # ... and given up after that long too (the connection's own read timeout).
            wait_until(lambda: reader.status.reconnects >= 2, DERIVED_STALL_S + slack + 2.0,
                       "a reconnect after the derived timeout")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert took >= DERIVED_STALL_S - 0.5  # not before the stream is actually overdue
        assert stalled.last_error is not None
        assert stalled.last_error.startswith(
            ("stalled", f"no data within the read timeout ({DERIVED_STALL_S:.1f} s)"))
        assert stalled.stall_timeout_s == pytest.approx(DERIVED_STALL_S)


def test_a_source_that_gives_one_frame_and_ends_is_reopened_less_and_less_often(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="monitor.ingest.reader")
    scene = dataclasses.replace(PRESETS["quiet"](fps=FPS, gop=5), duration_s=0.1)
    one_frame = write_scene(scene, tmp_path / "one-frame.mp4")
    reader = CameraReader(StreamSource("cam", str(one_frame)), rng=random.Random(1))
    with running(reader):
        # Each connection delivers its frame, and still the delays grow: 0.5-1, 1-2, 2-4 s.
        wait_until(lambda: reader.status.reconnects >= 3, 10, "three reconnects")
        frames = reader.status.frames_read
    assert frames >= 3  # every connection did deliver
    delays = [float(delay) for delay in re.findall(r"stream ended; reconnecting in ([\d.]+) s",
                                                   caplog.text)]
    assert len(delays) >= 3, caplog.text
    assert delays[0] <= delays[1] <= delays[2], delays
    assert delays[2] >= 2.0, delays


@pytest.mark.rtsp
def test_a_camera_back_after_a_short_outage_is_read_again_within_5_s(clip: Path) -> None:
    # Seeded so that the old backoff (1, 2, 4, 8, 16 s) would wait until 24.8 s into the
    # outage: reconnect attempts at 0.9, 2.8, 4.9, 8.9 s, then none until 24.8 s.
    with RtspServer({"cam": clip}, shared=True) as server, \
            running(reader_for(server.url("cam"), rng=random.Random(84))) as reader:
        wait_until(lambda: reader.status.online, 10, "online")
        server.stop()
        wait_until(lambda: not reader.status.online, 5, "offline once the server is gone")
        time.sleep(OUTAGE_S)  # the outage itself: nothing to poll for
        server.start()
        took = wait_until(lambda: reader.status.online, 5.5, "online again")
        assert took <= 5.0
        assert reader.status.reconnects >= 4  # it did keep trying during the outage


@pytest.mark.rtsp
def test_the_log_gives_the_frame_rate_of_a_camera_that_comes_online(
        clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="monitor.ingest.reader")
    with RtspServer({"cam": clip}, shared=True) as server, \
            running(reader_for(server.url("cam"))) as reader:
        wait_until(lambda: reader.status.fps is not None, 10, "the frame rate measured")
        # In the online line when it is known at the first picture, or in a line of its own.
        wait_until(lambda: re.search(r"camera cam: (online \(640x360 h264, )?(9\.\d|10\.\d) fps",
                                     caplog.text) is not None, 2, "a log line with the rate")
    assert "? fps" not in caplog.text
    assert "camera cam: online (640x360 h264, " in caplog.text
