"""Health problems as events (pure: observations and ``now`` in, start/end events out), and
their wire form."""

from __future__ import annotations

import itertools
import json

import pytest
from jsonschema import Draft202012Validator

from monitor.alerts.health import HealthEndReason, HealthEvent, HealthProblem, HealthTracker
from monitor.alerts.payloads import HealthEventPayload, schema_text
from monitor.alerts.tracker import EventType

WALL0 = 1_700_000_000.0


def tracker(**thresholds: float) -> HealthTracker:
    ids = (f"id{n}" for n in itertools.count())
    return HealthTracker("gate", {HealthProblem(name): s for name, s in thresholds.items()},
                         new_event_id=lambda: next(ids))


def seen(t: HealthTracker, problem: HealthProblem, now: float,
         detail: str = "") -> HealthEvent | None:
    return t.observe(problem, present=True, now=now, wall=WALL0 + now, detail=detail)


def gone(t: HealthTracker, problem: HealthProblem, now: float) -> HealthEvent | None:
    return t.observe(problem, present=False, now=now, wall=WALL0 + now)


def test_a_problem_starts_once_it_lasted_its_threshold_and_ends_when_gone() -> None:
    t = tracker(frozen=10.0)
    assert seen(t, HealthProblem.FROZEN, 0.0) is None
    assert seen(t, HealthProblem.FROZEN, 9.9) is None
    start = seen(t, HealthProblem.FROZEN, 10.0, "stuck")
    assert start is not None
    assert start.type is EventType.START
    assert (start.event_id, start.camera_id, start.detail) == ("id0", "gate", "stuck")
    assert start.started_at == WALL0  # when it began, not when its threshold passed
    assert t.is_active(HealthProblem.FROZEN)
    assert seen(t, HealthProblem.FROZEN, 30.0) is None  # one start only
    end = t.observe(HealthProblem.FROZEN, present=False, now=31.0, wall=WALL0 + 31.0)
    assert end is not None
    assert end.type is EventType.END
    assert (end.event_id, end.end_reason, end.ended_at) == ("id0", HealthEndReason.RECOVERED,
                                                            WALL0 + 31.0)
    assert end.started_at == WALL0
    assert t.active == []


def test_a_problem_that_goes_away_before_its_threshold_raises_nothing() -> None:
    t = tracker(blank=5.0)
    assert seen(t, HealthProblem.BLANK, 0.0) is None
    assert gone(t, HealthProblem.BLANK, 4.0) is None
    assert seen(t, HealthProblem.BLANK, 6.0) is None  # a new run: counts afresh
    assert seen(t, HealthProblem.BLANK, 10.9) is None
    assert seen(t, HealthProblem.BLANK, 11.0) is not None


def test_problems_are_independent_and_untracked_ones_are_ignored() -> None:
    t = tracker(offline=0.0, frozen=3.0)
    offline = seen(t, HealthProblem.OFFLINE, 0.0)
    assert offline is not None
    assert seen(t, HealthProblem.FROZEN, 0.0) is None
    assert seen(t, HealthProblem.VIEW_CHANGED, 0.0) is None
    assert t.active == [HealthProblem.OFFLINE]


def test_end_all_ends_started_problems_with_the_reason_given() -> None:
    t = tracker(offline=0.0, frozen=3.0)
    seen(t, HealthProblem.OFFLINE, 0.0)
    seen(t, HealthProblem.FROZEN, 0.0)  # not started yet: nothing to end
    events = t.end_all(WALL0 + 5.0, HealthEndReason.SHUTDOWN)
    assert [(e.problem, e.type, e.end_reason) for e in events] == [
        (HealthProblem.OFFLINE, EventType.END, HealthEndReason.SHUTDOWN)]
    assert t.active == []


def test_a_negative_threshold_is_refused_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="threshold of frozen must be >= 0"):
        tracker(frozen=-1.0)


def test_the_wire_form_validates_against_the_committed_schema() -> None:
    t = tracker(no_verdict=0.0)
    start = seen(t, HealthProblem.NO_VERDICT, 0.0, "no verdict for 300 s")
    end = gone(t, HealthProblem.NO_VERDICT, 2.0)
    assert start is not None
    assert end is not None
    validator = Draft202012Validator(json.loads(schema_text(HealthEventPayload)))
    payloads = [json.loads(HealthEventPayload.from_event(e).model_dump_json())
                for e in (start, end)]
    for payload in payloads:
        validator.validate(payload)
        assert payload["camera"] == "gate"
        assert payload["problem"] == "no_verdict"
    assert [p["type"] for p in payloads] == ["start", "end"]
    assert [p["end_reason"] for p in payloads] == [None, "recovered"]
    assert payloads[0]["detail"] == "no verdict for 300 s"
