"""The systemd units and ``scripts/vllm-serve``, checked with Debian's systemd tools.

``systemd-analyze verify`` loads each unit as systemd would (it also insists that every
``Exec*=`` program exists, so it checks copies whose programs point into ``tmp_path``), and
``systemd-analyze security --offline=yes`` scores its sandbox. ``vllm-serve`` is run for real
with ``--print-argv`` (no vLLM needed), and once with a stand-in Python that records what it
was exec'd with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from monitor.config import VlmConfig

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
VLLM_SERVE = REPO / "scripts" / "vllm-serve"
ENV_EXAMPLE = REPO / "config" / "vllm.env.example"
EXPOSURE_GOAL = 2.5
EX_CONFIG = 78

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze missing: `make test` installs Debian's systemd package "
    "(scripts/system-deps.sh test)")

_EXEC_LINE = re.compile(r"^(Exec[A-Za-z]+=)([-+!@:]*)(/\S+)(.*)$")


def unit_settings(text: str) -> list[tuple[str, str]]:
    """``(key, value)`` for every assignment of a unit file, in order (repeats kept)."""
    pairs = []
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def values(text: str, key: str) -> list[str]:
    """Every value assigned to ``key`` in a unit file."""
    return [value for name, value in unit_settings(text) if name == key]


def copy_with_local_programs(unit: Path, directory: Path) -> Path:
    """A copy of ``unit`` whose Exec*= programs are stand-in scripts in ``directory``."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for original in unit.read_text().splitlines():
        match = _EXEC_LINE.match(original)
        if match and not Path(match.group(3)).exists():
            stand_in = bin_dir / Path(match.group(3)).name
            stand_in.write_text("#!/bin/sh\nexit 0\n")
            stand_in.chmod(0o755)
            lines.append(f"{match.group(1)}{match.group(2)}{stand_in}{match.group(4)}")
        else:
            lines.append(original)
    copy = directory / unit.name
    copy.write_text("\n".join(lines) + "\n")
    return copy


@needs_systemd_analyze
@pytest.mark.parametrize("name", ["monitor.service", "vllm-qwen2.5-vl.service"])
def test_unit_verifies_cleanly(name: str, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    copy = copy_with_local_programs(UNITS / name, tmp_path)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=60, check=False)
    # Any output is a warning about the unit (unknown key, bad value, missing program).
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def exposure(unit: Path) -> float:
    """The "Overall exposure level" that ``systemd-analyze security --offline=yes`` prints."""
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ", result.stdout)
    assert match, (result.returncode, result.stdout[-500:], result.stderr)
    return float(match.group(1))


@needs_systemd_analyze
@pytest.mark.parametrize("name", ["monitor.service", "vllm-qwen2.5-vl.service"])
def test_sandbox_exposure_within_goal(name: str) -> None:
    assert exposure(UNITS / name) <= EXPOSURE_GOAL


def test_monitor_unit_contract() -> None:
    text = (UNITS / "monitor.service").read_text()
    assert values(text, "Type") == ["notify"]
    assert values(text, "ExecStart") == [
        "/opt/monitor/bin/monitor run -c /etc/monitor/monitor.toml"]
    assert values(text, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    # A failing ExecStartPre would dodge RestartPreventExitStatus= and restart forever.
    assert values(text, "ExecStartPre") == []
    assert values(text, "RestartPreventExitStatus") == ["78"]
    # Ordered after the model server, never stopped with it.
    assert "vllm-qwen2.5-vl.service" in values(text, "After")[0]
    for key in ("Requires", "BindsTo", "Requisite", "PartOf"):
        assert values(text, key) == []
    # Directories: a missing single file would stop the unit from starting.
    assert values(text, "LoadCredential") == [
        "mqtt:/etc/monitor/credentials/mqtt", "vlm:/etc/monitor/credentials/vlm",
        "camera:/etc/monitor/credentials/camera"]
    assert values(text, "StateDirectory") == ["monitor"]
    assert values(text, "User") == ["monitor"]


def test_vllm_unit_contract() -> None:
    text = (UNITS / "vllm-qwen2.5-vl.service").read_text()
    assert values(text, "ExecStart") == [
        "/opt/monitor/libexec/vllm-serve --env-file /etc/monitor/vllm.env"]
    assert values(text, "User") == ["vllm"]
    assert values(text, "PrivateDevices") == []
    assert values(text, "DevicePolicy") == ["closed"]
    assert values(text, "DeviceAllow") == ["char-nvidia rw", "char-nvidia-uvm rw",
                                           "char-nvidia-caps r"]
    assert values(text, "LoadCredential") == ["vlm:/etc/monitor/credentials/vlm"]
    assert "HF_HUB_OFFLINE=1" in values(text, "Environment")


def serve(*args: str, env: dict[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/vllm-serve`` with only ``env`` (plus PATH) in its environment."""
    result = subprocess.run([str(VLLM_SERVE), *args], capture_output=True, text=True,
                            timeout=30, check=False,
                            env={"PATH": os.environ["PATH"], **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def option(argv: list[str], name: str) -> str:
    """The value after ``name`` in ``argv`` (exactly once)."""
    assert argv.count(name) == 1, (name, argv)
    return argv[argv.index(name) + 1]


def test_command_from_env_file_has_the_safety_flags() -> None:
    argv = serve("--env-file", str(ENV_EXAMPLE), "--print-argv").stdout.splitlines()
    defaults = VlmConfig()
    assert argv[:3] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert option(argv, "--model") == "/var/lib/vllm/models/Qwen2.5-VL-7B-Instruct"
    assert option(argv, "--served-model-name") == defaults.model == "Qwen2.5-VL"
    assert option(argv, "--host") == "127.0.0.1"
    assert option(argv, "--port") == "8000"
    assert option(argv, "--tensor-parallel-size") == "1"
    assert option(argv, "--dtype") == "float16"
    assert option(argv, "--max-model-len") == "4096"
    assert option(argv, "--gpu-memory-utilization") == "0.90"
    assert int(option(argv, "--max-num-seqs")) == defaults.max_concurrency
    assert json.loads(option(argv, "--limit-mm-per-prompt")) == {"image": 1, "video": 0}
    assert json.loads(option(argv, "--mm-processor-kwargs")) == {
        "min_pixels": defaults.min_pixels, "max_pixels": defaults.max_pixels}
    assert defaults.max_pixels == 1003520
    assert json.loads(option(argv, "--structured-outputs-config")) == {
        "backend": "xgrammar", "disable_any_whitespace": True}
    assert "--disable-uvicorn-access-log" in argv
    assert "--enforce-eager" not in argv
    assert "--kv-cache-memory-bytes" not in argv
    # The file holds every default: without it the command is the same.
    assert serve("--print-argv").stdout.splitlines() == argv


def test_environment_overrides_the_file_and_extra_args_follow() -> None:
    """How a test with a tiny CPU model reuses the production settings."""
    env = {"SERVE_MODEL": "/cache/tiny-qwen2.5-vl", "SERVE_MAX_MODEL_LEN": "2048",
           "SERVE_KV_CACHE_MEMORY_BYTES": "134217728", "SERVE_ENFORCE_EAGER": "1",
           "SERVE_PORT": "18000", "SERVE_EXTRA_ARGS": "--seed 7"}
    argv = serve("--env-file", str(ENV_EXAMPLE), "--print-argv", "--", "--dtype", "bfloat16",
                 env=env).stdout.splitlines()
    assert option(argv, "--model") == "/cache/tiny-qwen2.5-vl"
    assert option(argv, "--max-model-len") == "2048"
    assert option(argv, "--kv-cache-memory-bytes") == "134217728"
    assert option(argv, "--port") == "18000"
    assert "--enforce-eager" in argv
    assert argv[-4:] == ["--seed", "7", "--dtype", "bfloat16"]
    assert json.loads(option(argv, "--limit-mm-per-prompt")) == {"image": 1, "video": 0}


def test_print_command_is_shell_quoted() -> None:
    line = serve("--print-command").stdout.strip()
    assert line.startswith("/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server ")
    assert "--limit-mm-per-prompt '{\"image\": 1, \"video\": 0}'" in line


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SERVE_IMAGES_PER_PROMPT", "0", "SERVE_IMAGES_PER_PROMPT must be at least 1, got 0"),
    ("SERVE_MAX_PIXELS", "lots", "SERVE_MAX_PIXELS must be a whole number, got 'lots'"),
    ("SERVE_GPU_MEMORY_UTILIZATION", "1.5", "must be a fraction in (0, 1], got '1.5'"),
    ("SERVE_DTYPE", "fp8", "SERVE_DTYPE must be auto, half"),
    ("SERVE_SERVED_MODEL_NAME", "two words", "must be one word"),
    ("SERVE_MIN_PIXELS", "2000000", "must not exceed SERVE_MAX_PIXELS"),
])
def test_invalid_settings_exit_78(name: str, value: str, message: str) -> None:
    result = serve("--print-argv", env={name: value}, check=False)
    assert result.returncode == EX_CONFIG
    assert message in result.stderr


def test_env_file_syntax(tmp_path: Path) -> None:
    env_file = tmp_path / "vllm.env"
    env_file.write_text("# comment\n; also a comment\n\n  SERVE_PORT = 1\n")
    result = serve("--env-file", str(env_file), "--print-argv", check=False)
    assert result.returncode == EX_CONFIG
    assert f"{env_file}:4: expected KEY=VALUE" in result.stderr
    env_file.write_text("SERVE_SERVED_MODEL_NAME=\"quoted\"\nexport SERVE_PORT='9'\r\n")
    argv = serve("--env-file", str(env_file), "--print-argv").stdout.splitlines()
    assert option(argv, "--served-model-name") == "quoted"
    assert option(argv, "--port") == "9"


def test_example_env_file_only_sets_known_variables() -> None:
    """A misspelt key in the example would silently fall back to a default."""
    known = set(re.findall(r"\bSERVE_[A-Z_]+\b", VLLM_SERVE.read_text()))
    keys = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
            if line and not line.startswith("#")}
    assert keys <= known
    assert {"SERVE_MODEL", "SERVE_MAX_PIXELS", "SERVE_IMAGES_PER_PROMPT"} <= keys


def test_exec_passes_api_key_in_environment_only(tmp_path: Path) -> None:
    """The exec'd command is the printed one; the key from the credential is not in argv."""
    record = tmp_path / "record.json"
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'key': os.environ.get('VLLM_API_KEY')}}, "
        f"open({str(record)!r}, 'w'))\n")
    fake_python.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "vlm_api_key").write_text("s3cret-key\n")
    env = {"SERVE_PYTHON": str(fake_python), "SERVE_MODEL": str(model),
           "CREDENTIALS_DIRECTORY": str(credentials)}
    printed = serve("--env-file", str(ENV_EXAMPLE), "--print-command", env=env).stdout
    assert "s3cret" not in printed
    assert "# with VLLM_API_KEY set (not shown)" in printed
    expected = serve("--env-file", str(ENV_EXAMPLE), "--print-argv", env=env).stdout
    serve("--env-file", str(ENV_EXAMPLE), env=env)
    seen = json.loads(record.read_text())
    assert [str(fake_python), *seen["argv"]] == expected.splitlines()
    assert seen["key"] == "s3cret-key"
    assert not any("s3cret" in arg for arg in seen["argv"])


def test_missing_model_or_python_is_a_config_error(tmp_path: Path) -> None:
    result = serve(env={"SERVE_PYTHON": "/bin/true", "SERVE_MODEL": str(tmp_path / "none")},
                   check=False)
    assert result.returncode == EX_CONFIG
    assert "monitor download-model --local-dir" in result.stderr
    result = serve(env={"SERVE_PYTHON": str(tmp_path / "no-python")}, check=False)
    assert result.returncode == EX_CONFIG
    assert "pip install vllm" in result.stderr


def test_non_loopback_host_without_key_warns() -> None:
    result = serve("--print-argv", env={"SERVE_HOST": "0.0.0.0"})  # noqa: S104 - the warning
    assert "warning: serving on 0.0.0.0, not loopback, without an API key" in result.stderr
