"""The service's health checks (pure apart from logging): stream, picture, verdicts and the
model pool in, health events out; thresholds from the configuration, validated."""

from __future__ import annotations

import pytest

from monitor.alerts.health import HealthEndReason, HealthProblem
from monitor.alerts.tracker import EventType
from monitor.config import ConfigError, HealthConfig, config_from_mapping
from monitor.ingest.picture import PictureConditions
from monitor.service.health import HealthWatch
from monitor.service.reload import plan_reload

WALL0 = 1_700_000_000.0


def check(watch: HealthWatch, now: float, *, online: bool = True,
          picture: PictureConditions | None = None,
          unjudged_s: float | None = 0.0) -> list[tuple[HealthProblem, EventType]]:
    events = watch.check_camera("gate", online=online, offline_detail="connection refused",
                                picture=picture, unjudged_s=unjudged_s, now=now,
                                wall=WALL0 + now)
    return [(e.problem, e.type) for e in events]


def test_offline_starts_after_its_threshold_and_hides_the_stale_picture() -> None:
    watch = HealthWatch(HealthConfig(offline_after_s=10, frozen_after_s=0))
    frozen = PictureConditions(frozen=True)
    assert check(watch, 0.0, picture=frozen) == [(HealthProblem.FROZEN, EventType.START)]
    # Offline: the last picture's conditions no longer count (the frozen problem ends).
    assert check(watch, 1.0, online=False, picture=frozen) == [
        (HealthProblem.FROZEN, EventType.END)]
    assert check(watch, 10.9, online=False, picture=frozen) == []
    assert check(watch, 11.0, online=False) == [(HealthProblem.OFFLINE, EventType.START)]
    assert check(watch, 12.0) == [(HealthProblem.OFFLINE, EventType.END)]


def test_no_verdict_for_too_long_on_an_online_camera() -> None:
    watch = HealthWatch(HealthConfig(no_verdict_after_s=300))
    assert check(watch, 0.0, unjudged_s=299.0) == []
    assert check(watch, 1.0, unjudged_s=300.0) == [(HealthProblem.NO_VERDICT, EventType.START)]
    assert check(watch, 2.0, unjudged_s=0.5) == [(HealthProblem.NO_VERDICT, EventType.END)]


def test_every_endpoint_out_of_service_is_one_event_of_the_daemon() -> None:
    watch = HealthWatch(HealthConfig(model_unavailable_after_s=5))
    reason = "the only model endpoint is out of service: gpu-1: ..."
    assert watch.check_model(reason, now=0.0, wall=WALL0) == []
    [start] = watch.check_model(reason, now=5.0, wall=WALL0 + 5)
    assert (start.camera_id, start.problem, start.detail) == (
        None, HealthProblem.MODEL_UNAVAILABLE, reason)
    [end] = watch.check_model(None, now=6.0, wall=WALL0 + 6)
    assert (end.type, end.end_reason) == (EventType.END, HealthEndReason.RECOVERED)


def test_shutdown_and_removal_end_what_is_started() -> None:
    watch = HealthWatch(HealthConfig(blank_after_s=0, model_unavailable_after_s=0))
    check(watch, 0.0, picture=PictureConditions(blank=True))
    watch.check_model("down", now=0.0, wall=WALL0)
    assert [e.end_reason for e in watch.end_all(WALL0 + 1)] == [HealthEndReason.SHUTDOWN,
                                                                HealthEndReason.SHUTDOWN]
    check(watch, 2.0, picture=PictureConditions(blank=True))
    [removed] = watch.forget_camera("gate", WALL0 + 3)
    assert (removed.problem, removed.end_reason) == (HealthProblem.BLANK,
                                                     HealthEndReason.REMOVED)


def test_disabled_health_raises_nothing() -> None:
    watch = HealthWatch(HealthConfig(enabled=False, offline_after_s=0))
    assert check(watch, 0.0, online=False) == []
    assert watch.check_model("down", now=0.0, wall=WALL0) == []


def test_bad_thresholds_are_refused_one_line_each_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"health": {"frozen_after_s": -1, "view_min_similarity": 3,
                                        "blank_after_s": "soon"}}, source="test")
    text = "\n".join(caught.value.problems)
    assert "health.frozen_after_s" in text
    assert "health.view_min_similarity" in text
    assert "health.blank_after_s" in text
    assert len(caught.value.problems) == 3


def test_a_reload_that_changes_health_says_it_needs_a_restart() -> None:
    old = config_from_mapping({}, source="test")
    new = config_from_mapping({"health": {"frozen_after_s": 10}}, source="test")
    assert plan_reload(old, new).sections_needing_restart == ("health",)


def test_a_camera_not_sampled_off_schedule_ends_its_picture_problems() -> None:
    watch = HealthWatch(HealthConfig(frozen_after_s=0))
    frozen = PictureConditions(frozen=True)
    assert check(watch, 0.0, picture=frozen) == [(HealthProblem.FROZEN, EventType.START)]
    events = watch.check_camera("gate", online=True, offline_detail="", picture=frozen,
                                unjudged_s=0.0, now=1.0, wall=WALL0 + 1, sampling=False)
    assert [(e.problem, e.type) for e in events] == [(HealthProblem.FROZEN, EventType.END)]
