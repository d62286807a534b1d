"""Camera readers across reconnects, against the real RTSP test server (GStreamer): the stall
timeout kept from the camera's own frame rate, the backoff of a camera that keeps failing, and
how soon a camera that was gone is back.

The clip is 640x360 at 10 fps with a 0.5 s GOP, so its derived stall timeout is 2 s (10
frame intervals, at least 2 s), well below the 10 s read timeout these readers are given.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from monitor.capture import CameraReader, RtspClient, StreamSource
from monitor.sim.scenes import PRESETS, write_scene
from tests.support.readers import running, wait_until
from tests.support.rtsp import RtspServer, rtsp_server_available

FPS = 10
READ_TIMEOUT_S = 10.0
DERIVED_STALL_S = 2.0


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
        os.kill(server.pid, signal.SIGSTOP)  # the camera hangs: TCP stays open, no data
        try:
            took = wait_until(lambda: not reader.check(time.monotonic()).online,
                              DERIVED_STALL_S + 1.5, "offline while the server is frozen")
            # ... and given up after that long too (the connection's own read timeout).
            wait_until(lambda: reader.status.reconnects >= 2, DERIVED_STALL_S + 2.0,
                       "a reconnect after the derived timeout")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert took >= DERIVED_STALL_S - 0.5  # not before the stream is actually overdue
        assert reader.status.last_error is not None
        assert reader.status.last_error.startswith("stalled")
        assert reader.status.stall_timeout_s == pytest.approx(DERIVED_STALL_S)
