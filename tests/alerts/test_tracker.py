"""The confirm/clear state machine (pure): examples, then properties over random verdicts."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts.tracker import (
    AlertEvent,
    EndReason,
    EventType,
    HazardTracker,
    TrackerSettings,
    UncertainMode,
)
from monitor.model.answer import Answer, Hazard

FIRE = Answer.model_validate({
    "fire": {"answer": "yes", "description": "flames"}, "smoke": {"answer": "no"},
    "helmet": {"status": "all_worn"}})
CLEAR = Answer.model_validate({
    "fire": {"answer": "no"}, "smoke": {"answer": "no"}, "helmet": {"status": "all_worn"}})
UNSURE = Answer.model_validate({
    "fire": {"answer": "uncertain"}, "smoke": {"answer": "no"},
    "helmet": {"status": "uncertain"}})


def no_helmet(count: int) -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "no"}, "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": count,
                   "description": f"{count} at left"}})


def make(confirm: int = 2, clear: int = 3, **rules: object) -> HazardTracker:
    counter = itertools.count(1)
    settings_ = TrackerSettings(confirm_frames=confirm, clear_frames=clear, **rules)  # type: ignore[arg-type]
    return HazardTracker("cam", list(Hazard), settings_,
                         new_event_id=lambda: f"id{next(counter)}")


def test_raises_after_confirm_frames_consecutive_positives() -> None:
    tracker = make(confirm=2)
    assert tracker.update(FIRE, 1.0) == []
    [event] = tracker.update(FIRE, 2.0)
    assert event.type is EventType.START
    assert event.hazard is Hazard.FIRE
    assert event.started_at == 2.0
    assert event.detail == "flames"
    assert [v.at for v in event.verdicts] == [1.0, 2.0]  # the verdicts that confirmed it
    assert event.confirming_verdicts == 2
    assert event.revision == 0
    assert tracker.is_active(Hazard.FIRE)
    assert tracker.update(FIRE, 3.0) == []  # no repeated start


def test_a_negative_breaks_a_consecutive_streak() -> None:
    tracker = make(confirm=2)
    tracker.update(FIRE, 1.0)
    tracker.update(CLEAR, 2.0)
    assert tracker.update(FIRE, 3.0) == []
    assert not tracker.is_active(Hazard.FIRE)


def test_k_of_n_window() -> None:
    tracker = make(confirm=2, window_frames=3)
    tracker.update(FIRE, 1.0)
    tracker.update(CLEAR, 2.0)
    [start] = tracker.update(FIRE, 3.0)  # 2 positives among the last 3 verdicts
    assert [v.at for v in start.verdicts] == [1.0, 3.0]
    other = make(confirm=2, window_frames=3)
    for at, answer in enumerate([FIRE, CLEAR, CLEAR]):
        assert other.update(answer, float(at)) == []
    assert other.update(FIRE, 3.0) == []  # the first positive left the window


def test_clears_after_clear_frames_negatives_with_same_id() -> None:
    tracker = make(confirm=1, clear=2)
    [start] = tracker.update(FIRE, 1.0)
    assert tracker.update(CLEAR, 2.0) == []
    [end] = tracker.update(CLEAR, 3.0)
    assert end.type is EventType.END
    assert end.event_id == start.event_id
    assert (end.started_at, end.ended_at) == (1.0, 3.0)
    assert end.end_reason is EndReason.CLEARED
    assert end.revision == 1
    assert [v.at for v in end.verdicts] == [2.0, 3.0]
    assert not tracker.is_active(Hazard.FIRE)


def test_clear_after_seconds_without_a_positive() -> None:
    tracker = make(confirm=1, clear=100, clear_after_s=10.0)
    tracker.update(FIRE, 0.0)
    assert tracker.update(UNSURE, 5.0) == []
    [end] = tracker.update(UNSURE, 10.0)
    assert end.end_reason is EndReason.TIMEOUT
    # And without any verdict (camera offline): expire() ends it.
    tracker.update(FIRE, 20.0)
    assert tracker.expire(25.0) == []
    [end] = tracker.expire(30.0)
    assert end.ended_at == 30.0


def test_cooldown_delays_the_next_alert() -> None:
    tracker = make(confirm=1, clear=1, cooldown_s=30.0)
    tracker.update(FIRE, 0.0)
    tracker.update(CLEAR, 1.0)
    assert tracker.update(FIRE, 10.0) == []
    assert tracker.update(FIRE, 30.0) == []  # cooldown ends at 31
    [start] = tracker.update(FIRE, 31.0)
    assert start.type is EventType.START


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


def test_uncertain_as_positive() -> None:
    tracker = make(confirm=2, uncertain=UncertainMode.POSITIVE)
    tracker.update(FIRE, 1.0)
    events = tracker.update(UNSURE, 2.0)
    assert {e.hazard for e in events} == {Hazard.FIRE}  # helmet uncertain: one positive only


def test_helmet_event_carries_the_count_and_updates_when_it_changes() -> None:
    tracker = make(confirm=1)
    [start] = tracker.update(no_helmet(2), 1.0)
    assert (start.hazard, start.missing_helmets) == (Hazard.NO_HELMET, 2)
    assert tracker.update(no_helmet(2), 2.0) == []
    [update] = tracker.update(no_helmet(3), 3.0)
    assert update.type is EventType.UPDATE
    assert (update.event_id, update.revision, update.missing_helmets) == (start.event_id, 1, 3)
    assert update.detail == "3 at left"
    assert update.started_at == 1.0


def test_only_watched_hazards() -> None:
    tracker = HazardTracker("cam", [Hazard.SMOKE], TrackerSettings(1, clear_frames=1))
    assert tracker.update(FIRE, 1.0) == []
    assert tracker.watched == (Hazard.SMOKE,)


@pytest.mark.parametrize("rules", [
    {"confirm_frames": 0}, {"clear_frames": 0}, {"confirm_frames": 3, "window_frames": 2},
    {"clear_after_s": 0}, {"cooldown_s": -1},
])
def test_bad_settings_are_refused(rules: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        TrackerSettings(**rules)  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------

ANSWERS = [FIRE, CLEAR, UNSURE, no_helmet(1), no_helmet(2)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[TrackerSettings, list[tuple[float, Answer]]]:
    confirm = draw(st.integers(1, 4))
    rules = TrackerSettings(
        confirm_frames=confirm, window_frames=draw(st.one_of(st.none(), st.integers(confirm, 6))),
        clear_frames=draw(st.integers(1, 4)),
        clear_after_s=draw(st.one_of(st.none(), st.floats(1, 20))),
        cooldown_s=draw(st.sampled_from([0.0, 5.0, 15.0])),
        uncertain=draw(st.sampled_from(list(UncertainMode))),
    )
    answers = draw(st.lists(st.sampled_from(ANSWERS), max_size=70))
    # Every scenario holds a fire that must be confirmed (confirm_frames positives in a row,
    # somewhere) and, at its end, enough negatives to clear it: so every example exercises a
    # start and an end, and the properties below can never hold vacuously.
    at = draw(st.integers(0, len(answers)))
    answers[at:at] = [FIRE] * rules.confirm_frames
    answers += [CLEAR] * rules.clear_frames
    gaps = draw(st.lists(st.floats(0.1, 8), min_size=len(answers), max_size=len(answers)))
    times = list(itertools.accumulate(gaps))
    return rules, list(zip(times, answers, strict=True))


def run(rules: TrackerSettings,
        verdicts: list[tuple[float, Answer]]) -> dict[Hazard, list[tuple[int, AlertEvent]]]:
    counter = itertools.count()
    tracker = HazardTracker("cam", list(Hazard), rules, new_event_id=lambda: f"e{next(counter)}")
    by_hazard: dict[Hazard, list[tuple[int, AlertEvent]]] = defaultdict(list)
    for index, (at, answer) in enumerate(verdicts):
        for event in tracker.update(answer, at):
            by_hazard[event.hazard].append((index, event))
    return by_hazard


def counts(answer: Answer, hazard: Hazard, rules: TrackerSettings) -> bool:
    return (answer.is_positive(hazard) or answer.is_negative(hazard)
            or rules.uncertain is UncertainMode.POSITIVE)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_lifecycle_is_well_formed(
        scenario: tuple[TrackerSettings, list[tuple[float, Answer]]]) -> None:
    """Per hazard: start (update)* end, repeated; no end without a start; never two open
    alerts; every step of an alert shares its id, with revisions 0, 1, 2 ..."""
    rules, verdicts = scenario
    by_hazard = run(rules, verdicts)
    fire = [event.type for _, event in by_hazard[Hazard.FIRE]]
    assert EventType.START in fire
    assert EventType.END in fire  # the case under test happened
    for events in by_hazard.values():
        open_id: str | None = None
        revision = 0
        seen_ids: set[str] = set()
        for _, event in events:
            if event.type is EventType.START:
                assert open_id is None, "a second alert while one is open"
                assert event.event_id not in seen_ids, "ids are unique per alert"
                open_id, revision = event.event_id, 0
                seen_ids.add(event.event_id)
                assert event.revision == 0
                assert event.ended_at is None
            else:
                assert open_id == event.event_id, f"{event.type} without its start"
                revision += 1
                assert event.revision == revision
                if event.type is EventType.END:
                    open_id = None
                    assert event.ended_at == event.at
                    assert event.end_reason is not None


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_flapping_faster_than_the_settings(
        scenario: tuple[TrackerSettings, list[tuple[float, Answer]]]) -> None:
    """A start needs confirm_frames positives among its window after the previous end and at
    least cooldown_s after it; an end needs clear_frames negatives in a row or clear_after_s
    without a positive."""
    rules, verdicts = scenario
    checked = {EventType.START: 0, EventType.END: 0}
    for events in run(rules, verdicts).values():
        previous_end: tuple[int, AlertEvent] | None = None
        start_index = 0
        for index, event in events:
            if event.type is EventType.START:
                assert len(event.verdicts) >= rules.confirm_frames
                assert all(v.positive for v in event.verdicts)
                # Within the window: the last N verdicts that count (in "neither" mode an
                # uncertain verdict does not enter the window).
                counted = [at for at, answer in verdicts[: index + 1]
                           if counts(answer, event.hazard, rules)]
                assert all(v.at in counted[-rules.window:] for v in event.verdicts)
                if previous_end is not None:
                    end_index, end = previous_end
                    assert event.at >= end.at + rules.cooldown_s
                    assert index - end_index >= rules.confirm_frames
                    assert all(v.at > end.at for v in event.verdicts)
                start_index = index
            elif event.type is EventType.END:
                if event.end_reason is EndReason.CLEARED:
                    assert len(event.verdicts) >= rules.clear_frames
                    assert not any(v.positive for v in event.verdicts)
                    assert index - start_index >= rules.clear_frames
                else:
                    assert rules.clear_after_s is not None
                    assert event.at - event.started_at >= rules.clear_after_s
                previous_end = (index, event)
            checked[event.type] = checked.get(event.type, 0) + 1
    assert checked[EventType.START] >= 1
    assert checked[EventType.END] >= 1


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_uncertain_has_no_effect_when_neither(
        scenario: tuple[TrackerSettings, list[tuple[float, Answer]]]) -> None:
    """With uncertain = neither and no time-based clearing, removing the uncertain verdicts
    changes no event."""
    rules, verdicts = scenario
    rules = TrackerSettings(rules.confirm_frames, rules.window_frames, rules.clear_frames,
                            None, rules.cooldown_s, UncertainMode.NEITHER)
    decisive = [(at, a) for at, a in verdicts if a is not UNSURE]

    def steps(items: list[tuple[float, Answer]]) -> list[tuple[str, float]]:
        return [(e.type.value, e.at) for h, events in sorted(run(rules, items).items())
                for _, e in events if h is Hazard.FIRE]

    fire_steps = steps(verdicts)
    assert any(kind == "start" for kind, _ in fire_steps)  # a fire was raised
    assert fire_steps == steps(decisive)


def test_end_all_ends_raised_alerts_once_with_the_reason() -> None:
    tracker = HazardTracker("cam", list(Hazard), TrackerSettings(confirm_frames=1, clear_frames=2))
    [start] = tracker.update(FIRE, 1.0)
    [end] = tracker.end_all(5.0, EndReason.RECONFIGURED)
    assert end.type is EventType.END
    assert end.event_id == start.event_id
    assert end.end_reason is EndReason.RECONFIGURED
    assert end.ended_at == 5.0
    assert not tracker.is_active(Hazard.FIRE)
    assert tracker.end_all(6.0, EndReason.RECONFIGURED) == []
