"""What `make demo` shows a newcomer on the terminal."""

from __future__ import annotations

import json
import shutil

from monitor.tools.demo import TerminalView


def status(state: str, fps: float | None) -> bytes:
    return json.dumps({"camera": "gate", "state": state, "online": state == "online",
                       "fps": fps, "last_error": None}).encode()


def test_a_camera_going_online_is_printed_once() -> None:
    view = TerminalView("monitor")
    lines = [view.line("monitor/gate/status", payload, retained_topic=True) for payload in (
        status("connecting", None), status("online", None),
        status("online", 10.0),  # the frame rate got measured: republished, same news
        status("online", 10.0),  # heartbeat
        status("offline", None), status("online", 10.0))]
    printed = [line.split("] ", 1)[1] for line in lines if line]
    assert printed == ["camera  gate connecting", "camera  gate online",
                       "camera  gate offline", "camera  gate online"]


def test_every_event_is_printed() -> None:
    view = TerminalView("monitor")
    event = json.dumps({"type": "start", "hazard": "fire", "camera": "gate",
                        "id": "0123456789", "detail": "flames"}).encode()
    assert view.line("monitor/events", event, retained_topic=False) is not None
    assert view.line("monitor/events", event, retained_topic=False) is not None


def test_the_watch_command_the_demo_prints_is_installed() -> None:
    # `make demo` prints "subscribe yourself: mosquitto_sub ..."; scripts/system-deps.sh
    # installs mosquitto-clients for it (and `make test` runs the same script).
    assert shutil.which("mosquitto_sub") is not None
