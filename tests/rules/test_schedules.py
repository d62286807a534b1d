"""Weekly schedules (pure): ranges, midnight, exceptions, DST changes, with explicit times."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from monitor.rules.schedules import TimeRange, WeeklySchedule, parse_time_range, timezone

BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *,
        second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *,
          fold: int = 0) -> float:
    """Berlin wall-clock time; ``fold=1`` is the second of a repeated hour."""
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold).timestamp()


def test_parses_ranges_and_says_what_is_wrong() -> None:
    assert parse_time_range("07:00-17:30") == TimeRange(420, 1050)
    assert parse_time_range(" 7:05 - 8:00 ") == TimeRange(425, 480)
    assert parse_time_range("22:00-06:00").crosses_midnight
    assert parse_time_range("00:00-24:00") == TimeRange(0, 1440)
    assert parse_time_range("22:00-24:00") == TimeRange(1320, 0)
    with pytest.raises(ValueError, match="not HH:MM-HH:MM"):
        parse_time_range("7-17")
    with pytest.raises(ValueError, match="hours are 00-23"):
        parse_time_range("25:00-26:00")
    with pytest.raises(ValueError, match="empty"):
        parse_time_range("10:00-10:00")


def test_bad_timezone_weekday_and_empty_schedule_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        timezone("Mars/Olympus")
    with pytest.raises(ValueError, match="unknown weekday"):
        WeeklySchedule.parse("s", "UTC", {"mondy": ["07:00-08:00"]})
    with pytest.raises(ValueError, match="never be active"):
        WeeklySchedule.parse("s", "UTC", {"monday": []}, {date(2026, 1, 1): []})


def test_range_within_a_day_includes_start_excludes_end() -> None:
    # 2026-12-07 is a Monday.
    shifts = WeeklySchedule.parse("shifts", "UTC", {"monday": ["07:00-12:00", "13:00-17:00"]})
    assert not shifts.is_active(utc(2026, 12, 7, 6, 59, second=59))
    assert shifts.is_active(utc(2026, 12, 7, 7, 0))
    assert shifts.is_active(utc(2026, 12, 7, 11, 59, second=59))
    assert not shifts.is_active(utc(2026, 12, 7, 12, 30))
    assert shifts.is_active(utc(2026, 12, 7, 13, 0))
    assert not shifts.is_active(utc(2026, 12, 7, 17, 0))
    assert not shifts.is_active(utc(2026, 12, 8, 8, 0))  # Tuesday: no ranges


def test_range_past_midnight_runs_into_the_next_day_only() -> None:
    # Friday 2026-12-11 22:00 to Saturday 06:00.
    nights = WeeklySchedule.parse("nights", "UTC", {"friday": ["22:00-06:00"]})
    assert not nights.is_active(utc(2026, 12, 11, 21, 59))
    assert nights.is_active(utc(2026, 12, 11, 22, 0))
    assert nights.is_active(utc(2026, 12, 11, 23, 59, second=59))
    assert nights.is_active(utc(2026, 12, 12, 0, 0))
    assert nights.is_active(utc(2026, 12, 12, 5, 59, second=59))
    assert not nights.is_active(utc(2026, 12, 12, 6, 0))
    assert not nights.is_active(utc(2026, 12, 12, 23, 0))  # Saturday night is not Friday's
    assert not nights.is_active(utc(2026, 12, 11, 3, 0))  # Thursday's night has no range


def test_exceptions_replace_their_date_but_not_the_night_before() -> None:
    every_day = {day: ["22:00-06:00", "08:00-12:00"] for day in (
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
    schedule = WeeklySchedule.parse("site", "UTC", every_day, {
        date(2026, 12, 25): [],                    # a holiday
        date(2026, 12, 24): ["08:00-10:00"],       # a short day
    })
    assert schedule.is_active(utc(2026, 12, 24, 9, 0))
    assert not schedule.is_active(utc(2026, 12, 24, 11, 0))
    assert not schedule.is_active(utc(2026, 12, 24, 23, 0))  # no night shift on the 24th
    assert not schedule.is_active(utc(2026, 12, 25, 1, 0))
    assert not schedule.is_active(utc(2026, 12, 25, 9, 0))
    # The 25th's own night range is gone, the 23rd's night still runs into the 24th.
    assert not schedule.is_active(utc(2026, 12, 26, 1, 0))
    assert schedule.is_active(utc(2026, 12, 24, 1, 0))


def test_timezone_gives_local_wall_clock_hours() -> None:
    schedule = WeeklySchedule.parse("day", "Asia/Shanghai", {"monday": ["08:00-17:00"]})
    # 08:00 in Shanghai (UTC+8) on Monday 2026-12-07 is 00:00 UTC.
    assert not schedule.is_active(utc(2026, 12, 6, 23, 59))
    assert schedule.is_active(utc(2026, 12, 7, 0, 0))
    assert not schedule.is_active(utc(2026, 12, 7, 9, 0))


def test_night_shift_when_clocks_go_forward_is_an_hour_shorter() -> None:
    # Berlin, 2026-03-29 02:00 CET -> 03:00 CEST; the shift starts Saturday the 28th.
    nights = WeeklySchedule.parse("nights", "Europe/Berlin", {"saturday": ["22:00-06:00"]})
    start, end = local(2026, 3, 28, 22, 0), local(2026, 3, 29, 6, 0)
    assert end - start == 7 * 3600
    assert not nights.is_active(start - 1)
    assert nights.is_active(start)
    assert nights.is_active(utc(2026, 3, 29, 1, 0))  # 03:00 CEST, just after the jump
    assert nights.is_active(end - 1)
    assert not nights.is_active(end)


def test_hour_that_does_not_exist_is_never_active() -> None:
    skipped = WeeklySchedule.parse("gap", "Europe/Berlin", {"sunday": ["02:00-03:00"]})
    minutes = [utc(2026, 3, 29, 0, 0) + 60 * m for m in range(120)]  # 01:00 CET .. 04:00 CEST
    assert not any(skipped.is_active(at) for at in minutes)


def test_night_shift_when_clocks_go_back_is_an_hour_longer() -> None:
    # Berlin, 2026-10-25 03:00 CEST -> 02:00 CET: 02:00-03:00 happens twice.
    nights = WeeklySchedule.parse("nights", "Europe/Berlin", {"saturday": ["22:00-06:00"]})
    start, end = local(2026, 10, 24, 22, 0), local(2026, 10, 25, 6, 0)
    assert end - start == 9 * 3600
    assert nights.is_active(start)
    assert nights.is_active(end - 1)
    assert not nights.is_active(end)
    repeated = WeeklySchedule.parse("rep", "Europe/Berlin", {"sunday": ["02:00-03:00"]})
    first, second = local(2026, 10, 25, 2, 30), local(2026, 10, 25, 2, 30, fold=1)
    assert second - first == 3600
    assert repeated.is_active(first)
    assert repeated.is_active(second)
    assert not repeated.is_active(local(2026, 10, 25, 3, 0))
