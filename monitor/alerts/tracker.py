"""Hazard tracking: verdicts in, alert events out. Pure: no clock, no I/O.

Per camera and hazard a small state machine confirms what the model sees before anyone is
alarmed, and clears it only when the model has seen it gone for a while:

* idle → active when ``confirm_frames`` of the last ``window_frames`` verdicts are positive
  (K of N; ``window_frames`` defaults to ``confirm_frames``, i.e. K in a row) and the hazard's
  ``cooldown_s`` since its previous alert ended has passed: emits ``start``;
* active, no-hard-hat only: the number of people without a hard hat changes: emits ``update``;
* active → idle after ``clear_frames`` consecutive negative verdicts, or when ``clear_after_s``
  passed without a positive verdict: emits ``end``.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from monitor.config import DefaultsConfig
from monitor.model.answer import Answer, Hazard


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


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class HazardTracker:
    """The confirm/clear state machines of one camera."""

    camera_id: str
    hazards: Iterable[Hazard]
    settings: TrackerSettings = field(default_factory=TrackerSettings)
    new_event_id: Callable[[], str] = _new_event_id
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

    def update(self, answer: Answer, at: float) -> list[AlertEvent]:
        """Feed one verdict (of a frame captured at ``at``) and return the events it causes."""
        events: list[AlertEvent] = []
        for hazard, state in self._states.items():
            event = self._step(hazard, state, self._observe(hazard, answer, at), at)
            if event is not None:
                events.append(event)
        return events

    def expire(self, now: float) -> list[AlertEvent]:
        """End alerts that saw no positive verdict for ``clear_after_s`` (call it when no
        verdicts arrive, e.g. while the camera is offline)."""
        events = []
        for hazard, state in self._states.items():
            event = self._step(hazard, state, None, now)
            if event is not None:
                events.append(event)
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

    def _step(self, hazard: Hazard, state: _HazardState, seen: Observation | None,
              at: float) -> AlertEvent | None:
        settings = self.settings
        if not state.active:
            if seen is None:
                return None
            state.window.append(seen)
            positives = tuple(o for o in state.window if o.positive)
            if len(positives) < settings.confirm_frames or at < state.quiet_until:
                return None
            state.active, state.event_id, state.revision = True, self.new_event_id(), 0
            state.started_at, state.last_positive_at = at, at
            state.detail, state.missing = seen.detail, seen.missing_helmets
            state.negatives.clear()
            state.window.clear()
            return self._event(hazard, state, EventType.START, at, positives)
        if seen is not None and seen.positive:
            state.negatives.clear()
            state.last_positive_at = at
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
        )
