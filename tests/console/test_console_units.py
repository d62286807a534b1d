"""Pure parts of the console: schema files current, feedback rows `monitor eval` reads, the
tracker's false-alarm dismissal, the login checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.alerts.payloads import schema_text
from monitor.alerts.tracker import EndReason, EventType, HazardTracker, TrackerSettings
from monitor.config import ConfigError, ConsoleConfig, config_from_mapping, is_loopback_host
from monitor.console.auth import ConsoleAuth
from monitor.console.feedback import FeedbackFolder
from monitor.console.holds import Hold, SceneHolds, jpeg_thumbnail
from monitor.console.schemas import schema_models
from monitor.model.answer import Answer, Hazard, HelmetStatus
from monitor.service.reload import plan_reload
from monitor.tools.evaluate import read_manifest
from tests.conftest import ROOT

SCHEMAS = ROOT / "docs" / "schemas" / "console"
T0 = 1_700_000_000.0


@pytest.mark.parametrize("name", sorted(schema_models()))
def test_schema_files_are_current(name: str) -> None:
    path = SCHEMAS / f"{name}.schema.json"
    assert path.read_text(encoding="utf-8") == schema_text(schema_models()[name]), (
        f"{path} is out of date; run `python -m monitor.console.schemas docs/schemas/console`")


def test_feedback_rows_are_what_monitor_eval_reads(tmp_path: Path) -> None:
    folder = FeedbackFolder(tmp_path / "fb")
    first = folder.add(b"\xff\xd8one", camera_id="yard", hazard=Hazard.FIRE, present=False,
                       at=T0)
    folder.add(b"\xff\xd8two", camera_id="gate", hazard=Hazard.SMOKE, present=True, at=T0)
    folder.add(b"\xff\xd8three", camera_id="s", hazard=Hazard.NO_HELMET, present=True, at=T0)
    folder.add(b"\xff\xd8four", camera_id="s", hazard=Hazard.NO_HELMET, present=False, at=T0)
    labels = read_manifest(folder.manifest)
    assert [(lb.fire, lb.smoke, lb.helmet) for lb in labels] == [
        (False, None, None), (None, True, None), (None, None, HelmetStatus.SOME_MISSING),
        (None, None, HelmetStatus.ALL_WORN)]
    assert (folder.directory / labels[0].image).read_bytes() == b"\xff\xd8one"
    assert first.name.startswith("yard-20231114T221320Z-false-alarm-fire-")
    assert folder.manifest.read_text().splitlines()[0] == "image,fire,smoke,helmet"


def fire(*, yes: bool) -> Answer:
    return Answer.model_validate({"fire": {"answer": "yes" if yes else "no"},
                                  "smoke": {"answer": "no"}, "helmet": {"status": "no_person"}})


def test_dismiss_ends_as_false_alarm_and_holds_the_hazard_quiet() -> None:
    tracker = HazardTracker("a", [Hazard.FIRE], TrackerSettings(confirm_frames=2))
    assert tracker.dismiss(Hazard.FIRE, T0, 60) is None  # nothing raised
    tracker.update(fire(yes=True), T0)
    (start,) = tracker.update(fire(yes=True), T0 + 1)
    end = tracker.dismiss(Hazard.FIRE, T0 + 2, 60)
    assert end is not None
    assert (end.type, end.end_reason, end.event_id) == (EventType.END, EndReason.FALSE_ALARM,
                                                        start.event_id)
    assert not tracker.is_active(Hazard.FIRE)
    for at in range(3, 60):  # the fire is still "seen": no new alert during the hold
        assert tracker.update(fire(yes=True), T0 + at) == []
    assert [e.type for e in tracker.update(fire(yes=True), T0 + 63)] == [EventType.START]


def test_login_checks_and_loopback_rule() -> None:
    auth = ConsoleAuth(ConsoleConfig.model_validate(
        {"token": "t0k", "username": "ops", "password": "pw"}))
    assert auth.check_login(token="t0k") == "token"
    assert auth.check_login(username="ops", password="pw") == "ops"
    assert auth.check_login(username="ops", password="nope") is None
    assert auth.check_login(token="t0") is None
    assert not ConsoleAuth(ConsoleConfig()).configured
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("::1")
    assert is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0")  # noqa: S104 - the case refused
    with pytest.raises(ConfigError, match=r"console\.token"):
        config_from_mapping({"telemetry": {"host": "0.0.0.0"}})  # noqa: S104
    assert config_from_mapping({"telemetry": {"host": "0.0.0.0"},  # noqa: S104
                                "console": {"token": "x"}}).console.token is not None
    with pytest.raises(ValueError, match="both username and password"):
        ConsoleConfig.model_validate({"username": "ops"})


def jpeg_of(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data)


def test_a_hold_ends_when_the_scene_changes_not_when_flames_flicker() -> None:
    scene = np.full((360, 640, 3), 120, dtype=np.uint8)
    flicker = scene.copy()
    flicker[280:300, 190:210] = 255  # a flame's size: under 1 % of the frame
    truck = scene.copy()
    truck[100:250, 100:400] = 30  # something big arrived: about 20 % of the frame
    holds = SceneHolds(0.05)
    holds.add(Hold("yard", Hazard.FIRE, T0 + 600, jpeg_thumbnail(jpeg_of(scene))))
    assert holds.cameras() == {"yard"}
    assert holds.ended("gate", jpeg_thumbnail(jpeg_of(truck)), T0 + 1) == []  # another camera
    assert holds.ended("yard", jpeg_thumbnail(jpeg_of(flicker)), T0 + 2) == []
    assert holds.ended("yard", jpeg_thumbnail(jpeg_of(truck)), T0 + 3) == [Hazard.FIRE]
    assert not holds
    holds.add(Hold("yard", Hazard.FIRE, T0 + 10, jpeg_thumbnail(jpeg_of(scene))))
    assert holds.ended("yard", jpeg_thumbnail(jpeg_of(truck)), T0 + 11) == []  # expired
    assert not holds
    with pytest.raises(ValueError, match="JPEG"):
        jpeg_thumbnail(b"not a jpeg")


def test_lifting_the_hold_lets_the_hazard_alert_again() -> None:
    tracker = HazardTracker("a", [Hazard.FIRE], TrackerSettings(confirm_frames=1))
    tracker.update(fire(yes=True), T0)
    assert tracker.dismiss(Hazard.FIRE, T0 + 1, 600) is not None
    assert tracker.update(fire(yes=True), T0 + 2) == []
    tracker.lift_hold(Hazard.FIRE, T0 + 3)
    assert [e.type for e in tracker.update(fire(yes=True), T0 + 4)] == [EventType.START]


def test_a_console_change_needs_a_restart() -> None:
    old = config_from_mapping({})
    new = config_from_mapping({"console": {"token": "x", "false_alarm_hold_s": 5}})
    assert plan_reload(old, new).sections_needing_restart == ("console",)
