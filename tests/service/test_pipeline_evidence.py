"""A camera pipeline's verdict handling through the supervisor's real sink (in process, no
broker): a no-hard-hat alert starts and updates with the evidence image saved, boxes drawn, and
everything stored in the outbox in order: snapshot, then event, then state."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.config import config_from_mapping
from monitor.ingest.frame import CapturedFrame
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import stream_source
from monitor.model.answer import Answer, Verdict
from monitor.service.pipeline import CameraPipeline
from monitor.service.supervisor import Supervisor


def helmet_verdict(missing: int, at: float) -> Verdict:
    boxes = [{"bbox_2d": [40 + 100 * i, 60, 120 + 100 * i, 300], "label": "no_helmet"}
             for i in range(missing)]
    answer = Answer.model_validate({
        "fire": {"answer": "no"}, "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": missing, "boxes": boxes,
                   "description": f"{missing} without a hard hat"}})
    return Verdict("scaffold", answer, at, at + 0.3, 0.3, "Qwen2.5-VL", "sim")


@pytest.mark.asyncio
async def test_alert_start_and_update_carry_evidence(tmp_path: Path) -> None:
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"port": 1, "client_id": "evidence-test"},
        "defaults": {"confirm_frames": 1, "clear_frames": 1, "hazards": ["no_helmet"]},
        "snapshots": {"url_prefix": "https://nvr.example/evidence"},
        "telemetry": {"enabled": False},
        "cameras": [{"id": "scaffold", "url": str(tmp_path / "unused.mp4")}],
    })
    supervisor = Supervisor.open(config)  # not run: its sink stores into the outbox all the same
    camera = config.cameras[0]
    with ThreadPoolExecutor(max_workers=1) as executor:
        pipeline = CameraPipeline(config, camera,
                                  source=CameraReader(stream_source(config, camera)),
                                  client=supervisor.vlm, sink=supervisor.sink, executor=executor)
        image = np.full((360, 640, 3), 90, dtype=np.uint8)
        now = time.time()
        for index, missing in enumerate((1, 2)):
            frame = CapturedFrame("scaffold", index, now + index, time.monotonic(), 640, 360,
                                  image)
            await pipeline.handle_verdict(helmet_verdict(missing, now + index), frame)
    stored = supervisor.outbox.head()
    topics = [m.topic for m in stored]
    # Snapshot before its event (retained, so the first one was replaced by the second).
    last_event = len(topics) - 1 - topics[::-1].index("monitor/events")
    assert topics.index("monitor/scaffold/no_helmet/snapshot") == last_event - 1
    events = [json.loads(m.payload) for m in stored if m.topic == "monitor/events"]
    assert [e["type"] for e in events] == ["start", "update"]
    assert [e["missing_helmets"] for e in events] == [1, 2]
    assert len(events[1]["boxes"]) == 2
    for event in events:
        path = Path(event["snapshot"]["path"])
        assert path.is_relative_to(tmp_path / "state" / "snapshots" / "scaffold")
        assert event["snapshot"]["url"].startswith("https://nvr.example/evidence/scaffold/")
        drawn = cv2.imread(str(path))
        assert drawn is not None
        assert drawn[150, 40][2] > 180  # the first box's left edge is red
    # The retained snapshot is coalesced: the latest frame only.
    [snapshot] = [m for m in stored if m.topic.endswith("/snapshot")]
    assert snapshot.payload == Path(events[1]["snapshot"]["path"]).read_bytes()
    assert supervisor.metrics.events.labels("no_helmet", "update")._value.get() == 1
    assert [m.topic for m in stored if m.topic.endswith("/verdict")] == [
        "monitor/scaffold/verdict"]  # retained: the latest verdict only
    supervisor.outbox.close()
