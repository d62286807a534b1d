"""One camera's pipeline through its public interface, with injected fakes of what it talks to:
a frame source holding real decoded-frame objects, a model client with slots, a recording
sink, a clock the test moves. Each test drives :meth:`CameraPipeline.step` and checks what came
out: which frame was sent and when, what was published, counted and logged."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self

import cv2
import numpy as np
import pytest

from monitor.alerts.payloads import Box, SnapshotRef
from monitor.alerts.tracker import AlertEvent
from monitor.config import MonitorConfig, config_from_mapping
from monitor.ingest.frame import CapturedFrame
from monitor.model.answer import Answer, Decision, Hazard, Verdict
from monitor.model.client import (
    Analysis,
    CropReply,
    VlmCameraBusyError,
    VlmUnavailableError,
    check_frame_age,
)
from monitor.model.imaging import EncodedImage
from monitor.model.priority import Urgency
from monitor.model.verify import CropAnswer, CropCheck
from monitor.service.pipeline import CameraPipeline, Frame

T0 = 1_700_000_000.0
"""Wall-clock start of every test (epoch seconds)."""


class FakeClock:
    """Both clocks, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return T0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeStatus:
    decode: str | None = "all"
    gop_s: float | None = None
    fps: float | None = 10.0


class FakeSource:
    """The reader's mailbox: the newest frame, plus what the pipeline told it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.status = FakeStatus()
        self.frame: CapturedFrame | None = None
        self.taken: list[int] = []
        self.wanted_at: list[float] = []
        self.waiter: Callable[[], None] | None = None

    def put(self, grey: int = 90, *, age_s: float = 0.0) -> CapturedFrame:
        sequence = self.frame.sequence + 1 if self.frame else 1
        image = np.full((360, 640, 3), grey, dtype=np.uint8)
        self.frame = CapturedFrame("yard", sequence, self.clock.time() - age_s,
                                   self.clock.monotonic() - age_s, 640, 360, image)
        return self.frame

    def latest(self) -> CapturedFrame | None:
        return self.frame

    def notify_next(self, callback: Callable[[], None] | None) -> None:
        self.waiter = callback

    def mark_taken(self, sequence: int) -> None:
        self.taken.append(sequence)

    def want_next_frame_at(self, at: float) -> None:
        self.wanted_at.append(at)


def answer(*, fire: bool) -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "yes" if fire else "no", "description": "flames" if fire else ""},
        "smoke": {"answer": "no"}, "helmet": {"status": "no_person"}})


class Retry(Exception):  # noqa: N818 - a signal between the fakes, not an error
    """What the fake slot raises for a failure worth retrying (ends its block quietly)."""


class FakeSlot:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    async def __aenter__(self) -> Self:
        await self.client.on_slot(self.client)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        return isinstance(exc, Retry)

    def check_age(self, captured_at: float, *, now: float) -> None:
        check_frame_age(captured_at, now=now, limit_s=self.client.max_frame_age_s)

    async def analyse(self, image: EncodedImage, *, captured_at: float | None = None,
                      context: str = "", hazards: Sequence[Hazard] | None = None) -> Analysis:
        self.client.sent.append((image, captured_at, context, tuple(hazards or ())))
        if self.client.fail_next:
            self.client.fail_next -= 1
            raise Retry
        return Analysis(answer=self.client.answers.pop(0), raw_text="{}", latency_s=0.5,
                        prompt_tokens=900, completion_tokens=40, endpoint="gpu-1", image=image,
                        captured_at=captured_at, finish_reason="stop", model="qwen",
                        analysed_at=self.client.clock.time() + 0.5)


    async def check_crop(self, image: EncodedImage, hazard: Hazard, *,
                         max_tokens: int) -> CropReply:
        self.client.crops.append((image, hazard))
        # Unless a test scripts the zoom-in answers, the crop confirms what the verdict said.
        agreeing = CropAnswer(answer=Decision.NO if hazard is Hazard.NO_HELMET else Decision.YES)
        answer = self.client.crop_answers.pop(0) if self.client.crop_answers else agreeing
        return CropReply(answer=answer, latency_s=0.1, prompt_tokens=100, completion_tokens=8)


class FakeRequest:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    async def __aenter__(self) -> Self:
        if self.client.refuse is not None:
            raise self.client.refuse
        self.client.requests += 1
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def slot(self) -> FakeSlot:
        self.client.slots += 1
        return FakeSlot(self.client)


async def _no_wait(client: FakeClient) -> None:
    return None


class FakeClient:
    """Slots handed out at once (``on_slot`` may make time pass, or frames arrive, first)."""

    def __init__(self, clock: FakeClock, max_frame_age_s: float = 6.0) -> None:
        self.clock = clock
        self.max_frame_age_s = max_frame_age_s
        self.answers: list[Answer] = []
        self.sent: list[tuple[EncodedImage, float | None, str, tuple[Hazard, ...]]] = []
        self.requests = 0
        self.slots = 0
        self.fail_next = 0
        self.refuse: Exception | None = None
        self.on_slot: Callable[[FakeClient], Any] = _no_wait
        self.urgencies: list[Urgency | None] = []
        self.crop_answers: list[CropAnswer] = []
        self.crops: list[tuple[EncodedImage, Hazard]] = []

    def request(self, camera_id: str, *, urgency: Urgency | None = None) -> FakeRequest:
        assert camera_id == "yard"
        self.urgencies.append(urgency)
        return FakeRequest(self)


class RecordingSink:
    """Everything the pipeline produced, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def sampled(self, camera_id: str) -> None:
        self.log.append(("sampled", camera_id))

    def unchanged(self, camera_id: str) -> None:
        self.log.append(("unchanged", camera_id))

    def failed(self, camera_id: str, endpoint: str, outcome: str) -> None:
        self.log.append(("failed", (endpoint, outcome)))

    def verdict(self, verdict: Verdict) -> None:
        self.log.append(("verdict", verdict))

    async def evidence(self, event: AlertEvent, frame: Frame,
                       boxes: Sequence[Box]) -> SnapshotRef | None:
        self.log.append(("evidence", (event.event_id, frame.sequence)))
        return SnapshotRef(path=f"/snap/{event.event_id}.jpg", url=None, topic=None)

    def event(self, event: AlertEvent, *, verdict: Verdict | None = None,
              boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None) -> None:
        self.log.append(("event", (event.type.value, event.hazard.value, snapshot)))

    async def crop_evidence(self, event: AlertEvent,
                            checks: Sequence[CropCheck]) -> list[str | None]:
        self.log.append(("crops", len(checks)))
        return [f"/snap/{event.event_id}-zoom{n}.jpg" for n in range(1, len(checks) + 1)]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log]


def settings(**defaults: Any) -> MonitorConfig:
    return config_from_mapping({
        "defaults": {"interval_s": 2, "confirm_frames": 2, "confirm_min_gap_s": 0.5,
                     "hazards": ["fire"], **defaults},
        "vlm": {"max_pixels": 256 * 28 * 28},
        "cameras": [{"id": "yard", "url": "rtsp://cam/yard", "context": "A loading yard."}],
    }, source="test")


class Rig:
    def __init__(self, config: MonitorConfig | None = None, **client: Any) -> None:
        self.config = config or settings()
        self.clock = FakeClock()
        self.source = FakeSource(self.clock)
        self.client = FakeClient(self.clock, **client)
        self.sink = RecordingSink()
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.pipeline = CameraPipeline(self.config, self.config.cameras[0], source=self.source,
                                       client=self.client, sink=self.sink,
                                       executor=self.executor, clock=self.clock)

    def close(self) -> None:
        self.executor.shutdown()


@pytest.fixture
def rig() -> Any:
    made: list[Rig] = []

    def make(config: MonitorConfig | None = None, **client: Any) -> Rig:
        made.append(Rig(config, **client))
        return made[-1]

    yield make
    for each in made:
        each.close()


def sent_grey(image: EncodedImage) -> float:
    """The mean grey level of a sent JPEG: tells which fake frame it was."""
    decoded = cv2.imdecode(np.frombuffer(image.jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded is not None
    return float(decoded.mean())


# --- Slot first, then the freshest frame. -------------------------------------------------------


@pytest.mark.asyncio
async def test_the_frame_sent_is_the_freshest_once_the_slot_is_taken(rig: Any) -> None:
    r = rig()
    r.source.put(grey=40)
    r.client.answers = [answer(fire=False)]

    async def newer_frame_arrives_while_waiting(client: FakeClient) -> None:
        r.clock.advance(1.0)
        r.source.put(grey=200)

    r.client.on_slot = newer_frame_arrives_while_waiting
    verdict = await r.pipeline.step()
    assert verdict is not None
    [(image, captured_at, context, hazards)] = r.client.sent
    assert sent_grey(image) == pytest.approx(200, abs=3)  # frame 2, not the sampled frame 1
    assert captured_at == verdict.captured_at == T0 + 101.0
    assert (image.source_width, image.source_height) == (640, 360)
    assert image.width * image.height <= 256 * 28 * 28
    assert (context, hazards) == ("A loading yard.", (Hazard.FIRE,))
    assert r.source.taken == [1, 2]  # both used: neither is counted as overwritten
    assert r.sink.kinds() == ["sampled", "verdict"]
    # Frame 2 was already judged: the next tick waits for a frame newer than it.
    r.clock.advance(2.0)
    waiting = asyncio.create_task(r.pipeline.step())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert r.source.waiter is not None
    r.source.put(grey=90)
    r.source.waiter()
    assert await waiting is None  # woken by the new frame; it is taken on the next turn
    r.client.on_slot = _no_wait
    r.client.answers = [answer(fire=False)]
    assert await r.pipeline.step() is not None
    assert r.source.taken == [1, 2, 3]


@pytest.mark.asyncio
async def test_no_picture_is_held_while_the_next_frame_is_awaited(rig: Any) -> None:
    # A picture the pipeline still held when the reader replaced it would be one more buffer
    # in the shared keyframe decoder's pool for every camera (about 3 MB each at 1080p).
    r = rig()
    first = r.source.put(grey=40)
    r.client.answers = [answer(fire=False)]
    assert await r.pipeline.step() is not None
    picture = weakref.ref(first._frame)
    del first
    r.clock.advance(2.0)
    waiting = asyncio.create_task(r.pipeline.step())
    await asyncio.sleep(0.05)
    assert r.source.waiter is not None  # waiting for a frame newer than the one sent
    r.source.put(grey=90)  # the reader replaced it; the pipeline has not woken yet
    gc.collect()
    assert picture() is None
    r.source.waiter()
    assert await waiting is None


@pytest.mark.asyncio
async def test_the_sampled_frame_is_not_held_while_the_request_waits_for_a_slot(
        rig: Any) -> None:
    # Under overload a request waits long for its slot, and the freshest frame is taken
    # when the slot comes: a sampled picture kept meanwhile would only take memory.
    r = rig()
    sampled = r.source.put(grey=40)
    picture = weakref.ref(sampled._frame)
    del sampled
    r.client.answers = [answer(fire=False)]
    alive_while_waiting: list[bool] = []

    async def newer_frame_arrives_while_waiting(client: FakeClient) -> None:
        r.clock.advance(1.0)
        r.source.put(grey=200)  # the reader replaces the sampled frame
        gc.collect()
        alive_while_waiting.append(picture() is not None)

    r.client.on_slot = newer_frame_arrives_while_waiting
    assert await r.pipeline.step() is not None
    assert alive_while_waiting == [False]
    [(image, _, _, _)] = r.client.sent
    assert sent_grey(image) == pytest.approx(200, abs=3)


@pytest.mark.asyncio
async def test_a_frame_stale_when_the_slot_comes_is_dropped_not_sent(
        rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    r = rig(max_frame_age_s=3.0)
    r.source.put()

    async def slow_queue(client: FakeClient) -> None:
        r.clock.advance(4.0)  # no newer frame arrived meanwhile

    r.client.on_slot = slow_queue
    with caplog.at_level(logging.WARNING, "monitor.service.pipeline"):
        assert await r.pipeline.step() is None
        r.clock.advance(2.0)
        r.source.put(grey=200)  # a changed scene: sampled, and again stale at its turn
        assert await r.pipeline.step() is None
    assert r.client.sent == []
    assert r.sink.log.count(("failed", ("none", "stale_dropped"))) == 2
    stale = [m for m in caplog.messages if "max_frame_age_s (3 s)" in m]
    assert len(stale) == 1, caplog.messages  # logged on change, counted always
    assert stale[0].startswith("camera yard: frame not analysed: frame dropped, not sent")
    assert r.pipeline.last_error is not None


@pytest.mark.asyncio
async def test_a_retry_takes_a_slot_again_and_the_freshest_frame_again(rig: Any) -> None:
    r = rig(max_frame_age_s=3.0)
    r.source.put(grey=40)
    r.client.fail_next = 1
    r.client.answers = [answer(fire=False)]
    slots_seen = 0

    async def backoff_then_a_new_frame(client: FakeClient) -> None:
        nonlocal slots_seen
        slots_seen += 1
        if slots_seen == 2:  # the retry: the first frame went stale while backing off
            r.clock.advance(5.0)
            r.source.put(grey=200)

    r.client.on_slot = backoff_then_a_new_frame
    verdict = await r.pipeline.step()
    assert verdict is not None
    assert (r.client.requests, r.client.slots) == (1, 2)
    assert [round(sent_grey(image)) // 10 for image, *_ in r.client.sent] == [4, 20]
    assert verdict.captured_at == T0 + 105.0
    assert r.sink.kinds() == ["sampled", "verdict"]


# --- Sampling, gate, failures. ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unchanged_scene_keeps_its_verdict_without_a_request(rig: Any) -> None:
    r = rig()
    r.source.put(grey=90)
    r.client.answers = [answer(fire=False)]
    assert await r.pipeline.step() is not None
    assert r.pipeline.judged_at == 100.0
    r.clock.advance(2.0)
    r.source.put(grey=90)  # the same picture again
    assert await r.pipeline.step() is None
    assert r.client.requests == 1
    assert r.sink.kinds() == ["sampled", "verdict", "sampled", "unchanged"]
    assert r.pipeline.judged_at == 102.0  # the last verdict still describes the scene
    # Not due yet: nothing is sampled (the step only waits out the rest of the interval).
    r.source.put(grey=200)
    r.clock.advance(1.99)
    assert await r.pipeline.step() is None
    assert r.sink.kinds().count("sampled") == 2


@pytest.mark.asyncio
async def test_a_failure_is_logged_once_counted_always_and_its_end_said(
        rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    r = rig(settings(change_gate=False))
    r.client.refuse = VlmUnavailableError("gpu-1: HTTP 503: overloaded", endpoint="gpu-1")
    with caplog.at_level(logging.INFO, "monitor.service.pipeline"):
        for _ in range(2):
            r.source.put()
            assert await r.pipeline.step() is None
            r.clock.advance(2.0)
        r.client.refuse = VlmCameraBusyError("camera yard already has a model request")
        r.source.put()
        assert await r.pipeline.step() is None
        r.clock.advance(2.0)
        r.client.refuse = None
        r.client.answers = [answer(fire=False)]
        r.source.put()
        assert await r.pipeline.step() is not None
    assert [v for k, v in r.sink.log if k == "failed"] == [
        ("gpu-1", "unavailable"), ("gpu-1", "unavailable"), ("none", "busy")]
    warnings = [m for m in caplog.messages if "frame not analysed" in m]
    assert warnings == ["camera yard: frame not analysed: gpu-1: HTTP 503: overloaded",
                        ("camera yard: frame not analysed: camera yard already has a model "
                         "request")]
    assert "camera yard: analysis works again" in caplog.messages
    assert r.pipeline.last_error is None


# --- Verdicts, events, confirm-now. -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_positive_confirms_now_and_raises_an_alert_with_evidence_first(
        rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    r.client.answers = [answer(fire=True), answer(fire=True), answer(fire=True)]
    r.source.put(grey=90)
    with caplog.at_level(logging.INFO, "monitor.service.pipeline"):
        assert await r.pipeline.step() is not None
        # Confirm-now: the next frame is wanted confirm_min_gap_s after the sample, not 2 s.
        assert r.source.wanted_at == [102.0, 100.5]
        r.clock.advance(0.5)
        r.source.put(grey=90)  # unchanged, but a positive is never skipped as unchanged
        assert await r.pipeline.step() is not None
    assert r.sink.kinds() == ["sampled", "verdict", "sampled", "verdict", "evidence", "event"]
    event_id, frame_sequence = r.sink.log[4][1]
    assert frame_sequence == 2  # the evidence is the frame that confirmed it
    assert r.sink.log[5][1] == ("start", "fire", SnapshotRef(path=f"/snap/{event_id}.jpg"))
    assert any(m.startswith(f"camera yard: fire RAISED (event {event_id}, revision 0)")
               for m in caplog.messages), caplog.messages
    # Raised: later checks keep the normal interval (no hurry to confirm what is confirmed).
    assert r.source.wanted_at[-1] == 102.5
    assert r.pipeline.tracker.is_active(Hazard.FIRE)


@pytest.mark.asyncio
async def test_boxes_of_a_region_of_interest_are_moved_into_the_frame(rig: Any) -> None:
    config = config_from_mapping({
        "defaults": {"hazards": ["no_helmet"], "change_gate": False},
        "cameras": [{"id": "yard", "url": "rtsp://cam/yard", "roi": [[0.5, 0.5], [1.0, 1.0]]}],
    }, source="test")
    r = rig(config)
    r.source.put()
    r.client.answers = [Answer.model_validate({
        "fire": {"answer": "no"}, "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": 1,
                   "boxes": [{"bbox_2d": [10, 20, 30, 40], "label": "no_helmet"}]}})]
    verdict = await r.pipeline.step()
    assert verdict is not None
    [(image, *_)] = r.client.sent
    assert (image.source_width, image.source_height) == (320, 180)  # only the region is sent
    assert tuple(verdict.answer.helmet.boxes[0].bbox_2d) == (330, 200, 350, 220)


# --- Urgency: what the pipeline tells the client when it asks for a slot. -----------------------


@pytest.mark.asyncio
async def test_each_request_says_its_urgency_alerting_after_a_positive(rig: Any) -> None:
    config = config_from_mapping({
        "defaults": {"interval_s": 2, "hazards": ["fire"], "max_verdict_age_s": 30},
        "cameras": [{"id": "yard", "url": "rtsp://cam/yard", "priority": 7}],
    }, source="test")
    r = rig(config)
    r.client.answers = [answer(fire=False), answer(fire=True), answer(fire=True)]
    r.source.put(grey=40)
    assert await r.pipeline.step() is not None
    r.clock.advance(2.0)
    r.source.put(grey=200)
    assert await r.pipeline.step() is not None
    r.clock.advance(2.0)
    r.source.put(grey=90)
    await r.pipeline.step()
    first, second, third = r.client.urgencies
    assert first == Urgency(alerting=False, priority=7, last_verdict_at=None, overdue_at=None)
    # Routine after a quiet verdict: overdue interval_s before max_verdict_age_s runs out.
    assert second == Urgency(alerting=False, priority=7, last_verdict_at=100.0,
                             overdue_at=128.0)
    # The fire answer is not confirmed yet: the camera's next request jumps the queue.
    assert third is not None
    assert third.alerting


@pytest.mark.asyncio
async def test_a_scene_changing_while_the_request_waits_moves_it_up_until_analysed(
        rig: Any) -> None:
    r = rig(settings(change_gate=False))
    r.client.answers = [answer(fire=False), answer(fire=True)]
    r.source.put(grey=40)
    assert await r.pipeline.step() is not None
    seen: list[bool] = []

    async def fire_starts_while_waiting(client: Any) -> None:
        urgency = client.urgencies[-1]
        seen.append(urgency.changed())
        r.source.put(grey=200)  # the fire starts while every slot is busy
        async with asyncio.timeout(10):
            while not urgency.changed():
                await asyncio.sleep(0.05)
        seen.append(urgency.changed())
        client.on_slot = _no_wait

    r.client.on_slot = fire_starts_while_waiting
    r.clock.advance(2.0)
    r.source.put(grey=40)
    assert await r.pipeline.step() is not None
    assert seen == [False, True]
    assert sent_grey(r.client.sent[-1][0]) > 150  # the changed frame went
    # Analysed: the new frame is the reference, the next request is not "changed".
    assert not r.client.urgencies[-1].changed()
    assert not r.pipeline.urgency().changed()


# --- Zoom-in verification: the pipeline's decision (the crop answers are scripted). -----------


def fire_with_box() -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "yes", "description": "flames",
                 "boxes": [{"bbox_2d": [300, 200, 340, 260]}]},
        "smoke": {"answer": "no"}, "helmet": {"status": "no_person"}})


def verified_fire(**defaults: Any) -> MonitorConfig:
    return config_from_mapping({
        "defaults": {"interval_s": 2, "confirm_frames": 2, "hazards": ["fire"],
                     "change_gate": False, **defaults},
        "verification": {"hazards": ["fire"], "margin": 0.5},
        "cameras": [{"id": "yard", "url": "rtsp://cam/yard"}],
    }, source="test")


async def run_steps(r: Any, count: int) -> list[Verdict]:
    verdicts = []
    for _ in range(count):
        r.clock.advance(2.0)
        r.source.put()
        verdict = await r.pipeline.step()
        assert verdict is not None
        verdicts.append(verdict)
    return verdicts


@pytest.mark.asyncio
async def test_a_positive_the_zoom_in_rejects_never_counts_toward_an_alert(rig: Any) -> None:
    r = rig(verified_fire())
    r.client.answers = [fire_with_box() for _ in range(4)]
    r.client.crop_answers = [CropAnswer(answer=Decision.NO, seen="orange vest")] * 4
    verdicts = await run_steps(r, 4)
    assert "event" not in r.sink.kinds()
    assert not r.pipeline.tracker.is_active(Hazard.FIRE)
    # Each crop is cut from the full-resolution frame: the box (40x60) plus half of it around.
    assert [(image.source_width, image.source_height) for image, _ in r.client.crops] \
        == [(80, 120)] * 4
    last = verdicts[-1]
    assert last.answer.is_negative(Hazard.FIRE)
    assert last.verification is not None
    assert last.verification.original is not None
    assert last.verification.original.is_positive(Hazard.FIRE)
    result = last.verification.result(Hazard.FIRE)
    assert result is not None
    assert result.outcome.value == "rejected"
    assert result.tokens == 108
    # Rejected: no confirm-now hurry either (the next frame comes at the interval).
    assert r.source.wanted_at[-1] == r.clock.now + 2.0


@pytest.mark.asyncio
async def test_a_positive_the_zoom_in_confirms_alerts_with_its_crops_as_evidence(
        rig: Any) -> None:
    r = rig(verified_fire())
    events: list[Verdict | None] = []
    record = r.sink.event

    def event(event: AlertEvent, *, verdict: Verdict | None = None,
              boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None) -> None:
        events.append(verdict)
        record(event, verdict=verdict, boxes=boxes, snapshot=snapshot)

    r.sink.event = event
    r.client.answers = [fire_with_box(), fire_with_box()]
    r.client.crop_answers = [CropAnswer(answer=Decision.YES, seen="flames")] * 2
    await run_steps(r, 2)
    assert r.sink.kinds()[-3:] == ["evidence", "crops", "event"]
    [verdict] = events
    assert verdict is not None
    assert verdict.verification is not None
    result = verdict.verification.result(Hazard.FIRE)
    assert result is not None
    assert result.outcome.value == "confirmed"
    assert result.checks[0].evidence_path is not None
    assert result.checks[0].evidence_path.endswith("-zoom1.jpg")


@pytest.mark.asyncio
async def test_verification_costs_nothing_where_it_is_off_or_nothing_is_positive(
        rig: Any) -> None:
    # Fire is not under verification by default (no_helmet is): the verdict counts as given.
    default = rig(config_from_mapping({
        "defaults": {"hazards": ["fire", "no_helmet"], "change_gate": False},
        "cameras": [{"id": "yard", "url": "rtsp://cam/yard"}]}, source="test"))
    default.client.answers = [fire_with_box(), answer(fire=False)]
    verdicts = await run_steps(default, 2)
    assert default.client.crops == []
    assert all(v.verification is None for v in verdicts)
    assert verdicts[0].answer.is_positive(Hazard.FIRE)
    # Under verification, but a quiet frame: no crop either.
    quiet = rig(verified_fire())
    quiet.client.answers = [answer(fire=False)]
    await run_steps(quiet, 1)
    assert quiet.client.crops == []


@pytest.mark.asyncio
async def test_zoom_in_outcomes_are_logged_when_they_change(
        rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    r = rig(verified_fire())
    r.client.answers = [fire_with_box() for _ in range(4)]
    r.client.crop_answers = [CropAnswer(answer=Decision.NO, seen="orange vest")] * 3 + [
        CropAnswer(answer=Decision.YES, seen="flames")]
    with caplog.at_level(logging.INFO, "monitor.service.verification"):
        await run_steps(r, 4)
    lines = [m for m in caplog.messages if "zoom-in" in m]
    assert lines == [
        "camera yard: zoom-in fire rejected ([300, 200, 340, 260]: no (orange vest))",
        "camera yard: zoom-in fire confirmed ([300, 200, 340, 260]: yes (flames))"]
