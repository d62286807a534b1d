"""An evidence clip from a local MP4 file (FFmpeg's demuxer: length-prefixed H.264 and an avcC
record, turned into Annex B when the clip is written), checked with ffprobe."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from monitor.ingest.clips import PacketRing, write_mp4
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import StreamSource
from tests.support.readers import running, wait_until


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
