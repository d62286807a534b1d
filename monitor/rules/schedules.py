"""Weekly schedules: when a hazard is watched, in a site's local wall-clock time.

A schedule lists time ranges per weekday (``"07:00-12:00"``; ``"22:00-06:00"`` runs past
midnight into the next day; ``"00:00-24:00"`` is the whole day), a timezone (IANA name, via
:mod:`zoneinfo`) and dated exceptions (a holiday without ranges, a short day with other ones)
whose ranges replace that date's weekday ranges.

Ranges are wall-clock times of the schedule's timezone, so a shift keeps its hours across DST
changes: on the night clocks go forward ``22:00-06:00`` is an hour shorter, on the night they
go back an hour longer, and a time that does not exist locally (02:30 when clocks jump from
02:00 to 03:00) is never asked about. A range belongs to the day it starts on: Friday's
``22:00-06:00`` runs into Saturday even when Saturday is a holiday.

Everything here takes the time it is asked about (epoch seconds) and returns a decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""Weekday keys of a schedule, in :meth:`datetime.date.weekday` order."""
MINUTES_PER_DAY = 24 * 60

_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``start`` to ``end`` in minutes after local midnight; ``end <= start`` runs past
    midnight into the next day (``end`` is then minutes of that next day)."""

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        """Whether the range ends on the next day."""
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_time_range(text: str) -> TimeRange:
    """``"HH:MM-HH:MM"`` as a :class:`TimeRange`.

    Raises:
        ValueError: not of that form, an hour or minute out of range, or an empty range.
    """
    match = _RANGE.match(text)
    if match is None:
        raise ValueError(f'time range {text!r} is not HH:MM-HH:MM (e.g. "07:00-17:30", '
                         f'"22:00-06:00" past midnight)')
    h1, m1, h2, m2 = (int(group) for group in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise ValueError(f"time range {text!r}: hours are 00-23 (24:00 only as an end), "
                         f"minutes 00-59")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end == MINUTES_PER_DAY:
        if start == 0:
            return TimeRange(0, MINUTES_PER_DAY)
        end = 0  # "22:00-24:00" is "until midnight", the same as "22:00-00:00"
    if start == end:
        raise ValueError(f"time range {text!r} is empty (start equals end); use "
                         f'"00:00-24:00" for the whole day')
    return TimeRange(start, end)


def timezone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (``"Europe/Berlin"``, ``"UTC"``).

    Raises:
        ValueError: not a known IANA timezone name.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}; use an IANA name such as "
                         f'"Europe/Berlin", "Asia/Shanghai" or "UTC"') from None


@dataclass(frozen=True, slots=True)
class WeeklySchedule:
    """A named weekly schedule (see the module docstring)."""

    name: str
    zone: ZoneInfo
    week: tuple[tuple[TimeRange, ...], ...]
    """Seven entries, Monday first."""
    exceptions: Mapping[date, tuple[TimeRange, ...]] = field(default_factory=dict)
    """Dates whose ranges replace their weekday's (an empty tuple: not active that day)."""

    def __post_init__(self) -> None:
        if len(self.week) != len(WEEKDAYS):
            raise ValueError(f"schedule {self.name!r}: need 7 weekdays, got {len(self.week)}")
        if not any(self.week) and not any(self.exceptions.values()):
            raise ValueError(f"schedule {self.name!r} has no time range on any day: it would "
                             f"never be active")

    @classmethod
    def parse(cls, name: str, timezone_name: str, days: Mapping[str, Sequence[str]],
              exceptions: Mapping[date, Sequence[str]] | None = None) -> WeeklySchedule:
        """A schedule from its configuration's texts (weekday name → ranges).

        Raises:
            ValueError: a bad range, weekday name or timezone, or no range at all.
        """
        unknown = sorted(set(days) - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"schedule {name!r}: unknown weekday(s) {', '.join(unknown)}; "
                             f"use {', '.join(WEEKDAYS)}")
        week = tuple(tuple(parse_time_range(text) for text in days.get(day, ()))
                     for day in WEEKDAYS)
        dated = {day: tuple(parse_time_range(text) for text in texts)
                 for day, texts in (exceptions or {}).items()}
        return cls(name=name, zone=timezone(timezone_name), week=week, exceptions=dated)

    def ranges_on(self, day: date) -> tuple[TimeRange, ...]:
        """The ranges that start on local date ``day``."""
        if day in self.exceptions:
            return self.exceptions[day]
        return self.week[day.weekday()]

    def is_active(self, at: float) -> bool:
        """Whether the schedule is active at epoch second ``at``."""
        local = datetime.fromtimestamp(at, self.zone)
        minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        today = local.date()
        for span in self.ranges_on(today):
            end = MINUTES_PER_DAY if span.crosses_midnight else span.end
            if span.start <= minute < end:
                return True
        # Yesterday's ranges that run past midnight into today.
        return any(span.crosses_midnight and minute < span.end
                   for span in self.ranges_on(today - timedelta(days=1)))
