"""The console's memory: bounded rings of samples, alerts with their steps, live updates."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from monitor.alerts.health import HealthEndReason, HealthEvent, HealthProblem
from monitor.alerts.payloads import ClipPayload, ClipRef, SnapshotRef, StatusPayload
from monitor.alerts.tracker import EventType, HazardTracker, Severity, TrackerSettings
from monitor.console.overlays import ZoneView
from monitor.console.state import CameraView, ConsoleState, overlay_boxes, summary_text
from monitor.model.answer import Answer, Decision, GroundingBox, Hazard, Verdict
from monitor.model.imaging import EncodedImage
from monitor.model.verify import CheckOutcome, CropAnswer, CropCheck, HazardCheck, Verification

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


RIGHT_HALF = ((0.5, 0.0), (1.0, 1.0))
"""A region of interest: the right half of a 1280x720 frame is sent (640x720 -> 320x360)."""


def right_half_view(zones: tuple[ZoneView, ...] = ()) -> CameraView:
    return CameraView(camera_id="a", context="", hazards=("no_helmet",), roi=RIGHT_HALF,
                      zones=zones)


def rejected_verification() -> Verification:
    """A hard hat seen on the head in the one crop: the no_helmet positive is rejected."""
    check = CropCheck(box=GroundingBox(bbox_2d=[700, 100, 760, 200], label="person"),
                      region=(680, 80, 780, 220),
                      answer=CropAnswer(answer=Decision.YES, seen="hard hat"),
                      evidence_path="/evidence/a-zoom1.jpg")
    return Verification(results=(HazardCheck(Hazard.NO_HELMET, CheckOutcome.REJECTED,
                                             (check,)),))


def right_half_verdict(at: float, verification: Verification | None = None) -> Verdict:
    image = EncodedImage(jpeg=b"\xff\xd8crop", width=320, height=360, source_width=640,
                         source_height=720)
    return Verdict(camera_id="a", answer=answer(), captured_at=at, analysed_at=at + 0.5,
                   latency_s=0.4, model="m", endpoint="e", image=image,
                   image_offset=(640, 0), verification=verification)


def test_zones_are_mapped_from_frame_fractions_to_the_sent_crop() -> None:
    zone = ZoneView("loading-bay", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0)))
    state = ConsoleState([right_half_view((zone,))])
    sample = state.record_verdict(right_half_verdict(T0))
    assert sample is not None
    assert sample.to_json()["zones"] == [
        {"name": "loading-bay", "points": [[0.0, 180.0], [320.0, 180.0], [320.0, 360.0]]}]


def test_zones_without_a_region_are_scaled_to_the_sent_image() -> None:
    view = CameraView(camera_id="a", context="", hazards=("fire",), roi=None,
                      zones=(ZoneView("tank", ((0.25, 0.0), (0.5, 0.0), (0.5, 0.5))),))
    state = ConsoleState([view])
    sample = state.record_verdict(verdict("a", T0, answer()))
    assert sample is not None
    assert sample.to_json()["zones"][0]["points"] == [[160.0, 0.0], [320.0, 0.0],
                                                      [320.0, 180.0]]


def test_rejected_verification_and_its_crop_are_shown_in_sent_pixels() -> None:
    state = ConsoleState([right_half_view()])
    sample = state.record_verdict(right_half_verdict(T0, rejected_verification()))
    assert sample is not None
    (result,) = sample.to_json()["verification"]
    assert (result["hazard"], result["outcome"], result["text"]) == (
        "no_helmet", "rejected", "rejected by zoom-in")
    (crop,) = result["checks"]
    assert (crop["x1"], crop["y1"], crop["x2"], crop["y2"]) == (20.0, 40.0, 70.0, 110.0)
    assert (crop["answer"], crop["seen"], crop["agrees"]) == ("yes", "hard hat", False)


def test_health_problems_start_end_and_the_daemons_show_on_every_camera() -> None:
    state = ConsoleState(views("a", "b"))
    frozen = HealthEvent("h1", EventType.START, "a", HealthProblem.FROZEN, started_at=T0,
                         at=T0 + 30, detail="no change for 30 s")
    model = HealthEvent("h2", EventType.START, None, HealthProblem.MODEL_UNAVAILABLE,
                        started_at=T0 + 5, at=T0 + 40, detail="every endpoint down")
    state.record_health(frozen)
    state.record_health(model)
    assert [h["problem"] for h in state.health("a")] == ["frozen", "model_unavailable"]
    assert [h["problem"] for h in state.health("b")] == ["model_unavailable"]
    assert state.health("b")[0]["daemon_wide"] is True
    state.record_health(dataclasses.replace(frozen, type=EventType.END, at=T0 + 50,
                                            ended_at=T0 + 50,
                                            end_reason=HealthEndReason.RECOVERED))
    assert [h["problem"] for h in state.health("a")] == ["model_unavailable"]


@pytest.mark.asyncio
async def test_health_goes_live_to_every_camera_it_concerns() -> None:
    state = ConsoleState(views("a", "b"))
    queue = state.subscribe()
    state.record_health(HealthEvent("h", EventType.START, None,
                                    HealthProblem.MODEL_UNAVAILABLE, started_at=T0, at=T0,
                                    detail=""))
    update = await asyncio.wait_for(queue.get(), 1)
    assert update["type"] == "health"
    assert sorted(update["health"]) == ["a", "b"]
    assert update["health"]["a"][0]["problem"] == "model_unavailable"


def stream_status(camera: str, *, online: bool, error: str | None = None) -> StatusPayload:
    return StatusPayload(
        camera=camera, online=online, url="rtsp://cam/***", width=1920 if online else None,
        height=1080 if online else None, codec="h264" if online else None,
        fps=25.0 if online else None, last_error=error, reconnects=0,
        updated_at="2026-12-02T03:00:00+00:00",
        state="online" if online else "unauthorized", gop_frames=None, gop_s=None,
        decode=None, backend="pyav", stall_timeout_s=None, frames_read=0, frames_dropped=0)


@pytest.mark.asyncio
async def test_stream_state_is_kept_per_camera_and_goes_live() -> None:
    state = ConsoleState(views("a", "b"))
    assert state.stream("a") is None  # nothing known before the first status
    queue = state.subscribe()
    state.record_stream(stream_status("a", online=True))
    assert state.stream("a") == {"state": "online", "detail": "1920x1080 h264 25 fps"}
    update = await asyncio.wait_for(queue.get(), 1)
    assert update == {"type": "stream", "camera": "a", "stream": state.stream("a")}
    state.record_stream(stream_status("b", online=False, error="401 Unauthorized"))
    assert state.stream("b") == {"state": "unauthorized", "detail": "401 Unauthorized"}
    state.record_stream(stream_status("gone", online=True))  # not a configured camera
    assert state.stream("gone") is None
    state.set_cameras(views("a"))
    assert state.stream("b") is None


def test_a_sample_says_its_frame_age_and_model_latency() -> None:
    state = ConsoleState(views("a"))
    sample = state.record_verdict(verdict("a", T0, answer()))
    assert sample is not None
    shown = sample.to_json()
    assert shown["frame_age_s"] == round(sample.analysed_at - sample.captured_at, 3)
    assert shown["frame_age_s"] >= 0
    assert shown["latency_s"] == round(sample.latency_s, 3)


def test_alert_keeps_severity_zones_verification_and_clip() -> None:
    state = ConsoleState([right_half_view()])
    tracker = HazardTracker("a", [Hazard.FIRE], TrackerSettings(confirm_frames=1,
                                                                clear_frames=1))
    (start,) = tracker.update(answer(fire=True), T0)
    clip = ClipRef(path="/evidence/a.mp4", url=None, ready=False,
                   expected_at="2023-11-14T22:13:40Z")
    checked = right_half_verdict(T0, Verification(results=(dataclasses.replace(
        rejected_verification().results[0], hazard=Hazard.FIRE),)))
    state.record_event(dataclasses.replace(start, zones=("bay",)), clip=clip, verdict=checked)
    state.record_event(dataclasses.replace(start, type=EventType.UPDATE, revision=1,
                                           severity=Severity.HIGH))
    alert = state.alert(start.event_id)
    assert alert is not None
    shown = alert.to_json()
    assert (shown["severity"], shown["zones"]) == ("high", ["bay"])
    assert shown["verification"]["outcome"] == "rejected"
    assert shown["crops"] == [{"path": "/evidence/a-zoom1.jpg",
                               "url": f"/api/evidence/{start.event_id}/crop1.jpg"}]
    assert state.evidence_path(start.event_id, "crop1.jpg") == "/evidence/a-zoom1.jpg"
    assert state.evidence_path(start.event_id, "crop0.jpg") is None
    assert state.evidence_path(start.event_id, "crop2.jpg") is None
    assert state.evidence_path(start.event_id, "clip.mp4") is None  # not ready yet
    state.record_clip(ClipPayload(id=start.event_id, camera="a", hazard=Hazard.FIRE,
                                  ready=True, path="/evidence/a.mp4", url=None,
                                  duration_s=12.0, pre_roll_s=5.0, size_bytes=1000))
    assert state.evidence_path(start.event_id, "clip.mp4") == "/evidence/a.mp4"
    assert state.evidence_path(start.event_id, "../../etc/passwd") is None


def test_alert_steps_keep_the_trackers_observations_and_no_crop_pixels() -> None:
    """The console holds max_events alerts with every step: a step shares the tracker's
    immutable observations and keeps the verification without its crop images (the evidence
    store has them); the wire form is built when served, the same as before."""
    state = ConsoleState([right_half_view()])
    tracker = HazardTracker("a", [Hazard.FIRE], TrackerSettings(confirm_frames=2,
                                                                clear_frames=1))
    assert tracker.update(answer(fire=True), T0) == []
    (start,) = tracker.update(answer(fire=True), T0 + 1)
    result = dataclasses.replace(rejected_verification().results[0], hazard=Hazard.FIRE)
    pixels = np.zeros((140, 100, 3), dtype=np.uint8)
    with_crop = dataclasses.replace(result, checks=tuple(
        dataclasses.replace(check, image=pixels) for check in result.checks))
    state.record_event(start, verdict=right_half_verdict(
        T0 + 1, Verification(results=(with_crop,))))
    alert = state.alert(start.event_id)
    assert alert is not None
    (step,) = alert.steps
    assert step.verdicts is start.verdicts
    assert step.checked is not None
    assert [check.image for check in step.checked.checks] == [None]
    assert with_crop.checks[0].image is pixels  # the pipeline's own result is left as it was
    shown = step.to_json()
    assert shown["verdicts"] == [
        {"captured_at": "2023-11-14T22:13:20.000+00:00", "positive": True, "detail": "flames",
         "missing_helmets": None},
        {"captured_at": "2023-11-14T22:13:21.000+00:00", "positive": True, "detail": "flames",
         "missing_helmets": None}]
    assert shown["verification"]["checks"][0]["evidence"] == "/evidence/a-zoom1.jpg"
    assert alert.crop_paths == ["/evidence/a-zoom1.jpg"]
