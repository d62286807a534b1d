"""`monitor doctor` against a good setup and the mistakes new users make."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from monitor.sim.broker import MosquittoBroker, free_port
from tests.conftest import ROOT
from tests.support.processes import SimProcess, clean_env

BROKER_PASSWORD = "broker-pw-77"


def run_doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", "doctor", "-c", str(config)],
                          capture_output=True, text=True, cwd=ROOT, env=clean_env(),
                          timeout=90, check=False)


def write(config: Path, *, broker: MosquittoBroker, sim: SimProcess, model: str,
          camera_url: str, password: str | None = None) -> None:
    auth = f'username = "monitor"\npassword = "{password}"\n' if password else ""
    config.write_text(
        f'[vlm]\nbase_url = "{sim.base_url}"\nmodel = "{model}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n{auth}'
        f"[defaults]\nopen_timeout_s = 3\nread_timeout_s = 3\n"
        f'[[cameras]]\nid = "cam"\nurl = "{camera_url}"\nloop = true\n')


def test_good_setup_passes(tmp_path: Path, mosquitto: MosquittoBroker,
                           sim_process: SimProcess, scene_clips: dict[str, Path]) -> None:
    config = tmp_path / "monitor.toml"
    write(config, broker=mosquitto, sim=sim_process, model="Qwen2.5-VL",
          camera_url=str(scene_clips["quiet"]))
    result = run_doctor(config)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("OK") for line in lines), lines
    assert any(line.startswith("OK   mqtt broker") for line in lines)
    assert any("serves 'Qwen2.5-VL'" in line for line in lines)
    assert any(line.startswith("OK   camera cam") and "640x360" in line for line in lines)


def test_broken_setup_names_each_problem(tmp_path: Path, sim_process: SimProcess) -> None:
    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "monitor", "right-pw"],
                   check=True, capture_output=True)
    password_file.chmod(0o600)
    with MosquittoBroker(password_file=password_file) as broker:
        config = tmp_path / "monitor.toml"
        silent_port = free_port()  # nothing listens: the camera cannot be opened
        write(config, broker=broker, sim=sim_process, model="Qwen2.5-VL-72B",
              camera_url=f"rtsp://admin:{BROKER_PASSWORD}@127.0.0.1:{silent_port}/stream",
              password=BROKER_PASSWORD)
        result = run_doctor(config)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    failures = {line.split(":")[0] for line in lines if line.startswith("FAIL")}
    assert failures == {"FAIL mqtt broker", "FAIL model server", "FAIL camera cam"}, lines
    model_line = next(line for line in lines if line.startswith("FAIL model server"))
    assert "Qwen2.5-VL-72B" in model_line
    assert "serves Qwen2.5-VL," in model_line
    camera_line = next(line for line in lines if line.startswith("FAIL camera cam"))
    assert "admin:***@" in camera_line
    assert BROKER_PASSWORD not in result.stdout + result.stderr


def test_invalid_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text("[mqtt]\nport = 0\n")
    result = run_doctor(config)
    assert result.returncode == 78
    assert "FAIL config" in result.stdout
    assert "mqtt.port" in result.stdout


def test_a_broker_acl_that_refuses_our_topics_fails_the_check(
        tmp_path: Path, sim_process: SimProcess, scene_clips: dict[str, Path]) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite elsewhere/#\n")  # nothing under monitor/
    with MosquittoBroker(extra_config=f"acl_file {acl}\n") as broker:
        config = tmp_path / "monitor.toml"
        write(config, broker=broker, sim=sim_process, model="Qwen2.5-VL",
              camera_url=str(scene_clips["quiet"]))
        result = run_doctor(config)
    assert result.returncode == 1, result.stdout + result.stderr
    broker_line = next(line for line in result.stdout.splitlines()
                       if line.startswith("FAIL mqtt broker"))
    assert "refused a message to monitor/doctor (Not authorized)" in broker_line
    assert "write monitor/#" in broker_line
