"""Who gets the next model slot when the GPUs cannot serve every camera at its interval.

Pure: the pipeline says how urgent its camera is when it asks for a slot (an :class:`Urgency`),
and :func:`next_waiter` picks, among the requests waiting, the one a freed slot goes to. The
order (``vlm.priority_scheduling = true``, the default):

1. **alerting**: cameras with an unconfirmed positive or an active alert: a fire that may be
   starting must not wait behind forty quiet cameras;
2. **overdue**: a quiet camera whose last verdict is about to be older than
   ``defaults.max_verdict_age_s`` (or that has none yet): every camera still gets a verdict
   that often, however many others outrank it;
3. the rest.

Within a tier the higher ``priority`` (per camera, config) goes first, then a camera whose
scene **changed** since its last analysed frame (the pipeline watches its newest frames while
the request waits: a starting fire, smoke or a person walking in changes the scene, a static
yard does not), then the camera analysed least recently (so equal cameras are each analysed
equally less often), then the one that asked first. With priority scheduling off, waiting
requests are served first come, first served.

Times are the process's monotonic clock (:func:`time.monotonic`), as the pool reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ALERTING, OVERDUE, ROUTINE = 0, 1, 2
"""The tiers, most urgent first."""


@dataclass(frozen=True, slots=True)
class Urgency:
    """How much one camera's request matters now (the pipeline's word to the pool)."""

    alerting: bool = False
    """An unconfirmed positive or an active alert on the camera."""
    priority: int = 0
    """The camera's ``priority`` (higher first among equals of a tier)."""
    last_verdict_at: float | None = None
    """Monotonic time of the camera's last verdict from the model (``None``: none yet)."""
    overdue_at: float | None = None
    """Monotonic time from which the camera counts as overdue (``None``: never, unless it
    has no verdict yet)."""
    scene_changed: Callable[[], bool] | None = field(default=None, compare=False)
    """Asked when a slot is handed out: whether the camera's newest frame differs markedly
    from its last analysed one (``None``: never). Live, because the scene changes while the
    request waits; it must be cheap (the pipeline's watcher sets a flag it reads)."""

    def changed(self) -> bool:
        """Whether the scene changed since the last analysed frame, now."""
        return self.scene_changed is not None and self.scene_changed()

    def tier(self, now: float) -> int:
        """:data:`ALERTING`, :data:`OVERDUE` or :data:`ROUTINE` at monotonic ``now``."""
        if self.alerting:
            return ALERTING
        if self.last_verdict_at is None or (self.overdue_at is not None
                                            and now >= self.overdue_at):
            return OVERDUE
        return ROUTINE


ROUTINE_URGENCY = Urgency(last_verdict_at=-math.inf)
"""What a request that says nothing (a still image, a tool) counts as: routine, first among
the routine ones of priority 0 (it has no camera whose turn could be taken)."""


def slot_order(urgency: Urgency, arrival: int,
               now: float) -> tuple[int, int, bool, float, int]:
    """The sort key of a waiting request (smaller goes first): tier, priority, scene
    unchanged, last verdict, arrival."""
    last = urgency.last_verdict_at if urgency.last_verdict_at is not None else -math.inf
    return (urgency.tier(now), -urgency.priority, not urgency.changed(), last, arrival)


def next_waiter(waiting: Sequence[tuple[Urgency, int]], now: float, *,
                prioritise: bool = True) -> int:
    """The index in ``waiting`` (``(urgency, arrival number)`` pairs) of the request the next
    free slot goes to: by :func:`slot_order`, or the earliest arrival when ``prioritise`` is
    off.

    Raises:
        ValueError: nobody is waiting.
    """
    if not waiting:
        raise ValueError("no request is waiting")
    if not prioritise:
        return min(range(len(waiting)), key=lambda i: waiting[i][1])
    return min(range(len(waiting)), key=lambda i: slot_order(waiting[i][0], waiting[i][1], now))


def camera_urgency(*, alerting: bool, priority: int, last_verdict_at: float | None,
                   max_verdict_age_s: float, interval_s: float,
                   scene_changed: Callable[[], bool] | None = None) -> Urgency:
    """A camera's urgency: overdue from ``max_verdict_age_s - interval_s`` after its last
    verdict, so that with a short queue its next verdict still comes within
    ``max_verdict_age_s``; ``scene_changed`` as in :class:`Urgency`."""
    overdue_at = None if last_verdict_at is None \
        else last_verdict_at + max(0.0, max_verdict_age_s - interval_s)
    return Urgency(alerting=alerting, priority=priority, last_verdict_at=last_verdict_at,
                   overdue_at=overdue_at, scene_changed=scene_changed)
