"""``scripts/install.sh``: the whole install into a temporary root, re-install, uninstall.

Under ``--root`` the script skips what would touch the host (users, ownership, the running
systemd) and says so; units are enabled offline with ``systemctl --root`` where systemctl
exists. ``--skip-venv`` leaves out the virtualenv (a pip install of this checkout with its
dependencies, which needs the network and minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"
UNITS = ("monitor.service", "vllm-qwen2.5-vl.service")
SYSTEMCTL = shutil.which("systemctl")


def install(root: Path, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run install.sh into ``root`` (unless ``env`` names DESTDIR)."""
    command = [str(INSTALL), *args] if env and "DESTDIR" in env else \
        [str(INSTALL), "--root", str(root), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under ``root``: (kind, permission bits, content or link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            found[f"/{path.relative_to(root)}"] = ("link", 0, str(path.readlink()))
        elif stat.S_ISDIR(mode):
            found[f"/{path.relative_to(root)}"] = ("dir", stat.S_IMODE(mode), "")
        else:
            found[f"/{path.relative_to(root)}"] = ("file", stat.S_IMODE(mode),
                                                   path.read_text(errors="replace"))
    return found


def test_install_into_temp_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install(root, "--skip-venv")
    files = tree(root)
    expected_files = {
        "/opt/monitor/libexec/vllm-serve": (0o755, REPO / "scripts" / "vllm-serve"),
        "/opt/monitor/share/README.md": (0o644, REPO / "README.md"),
        "/opt/monitor/share/monitor.example.toml": (0o644,
                                                    REPO / "config" / "monitor.example.toml"),
        "/opt/monitor/share/vllm.env.example": (0o644, REPO / "config" / "vllm.env.example"),
        "/etc/monitor/monitor.toml": (0o640, REPO / "config" / "monitor.example.toml"),
        "/etc/monitor/vllm.env": (0o640, REPO / "config" / "vllm.env.example"),
        **{f"/etc/systemd/system/{unit}": (0o644, REPO / "systemd" / unit) for unit in UNITS},
    }
    for path, (mode, source) in expected_files.items():
        assert files[path] == ("file", mode, source.read_text()), path
    expected_dirs = {"/etc/monitor/credentials": 0o700, "/etc/monitor/credentials/mqtt": 0o700,
                     "/etc/monitor/credentials/vlm": 0o700,
                     "/etc/monitor/credentials/camera": 0o700, "/var/lib/monitor": 0o750,
                     "/var/lib/vllm": 0o750, "/var/lib/vllm/models": 0o755}
    for path, mode in expected_dirs.items():
        assert files[path] == ("dir", mode, ""), path
    out = result.stdout
    assert "skipped (installing under --root" in out
    assert re.search(r"skipped \(installing under --root .*\): useradd --system .* monitor\n",
                     out)
    assert "skipped (--skip-venv): virtualenv /opt/monitor" in out
    if SYSTEMCTL:
        for unit in UNITS:
            assert files[f"/etc/systemd/system/multi-user.target.wants/{unit}"] == (
                "link", 0, f"/etc/systemd/system/{unit}")
    else:
        assert "skipped (no systemctl here)" in out


def test_every_path_the_units_name_is_installed(tmp_path: Path) -> None:
    """Credential directories must exist, or systemd refuses to start the unit."""
    root = tmp_path / "root"
    install(root, "--skip-venv")
    for unit in UNITS:
        text = (root / "etc/systemd/system" / unit).read_text()
        for source in re.findall(r"^LoadCredential=[^:]+:(\S+)$", text, re.MULTILINE):
            assert (root / source.lstrip("/")).is_dir(), (unit, source)
        for program in re.findall(r"^Exec[A-Za-z]+=[-+!@:]*(/opt/\S+)", text, re.MULTILINE):
            if program != "/opt/monitor/bin/monitor":  # the skipped virtualenv
                assert os.access(root / program.lstrip("/"), os.X_OK), (unit, program)
        for env_file in re.findall(r"--env-file (\S+)", text):
            assert (root / env_file.lstrip("/")).is_file()


def test_installed_serve_script_builds_the_same_command(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--skip-venv")

    def argv(script: Path, env_file: Path) -> list[str]:
        result = subprocess.run([str(script), "--env-file", str(env_file), "--print-argv"],
                                capture_output=True, text=True, timeout=30, check=True,
                                env={"PATH": os.environ["PATH"]})
        return result.stdout.splitlines()

    assert argv(root / "opt/monitor/libexec/vllm-serve", root / "etc/monitor/vllm.env") == \
        argv(REPO / "scripts" / "vllm-serve", REPO / "config" / "vllm.env.example")


def test_reinstall_keeps_configuration_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/monitor").mkdir(parents=True)
    (root / "etc/monitor/monitor.toml").write_text("# the operator's own\n")
    first = install(root, "--skip-venv")
    assert "kept existing /etc/monitor/monitor.toml" in first.stdout
    assert (root / "etc/monitor/monitor.toml").read_text() == "# the operator's own\n"
    (root / "etc/monitor/vllm.env").write_text("SERVE_TENSOR_PARALLEL_SIZE=2\n")
    before = tree(root)
    second = install(root, "--skip-venv")
    assert tree(root) == before
    assert "kept existing /etc/monitor/vllm.env" in second.stdout
    assert "unchanged: /etc/systemd/system/monitor.service" in second.stdout
    assert "installed:" not in second.stdout


def test_uninstall_keeps_configuration_and_state(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--skip-venv")
    (root / "var/lib/monitor/outbox.sqlite3").write_text("queued events")
    (root / "var/lib/vllm/models/Qwen2.5-VL-7B-Instruct").mkdir()
    (root / "etc/monitor/credentials/mqtt/password").write_text("secret")
    result = install(root, "--uninstall")
    files = tree(root)
    assert not any(path.startswith("/opt/monitor") for path in files)
    assert not any(path.startswith("/etc/systemd/system/") and path.endswith(".service")
                   for path in files)
    for kept in ("/etc/monitor/monitor.toml", "/etc/monitor/vllm.env",
                 "/etc/monitor/credentials/mqtt/password", "/var/lib/monitor/outbox.sqlite3",
                 "/var/lib/vllm/models/Qwen2.5-VL-7B-Instruct"):
        assert kept in files
    assert "kept: /etc/monitor (configuration, credentials)" in result.stdout
    assert "secret" not in result.stdout
    # Uninstalling twice is fine, and installing again brings everything back.
    install(root, "--uninstall")
    install(root, "--skip-venv")
    assert (root / "etc/systemd/system/monitor.service").is_file()


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install(root, "--dry-run")
    assert not root.exists()
    out = result.stdout
    assert "dry run: nothing is changed" in out
    assert f"+ python3 -m venv {root}/opt/monitor\n" in out
    assert f"-m pip install --quiet --disable-pip-version-check --upgrade {REPO}\n" in out
    config = f"{root}/etc/monitor/monitor.toml"
    assert f"+ install -m 0640 {REPO}/config/monitor.example.toml {config}\n" in out
    assert "would install: /etc/systemd/system/vllm-qwen2.5-vl.service" in out
    assert "installed:" not in out
    uninstall = install(root, "--dry-run", "--uninstall")
    assert "uninstalling" in uninstall.stdout
    assert not root.exists()


def test_destdir_environment_variable(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    install(root, "--skip-venv", env={"DESTDIR": str(root)})
    assert (root / "etc/systemd/system/monitor.service").is_file()


def test_unknown_option(tmp_path: Path) -> None:
    result = install(tmp_path, "--frobnicate", check=False)
    assert result.returncode == 64
    assert "unknown option --frobnicate" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed "
                    "(optional: apt-get install shellcheck)")
def test_scripts_pass_shellcheck() -> None:
    scripts = [REPO / "scripts" / name for name in ("install.sh", "vllm-serve")]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout
