"""Zoom-in verification through the supervisor's real sink and the simulator over HTTP (in
process, no broker): the crops are saved as evidence next to the event's image, the verdict
and the event carry the verification, the tokens are counted."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import pytest

from monitor.config import config_from_mapping
from monitor.ingest.frame import CapturedFrame
from monitor.service.pipeline import CameraPipeline
from monitor.service.supervisor import Supervisor
from monitor.sim.scenes import PRESETS, render_frame
from monitor.sim.server import SimServer
from tests.service.test_pipeline import FakeClock, FakeSource


@pytest.mark.asyncio
async def test_a_confirmed_no_helmet_alert_keeps_its_crop_as_evidence(tmp_path: Path) -> None:
    async with SimServer() as sim:
        config = config_from_mapping({
            "state_dir": str(tmp_path / "state"),
            "vlm": {"base_url": sim.base_url, "language": "en"},
            "mqtt": {"port": 1, "client_id": "zoom-evidence-test"},
            "defaults": {"confirm_frames": 1, "hazards": ["no_helmet"], "change_gate": False},
            "telemetry": {"enabled": False},
            "cameras": [{"id": "scaffold", "url": str(tmp_path / "unused.mp4")}],
        })
        supervisor = Supervisor.open(config)  # not run: its sink stores into the outbox
        clock = FakeClock()
        source = FakeSource(clock)
        image = render_frame(PRESETS["no_helmet"](width=1280, height=720), 8.0)
        source.frame = CapturedFrame("scaffold", 1, time.time(), clock.monotonic(), 1280, 720,
                                     image)
        with ThreadPoolExecutor(max_workers=1) as executor:
            pipeline = CameraPipeline(config, config.cameras[0], source=source,
                                      client=supervisor.vlm, sink=supervisor.sink,
                                      executor=executor, clock=clock)
            verdict = await pipeline.step()
        await supervisor.vlm.aclose()
        crop_answers = sim.stats["crop_answers"]
    assert verdict is not None
    assert crop_answers == 1
    stored = supervisor.outbox.head()
    [event] = [json.loads(m.payload) for m in stored if m.topic == "monitor/events"]
    assert event["type"] == "start"
    verification = event["verification"]
    assert verification["outcome"] == "confirmed"
    [check] = verification["checks"]
    assert (check["answer"], check["seen"], check["agrees"]) == ("no", "bare head", True)
    x1, y1, x2, y2 = check["crop"]
    crop = Path(check["evidence"])
    assert crop.name.endswith("-r0-zoom1.jpg")
    assert crop.parent == Path(event["snapshot"]["path"]).parent
    saved = cv2.imread(str(crop))
    assert saved is not None
    assert saved.shape[:2] == (y2 - y1, x2 - x1)  # full resolution, not the shrunk frame
    [retained] = [json.loads(m.payload) for m in stored if m.topic == "monitor/scaffold/verdict"]
    assert retained["verification"][0]["outcome"] == "confirmed"
    assert retained["unverified_answer"]["helmet"]["status"] == "some_missing"
    # The question's tokens are counted with the verdict's.
    counted = supervisor.metrics.tokens.labels("prompt")._value.get()
    assert counted > (verdict.prompt_tokens or 0)
    supervisor.outbox.close()
