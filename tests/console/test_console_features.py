"""What the other features produce, as the console shows it over real HTTP (fed directly, no
daemon): zones drawn with their (escaped) names, a camera's health problems on its tile, live
and in /api/cameras, a verdict the zoom-in rejected said so, an alert's severity, its clip
and zoom-in crops linked and served from the evidence store as written."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import pytest_asyncio
from aiohttp import web

from monitor.alerts.health import HealthEvent, HealthProblem
from monitor.alerts.payloads import ClipRef
from monitor.alerts.tracker import EventType, HazardTracker, Severity, TrackerSettings
from monitor.config import ConsoleConfig
from monitor.console.auth import ConsoleAuth
from monitor.console.overlays import ZoneView
from monitor.console.state import CameraView, ConsoleState
from monitor.console.web import ConsoleWeb
from monitor.model.answer import Answer, Decision, GroundingBox, Hazard, Verdict
from monitor.model.imaging import EncodedImage
from monitor.model.verify import CheckOutcome, CropAnswer, CropCheck, HazardCheck, Verification

T0 = 1_700_000_000.0
HOSTILE_ZONE = "<script>window.z=1</script>&bay"
"""Configuration refuses such a name; the console escapes whatever it is given all the same."""
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "console"


def fire_answer() -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "yes", "description": "flames",
                 "boxes": [{"bbox_2d": [700, 100, 760, 200], "label": "flame"}]},
        "smoke": {"answer": "no"}, "helmet": {"status": "all_worn"}})


def checked_verdict(outcome: CheckOutcome, crop: Path | None = None) -> Verdict:
    """A fire verdict on the right half of a 1280x720 frame (sent as 320x360), verified."""
    agreeing = outcome is CheckOutcome.CONFIRMED
    check = CropCheck(box=GroundingBox(bbox_2d=[700, 100, 760, 200], label="flame"),
                      region=(680, 80, 780, 220),
                      answer=CropAnswer(answer=Decision.YES if agreeing else Decision.NO,
                                        seen="flames" if agreeing else "orange vest"),
                      evidence_path=str(crop) if crop else None)
    image = EncodedImage(jpeg=b"\xff\xd8frame\xff\xd9", width=320, height=360,
                         source_width=640, source_height=720)
    return Verdict(camera_id="cam", answer=fire_answer(), captured_at=T0, analysed_at=T0 + 0.3,
                   latency_s=0.3, model="m", endpoint="e", image=image, image_offset=(640, 0),
                   verification=Verification(results=(HazardCheck(Hazard.FIRE, outcome,
                                                                  (check,)),)))


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[str, ConsoleState]]:
    view = CameraView(camera_id="cam", context="", hazards=("fire",),
                      roi=((0.5, 0.0), (1.0, 1.0)),
                      zones=(ZoneView(HOSTILE_ZONE, ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0))),))
    state = ConsoleState([view, CameraView(camera_id="other", context="", hazards=("fire",),
                                           roi=None)])
    app = web.Application()
    ConsoleWeb(state, ConsoleAuth(ConsoleConfig())).add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.text()


async def get_json(url: str) -> Any:
    return json.loads(await get_text(url))


def tile(page: str, camera: str) -> str:
    """The HTML of one camera's tile on the cameras page."""
    match = re.search(rf'<article class="tile[^"]*" data-camera="{camera}">(.*?)</article>',
                      page, re.S)
    assert match, f"no tile for {camera}"
    return match.group(1)


def validate(answer: Any, schema: str) -> None:
    jsonschema.validate(answer, json.loads((SCHEMAS / f"{schema}.schema.json").read_text()))


@pytest.mark.asyncio
async def test_zones_are_drawn_with_their_names_escaped(
        served: tuple[str, ConsoleState]) -> None:
    url, state = served
    state.record_verdict(checked_verdict(CheckOutcome.CONFIRMED))
    for page in (await get_text(f"{url}/"), await get_text(f"{url}/cameras/cam")):
        # The zone's lower-right triangle of the frame is the lower half of the sent crop.
        assert '<polygon class="zone" points="0.0,180.0 320.0,180.0 320.0,360.0 ">' in page
        assert '<text class="zone-name"' in page
        assert "&lt;script&gt;window.z=1&lt;/script&gt;&amp;bay" in page
        assert "<script>window.z" not in page
    cameras = (await get_json(f"{url}/api/cameras"))["cameras"]
    assert cameras[0]["zones"] == [{"name": HOSTILE_ZONE,
                                    "points": [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]]}]
    assert cameras[0]["latest"]["zones"][0]["points"][0] == [0.0, 180.0]
    validate({"cameras": cameras}, "cameras")


@pytest.mark.asyncio
async def test_health_problem_on_its_tile_in_the_api_and_live(
        served: tuple[str, ConsoleState]) -> None:
    url, state = served
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/stream") as stream:
        await stream.content.readuntil(b": connected\n\n")
        state.record_health(HealthEvent("h1", EventType.START, "cam", HealthProblem.FROZEN,
                                        started_at=T0, at=T0 + 30,
                                        detail="the picture has not changed for 30 s"))
        received = b""
        while b"event: health" not in received:
            received += await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
    live = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert live["health"]["cam"][0]["problem"] == "frozen"
    page = await get_text(f"{url}/")
    assert 'class="problem frozen"' in tile(page, "cam")
    assert "frozen picture" in tile(page, "cam")
    assert "problem" not in tile(page, "other")
    cameras = {c["id"]: c for c in (await get_json(f"{url}/api/cameras"))["cameras"]}
    assert [h["problem"] for h in cameras["cam"]["health"]] == ["frozen"]
    assert cameras["other"]["health"] == []
    validate({"cameras": list(cameras.values())}, "cameras")


@pytest.mark.asyncio
async def test_a_verdict_the_zoom_in_rejected_says_so(
        served: tuple[str, ConsoleState]) -> None:
    url, state = served
    state.record_verdict(checked_verdict(CheckOutcome.REJECTED))
    shown = tile(await get_text(f"{url}/"), "cam")
    assert re.search(r'<span class="outcome rejected">Fire: rejected by zoom-in</span>', shown)
    # The crop is drawn where it was cut, in pixels of the sent image; it disagreed.
    assert '<rect class="crop disagrees" x="20.0" y="40.0" width="50.0" height="70.0">' in shown
    assert "orange vest" in shown
    verdicts = await get_json(f"{url}/api/cameras/cam/verdicts")
    assert verdicts["verdicts"][0]["verification"][0]["outcome"] == "rejected"
    validate(verdicts, "verdicts")


@pytest.mark.asyncio
async def test_events_show_severity_zones_and_serve_the_clip_and_crops(
        served: tuple[str, ConsoleState], tmp_path: Path) -> None:
    url, state = served
    crop, clip = tmp_path / "cam-fire-r0-zoom1.jpg", tmp_path / "cam-fire.mp4"
    crop.write_bytes(b"\xff\xd8crop-as-stored\xff\xd9")
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42-as-stored")
    tracker = HazardTracker("cam", [Hazard.FIRE], TrackerSettings(confirm_frames=1,
                                                                  clear_frames=1))
    (start,) = tracker.update(fire_answer(), T0)
    verdict = checked_verdict(CheckOutcome.CONFIRMED, crop)
    state.record_verdict(verdict)
    pending = ClipRef(path=str(clip), url=None, ready=False, expected_at="2023-11-14T22:14:00Z")
    state.record_event(dataclasses.replace(start, zones=("bay",)), clip=pending,
                       verdict=verdict)
    page = await get_text(f"{url}/events")
    assert "clip being recorded" in page
    assert f"/api/evidence/{start.event_id}/clip.mp4" not in page
    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}/api/evidence/{start.event_id}/clip.mp4") as response:
        assert response.status == 404  # not ready: not served
    state.record_event(dataclasses.replace(start, type=EventType.UPDATE, revision=1,
                                           severity=Severity.HIGH),
                       clip=pending.model_copy(update={"ready": True}))
    page = await get_text(f"{url}/events")
    assert f'<a href="/api/evidence/{start.event_id}/clip.mp4">clip (MP4)</a>' in page
    assert f'<a href="/api/evidence/{start.event_id}/crop1.jpg">zoom-in 1</a>' in page
    assert '<span class="severity high">HIGH</span>' in page
    assert "zones: bay" in page
    assert "confirmed by zoom-in" in page
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/evidence/{start.event_id}/clip.mp4") as response:
            assert response.status == 200
            assert response.content_type == "video/mp4"
            assert await response.read() == clip.read_bytes()
        async with session.get(f"{url}/api/evidence/{start.event_id}/crop1.jpg") as response:
            assert response.status == 200
            assert response.content_type == "image/jpeg"
            assert await response.read() == crop.read_bytes()
        for name in ("crop2.jpg", "..%2F..%2Fetc%2Fpasswd", "snapshot.jpg"):
            async with session.get(f"{url}/api/evidence/{start.event_id}/{name}") as response:
                assert response.status == 404, name
    events = await get_json(f"{url}/api/events")
    (shown,) = events["events"]
    assert (shown["severity"], shown["zones"], shown["clip"]["ready"]) == ("high", ["bay"], True)
    validate(events, "events")
