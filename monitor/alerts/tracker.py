"""Hazard tracking: verdicts in, alert events out. Pure: no clock, no I/O.

Per camera and hazard a small state machine confirms what the model sees before anyone is
alarmed, and clears it only when the model has seen it gone for a while:

* idle → active when ``confirm_frames`` of the last ``window_frames`` verdicts are positive
  (K of N; ``window_frames`` defaults to ``confirm_frames``, i.e. K in a row) and the hazard's
  ``cooldown_s`` since its previous alert ended has passed: emits ``start``;
* active, no-hard-hat only: the number of people without a hard hat changes: emits ``update``;
* active → idle after ``clear_frames`` consecutive negative verdicts, or when ``clear_after_s``
  passed without a positive verdict: emits ``end``.

Site rules (:class:`~monitor.alerts.siterules.SiteRules`, optional) add to this, per hazard:

* a schedule: outside it the hazard's verdicts are ignored (its window starts afresh) and a
  raised alert ends with end reason ``schedule``;
* ``min_duration_s``: a start also needs the hazard seen that long, from the first positive
  after the last negative to the current verdict, on capture times;
* ``escalate_after_s``: an alert raised that long gets one ``update`` with severity ``high``
  (its later steps keep it);
* zones: positives whose boxes all lie outside the hazard's zones count as negatives; people
  without a box (and fire or smoke without one) count wherever they are.

An ``uncertain`` answer is, by default (``uncertain = "neither"``), neither positive nor
negative: it does not enter the window, does not count towards or break a streak, so a model
that hesitates between two confident answers changes nothing. ``uncertain = "positive"`` treats
it as positive (a site that prefers a false alarm to a missed one). Time still passes during
uncertain answers, so ``clear_after_s`` can end an alert the model is no longer sure about.

What a subscriber can rely on (property-tested in ``tests/test_tracker.py``):

* per hazard, events alternate ``start`` (``update``)* ``end``; no ``end`` without a ``start``,
  never two alerts of one hazard at once, and all steps of one alert share its id;
* a new alert needs ``confirm_frames`` positive verdicts after the previous one ended, and at
  least ``cooldown_s`` between them; an alert lasts at least ``clear_frames`` negatives or
  ``clear_after_s`` seconds without a positive.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from monitor.alerts.siterules import SiteRules
from monitor.config import DefaultsConfig
from monitor.model.answer import Answer, Hazard
from monitor.rules.zones import FrameBox


class EventType(StrEnum):
    """Lifecycle step of an alert."""

    START = "start"
    UPDATE = "update"
    END = "end"


class UncertainMode(StrEnum):
    """How an ``uncertain`` answer counts."""

    NEITHER = "neither"
    POSITIVE = "positive"


class EndReason(StrEnum):
    """Why an alert ended."""

    CLEARED = "cleared"
    """``clear_frames`` consecutive negative verdicts."""
    TIMEOUT = "timeout"
    """``clear_after_s`` without a positive verdict."""
    RESTART = "restart"
    """The daemon restarted while the alert was raised (its state was lost with the process)."""
    REMOVED = "removed"
    """The camera or hazard is no longer in the configuration."""
    RECONFIGURED = "reconfigured"
    """The camera's settings changed on a reload; it starts afresh, unconfirmed."""
    FALSE_ALARM = "false_alarm"
    """An operator marked the alert a false alarm; the hazard stays quiet for a hold time."""
    SCHEDULE = "schedule"
    """The hazard's (or camera's) schedule ended: it is no longer watched."""


class Severity(StrEnum):
    """How urgent an alert is: ``high`` once it lasted ``escalate_after_s``."""

    NORMAL = "normal"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """The confirmation and clearing rules (``[defaults]`` in the configuration)."""

    confirm_frames: int = 2
    window_frames: int | None = None
    """K of N: ``confirm_frames`` positives within this many verdicts (``None``: in a row)."""
    clear_frames: int = 3
    clear_after_s: float | None = None
    cooldown_s: float = 0.0
    uncertain: UncertainMode = UncertainMode.NEITHER

    def __post_init__(self) -> None:
        if self.confirm_frames < 1 or self.clear_frames < 1:
            raise ValueError(f"confirm_frames ({self.confirm_frames}) and clear_frames "
                             f"({self.clear_frames}) must be at least 1")
        if self.window < self.confirm_frames:
            raise ValueError(f"window_frames ({self.window_frames}) must be at least "
                             f"confirm_frames ({self.confirm_frames})")
        if self.clear_after_s is not None and self.clear_after_s <= 0:
            raise ValueError(f"clear_after_s must be positive, got {self.clear_after_s}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {self.cooldown_s}")

    @classmethod
    def from_config(cls, defaults: DefaultsConfig) -> TrackerSettings:
        """The rules set in ``[defaults]``."""
        return cls(confirm_frames=defaults.confirm_frames, window_frames=defaults.window_frames,
                   clear_frames=defaults.clear_frames, clear_after_s=defaults.clear_after_s,
                   cooldown_s=defaults.cooldown_s, uncertain=UncertainMode(defaults.uncertain))

    @property
    def window(self) -> int:
        """N of K-of-N."""
        return self.window_frames if self.window_frames is not None else self.confirm_frames


@dataclass(frozen=True, slots=True)
class Observation:
    """One verdict as far as one hazard is concerned (kept as evidence on events)."""

    at: float
    """Capture time of the frame (epoch seconds)."""
    positive: bool
    detail: str
    missing_helmets: int | None = None
    zones: tuple[str, ...] = ()
    """The camera's zones holding the boxes that counted (empty: no boxes, or no zones)."""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One lifecycle step (start, update, end) of a confirmed hazard on one camera."""

    event_id: str
    """Stable for the whole alert: its ``start``, ``update`` and ``end`` carry the same id."""
    type: EventType
    camera_id: str
    hazard: Hazard
    started_at: float
    ended_at: float | None
    at: float
    """When this step happened (epoch seconds of the verdict that caused it)."""
    detail: str
    verdicts: tuple[Observation, ...]
    """The verdicts behind this step: the positives that confirmed a start, the one that
    changed an update, the negatives that cleared an end (empty for a timeout)."""
    revision: int = 0
    """0 for the start, +1 per later step: ``(event_id, revision)`` identifies a step."""
    missing_helmets: int | None = None
    end_reason: EndReason | None = None
    severity: Severity = Severity.NORMAL
    zones: tuple[str, ...] = ()
    by: str | None = None
    """Who ended it, when an operator did (a false alarm: the console user or the MQTT
    command's ``by``)."""
    """Zones where the hazard was seen at the start or latest update (site rules)."""

    @property
    def confirming_verdicts(self) -> int:
        """How many verdicts are behind this step."""
        return len(self.verdicts)


@dataclass(slots=True)
class _HazardState:
    window: deque[Observation]
    active: bool = False
    event_id: str = ""
    revision: int = 0
    started_at: float = 0.0
    detail: str = ""
    missing: int | None = None
    last_positive_at: float = 0.0
    negatives: list[Observation] = field(default_factory=list)
    quiet_until: float = float("-inf")
    """End of the cooldown after the previous alert."""
    seen_since: float | None = None
    """Capture time of the first positive since the last negative (``min_duration_s``)."""
    reported: bool = False
    """The latest verdict counted as positive (after schedules and zones)."""
    escalated: bool = False
    zones: tuple[str, ...] = ()


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class HazardTracker:
    """The confirm/clear state machines of one camera."""

    camera_id: str
    hazards: Iterable[Hazard]
    settings: TrackerSettings = field(default_factory=TrackerSettings)
    new_event_id: Callable[[], str] = _new_event_id
    rules: SiteRules = field(default_factory=SiteRules)
    _states: dict[Hazard, _HazardState] = field(init=False)

    def __post_init__(self) -> None:
        window = self.settings.window
        self._states = {hazard: _HazardState(window=deque(maxlen=window))
                        for hazard in self.hazards}

    def is_active(self, hazard: Hazard) -> bool:
        """Whether an alert for ``hazard`` is currently raised."""
        return self._states[hazard].active

    @property
    def watched(self) -> tuple[Hazard, ...]:
        """The hazards this tracker watches."""
        return tuple(self._states)

    def reported(self, hazard: Hazard) -> bool:
        """Whether the latest verdict counted as positive for ``hazard`` once the site rules
        applied (a person in an excluded zone, a hazard out of schedule: no)."""
        return self._states[hazard].reported

    def asked(self, at: float) -> tuple[Hazard, ...]:
        """The watched hazards whose schedule is active at ``at`` (what to ask the model)."""
        return tuple(h for h in self._states if self.rules.in_schedule(h, at))

    def update(self, answer: Answer, at: float,
               boxes: Mapping[Hazard, Sequence[FrameBox]] | None = None) -> list[AlertEvent]:
        """Feed one verdict (of a frame captured at ``at``) and return the events it causes.
        ``boxes``: the answer's boxes per hazard, in fractions of the frame, for the zones."""
        events: list[AlertEvent] = []
        for hazard, state in self._states.items():
            if self.rules.in_schedule(hazard, at):
                seen = self._observe(hazard, answer, at)
                if seen is not None and boxes is not None:
                    seen = self._zoned(hazard, seen, boxes.get(hazard, ()))
                state.reported = seen is not None and seen.positive
                event = self._step(hazard, state, seen, at)
            else:
                state.reported = False
                event = self._off_schedule(hazard, state, at)
            events.extend(e for e in (event, self._escalate(hazard, state, at)) if e)
        return events

    def expire(self, now: float) -> list[AlertEvent]:
        """End alerts that saw no positive verdict for ``clear_after_s`` (call it when no
        verdicts arrive, e.g. while the camera is offline)."""
        events: list[AlertEvent] = []
        for hazard, state in self._states.items():
            event = self._step(hazard, state, None, now) \
                if self.rules.in_schedule(hazard, now) else self._off_schedule(hazard, state, now)
            events.extend(e for e in (event, self._escalate(hazard, state, now)) if e)
        return events

    def end_all(self, at: float, reason: EndReason) -> list[AlertEvent]:
        """End every raised alert now, for ``reason`` (the tracker is about to be dropped)."""
        events = []
        for hazard, state in self._states.items():
            if state.active:
                state.active = False
                state.revision += 1
                events.append(self._event(hazard, state, EventType.END, at, (),
                                          end_reason=reason))
        return events

    def dismiss(self, hazard: Hazard, at: float, hold_s: float) -> AlertEvent | None:
        """End ``hazard``'s raised alert as a false alarm and keep it quiet for ``hold_s``
        (its window starts empty: a new alert needs fresh confirmation after the hold);
        ``None`` when no alert is raised."""
        state = self._states.get(hazard)
        if state is None or not state.active:
            return None
        state.active = False
        state.revision += 1
        state.quiet_until = max(state.quiet_until, at + hold_s)
        state.window.clear()
        return self._event(hazard, state, EventType.END, at, (),
                           end_reason=EndReason.FALSE_ALARM)

    def lift_hold(self, hazard: Hazard, at: float) -> None:
        """End a false alarm's hold early (the scene changed): from ``at`` on, ``hazard`` may
        be confirmed again."""
        state = self._states.get(hazard)
        if state is not None and state.quiet_until > at:
            state.quiet_until = at

    def _observe(self, hazard: Hazard, answer: Answer, at: float) -> Observation | None:
        """The verdict as a positive or negative observation, ``None`` when it is neither."""
        missing = answer.helmet.missing_count if hazard is Hazard.NO_HELMET else None
        detail = answer.detail(hazard)
        if answer.is_positive(hazard):
            return Observation(at, positive=True, detail=detail, missing_helmets=missing)
        if answer.is_negative(hazard):
            return Observation(at, positive=False, detail=detail, missing_helmets=missing)
        if self.settings.uncertain is UncertainMode.POSITIVE:
            return Observation(at, positive=True, detail=detail, missing_helmets=missing)
        return None

    def _zoned(self, hazard: Hazard, seen: Observation,
               boxes: Sequence[FrameBox]) -> Observation:
        """A positive as the hazard's zones see it: negative when every box lies outside
        them; people (or fire, smoke) without a box count wherever they are."""
        placement = self.rules.place(hazard, boxes) if seen.positive else None
        if placement is None:
            return seen
        if hazard is Hazard.NO_HELMET:
            remaining = (seen.missing_helmets or 0) - len(placement.dropped)
            if remaining > 0:
                return replace(seen, missing_helmets=remaining, zones=placement.zones)
            return replace(seen, positive=False, missing_helmets=0)
        if placement.kept:
            return replace(seen, zones=placement.zones)
        return replace(seen, positive=False)

    def _off_schedule(self, hazard: Hazard, state: _HazardState,
                      at: float) -> AlertEvent | None:
        """Outside the hazard's schedule: forget what was seen, end a raised alert."""
        state.window.clear()
        state.seen_since = None
        if not state.active:
            return None
        state.active = False
        state.revision += 1
        state.quiet_until = at + self.settings.cooldown_s
        return self._event(hazard, state, EventType.END, at, (), end_reason=EndReason.SCHEDULE)

    def _escalate(self, hazard: Hazard, state: _HazardState, at: float) -> AlertEvent | None:
        """The one ``update`` raising an alert's severity after ``escalate_after_s``."""
        after = self.rules.of(hazard).escalate_after_s
        if not state.active or state.escalated or after is None or at - state.started_at < after:
            return None
        state.escalated = True
        state.revision += 1
        return self._event(hazard, state, EventType.UPDATE, at, ())

    def _step(self, hazard: Hazard, state: _HazardState, seen: Observation | None,
              at: float) -> AlertEvent | None:
        settings = self.settings
        if not state.active:
            if seen is None:
                return None
            state.window.append(seen)
            if not seen.positive:
                state.seen_since = None
            elif state.seen_since is None:
                state.seen_since = at
            positives = tuple(o for o in state.window if o.positive)
            if len(positives) < settings.confirm_frames or at < state.quiet_until:
                return None
            min_duration_s = self.rules.of(hazard).min_duration_s
            if min_duration_s > 0 and (state.seen_since is None
                                       or at - state.seen_since < min_duration_s):
                return None
            state.active, state.event_id, state.revision = True, self.new_event_id(), 0
            state.started_at, state.last_positive_at = at, at
            state.detail, state.missing = seen.detail, seen.missing_helmets
            state.zones, state.escalated, state.seen_since = seen.zones, False, None
            state.negatives.clear()
            state.window.clear()
            return self._event(hazard, state, EventType.START, at, positives)
        if seen is not None and seen.positive:
            state.negatives.clear()
            state.last_positive_at = at
            state.zones = seen.zones or state.zones
            if hazard is Hazard.NO_HELMET and seen.missing_helmets != state.missing:
                state.missing, state.detail = seen.missing_helmets, seen.detail
                state.revision += 1
                return self._event(hazard, state, EventType.UPDATE, at, (seen,))
            return None
        if seen is not None:
            state.negatives.append(seen)
        reason: EndReason | None = None
        if len(state.negatives) >= settings.clear_frames:
            reason = EndReason.CLEARED
        elif settings.clear_after_s is not None \
                and at - state.last_positive_at >= settings.clear_after_s:
            reason = EndReason.TIMEOUT
        if reason is None:
            return None
        state.active = False
        state.revision += 1
        state.quiet_until = at + settings.cooldown_s
        return self._event(hazard, state, EventType.END, at, tuple(state.negatives),
                           end_reason=reason)

    def _event(self, hazard: Hazard, state: _HazardState, kind: EventType, at: float,
               verdicts: tuple[Observation, ...], *,
               end_reason: EndReason | None = None) -> AlertEvent:
        return AlertEvent(
            event_id=state.event_id, type=kind, camera_id=self.camera_id, hazard=hazard,
            started_at=state.started_at, ended_at=at if kind is EventType.END else None, at=at,
            detail=state.detail, verdicts=verdicts, revision=state.revision,
            missing_helmets=state.missing, end_reason=end_reason,
            severity=Severity.HIGH if state.escalated else Severity.NORMAL, zones=state.zones,
        )
