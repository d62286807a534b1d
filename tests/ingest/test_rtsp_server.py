"""The RTSP test server (tests/support/rtsp_server.py), read with PyAV as the daemon reads cameras.

Frames are identified by content: decoding the same H.264 bitstream gives bit-identical
pictures, so each received frame is matched to its index in the clip. That shows the file
really loops (…148, 149, 0, 1…), not merely that pictures keep coming.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import pytest

from tests.support.rtsp import RtspServer, rtsp_server_available

pytestmark = [pytest.mark.rtsp]

CLIP_SECONDS = 6
FPS = 25
WIDTH, HEIGHT = 640, 360
CLIP_FRAMES = CLIP_SECONDS * FPS
FRAME_PERIOD_S = 1 / FPS
STARTUP_REPEAT_LIMIT = 5  # frames a reader may see twice at the start (see _loop_wraps)

USER = "viewer"
PASSWORD = "pa:ss@word"  # ':' and '@' check that url(credentials=True) percent-encodes


@dataclass(frozen=True)
class Clip:
    """A test clip and the content hash of each of its frames, in order."""

    path: Path
    frame_index: dict[bytes, int]


@dataclass(frozen=True)
class Received:
    """One decoded frame as a reader saw it."""

    index: int  # position in the clip, -1 if the picture matches no frame of it
    time_s: float | None  # presentation time in the stream
    width: int
    height: int
    arrived_s: float  # time.monotonic() when it was decoded


def _picture_hash(frame: av.VideoFrame) -> bytes:
    return hashlib.blake2b(frame.to_ndarray(format="gray").tobytes(), digest_size=16).digest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """A 6 s 640x360 25 fps H.264 clip, one keyframe every 2 s, and its frames' hashes."""
    available, reason = rtsp_server_available()
    if not available:
        pytest.skip(reason)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not found: it makes the test clip")
    path = tmp_path_factory.mktemp("rtsp") / "cam.mp4"
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-f", "lavfi",
         "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-t", str(CLIP_SECONDS),
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "0",
         "-movflags", "+faststart", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    with av.open(str(path)) as container:
        hashes = [_picture_hash(frame) for frame in container.decode(video=0)]
    assert len(hashes) == CLIP_FRAMES
    assert len(set(hashes)) == CLIP_FRAMES, "testsrc2 frames should all differ"
    return Clip(path, {digest: index for index, digest in enumerate(hashes)})


def _read(url: str, clip: Clip, frames: int) -> list[Received]:
    """Decode ``frames`` frames from ``url`` over RTSP/TCP, as the daemon's readers do."""
    received: list[Received] = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, 5)) as container:
        for frame in container.decode(video=0):
            received.append(
                Received(
                    index=clip.frame_index.get(_picture_hash(frame), -1),
                    time_s=frame.time,
                    width=frame.width,
                    height=frame.height,
                    arrived_s=time.monotonic(),
                )
            )
            if len(received) >= frames:
                break
    return received


def _loop_wraps(received: list[Received]) -> int:
    """Check the frames follow the clip in order, looping; return how often it wrapped to 0.

    A reader that starts the clip may see its first frame(s) twice: what the server prerolled
    goes out before its first loop seek lands (see rtsp_server.py). That is one frame unless
    the machine is very busy, so a restart within the first few frames is allowed.
    """
    indices = [frame.index for frame in received]
    assert -1 not in indices, "a received picture matches no frame of the clip"
    if indices and indices[0] == 0:
        restart = next(
            (i for i in range(1, STARTUP_REPEAT_LIMIT + 1) if indices[i : i + 1] == [0]), 0
        )
        indices = indices[restart:]
    for previous, current in itertools.pairwise(indices):
        assert current == (previous + 1) % CLIP_FRAMES, f"frame {previous} followed by {current}"
    return sum(1 for index in indices[1:] if index == 0)


def _assert_healthy(received: list[Received]) -> None:
    """Right picture size, strictly increasing stream time, no stall on the way."""
    assert {(frame.width, frame.height) for frame in received} == {(WIDTH, HEIGHT)}
    times = [frame.time_s for frame in received if frame.time_s is not None]
    assert all(later > earlier for earlier, later in itertools.pairwise(times)), (
        "stream time went backwards or stood still"
    )
    # Frames come at the clip's pace (the server plays in real time); 1 s without one is a
    # stall, e.g. a loop boundary where the server stopped sending.
    gaps = [b.arrived_s - a.arrived_s for a, b in itertools.pairwise(received)]
    assert max(gaps) < 1.0, f"frames stalled for {max(gaps):.2f} s"


def test_stream_loops_past_two_file_ends(clip: Clip) -> None:
    """About 14 s of a 6 s clip: two loop boundaries, frames all the way, server still up."""
    with RtspServer({"cam": clip.path}) as server:
        received = _read(server.url("cam"), clip, frames=14 * FPS)
        assert server.is_running(), server.stderr_tail()

    assert len(received) == 14 * FPS
    _assert_healthy(received)
    assert _loop_wraps(received) >= 2
    times = [frame.time_s for frame in received if frame.time_s is not None]
    # Timestamps go on across loop boundaries, one frame period apart (no jump back to 0, no
    # repeated timestamp at the seam).
    assert times[-1] - times[0] == pytest.approx((len(times) - 1) * FRAME_PERIOD_S, abs=0.05)


@pytest.mark.parametrize("shared", [False, True], ids=["own-media", "shared-media"])
def test_two_concurrent_readers(clip: Clip, *, shared: bool) -> None:
    """A second reader joining 1 s later works and leaves the first reader's stream alone.

    With its own media the second reader starts at the clip's first frame; with shared media
    it joins the running stream at a later keyframe, and the first reader sees no rewind
    (gst-rtsp-server would otherwise answer the joiner's PLAY range with a flushing seek).
    """
    results: dict[str, list[Received]] = {}
    errors: list[BaseException] = []

    def reader(name: str, url: str, frames: int) -> None:
        try:
            results[name] = _read(url, clip, frames)
        except Exception as exc:  # noqa: BLE001  # re-raised in the test thread below
            errors.append(exc)

    with RtspServer({"cam": clip.path}, shared=shared) as server:
        first = threading.Thread(target=reader, args=("first", server.url("cam"), 4 * FPS))
        first.start()
        time.sleep(1.0)
        second = threading.Thread(target=reader, args=("second", server.url("cam"), 2 * FPS))
        second.start()
        first.join(timeout=20)
        second.join(timeout=20)
        assert server.is_running(), server.stderr_tail()

    if errors:
        raise errors[0]
    assert set(results) == {"first", "second"}, "a reader did not finish in time"
    for received in results.values():
        _assert_healthy(received)
        _loop_wraps(received)
    assert results["first"][0].index == 0
    if shared:
        assert results["second"][0].index > 0, "the shared stream restarted for the joiner"
    else:
        assert results["second"][0].index == 0


def test_credentials_are_required(clip: Clip) -> None:
    """With --user/--password, no or wrong credentials get 401; the right ones get video."""
    with RtspServer({"cam": clip.path}, user=USER, password=PASSWORD) as server:
        with pytest.raises(av.error.HTTPUnauthorizedError):
            _read(server.url("cam"), clip, frames=1)
        wrong = server.url("cam").replace("rtsp://", f"rtsp://{USER}:nope@")
        with pytest.raises(av.error.HTTPUnauthorizedError):
            _read(wrong, clip, frames=1)

        received = _read(server.url("cam", credentials=True), clip, frames=5)
        assert server.is_running(), server.stderr_tail()

    assert len(received) == 5
    _assert_healthy(received)
