"""Configuration of the MQTT interface, tracker rules and state directory: bad input gives a
clear error naming the field, never the password."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.alerts.tracker import TrackerSettings, UncertainMode
from monitor.config import ConfigError, config_from_mapping


def problems(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    return "; ".join(caught.value.problems)


def test_bad_mqtt_values_never_show_the_password() -> None:
    text = problems({"mqtt": {"password": "Sup3r-secret", "port": 0}})
    assert "mqtt.port" in text
    assert "Sup3r-secret" not in text


def test_tls_files_must_exist(tmp_path: Path) -> None:
    text = problems({"mqtt": {"ca_file": str(tmp_path / "nope.crt")}})
    assert "ca_file: no such file" in text
    assert "key_file is set but cert_file is not" in problems(
        {"mqtt": {"key_file": str(tmp_path / "k")}})


def test_tls_is_on_with_a_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = config_from_mapping({"mqtt": {"ca_file": str(ca), "protocol": "3.1.1"}})
    assert config.mqtt.uses_tls
    assert not config_from_mapping({}).mqtt.uses_tls


def test_tracker_rules() -> None:
    config = config_from_mapping({"defaults": {
        "confirm_frames": 2, "window_frames": 4, "clear_frames": 3, "clear_after_s": 30,
        "cooldown_s": 60, "uncertain": "positive"}})
    rules = TrackerSettings.from_config(config.defaults)
    assert (rules.confirm_frames, rules.window, rules.clear_after_s, rules.cooldown_s) == (
        2, 4, 30, 60)
    assert rules.uncertain is UncertainMode.POSITIVE
    assert "window_frames (2) must be at least confirm_frames (3)" in problems(
        {"defaults": {"confirm_frames": 3, "window_frames": 2}})
    assert "defaults.uncertain" in problems({"defaults": {"uncertain": "maybe"}})


def test_state_dir_and_snapshots(tmp_path: Path) -> None:
    config = config_from_mapping({"state_dir": str(tmp_path),
                                  "snapshots": {"max_count": 5, "url_prefix": "https://x/"}})
    assert config.state_dir == tmp_path
    assert config.snapshots.max_count == 5
    assert "snapshots.max_count" in problems({"snapshots": {"max_count": 0}})
