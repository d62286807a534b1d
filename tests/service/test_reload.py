"""The reload plan: two configurations in, the steps out (no daemon, no broker)."""

from __future__ import annotations

from typing import Any

from monitor.config import MonitorConfig, config_from_mapping
from monitor.service.reload import ReloadPlan, plan_reload


def config(cameras: list[dict[str, Any]], **sections: Any) -> MonitorConfig:
    return config_from_mapping({"cameras": cameras, **sections}, source="test")


def camera(camera_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": camera_id, "url": f"rtsp://cam/{camera_id}", **fields}


def ids(plan: ReloadPlan) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...],
                                   tuple[str, ...]]:
    return (tuple(c.id for c in plan.add), plan.remove, tuple(c.id for c in plan.restart),
            plan.keep)


def test_the_same_configuration_keeps_everything() -> None:
    old = config([camera("a"), camera("b")])
    plan = plan_reload(old, config([camera("a"), camera("b")]))
    assert ids(plan) == ((), (), (), ("a", "b"))
    assert plan.sections_needing_restart == ()
    assert not plan.changes_cameras


def test_added_removed_changed_and_untouched_cameras() -> None:
    old = config([camera("a"), camera("b"), camera("c", interval_s=5)])
    new = config([camera("d"), camera("c", interval_s=3), camera("a"), camera("e")])
    plan = plan_reload(old, new)
    # Running ones in the old order, added ones in the new order.
    assert ids(plan) == (("d", "e"), ("b",), ("c",), ("a",))
    assert plan.restart[0].interval_s == 3  # restarted with its new section
    assert plan.changes_cameras


def test_disabling_removes_and_enabling_adds() -> None:
    old = config([camera("a"), camera("b", enabled=False)])
    new = config([camera("a", enabled=False), camera("b")])
    assert ids(plan_reload(old, new)) == (("b",), ("a",), (), ())


def test_changed_defaults_restart_every_running_camera() -> None:
    old = config([camera("a"), camera("b")], defaults={"interval_s": 2})
    new = config([camera("a"), camera("b"), camera("c")], defaults={"interval_s": 4})
    assert ids(plan_reload(old, new)) == (("c",), (), ("a", "b"), ())


def test_sections_read_only_at_start_are_reported_not_applied() -> None:
    old = config([camera("a")])
    new = config([camera("a")], vlm={"model": "other"}, mqtt={"port": 1884},
                 telemetry={"port": 9999}, logging={"level": "DEBUG"})
    plan = plan_reload(old, new)
    assert plan.sections_needing_restart == ("vlm", "mqtt", "telemetry", "logging")
    assert ids(plan) == ((), (), (), ("a",))


def test_changed_verification_restarts_every_running_camera() -> None:
    old = config([camera("a"), camera("b")])
    new = config([camera("a"), camera("b")], verification={"hazards": ["fire", "no_helmet"]})
    assert ids(plan_reload(old, new)) == ((), (), ("a", "b"), ())


def test_evidence_store_and_state_dir_changes_are_reported_not_applied() -> None:
    old = config([camera("a")])
    new = config([camera("a")], snapshots={"max_count": 10}, state_dir="/var/lib/elsewhere")
    assert plan_reload(old, new).sections_needing_restart == ("snapshots", "state_dir")


def test_a_schedule_followed_by_quiet_hours_is_reported_the_cameras_restart() -> None:
    channel = {"name": "pager", "type": "ntfy", "url": "https://ntfy.example/t",
               "schedule": "day"}
    old = config([camera("a")], schedules={"day": {"monday": ["06:00-20:00"]},
                                           "night": {"monday": ["20:00-23:00"]}},
                 notify=[channel])
    changed_day = config([camera("a")], schedules={"day": {"monday": ["07:00-20:00"]},
                                                   "night": {"monday": ["20:00-23:00"]}},
                         notify=[channel])
    plan = plan_reload(old, changed_day)
    assert plan.sections_needing_restart == ("schedules",)
    assert ids(plan) == ((), (), ("a",), ())
    # A schedule no channel follows: the cameras take it, nothing waits for a restart.
    changed_night = config([camera("a")], schedules={"day": {"monday": ["06:00-20:00"]},
                                                     "night": {"monday": ["21:00-23:00"]}},
                           notify=[channel])
    assert plan_reload(old, changed_night).sections_needing_restart == ()
