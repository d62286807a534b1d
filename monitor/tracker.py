"""Hazard tracking: verdicts in, alert events out. Pure: no clock, no I/O.

Per camera and hazard a small state machine confirms what the model sees before anyone is
alarmed, and clears it only when the model has seen it gone for a while:

* idle → active after ``confirm_frames`` consecutive positive verdicts (emits ``start``);
* active → idle after ``clear_frames`` consecutive negative verdicts (emits ``end``).

An ``uncertain`` answer is neither: it neither counts towards nor breaks a streak, so a model
that hesitates between two confident answers does not reset the count, and it never raises or
clears anything on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from monitor.verdict import Hazard, SafetyAnswer


class EventType(StrEnum):
    """Lifecycle step of an alert."""

    START = "start"
    END = "end"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A confirmed hazard starting or ending on one camera."""

    event_id: str
    """Stable for the whole alert: the ``start`` and the ``end`` carry the same id."""
    type: EventType
    camera_id: str
    hazard: Hazard
    started_at: float
    ended_at: float | None
    at: float
    """When this step happened (epoch seconds of the verdict that caused it)."""
    detail: str
    confirming_verdicts: int
    missing_helmets: int | None = None


@dataclass(slots=True)
class _HazardState:
    active: bool = False
    positive_streak: int = 0
    negative_streak: int = 0
    event_id: str = ""
    started_at: float = 0.0
    detail: str = ""


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class HazardTracker:
    """The confirm/clear state machines of one camera."""

    camera_id: str
    hazards: Iterable[Hazard]
    confirm_frames: int
    clear_frames: int
    new_event_id: Callable[[], str] = _new_event_id
    _states: dict[Hazard, _HazardState] = field(init=False)

    def __post_init__(self) -> None:
        if self.confirm_frames < 1 or self.clear_frames < 1:
            raise ValueError("confirm_frames and clear_frames must be at least 1")
        self._states = {hazard: _HazardState() for hazard in self.hazards}

    def is_active(self, hazard: Hazard) -> bool:
        """Whether an alert for ``hazard`` is currently raised."""
        return self._states[hazard].active

    @property
    def watched(self) -> tuple[Hazard, ...]:
        """The hazards this tracker watches."""
        return tuple(self._states)

    def update(self, answer: SafetyAnswer, at: float) -> list[AlertEvent]:
        """Feed one verdict (taken at ``at``) and return the events it causes."""
        events: list[AlertEvent] = []
        for hazard, state in self._states.items():
            event = self._step(hazard, state, answer, at)
            if event is not None:
                events.append(event)
        return events

    def _step(self, hazard: Hazard, state: _HazardState, answer: SafetyAnswer,
              at: float) -> AlertEvent | None:
        missing = answer.helmet.missing_count if hazard is Hazard.NO_HELMET else None
        if answer.is_positive(hazard):
            state.positive_streak += 1
            state.negative_streak = 0
            if not state.active and state.positive_streak >= self.confirm_frames:
                state.active = True
                state.event_id = self.new_event_id()
                state.started_at = at
                state.detail = answer.detail(hazard)
                return AlertEvent(
                    event_id=state.event_id, type=EventType.START, camera_id=self.camera_id,
                    hazard=hazard, started_at=at, ended_at=None, at=at, detail=state.detail,
                    confirming_verdicts=state.positive_streak, missing_helmets=missing,
                )
        elif answer.is_negative(hazard):
            state.negative_streak += 1
            state.positive_streak = 0
            if state.active and state.negative_streak >= self.clear_frames:
                state.active = False
                return AlertEvent(
                    event_id=state.event_id, type=EventType.END, camera_id=self.camera_id,
                    hazard=hazard, started_at=state.started_at, ended_at=at, at=at,
                    detail=state.detail, confirming_verdicts=state.negative_streak,
                    missing_helmets=missing,
                )
        return None
