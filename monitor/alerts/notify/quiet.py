"""Quiet hours of a channel: it sends only while its ``[schedules.<name>]`` is active.

Pure: time comes in as ``now`` and the schedule is a
:class:`~monitor.rules.schedules.WeeklySchedule`. Outside the schedule a notification is
counted instead of sent (alert steps of the channel's ``urgent_hazards`` still go out); the
first time the schedule is active again, :meth:`QuietHours.digest` gives one summary of
everything held back. The counts live in memory, like the rate limit's: a restart during quiet
hours forgets them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from monitor.alerts.notify.messages import (
    HAZARD_LABELS,
    KIND_LABELS,
    PROBLEM_LABELS,
    Notification,
)
from monitor.rules.schedules import WeeklySchedule

QUIET_TITLES = {"en": "Held back during quiet hours", "zh": "非值守时段通知汇总"}
QUIET_TEXTS = {
    "en": "{held} notification(s) were held back outside schedule {schedule} between {first} "
          "and {last}: {counts}. Cameras: {cameras}.",
    "zh": "非值守时段（计划 {schedule}，{first} 至 {last}）共有 {held} 条通知未发送：{counts}。"
          "涉及摄像头：{cameras}。",
}


@dataclass(slots=True)
class _Quiet:
    """What was held back since the schedule last went inactive."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(kind, hazard or problem) → count."""
    cameras: set[str] = field(default_factory=set)
    first: str = ""
    last: str = ""

    @property
    def total(self) -> int:
        """How many notifications were held back."""
        return sum(self.counts.values())


class QuietHours:
    """One channel's quiet hours (see the module docstring)."""

    def __init__(self, schedule: WeeklySchedule, urgent_hazards: Collection[str] = ()) -> None:
        self.schedule = schedule
        self.urgent_hazards = frozenset(urgent_hazards)
        self._held = _Quiet()
        self.held_back = 0
        """Notifications summarised instead of sent (this process)."""

    def admit(self, notification: Notification, now: float) -> bool:
        """Whether ``notification`` may go now; if not, it is counted for the digest."""
        if self.schedule.is_active(now) or notification.hazard in self.urgent_hazards:
            return True
        held = self._held
        if not held.first:
            held.first = notification.at
        held.last = notification.at
        subject = notification.hazard or notification.problem or "-"
        held.counts[notification.kind, subject] = held.counts.get(
            (notification.kind, subject), 0) + 1
        held.cameras.add(notification.camera)
        self.held_back += 1
        return False

    def digest(self, now: float, language: str) -> Notification | None:
        """The summary of what was held back, once the schedule is active again (then
        forgotten); ``None`` while it is not, or when nothing was held back."""
        held = self._held
        if not held.total or not self.schedule.is_active(now):
            return None
        self._held = _Quiet()
        kinds = KIND_LABELS[language]
        subjects = {**HAZARD_LABELS[language], **PROBLEM_LABELS[language]}
        counts = ", ".join(
            f"{kinds.get(kind, kind)} {subjects.get(subject, subject)} x{count}"
            for (kind, subject), count in sorted(held.counts.items()))
        text = QUIET_TEXTS[language].format(
            held=held.total, schedule=self.schedule.name, first=held.first, last=held.last,
            counts=counts, cameras=", ".join(sorted(held.cameras)))
        return Notification(key=f"quiet:{self.schedule.name}:{held.last}", kind="digest",
                            camera="-", hazard=None, title=QUIET_TITLES[language], text=text,
                            at=held.last)
