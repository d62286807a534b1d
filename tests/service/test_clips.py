"""Evidence clips end to end, in process: the supervisor reads the synthetic fire scene from the
real RTSP server (H.264, built-in receiver), the simulator judges it, a real Mosquitto carries
the events, and the MP4 cut when the fire alert starts is checked with ffprobe and by looking
at its pictures.

The fire scene shows no flame for 4 s, then fire from 4 s on; each RTSP client sees the file
from its first frame (keyframes every 2 s), so the alert starts some 5 s after connecting and a
4.5 s pre-roll reaches back before the first flame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from prometheus_client import generate_latest

from monitor.alerts.payloads import ClipPayload
from monitor.config import config_from_mapping
from monitor.model.answer import Decision
from monitor.service.supervisor import Supervisor
from monitor.sim.broker import MosquittoBroker
from monitor.sim.vision import judge
from tests.support.mqtt_client import Subscriber, wait_until
from tests.support.processes import SimProcess
from tests.support.rtsp import RtspServer, rtsp_server_available

pytestmark = [pytest.mark.rtsp]

PRE_ROLL_S = 4.5
"""Long enough that the clip starts before the first flame even when the alert is late (the
alert's frame is captured at 4.5 s at the earliest: two positives at least 0.5 s apart)."""
POST_ROLL_S = 2.0
SCENE_GOP_S = 2.0
"""The session's scene clips: 10 fps, a keyframe every 20 frames."""


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
                            capture_output=True, text=True, check=True, timeout=30)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.asyncio
async def test_fire_alert_gets_a_clip_with_the_first_flame_in_its_pre_roll(
        tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess,
        scene_clips: dict[str, Path]) -> None:
    available, reason = rtsp_server_available()
    if not available:
        pytest.fail(f"RTSP test server unavailable ({reason}); `make test` installs it")
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"),
        "vlm": {"base_url": sim_process.base_url, "timeout_s": 10},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "client_id": "clips-test"},
        "defaults": {"interval_s": 1.0, "confirm_frames": 2, "clear_frames": 2,
                     "hazards": ["fire"], "clip_pre_roll_s": PRE_ROLL_S,
                     "clip_post_roll_s": POST_ROLL_S},
        "snapshots": {"url_prefix": "https://nvr.example/evidence"},
        "telemetry": {"enabled": False},
        "cameras": [{"id": "yard", "url": "rtsp://placeholder/fire"}],
    })
    subscriber = Subscriber(mosquitto, identifier="clips-subscriber")
    shutdown = asyncio.Event()
    with RtspServer({"fire": scene_clips["fire"]}) as rtsp:
        camera = config.cameras[0].model_copy(update={"url": rtsp.url("fire")})
        config = config.model_copy(update={"cameras": [camera]})
        supervisor = Supervisor.open(config)
        assert supervisor.clips is not None
        heard: list[ClipPayload] = []
        supervisor.clips.add_listener(heard.append)
        await subscriber.start()
        running = asyncio.create_task(supervisor.run(shutdown))
        try:
            await wait_until(lambda: bool(subscriber.on("monitor/clips")), 40,
                             "the clip announcement")
            metrics = generate_latest(supervisor.metrics.registry).decode()
            start = next(e for e in subscriber.events() if e["type"] == "start")
            # What a notification channel uses: the finished clip by the alert's id.
            waited = await supervisor.clips.wait_for_clip(start["id"], timeout_s=5)
        finally:
            shutdown.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, 15)
            await subscriber.stop()

    announced = subscriber.on("monitor/clips")[0].json()
    assert [payload.model_dump(mode="json") for payload in heard] == [announced]
    # The start event names the file that will exist, before it does.
    assert start["clip"]["ready"] is False
    assert start["clip"]["path"] == announced["path"]
    assert announced["ready"] is True, announced
    assert announced["id"] == start["id"]
    path = Path(announced["path"])
    assert path.parent.parent == tmp_path / "state" / "snapshots" / "yard"
    assert path.name.endswith("-clip.mp4")
    assert announced["url"] == ("https://nvr.example/evidence/"
                                + path.relative_to(tmp_path / "state" / "snapshots").as_posix())
    assert supervisor.clips.finished_path(start["id"]) == waited == path
    assert 'monitor_clip_ring_bytes{camera="yard"}' in metrics
    assert 'monitor_clip_ring_overflows_total{camera="yard"} 0.0' in metrics
    assert 'monitor_clips_total{outcome="written"} 1.0' in metrics

    assert_valid_mp4(path)
    assert_first_flame_in_pre_roll(path, announced["pre_roll_s"])


def assert_valid_mp4(path: Path) -> None:
    """ffprobe: an H.264 MP4 of the configured length (plus at most a GOP: it starts on a
    keyframe) whose first frame is a keyframe."""
    probe = ffprobe(path, "-show_format", "-show_streams")
    assert "mp4" in probe["format"]["format_name"]
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    duration = float(probe["format"]["duration"])
    assert PRE_ROLL_S + POST_ROLL_S - 0.5 <= duration <= \
        PRE_ROLL_S + POST_ROLL_S + SCENE_GOP_S + 0.5, duration
    first = ffprobe(path, "-show_frames", "-read_intervals", "%+#1",
                    "-show_entries", "frame=key_frame,pict_type")["frames"][0]
    assert (first["key_frame"], first["pict_type"]) == (1, "I")


def assert_first_flame_in_pre_roll(path: Path, pre_roll_s: float) -> None:
    """The clip opens on the yard without fire, and the first flame appears before the frame
    that raised the alert (``pre_roll_s`` into the clip)."""
    with av.open(str(path)) as container:
        fire_at = [(float(frame.time or 0.0),
                    judge(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)).fire.answer)
                   for frame in container.decode(video=0)]
    assert fire_at[0][1] is Decision.NO
    first_flame = next(t for t, answer in fire_at if answer is Decision.YES)
    assert 0 < first_flame <= pre_roll_s, (first_flame, pre_roll_s)
    assert pre_roll_s >= PRE_ROLL_S - 0.5
