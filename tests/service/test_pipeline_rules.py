"""Site rules in one camera's pipeline (the fakes of ``test_pipeline``): a camera outside its
schedule asks nothing, a hazard outside its schedule leaves the prompt, zones decide which
people without a hard hat count."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.config import MonitorConfig, config_from_mapping
from monitor.model.answer import Answer, Hazard
from tests.service.test_pipeline import Rig

# T0 + 100 s (the fake clock's start) is Tuesday 2023-11-14 22:15 UTC.
DAY_SHIFT = {"timezone": "UTC", "tuesday": ["08:00-17:00"]}
EVENING = {"timezone": "UTC", "tuesday": ["20:00-23:00"]}
OFFICE = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]


def config(camera: dict[str, Any], **defaults: Any) -> MonitorConfig:
    return config_from_mapping({
        "defaults": {"interval_s": 0.2, "confirm_frames": 2, "confirm_min_gap_s": 0.1,
                     **defaults},
        "vlm": {"max_pixels": 256 * 28 * 28},
        "schedules": {"day": DAY_SHIFT, "evening": EVENING},
        "cameras": [{"id": "yard", "url": "rtsp://cam/yard", **camera}],
    }, source="test")


def bareheaded(*feet_x: int) -> Answer:
    """People without a hard hat standing at these x pixels of the 640x360 frame."""
    boxes = [{"bbox_2d": [x - 20, 150, x + 20, 340]} for x in feet_x]
    return Answer.model_validate({
        "fire": {"answer": "no"}, "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": len(boxes),
                   "description": "worker", "boxes": boxes}})


async def turn(r: Rig, grey: int) -> None:
    """Half a second later, a new frame (a grey level the change gate sees as a new scene)."""
    r.clock.advance(0.5)
    r.source.put(grey=grey)
    await r.pipeline.step()


def events(r: Rig) -> list[tuple[str, str, object]]:
    return [value for kind, value in r.sink.log if kind == "event"]


@pytest.mark.asyncio
async def test_a_camera_outside_its_schedule_is_not_analysed() -> None:
    r = Rig(config({"schedule": "day"}, hazards=["fire"]))
    try:
        r.source.put()
        assert await r.pipeline.step() is None
        assert r.client.requests == 0
        assert r.sink.log == []
        # Nothing is overdue: the scene counts as judged while nothing is asked.
        assert r.pipeline.judged_at == r.clock.now
    finally:
        r.close()


@pytest.mark.asyncio
async def test_a_hazard_outside_its_schedule_leaves_the_prompt() -> None:
    r = Rig(config({"rules": {"no_helmet": {"schedule": "day"}, "fire": {"schedule": "evening"}}},
                   hazards=["fire", "no_helmet"]))
    try:
        r.client.answers = [bareheaded(500), bareheaded(500)]
        await turn(r, 60)
        await turn(r, 120)
        assert [hazards for *_, hazards in r.client.sent] == [(Hazard.FIRE,), (Hazard.FIRE,)]
        assert events(r) == []  # the bareheaded answers were not about a watched hazard
    finally:
        r.close()


@pytest.mark.asyncio
async def test_people_in_an_excluded_zone_raise_nothing_outside_they_do() -> None:
    r = Rig(config({"zones": {"office": OFFICE},
                    "rules": {"no_helmet": {"exclude_zones": ["office"]}}},
                   hazards=["no_helmet"]))
    try:
        r.client.answers = [bareheaded(100), bareheaded(150), bareheaded(200),
                            bareheaded(100, 500), bareheaded(120, 520)]
        for grey in (30, 60, 90):
            await turn(r, grey)
        assert events(r) == []
        # Nor is the camera hurried or put first: the sighting does not count.
        assert not r.pipeline.urgency().alerting
        assert r.source.wanted_at[-1] == pytest.approx(r.clock.now + 0.2)  # its interval
        await turn(r, 120)
        await turn(r, 150)
        [start] = events(r)
        assert start[:2] == ("start", "no_helmet")
        assert r.pipeline.urgency().alerting
        assert r.pipeline.tracker.is_active(Hazard.NO_HELMET)
    finally:
        r.close()
