"""Log redaction, JSON lines, and journald detection."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from monitor.config import apply_credentials, load_config
from monitor.service.logs import JsonFormatter, RedactingFilter, setup_logging, under_journald


def format_with(filter_: RedactingFilter, message: str, *args: object,
                exc: BaseException | None = None) -> str:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, message, args,
                               (type(exc), exc, None) if exc else None)
    assert filter_.filter(record)
    return logging.Formatter("%(message)s").format(record)


@pytest.mark.parametrize(
    "text",
    [
        "open failed: rtsp://admin:hunter2@10.0.0.5:554/ch1",
        "rtsps://admin:hunter2@cam.local/x and http://u:hunter2@h/",
        "server said: password hunter2 is wrong",
    ],
)
def test_redacts_url_passwords_and_known_secrets(text: str) -> None:
    redactor = RedactingFilter(["hunter2"])
    out = format_with(redactor, "%s", text)
    assert "hunter2" not in out
    assert "***" in out


def test_redacts_exception_text_too() -> None:
    redactor = RedactingFilter(["s3cr3t-value"])
    try:
        raise ValueError("cannot open rtsp://u:s3cr3t-value@h/x")  # noqa: TRY301
    except ValueError as exc:
        out = format_with(redactor, "failed", exc=exc)
    assert "s3cr3t-value" not in out
    assert "ValueError" in out


def test_json_formatter_emits_one_object_per_line() -> None:
    record = logging.LogRecord("monitor.ingest.reader", logging.INFO, __file__, 1,
                               "camera %s: online", ("gate-1",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "camera gate-1: online"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "monitor.ingest.reader"
    assert entry["time"].endswith("+00:00")


def test_journald_detection_compares_device_and_inode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "stderr"
    with target.open("w") as handle:
        monkeypatch.setattr(sys, "stderr", handle)
        stat = os.fstat(handle.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert under_journald()
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino + 1}")
        assert not under_journald()
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not under_journald()
    monkeypatch.setattr(sys, "stderr", io.StringIO())


def test_systemd_credentials_fill_secrets(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text("from-credential\n")
    (credentials / "camera_gate-1_password").write_text("cam-cred")
    config_path = tmp_path / "m.toml"
    config_path.write_text('[mqtt]\nusername = "m"\npassword = "from-file"\n'
                           '[[cameras]]\nid = "gate-1"\nurl = "rtsp://h/x"\nusername = "v"\n')
    for name in list(os.environ):
        if name.startswith("MONITOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = load_config(config_path)
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "from-credential"
    assert config.cameras[0].password is not None
    assert config.cameras[0].password.get_secret_value() == "cam-cred"
    assert "from-credential" in config.secret_values()
    monkeypatch.setenv("MONITOR_MQTT__PASSWORD", "from-env")  # the environment still wins
    assert load_config(config_path).mqtt.password.get_secret_value() == "from-env"  # type: ignore[union-attr]


def test_no_credentials_directory_changes_nothing() -> None:
    data: dict[str, object] = {"mqtt": {"password": "x"}}
    apply_credentials(data, None)
    assert data == {"mqtt": {"password": "x"}}


@pytest.mark.asyncio
async def test_model_requests_are_not_logged_at_info() -> None:
    """The OpenAI SDK's HTTP client logs every request at INFO ("HTTP Request: POST ...")
    under its own logger name, which differs between releases (httpx, httpx2): none of
    those lines reaches the daemon's log at INFO."""
    from monitor.config import VlmConfig  # noqa: PLC0415
    from monitor.model.client import VlmClient  # noqa: PLC0415
    from monitor.model.imaging import encode_for_model  # noqa: PLC0415
    from monitor.sim.scenes import PRESETS, render_frame  # noqa: PLC0415
    from monitor.sim.server import SimServer  # noqa: PLC0415

    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict})
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    sim = SimServer()
    await sim.start()
    try:
        setup_logging("INFO", "text")
        root.addHandler(Keep())
        client = VlmClient(VlmConfig.model_validate({"base_url": sim.base_url,
                                                     "max_retries": 0}))
        image = encode_for_model(render_frame(PRESETS["quiet"](width=320, height=180), 1.0),
                                 max_pixels=320 * 180)
        try:
            await client.analyse_image(image)
        finally:
            await client.aclose()
    finally:
        await sim.stop()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    assert sim.stats["ok"] == 1  # the request really went out and was answered
    requests = [r for r in records if r.getMessage().startswith("HTTP Request")]
    assert requests == [], [f"{r.name}: {r.getMessage()}" for r in requests]
