"""Evidence clips from a local MP4 file (FFmpeg's demuxer: length-prefixed NAL units and an
avcC/hvcC record, turned into Annex B when the clip is written) and from an H.265 RTSP camera
(the built-in receiver), checked with ffprobe."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from monitor.ingest.clips import PacketRing, write_mp4
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import StreamSource
from monitor.sim.scenes import PRESETS, write_scene
from tests.support.readers import running, wait_until
from tests.support.rtsp import RtspServer, rtsp_server_available


def kept_s(ring: PacketRing) -> float:
    taken = ring.take(0.0)
    return taken.duration_s if taken is not None else 0.0


def test_a_file_camera_gets_a_clip_from_a_keyframe(scene_clips: dict[str, Path],
                                                   tmp_path: Path) -> None:
    ring = PacketRing("file", keep_s=3.0, max_bytes=16 * 1024 * 1024)
    source = StreamSource(camera_id="file", url=str(scene_clips["quiet"]), loop=True,
                          interval_s=1.0)
    with running(CameraReader(source, ring=ring)):
        wait_until(lambda: kept_s(ring) >= 2.5, 20, "2.5 s of packets in the ring")
        clip = ring.take(time.monotonic() - 2.0)
    assert clip is not None
    assert clip.length_size == 4  # as the MP4 file stores them
    assert ring.refused is None
    path = tmp_path / "clip.mp4"
    duration = write_mp4(clip, path)
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams",
         "-show_frames", "-read_intervals", "%+#1", str(path)],
        capture_output=True, text=True, check=True, timeout=30).stdout)
    assert probe["streams"][0]["codec_name"] == "h264"
    assert probe["frames"][0]["key_frame"] == 1
    assert abs(float(probe["format"]["duration"]) - duration) < 0.2
    assert duration >= 2.0


@pytest.mark.rtsp
@pytest.mark.parametrize("served", ["rtsp", "file"])
def test_h265_clips_from_the_builtin_receiver_and_from_a_file(served: str,
                                                              tmp_path: Path) -> None:
    available, reason = rtsp_server_available()
    if served == "rtsp" and not available:
        pytest.fail(f"RTSP test server unavailable ({reason}); `make test` installs it")
    scene = write_scene(PRESETS["quiet"](fps=10, gop=5), tmp_path / "hevc.mp4", codec="h265")
    ring = PacketRing("hevc", keep_s=2.0, max_bytes=16 * 1024 * 1024)
    with contextlib.ExitStack() as stack:
        url = str(scene)
        if served == "rtsp":
            url = stack.enter_context(RtspServer({"cam": scene}, shared=True)).url("cam")
        source = StreamSource(camera_id="hevc", url=url, loop=True, interval_s=1.0)
        with running(CameraReader(source, ring=ring)):
            wait_until(lambda: kept_s(ring) >= 1.5, 20, "1.5 s of packets in the ring")
            clip = ring.take(time.monotonic() - 1.0)
    assert clip is not None
    assert clip.codec == "hevc"
    assert clip.length_size == (None if served == "rtsp" else 4)
    path = tmp_path / "clip.mp4"
    duration = write_mp4(clip, path)
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams",
         "-show_frames", "-read_intervals", "%+#1", str(path)],
        capture_output=True, text=True, check=True, timeout=30).stdout)
    assert (probe["streams"][0]["codec_name"], probe["streams"][0]["width"]) == ("hevc", 640)
    assert probe["frames"][0]["key_frame"] == 1
    assert duration >= 1.0
