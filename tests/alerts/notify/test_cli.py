"""``monitor notify-test`` against the local services, and ``monitor doctor``'s channel check."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from monitor.alerts.notify.messages import probe_notification
from monitor.alerts.outbox import Outbox, Outgoing
from monitor.config import load_config
from monitor.tools.notifytest import check_channels
from tests.alerts.notify import services as svc
from tests.alerts.notify.services import FakeServices
from tests.conftest import ROOT
from tests.support.processes import clean_env


def write_config(path: Path, fake: FakeServices) -> Path:
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[telemetry]
enabled = false

[[notify]]
name = "site-robot"
type = "wecom"
url = "{fake.url('wecom')}"
language = "zh"

[[notify]]
name = "hook"
type = "webhook"
url = "{fake.url('webhook')}"
secret = "{svc.WEBHOOK_SECRET}"
""", encoding="utf-8")
    return path


async def notify_test(config: Path, channel: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "notify-test", channel, "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
        env=clean_env())
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.asyncio
async def test_notify_test_sends_one_message_and_prints_the_answer(
        fake: FakeServices, tmp_path: Path) -> None:
    config = write_config(tmp_path / "monitor.toml", fake)
    code, output = await notify_test(config, "site-robot")
    assert (code, output.strip()) == (0, "notify site-robot (wecom): ok: HTTP 200, errcode 0")
    (message,) = fake.accepted
    assert "测试" in message.data["markdown"]["content"]

    fake.then("wecom", "refuse")
    code, output = await notify_test(config, "site-robot")
    assert code == 1
    assert "refused: HTTP 200, errcode 93000 'invalid webhook url'" in output
    assert "fix: invalid webhook key" in output
    assert svc.WECOM_KEY not in output

    code, output = await notify_test(config, "pager")
    assert code == 2
    assert "no notify channel 'pager' (channels: site-robot, hook)" in output


def test_doctor_fails_a_channel_whose_queue_stopped_moving(tmp_path: Path) -> None:
    fake = FakeServices(port=9)
    config = load_config(write_config(tmp_path / "monitor.toml", fake))
    queue = Outbox(tmp_path / "state" / "notify" / "hook.sqlite3", clock=lambda: 1.0)
    channel = next(c for c in config.notify if c.name == "hook")
    queue.put([Outgoing("cam1", probe_notification(channel, "t").to_json(), 1, retain=False)])
    queue.close()
    checks = {check.name: check for check in check_channels(config)}
    assert checks["site-robot"].ok
    assert "0 waiting" in checks["site-robot"].detail
    assert not checks["hook"].ok
    assert "1 notification(s) waiting" in checks["hook"].detail
    assert "monitor notify-test hook" in checks["hook"].detail
