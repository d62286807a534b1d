"""Configuration loading, environment overrides, error messages and `monitor check-config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import EX_CONFIG, ConfigError, load_config
from monitor.model.answer import Hazard

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "monitor.example.toml"


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", "-c", str(path)],
        capture_output=True, text=True, env=full_env, timeout=60, check=False,
    )


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.vlm.model == "Qwen2.5-VL"
    assert [camera.id for camera in config.cameras] == ["gate-1", "scaffold-north"]
    assert config.camera_interval_s(config.cameras[1]) == 5.0
    assert config.camera_hazards(config.cameras[1]) == [Hazard.NO_HELMET]
    assert config.camera_hazards(config.cameras[0]) == list(Hazard)


def test_check_config_prints_effective_config_with_secrets_masked() -> None:
    result = check_config(EXAMPLE, {"MONITOR_MQTT__USERNAME": "monitor",
                                    "MONITOR_MQTT__PASSWORD": "mqtt-secret-42",
                                    "MONITOR_VLM__LANGUAGE": "en"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["vlm"]["language"] == "en"  # the environment wins over the file
    assert data["mqtt"]["password"] == "**********"
    assert data["cameras"][0]["password"] == "**********"
    assert "change-me" not in result.stdout + result.stderr
    assert "mqtt-secret-42" not in result.stdout + result.stderr


def test_password_inside_the_url_is_masked(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[cameras]]\nid = "a"\nurl = "rtsp://admin:hunter2@10.1.1.1/s"\n')
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "rtsp://admin:***@10.1.1.1/s" in result.stdout


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[vlm]\nbase_ur = 'http://x/v1'\n", "vlm.base_ur: unknown key"),
        ("[vlm]\ntimeout_s = -3\n", "vlm.timeout_s: Input should be greater than 0"),
        ("[vlm]\nlanguage = 'fr'\n", "vlm.language: Input should be 'zh' or 'en'"),
        ("[vlm]\nbase_url = 'localhost:8000'\n", "vlm.base_url: expected an http(s) URL"),
        ("[mqtt]\nport = 'abc'\n", "mqtt.port: Input should be a valid integer"),
        ("[mqtt]\ntopic_prefix = 'site/#'\n", "mqtt.topic_prefix: must be a topic without"),
        ("[defaults]\nhazards = ['flood']\n", "defaults.hazards.0: Input should be"),
        ("[[cameras]]\nurl = 'rtsp://h/x'\n", "cameras.0.id: required key is missing"),
        ("[[cameras]]\nid = 'gate 1'\nurl = 'rtsp://h/x'\n", "cameras.0.id: must be 1-64"),
        ("[[cameras]]\nid = 'a'\nurl = 'ftp://h/x'\n", "cameras.0.url: unsupported scheme"),
        ("[[cameras]]\nid = 'a'\nurl = 'rtsp://h/1'\n[[cameras]]\nid = 'a'\nurl = 'rtsp://h/2'\n",
         "camera id 'a' is used twice"),
        ("[vlm\n", "not valid TOML"),
        ("[vlm]\nmin_pixels = 900000\nmax_pixels = 800000\n", "must not exceed max_pixels"),
    ],
)
def test_each_mistake_names_the_field_and_exits_78(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
    result = check_config(path)
    assert result.returncode == EX_CONFIG
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_several_problems_are_all_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[vlm]\ntimeout_s = 0\nmax_concurrency = 0\n[mqtt]\nprot = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 3


def test_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.toml")
    assert result.returncode == EX_CONFIG
    assert "file not found" in result.stderr


def test_secret_is_not_echoed_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[mqtt]\npassword = 12345\n")  # wrong type: a number, not a string
    result = check_config(path)
    assert result.returncode == EX_CONFIG
    assert "mqtt.password" in result.stderr
    assert "12345" not in result.stderr
