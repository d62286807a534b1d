"""The console's memory: bounded rings of samples, alerts with their steps, live updates."""

from __future__ import annotations

import asyncio

import pytest

from monitor.alerts.payloads import SnapshotRef
from monitor.alerts.tracker import HazardTracker, TrackerSettings
from monitor.console.state import CameraView, ConsoleState, overlay_boxes, summary_text
from monitor.model.answer import Answer, Hazard, Verdict
from monitor.model.imaging import EncodedImage

T0 = 1_700_000_000.0


def answer(*, fire: bool = False, missing: int = 0) -> Answer:
    """A model answer; ``missing`` people without a hard hat, each with a box."""
    boxes = [{"bbox_2d": [100 * i, 100, 100 * i + 50, 200], "label": "person"}
             for i in range(missing)]
    return Answer.model_validate({
        "fire": {"answer": "yes" if fire else "no", "description": "flames" if fire else ""},
        "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing" if missing else "all_worn",
                   "missing_count": missing, "boxes": boxes},
    })


def verdict(camera: str, at: float, said: Answer, *, offset: tuple[int, int] = (0, 0)) -> Verdict:
    """A verdict whose image was sent at half the frame's size (1280x720 -> 640x360)."""
    image = EncodedImage(jpeg=b"\xff\xd8jpeg" + str(at).encode(), width=640, height=360,
                         source_width=1280, source_height=720)
    return Verdict(camera_id=camera, answer=said, captured_at=at, analysed_at=at + 0.5,
                   latency_s=0.4, model="m", endpoint="e", image=image, image_offset=offset)


def views(*ids: str) -> list[CameraView]:
    return [CameraView(camera_id=i, context="", hazards=("fire",), roi=None) for i in ids]


def test_ring_keeps_the_newest_samples_with_the_jpeg_as_sent() -> None:
    state = ConsoleState(views("a", "b"), samples_per_camera=3)
    kept = [state.record_verdict(verdict("a", T0 + i, answer())) for i in range(5)]
    samples = state.samples("a")
    assert [s.captured_at for s in samples] == [T0 + 4, T0 + 3, T0 + 2]
    assert samples[0].jpeg == b"\xff\xd8jpeg" + str(T0 + 4).encode()
    assert kept[0] is not None
    assert state.sample(kept[0].sample_id) is None
    assert kept[4] is not None
    assert state.sample(kept[4].sample_id) is kept[4]
    assert state.samples("b") == []
    assert state.record_verdict(verdict("unknown", T0, answer())) is None


def test_boxes_are_in_sent_image_pixels_and_undo_the_region_offset() -> None:
    said = answer(missing=1).shifted(40, 20)  # as the pipeline shifts a region's boxes
    state = ConsoleState(views("a"))
    sample = state.record_verdict(verdict("a", T0, said, offset=(40, 20)))
    assert sample is not None
    (box,) = sample.boxes
    assert overlay_boxes(said, (40, 20), (640, 360), (1280, 720)) == (box,)
    assert (box.hazard, box.x1, box.y1, box.x2, box.y2) == ("no_helmet", 0.0, 50.0, 25.0, 100.0)


def test_summary_says_each_hazard() -> None:
    text = summary_text(answer(fire=True))
    assert text.startswith("fire: yes (flames); smoke: no; hard hats: all worn")


def test_alert_steps_end_reason_and_ack() -> None:
    state = ConsoleState(views("a"))
    tracker = HazardTracker("a", [Hazard.FIRE], TrackerSettings(confirm_frames=1,
                                                                clear_frames=1))
    (start,) = tracker.update(answer(fire=True), T0)
    state.record_event(start, SnapshotRef(path="/s/1.jpg"))
    alert = state.alert(start.event_id)
    assert alert is not None
    assert alert.active
    assert alert.snapshot_path == "/s/1.jpg"
    assert state.record_ack(start.event_id, "ops", T0 + 1) is alert
    assert alert.acknowledged_by == "ops"
    (end,) = tracker.update(answer(), T0 + 2)
    state.record_event(end)
    assert not alert.active
    assert alert.end_reason == "cleared"
    assert [s.type for s in alert.steps] == ["start", "ack", "end"]
    assert state.alerts(camera="a", hazard="fire") == [alert]
    assert state.alerts(hazard="smoke") == []
    assert state.alerts(since=T0 + 1) == []
    assert state.record_ack("nope", "ops", T0) is None


def test_alerts_are_bounded() -> None:
    state = ConsoleState(views("a"), max_events=10)
    tracker = HazardTracker("a", [Hazard.FIRE], TrackerSettings(confirm_frames=1,
                                                                clear_frames=1))
    for i in range(15):
        for event in tracker.update(answer(fire=i % 2 == 0), T0 + i):
            state.record_event(event)
    assert len(state.alerts()) == 8  # 8 alerts started, all kept
    for i in range(15, 40):
        for event in tracker.update(answer(fire=i % 2 == 0), T0 + i):
            state.record_event(event)
    assert len(state.alerts()) == 10


@pytest.mark.asyncio
async def test_live_updates_and_a_slow_viewer_is_cut_off() -> None:
    state = ConsoleState(views("a"), samples_per_camera=2)
    queue = state.subscribe()
    state.record_verdict(verdict("a", T0, answer()))
    update = await asyncio.wait_for(queue.get(), 1)
    assert update["type"] == "sample"
    assert update["sample"]["camera"] == "a"
    assert "jpeg" not in update["sample"]
    for i in range(400):
        state.record_verdict(verdict("a", T0 + i, answer()))
    assert state.subscribers == 0
    drained = [queue.get_nowait() for _ in range(queue.qsize())]
    assert drained[-1] == {"type": "lost"}


def test_reload_forgets_removed_cameras() -> None:
    state = ConsoleState(views("a", "b"))
    sample = state.record_verdict(verdict("b", T0, answer()))
    state.set_cameras(views("a"))
    assert [c.camera_id for c in state.cameras] == ["a"]
    assert sample is not None
    assert state.sample(sample.sample_id) is None
