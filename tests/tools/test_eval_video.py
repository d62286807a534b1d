"""``monitor eval-video``: scoring alerts against labelled intervals, and real runs of the
pipeline over generated clips with the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.model.answer import Hazard
from monitor.sim.clips import write_clip_set
from monitor.tools.cli import main
from monitor.tools.eventeval import (
    ClipRun,
    EventEvalError,
    Incident,
    RaisedAlert,
    percentile,
    read_labels,
    score,
)

FIRE, HELMET = Hazard.FIRE, Hazard.NO_HELMET


def test_alerts_are_matched_to_incidents_per_clip_and_hazard() -> None:
    runs = [
        ClipRun("a.mp4", 1800.0, [RaisedAlert("a.mp4", FIRE, 12.0, 30.0),   # catches a's fire
                                  RaisedAlert("a.mp4", FIRE, 100.0, 120.0),  # nothing there
                                  RaisedAlert("a.mp4", HELMET, 52.0, None)], tokens=900),
        ClipRun("b.mp4", 1800.0, [RaisedAlert("b.mp4", FIRE, 0.0, 8.0)], tokens=100,
                verification_tokens=40),
    ]
    incidents = [Incident("a.mp4", FIRE, 10.0, 20.0), Incident("a.mp4", HELMET, 50.0, 60.0),
                 Incident("b.mp4", FIRE, 40.0, 50.0),  # b's alert came and went before it
                 Incident("b.mp4", HELMET, 1.0, 2.0)]
    report = score("base", runs, incidents, grace_s=5.0)
    fire, smoke, helmet = report.hazards
    assert (fire.incidents, fire.caught, fire.missed, fire.false_alarms) == (2, 1, 1, 2)
    assert fire.false_alarms_per_camera_hour == 2.0  # one camera-hour in all
    assert fire.times_to_alert_s == (2.0,)
    assert (helmet.caught, helmet.missed, helmet.false_alarms) == (1, 1, 0)
    assert smoke.incidents == 0
    assert smoke.time_to_alert_s(0.5) is None
    assert report.tokens_per_camera_hour == 1000.0
    assert report.verification_tokens_per_camera_hour == 40.0


def test_an_alert_raised_before_an_incident_counts_it_caught_at_once() -> None:
    runs = [ClipRun("a.mp4", 60.0, [RaisedAlert("a.mp4", FIRE, 8.0, None)])]
    report = score("x", runs, [Incident("a.mp4", FIRE, 10.0, 20.0)], grace_s=5.0)
    assert report.hazards[0].times_to_alert_s == (0.0,)
    assert report.hazards[0].false_alarms == 0


def test_percentiles_interpolate() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert percentile([], 0.5) is None


@pytest.mark.parametrize(("text", "problem"), [
    ("clip,start\n", "header"),
    ("clip,hazard,start_s,end_s\nmissing.mp4,fire,1,2\n", "not a video file"),
    ("clip,hazard,start_s,end_s\na.mp4,flood,1,2\n", "'flood' is not fire"),
    ("clip,hazard,start_s,end_s\na.mp4,fire,5,2\n", "start_s < end_s"),
    ("clip,hazard,start_s,end_s\na.mp4,fire,one,2\n", "must be seconds"),
    ("clip,hazard,start_s,end_s\na.mp4,fire,1\n", "4 columns"),
])
def test_bad_labels_are_named_with_their_line(tmp_path: Path, text: str, problem: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(text, encoding="utf-8")
    with pytest.raises(EventEvalError, match=problem):
        read_labels(labels, ["a.mp4"])


def test_two_short_clips_compared_with_and_without_zoom_in(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A real fire and an orange hi-vis vest, 8 s each, through the real pipeline and the
    # simulator: without verification the vest raises a fire alarm, with it only the fire does.
    clips = tmp_path / "clips"
    write_clip_set(clips, duration_s=8.0, names=["fire", "vest"])
    assert (clips / "labels.csv").read_text(encoding="utf-8").splitlines() == [
        "clip,hazard,start_s,end_s", "fire.mp4,fire,1.6,5.6"]
    code = main(["eval-video", str(clips), "-c", str(clips / "whole-frame.toml"),
                 "--compare", str(clips / "zoom-in.toml"), "--sim", "--json"])
    assert code == 0
    whole, zoomed = json.loads(capsys.readouterr().out)
    assert (whole["name"], zoomed["name"]) == ("whole-frame", "zoom-in")
    for report in (whole, zoomed):
        assert report["clips"] == 2
        assert report["hazards"]["fire"]["caught"] == 1
        assert report["hazards"]["fire"]["missed"] == 0
        assert report["failures"] == 0
    assert whole["hazards"]["fire"]["false_alarms"] == 1
    assert zoomed["hazards"]["fire"]["false_alarms"] == 0
    assert whole["verification_tokens_per_camera_hour"] == 0
    assert zoomed["verification_tokens_per_camera_hour"] > 0
    # The table form; with --sim the simulator answers whatever model a configuration names.
    served = clips / "served-name.toml"
    served.write_text((clips / "zoom-in.toml").read_text(encoding="utf-8").replace(
        "[vlm]\n", '[vlm]\nmodel = "qwen-on-site"\n'), encoding="utf-8")
    assert main(["eval-video", str(clips), "-c", str(served), "--sim"]) == 0
    table = capsys.readouterr().out
    assert "(0)" in table.splitlines()[-1]  # verdicts (no failed requests)
    assert "fire: false alarms per camera-hour (count)" in table
    assert "served-name" in table


def test_a_folder_without_clips_is_a_clear_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-video", str(tmp_path), "--sim"]) == 65
    assert "no video files" in capsys.readouterr().err
