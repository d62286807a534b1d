"""The tracker with site rules (pure, times passed in): minimum duration, escalation,
schedules, zones."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from monitor.alerts.siterules import HazardRules, SiteRules
from monitor.alerts.tracker import (
    EndReason,
    EventType,
    HazardTracker,
    Severity,
    TrackerSettings,
)
from monitor.model.answer import Answer, Hazard
from monitor.rules.schedules import WeeklySchedule
from monitor.rules.zones import Anchor, FrameBox, Zone, ZoneRule

CLEAR = Answer.model_validate({
    "fire": {"answer": "no"}, "smoke": {"answer": "no"}, "helmet": {"status": "all_worn"}})
UNSURE = Answer.model_validate({
    "fire": {"answer": "no"}, "smoke": {"answer": "no"}, "helmet": {"status": "uncertain"}})
FIRE = Answer.model_validate({
    "fire": {"answer": "yes", "description": "flames"}, "smoke": {"answer": "no"},
    "helmet": {"status": "all_worn"}})
LEFT_HALF = Zone("office", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
MONDAY = datetime(2026, 12, 7, tzinfo=UTC).timestamp()


def bareheaded(count: int = 1) -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "no"}, "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": count, "description": "worker"}})


def tracker(rules: dict[Hazard, HazardRules], *, confirm: int = 2, clear: int = 2,
            zones: tuple[Zone, ...] = ()) -> HazardTracker:
    counter = itertools.count(1)
    return HazardTracker("cam", [Hazard.FIRE, Hazard.NO_HELMET],
                         TrackerSettings(confirm_frames=confirm, clear_frames=clear),
                         new_event_id=lambda: f"id{next(counter)}",
                         rules=SiteRules(hazards=rules, zones={z.name: z for z in zones}))


def feed(t: HazardTracker, answer: Answer, times: range | list[float], *,
         boxes: Mapping[Hazard, Sequence[FrameBox]] | None = None,
         ) -> list[tuple[float, EventType, Hazard]]:
    out: list[tuple[float, EventType, Hazard]] = []
    for at in times:
        out.extend((at, e.type, e.hazard) for e in t.update(answer, float(at), boxes))
    return out


def test_a_short_sighting_raises_nothing_a_long_one_raises_at_min_duration() -> None:
    rules = {Hazard.NO_HELMET: HazardRules(min_duration_s=5)}
    short = tracker(rules)
    assert feed(short, bareheaded(), range(3)) == []  # seen at 0, 1, 2 s
    assert feed(short, CLEAR, range(3, 6)) == []
    assert feed(short, bareheaded(), range(6, 10)) == []  # a negative started the count again
    long = tracker(rules)
    assert feed(long, bareheaded(), range(9)) == [(5.0, EventType.START, Hazard.NO_HELMET)]


def test_uncertain_answers_do_not_restart_the_duration() -> None:
    t = tracker({Hazard.NO_HELMET: HazardRules(min_duration_s=3)})
    assert feed(t, bareheaded(), [0.0, 1.0]) == []
    assert feed(t, UNSURE, [2.0]) == []
    assert feed(t, bareheaded(), [3.0]) == [(3.0, EventType.START, Hazard.NO_HELMET)]


def test_duration_comes_on_top_of_confirm_frames() -> None:
    t = tracker({Hazard.FIRE: HazardRules(min_duration_s=1)}, confirm=3)
    # 2 s seen, but only the third positive confirms.
    assert feed(t, FIRE, [0.0, 2.0]) == []
    assert feed(t, FIRE, [2.5]) == [(2.5, EventType.START, Hazard.FIRE)]
    # Without a duration rule the other hazard is unaffected: two positives, one start.
    plain = tracker({})
    assert feed(plain, FIRE, [0.0, 0.1]) == [(0.1, EventType.START, Hazard.FIRE)]


def test_an_alert_escalates_once_and_keeps_its_severity() -> None:
    t = tracker({Hazard.FIRE: HazardRules(escalate_after_s=10)})
    [start] = [*t.update(FIRE, 0.0), *t.update(FIRE, 1.0)]
    assert start.severity is Severity.NORMAL
    assert t.update(FIRE, 10.9) == []
    [escalation] = t.update(FIRE, 11.0)
    assert (escalation.type, escalation.severity, escalation.revision) == (
        EventType.UPDATE, Severity.HIGH, 1)
    assert escalation.event_id == start.event_id
    assert t.update(FIRE, 30.0) == []
    ends = [*t.update(CLEAR, 31.0), *t.update(CLEAR, 32.0)]
    assert [(e.type, e.severity, e.revision) for e in ends] == [
        (EventType.END, Severity.HIGH, 2)]
    # The next alert starts at normal severity again.
    [again] = [*t.update(FIRE, 40.0), *t.update(FIRE, 41.0)]
    assert again.severity is Severity.NORMAL


def test_escalation_also_happens_without_verdicts() -> None:
    t = tracker({Hazard.FIRE: HazardRules(escalate_after_s=10)})
    t.update(FIRE, 0.0)
    t.update(FIRE, 1.0)
    assert t.expire(5.0) == []
    [escalation] = t.expire(12.0)
    assert escalation.severity is Severity.HIGH


def test_outside_its_schedule_a_hazard_is_not_asked_and_its_alert_ends() -> None:
    mornings = WeeklySchedule.parse("mornings", "UTC", {"monday": ["08:00-09:00"]})
    t = tracker({Hazard.NO_HELMET: HazardRules(schedules=(mornings,))})
    eight, nine = MONDAY + 8 * 3600, MONDAY + 9 * 3600
    assert t.asked(eight - 1) == (Hazard.FIRE,)
    assert t.asked(eight) == (Hazard.FIRE, Hazard.NO_HELMET)
    # Before the schedule: verdicts are ignored, so they do not count towards a start.
    assert feed(t, bareheaded(), [eight - 1]) == []
    assert feed(t, bareheaded(), [eight]) == []
    assert feed(t, bareheaded(), [eight + 1]) == [(eight + 1, EventType.START,
                                                    Hazard.NO_HELMET)]
    [end] = t.update(bareheaded(), nine)
    assert (end.type, end.end_reason, end.hazard) == (EventType.END, EndReason.SCHEDULE,
                                                      Hazard.NO_HELMET)
    assert feed(t, bareheaded(), [nine + 1, nine + 2]) == []


def test_a_schedule_ends_an_alert_when_no_verdict_comes() -> None:
    mornings = WeeklySchedule.parse("mornings", "UTC", {"monday": ["08:00-09:00"]})
    t = tracker({Hazard.FIRE: HazardRules(schedules=(mornings,))})
    eight = MONDAY + 8 * 3600
    feed(t, FIRE, [eight, eight + 1])
    assert t.expire(eight + 1800) == []
    [end] = t.expire(eight + 3600)
    assert end.end_reason is EndReason.SCHEDULE
    assert not t.is_active(Hazard.FIRE)


def person(x: float) -> FrameBox:
    """A standing person whose feet are at ``x``."""
    return FrameBox(x - 0.05, 0.3, x + 0.05, 0.9)


def test_people_standing_in_an_excluded_zone_do_not_count() -> None:
    office = {Hazard.NO_HELMET: HazardRules(zones=ZoneRule(exclude=(LEFT_HALF,),
                                                           anchor=Anchor.FEET))}
    t = tracker(office, zones=(LEFT_HALF,))
    inside = {Hazard.NO_HELMET: [person(0.2)]}
    assert feed(t, bareheaded(), range(5), boxes=inside) == []
    assert not t.reported(Hazard.NO_HELMET)  # the answer said yes, the rules say no
    # One inside, one outside: one without a hard hat, outside the office.
    both = {Hazard.NO_HELMET: [person(0.2), person(0.8)]}
    [start] = [*t.update(bareheaded(2), 10.0, both), *t.update(bareheaded(2), 11.0, both)]
    assert start.missing_helmets == 1
    assert t.reported(Hazard.NO_HELMET)
    assert start.zones == ()  # the camera's only zone holds no counted person
    # Someone without a box counts wherever he is: 2 missing, 1 box in the office.
    t2 = tracker(office, zones=(LEFT_HALF,))
    events = [*t2.update(bareheaded(2), 0.0, inside), *t2.update(bareheaded(2), 1.0, inside)]
    assert [(e.type, e.missing_helmets) for e in events] == [(EventType.START, 1)]


def test_an_include_zone_keeps_only_what_is_inside_and_names_it() -> None:
    scaffold = Zone("scaffold", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)))
    rules = {Hazard.FIRE: HazardRules(zones=ZoneRule(include=(scaffold,)))}
    t = tracker(rules, zones=(LEFT_HALF, scaffold))
    outside = {Hazard.FIRE: [FrameBox(0.1, 0.1, 0.3, 0.3)]}
    assert feed(t, FIRE, range(4), boxes=outside) == []
    inside = {Hazard.FIRE: [FrameBox(0.6, 0.1, 0.9, 0.3)]}
    [start] = [*t.update(FIRE, 5.0, inside), *t.update(FIRE, 6.0, inside)]
    assert start.zones == ("scaffold",)
    # Fire without boxes counts anywhere (boxes for fire come with grounding).
    t2 = tracker(rules, zones=(LEFT_HALF, scaffold))
    assert feed(t2, FIRE, [0.0, 1.0], boxes={}) == [(1.0, EventType.START, Hazard.FIRE)]
