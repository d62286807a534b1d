"""Camera health as events with a lifecycle: a problem starts once it has lasted its threshold
and ends when it is gone.

Pure: :class:`HealthTracker` is told, at each check, which problems are present now (with
``now``) and returns the :class:`HealthEvent` s that start or end. Where the observations come
from (the stream's state, the picture's thumbnails, verdict times, the model pool) is the
service's business (:mod:`monitor.service.health`); this module knows nothing of streams or
pixels, so alerts still never depend on ingest.

Problems (:class:`HealthProblem`)::

    offline             the stream is not delivering frames
    frozen              new frames arrive but the picture does not change at all
    blank               the picture is uniform: black, white, covered lens
    view_changed        the scene no longer resembles the one the camera showed (turned away)
    no_verdict          the camera's scene has not been judged for too long
    model_unavailable   every model endpoint is out of service (camera: none, daemon-wide)

An event's ``started_at`` is when the problem began (its threshold earlier than the ``start``
step), so subscribers see how long it has lasted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from monitor.alerts.tracker import EventType


class HealthProblem(StrEnum):
    """What is wrong with a camera (or with the model, for all cameras)."""

    OFFLINE = "offline"
    FROZEN = "frozen"
    BLANK = "blank"
    VIEW_CHANGED = "view_changed"
    NO_VERDICT = "no_verdict"
    MODEL_UNAVAILABLE = "model_unavailable"


class HealthEndReason(StrEnum):
    """Why a health event ended."""

    RECOVERED = "recovered"
    """The problem is gone (the picture came back, the stream is online again...)."""
    SHUTDOWN = "shutdown"
    """The daemon stopped while the problem lasted: it can no longer watch it."""
    REMOVED = "removed"
    """The camera left the configuration (or was reconfigured) on a reload."""


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """The start or end of one health problem of one camera (``camera_id`` ``None``: the
    daemon's, e.g. every model endpoint out of service)."""

    event_id: str
    """The same for a problem's start and its end."""
    type: EventType
    """``start`` or ``end`` (health events have no updates)."""
    camera_id: str | None
    problem: HealthProblem
    started_at: float
    """When the problem began (epoch seconds), before its threshold passed."""
    at: float
    """When this step happened (epoch seconds)."""
    detail: str
    """What was observed, e.g. the stream's last error or how long no verdict came."""
    ended_at: float | None = None
    end_reason: HealthEndReason | None = None


@dataclass(slots=True)
class _ProblemState:
    since: float | None = None
    """Monotonic time the problem was first seen in its current run (``None``: absent)."""
    event_id: str | None = None
    """Set while its event is started."""
    started_at: float = 0.0


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class HealthTracker:
    """The health problems of one camera (or of the daemon): see the module docstring."""

    camera_id: str | None
    thresholds: Mapping[HealthProblem, float]
    """Seconds a problem must last before its event starts; problems not named are not
    tracked."""
    new_event_id: Callable[[], str] = _new_event_id
    _states: dict[HealthProblem, _ProblemState] = field(init=False)

    def __post_init__(self) -> None:
        for problem, seconds in self.thresholds.items():
            if seconds < 0:
                raise ValueError(f"the threshold of {problem.value} must be >= 0, got {seconds}")
        self._states = {problem: _ProblemState() for problem in self.thresholds}

    def observe(self, problem: HealthProblem, *, present: bool, now: float, wall: float,
                detail: str = "") -> HealthEvent | None:
        """Whether ``problem`` is present at monotonic ``now`` (``wall``: the same instant in
        epoch seconds); the event this starts or ends, if any."""
        state = self._states.get(problem)
        if state is None:
            return None
        if present:
            if state.since is None:
                state.since = now
            if state.event_id is None and now - state.since >= self.thresholds[problem]:
                state.event_id = self.new_event_id()
                state.started_at = wall - (now - state.since)
                return HealthEvent(state.event_id, EventType.START, self.camera_id, problem,
                                   started_at=state.started_at, at=wall, detail=detail)
            return None
        state.since = None
        return self._end(problem, state, wall, detail, HealthEndReason.RECOVERED)

    def is_active(self, problem: HealthProblem) -> bool:
        """Whether ``problem``'s event has started and not ended."""
        state = self._states.get(problem)
        return state is not None and state.event_id is not None

    @property
    def active(self) -> list[HealthProblem]:
        """The problems whose events have started and not ended."""
        return [problem for problem, state in self._states.items()
                if state.event_id is not None]

    def end_all(self, wall: float, reason: HealthEndReason) -> list[HealthEvent]:
        """End every started problem (shutdown, camera removed) and forget the others."""
        events = []
        for problem, state in self._states.items():
            state.since = None
            event = self._end(problem, state, wall, "", reason)
            if event is not None:
                events.append(event)
        return events

    def _end(self, problem: HealthProblem, state: _ProblemState, wall: float, detail: str,
             reason: HealthEndReason) -> HealthEvent | None:
        if state.event_id is None:
            return None
        event = HealthEvent(state.event_id, EventType.END, self.camera_id, problem,
                            started_at=state.started_at, at=wall, detail=detail,
                            ended_at=wall, end_reason=reason)
        state.event_id = None
        return event
