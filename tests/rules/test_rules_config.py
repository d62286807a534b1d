"""Site rules in the configuration: one line per problem at load, and the rules a camera
gets from ``[defaults.rules]`` and its own ``[cameras.rules]``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.siterules import SiteRules
from monitor.config import EX_CONFIG, ConfigError, config_from_mapping, load_config
from monitor.model.answer import Hazard
from monitor.rules.zones import Anchor
from monitor.service.reload import plan_reload
from tests.test_config import check_config

SQUARE = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4]]


def camera(**fields: Any) -> dict[str, Any]:
    return {"id": "yard", "url": "rtsp://cam/yard", **fields}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, source="site.toml")
    return caught.value.problems


def test_each_problem_is_one_line_naming_its_field() -> None:
    lines = problems({
        "schedules": {"shifts": {"timezone": "Mars/Olympus", "monday": ["25:00-10:00"]},
                      "never": {"timezone": "UTC"}},
        "cameras": [camera(zones={"flat": [[0, 0], [0.5, 0.5], [1, 1]],
                                  "outside": [[0, 0], [1.5, 0], [1, 1]], "ok": SQUARE})],
    })
    assert lines == [
        ("site.toml: cameras.0.zones.flat: the zone has (almost) no area (0.000000 of the "
        "frame): its points are on one line or repeated"),
        ("site.toml: cameras.0.zones.outside: point (1.5, 0.0) is outside the frame; zone points "
        "are fractions of the frame, 0..1"),
        ("site.toml: schedules.shifts.timezone: unknown timezone 'Mars/Olympus'; use an IANA "
        'name such as "Europe/Berlin", "Asia/Shanghai" or "UTC"'),
        ("site.toml: schedules.shifts.monday: time range '25:00-10:00': hours are 00-23 (24:00 "
        "only as an end), minutes 00-59"),
        ("site.toml: schedules.never: the schedule has no time range on any day: it would never "
        'be active (remove it, or add ranges such as monday = ["07:00-17:00"])'),
    ]


def test_names_that_do_not_exist_are_reported_together() -> None:
    lines = problems({
        "schedules": {"shifts": {"monday": ["07:00-17:00"]}},
        "defaults": {"rules": {"no_helmet": {"schedule": "shift", "include_zones": ["a"]}}},
        "cameras": [camera(schedule="nights", zones={"weld": SQUARE},
                           rules={"fire": {"exclude_zones": ["welding"]}})],
    })
    assert lines == [
        ("site.toml: defaults.rules.no_helmet.schedule: unknown schedule 'shift' (defined: "
        "shifts)"),
        ("site.toml: defaults.rules.no_helmet.include_zones: zones are per camera; set it in "
        "[cameras.rules.no_helmet]"),
        "site.toml: cameras.0.schedule: unknown schedule 'nights' (defined: shifts)",
        ("site.toml: cameras.0.rules.fire.exclude_zones: unknown zone 'welding' on camera "
        "'yard' (its zones: weld)"),
    ]
    assert "unknown key" in problems({"cameras": [camera(rules={"fire": {"zones": []}})]})[0]
    assert "cameras.0.rules.flood" in problems({"cameras": [camera(rules={"flood": {}})]})[0]


def test_a_toml_file_with_rules_loads(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text("""
[schedules.shifts]
timezone = "Europe/Berlin"
monday = ["07:00-17:00"]
friday = ["22:00-06:00"]
[[schedules.shifts.exceptions]]
date = 2026-12-25
note = "Christmas"

[defaults.rules.no_helmet]
schedule = "shifts"
min_duration_s = 5

[[cameras]]
id = "yard"
url = "rtsp://cam/yard"
[cameras.zones]
weld = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
[cameras.rules.fire]
exclude_zones = ["weld"]
escalate_after_s = 300
""", encoding="utf-8")
    config = load_config(path)
    assert config.schedules["shifts"].exceptions[0].date.isoformat() == "2026-12-25"
    rules = SiteRules.from_config(config, config.cameras[0])
    fire, helmet = rules.of(Hazard.FIRE), rules.of(Hazard.NO_HELMET)
    assert [z.name for z in fire.zones.exclude] == ["weld"]
    assert fire.zones.anchor is Anchor.OVERLAP
    assert fire.escalate_after_s == 300
    assert fire.schedules == ()
    assert helmet.zones.anchor is Anchor.FEET
    assert helmet.min_duration_s == 5
    assert [s.name for s in helmet.schedules] == ["shifts"]
    # Monday 2026-12-07 12:00 Berlin is in the shift, Christmas Day is not.
    assert rules.in_schedule(Hazard.NO_HELMET, datetime(2026, 12, 7, 11, tzinfo=UTC).timestamp())
    assert not rules.in_schedule(Hazard.NO_HELMET,
                                 datetime(2026, 12, 25, 11, tzinfo=UTC).timestamp())
    assert rules.in_schedule(Hazard.FIRE, datetime(2026, 12, 25, 11, tzinfo=UTC).timestamp())


def test_camera_settings_win_and_schedules_add_up() -> None:
    config = config_from_mapping({
        "schedules": {"day": {"monday": ["06:00-20:00"]}, "morning": {"monday": ["06:00-12:00"]}},
        "defaults": {"rules": {"no_helmet": {"min_duration_s": 5, "escalate_after_s": 60}}},
        "cameras": [camera(schedule="day", rules={"no_helmet": {"min_duration_s": 10,
                                                                "schedule": "morning"}})],
    })
    rules = SiteRules.from_config(config, config.cameras[0]).of(Hazard.NO_HELMET)
    assert rules.min_duration_s == 10
    assert rules.escalate_after_s == 60
    # Watched only while both the camera's and the hazard's schedules are active.
    assert [s.name for s in rules.schedules] == ["day", "morning"]
    monday = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    assert rules.in_schedule(monday + 7 * 3600)
    assert not rules.in_schedule(monday + 13 * 3600)
    assert not rules.in_schedule(monday + 5 * 3600)


def test_a_reload_that_changes_a_schedule_restarts_the_cameras() -> None:
    def with_hours(hours: str) -> Any:
        return config_from_mapping({
            "schedules": {"day": {"monday": [hours]}},
            "cameras": [camera(schedule="day"), {"id": "gate", "url": "rtsp://cam/gate"}],
        })

    plan = plan_reload(with_hours("06:00-20:00"), with_hours("07:00-19:00"))
    assert [c.id for c in plan.restart] == ["yard", "gate"]
    assert plan_reload(with_hours("06:00-20:00"), with_hours("06:00-20:00")).restart == ()


def test_check_config_shows_each_cameras_rules_or_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text("""
[schedules.always]
monday = ["00:00-24:00"]
tuesday = ["00:00-24:00"]
wednesday = ["00:00-24:00"]
thursday = ["00:00-24:00"]
friday = ["00:00-24:00"]
saturday = ["00:00-24:00"]
sunday = ["00:00-24:00"]

[[cameras]]
id = "yard"
url = "rtsp://cam/yard"
hazards = ["fire", "no_helmet"]
[cameras.zones]
weld = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
[cameras.rules.fire]
exclude_zones = ["weld"]
[cameras.rules.no_helmet]
schedule = "always"
min_duration_s = 5
""", encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cameras"][0]["zones"]["weld"][0] == [0.1, 0.1]
    assert "# camera yard: fire: not in zones weld\n" in result.stderr
    assert "# camera yard: no_helmet: schedule always (active now); min_duration_s 5\n" \
        in result.stderr
    path.write_text(path.read_text().replace('["weld"]', '["welding"]'), encoding="utf-8")
    result = check_config(path)
    assert result.returncode == EX_CONFIG
    assert result.stderr == (f"config error: {path}: cameras.0.rules.fire.exclude_zones: "
                             "unknown zone 'welding' on camera 'yard' (its zones: weld)\n")
