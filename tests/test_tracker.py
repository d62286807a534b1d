"""The confirm/clear state machine (pure)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from monitor.tracker import EventType, HazardTracker
from monitor.verdict import Hazard, SafetyAnswer

FIRE = SafetyAnswer.model_validate({
    "fire": {"answer": "yes", "description": "flames"}, "smoke": {"answer": "no"},
    "helmet": {"status": "all_worn"}})
CLEAR = SafetyAnswer.model_validate({
    "fire": {"answer": "no"}, "smoke": {"answer": "no"}, "helmet": {"status": "all_worn"}})
UNSURE = SafetyAnswer.model_validate({
    "fire": {"answer": "uncertain"}, "smoke": {"answer": "no"},
    "helmet": {"status": "all_worn"}})
NO_HELMET = SafetyAnswer.model_validate({
    "fire": {"answer": "no"}, "smoke": {"answer": "no"},
    "helmet": {"status": "some_missing", "missing_count": 2, "description": "two at left"}})


def make(confirm: int = 2, clear: int = 3) -> HazardTracker:
    counter = itertools.count(1)
    return HazardTracker("cam", list(Hazard), confirm, clear,
                         new_event_id=lambda: f"id{next(counter)}")


def test_raises_after_confirm_frames_consecutive_positives() -> None:
    tracker = make(confirm=2)
    assert tracker.update(FIRE, 1.0) == []
    events = tracker.update(FIRE, 2.0)
    assert len(events) == 1
    assert events[0].type is EventType.START
    assert events[0].hazard is Hazard.FIRE
    assert events[0].started_at == 2.0
    assert events[0].detail == "flames"
    assert tracker.is_active(Hazard.FIRE)
    assert tracker.update(FIRE, 3.0) == []  # no repeated start


def test_a_negative_breaks_the_positive_streak() -> None:
    tracker = make(confirm=2)
    tracker.update(FIRE, 1.0)
    tracker.update(CLEAR, 2.0)
    assert tracker.update(FIRE, 3.0) == []
    assert not tracker.is_active(Hazard.FIRE)


def test_clears_after_clear_frames_negatives_with_same_id() -> None:
    tracker = make(confirm=1, clear=2)
    [start] = tracker.update(FIRE, 1.0)
    assert tracker.update(CLEAR, 2.0) == []
    [end] = tracker.update(CLEAR, 3.0)
    assert end.type is EventType.END
    assert end.event_id == start.event_id
    assert end.started_at == 1.0
    assert end.ended_at == 3.0
    assert not tracker.is_active(Hazard.FIRE)


def test_uncertain_neither_counts_nor_breaks() -> None:
    tracker = make(confirm=2, clear=2)
    tracker.update(FIRE, 1.0)
    assert tracker.update(UNSURE, 2.0) == []
    [start] = tracker.update(FIRE, 3.0)
    assert start.type is EventType.START
    tracker.update(CLEAR, 4.0)
    assert tracker.update(UNSURE, 5.0) == []
    [end] = tracker.update(CLEAR, 6.0)
    assert end.type is EventType.END


def test_helmet_event_carries_missing_count() -> None:
    tracker = make(confirm=1)
    [event] = tracker.update(NO_HELMET, 1.0)
    assert event.hazard is Hazard.NO_HELMET
    assert event.missing_helmets == 2


def test_only_watched_hazards() -> None:
    tracker = HazardTracker("cam", [Hazard.SMOKE], 1, 1)
    assert tracker.update(FIRE, 1.0) == []
    assert tracker.watched == (Hazard.SMOKE,)


@given(st.lists(st.sampled_from([FIRE, CLEAR, UNSURE]), max_size=60),
       st.integers(1, 4), st.integers(1, 4))
def test_events_alternate_start_end_and_respect_streaks(
    answers: list[SafetyAnswer], confirm: int, clear: int
) -> None:
    tracker = make(confirm=confirm, clear=clear)
    fire_events = [
        (index, event)
        for index, answer in enumerate(answers)
        for event in tracker.update(answer, float(index))
        if event.hazard is Hazard.FIRE
    ]
    expected = EventType.START
    for _index, event in fire_events:
        assert event.type is expected  # no end without a start, no double start
        expected = EventType.END if expected is EventType.START else EventType.START
    for (_, start), (_, end) in zip(fire_events[::2], fire_events[1::2], strict=False):
        assert start.event_id == end.event_id
    for index, event in fire_events:
        # Each transition was preceded by enough consecutive (uncertain-skipping) verdicts.
        wanted = FIRE if event.type is EventType.START else CLEAR
        needed = confirm if event.type is EventType.START else clear
        decisive = [a for a in answers[: index + 1] if a is not UNSURE]
        assert decisive[-needed:] == [wanted] * needed
