"""The console over HTTP against a running daemon: the API, access control, escaping,
no secret in any answer."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.publish as paho_publish
import pytest

from monitor.alerts.health import HealthEndReason, HealthEvent, HealthProblem
from monitor.alerts.tracker import EventType
from tests.console.conftest import (
    PASSWORD,
    TOKEN,
    VLM_KEY,
    ConsoleDaemon,
)

ROOT = Path(__file__).resolve().parents[2]


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request (errors are answers too)."""
    request = urllib.request.Request(url, method=method, headers=headers or {},  # noqa: S310
                                     data=body)  # (the tests' own http:// URLs)
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def bearer(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **(extra or {})}


def api(daemon: ConsoleDaemon, path: str) -> Any:
    status, _, body = fetch(daemon.url + path, headers=bearer())
    assert status == 200, body
    return json.loads(body)


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "docs" / "schemas" / "console" / name).read_text())
    return loaded


def test_api_serves_cameras_verdicts_and_frames(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon

    def every_camera_sampled() -> list[dict[str, Any]] | None:
        cameras: list[dict[str, Any]] = api(daemon, "/api/cameras")["cameras"]
        return cameras if all(c["latest"] for c in cameras) else None

    cameras = daemon.wait_for(every_camera_sampled, 60, "a sample of every camera")
    jsonschema.validate({"cameras": cameras}, schema("cameras.schema.json"))
    assert [c["id"] for c in cameras] == ["yard", "gate", "scaffold"]
    # Each tile's stream state comes from the status the daemon publishes on MQTT (a looped
    # file reconnects at its end, so a camera may be "connecting" for a moment: wait).

    def every_stream_online() -> list[dict[str, Any]] | None:
        shown: list[dict[str, Any]] = api(daemon, "/api/cameras")["cameras"]
        return shown if all(c["stream"] and c["stream"]["state"] == "online"
                            for c in shown) else None

    daemon.wait_for(every_stream_online, 30, "every camera's stream online")
    assert all(c["latest"]["frame_age_s"] >= 0 and c["latest"]["latency_s"] > 0
               for c in cameras)
    page = fetch(daemon.url + "/", headers=bearer())[2].decode()
    assert 'class="stream online"' in page
    assert "frame age" in page
    latest = cameras[0]["latest"]
    status, headers, jpeg = fetch(daemon.url + latest["image"], headers=bearer())
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert jpeg[:2] == b"\xff\xd8"
    verdicts = api(daemon, "/api/cameras/yard/verdicts")
    jsonschema.validate(verdicts, schema("verdicts.schema.json"))
    assert verdicts["verdicts"][0]["camera"] == "yard"
    assert fetch(daemon.url + "/api/cameras/nope/verdicts", headers=bearer())[0] == 404
    assert fetch(daemon.url + "/api/frames/999999.jpg", headers=bearer())[0] == 404


def test_events_filter_by_camera_hazard_and_time(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    daemon.wait_for(lambda: api(daemon, "/api/events?camera=yard&hazard=fire")["events"], 40,
                    "a fire alert on yard")
    events = api(daemon, "/api/events")
    jsonschema.validate(events, schema("events.schema.json"))
    assert {e["camera"] for e in api(daemon, "/api/events?camera=yard")["events"]} == {"yard"}
    assert api(daemon, "/api/events?camera=yard&hazard=smoke")["events"] == []
    assert api(daemon, "/api/events?since=2999-01-01T00:00:00Z")["events"] == []
    status, _, body = fetch(daemon.url + "/api/events?since=yesterday", headers=bearer())
    assert status == 400
    assert b"since" in body


def test_reading_needs_credentials_when_configured(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    assert fetch(daemon.url + "/api/cameras")[0] == 401
    assert fetch(daemon.url + "/api/cameras", headers={"Authorization": "Bearer wrong"})[0] \
        == 401
    status, headers, _ = fetch(daemon.url + "/")
    assert status == 303
    assert headers["Location"] == "/login"
    assert fetch(daemon.url + "/healthz")[0] == 200  # health checks stay open


def test_action_without_token_is_refused_and_changes_nothing(
        console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    before = sorted(p.name for p in daemon.feedback.glob("*")) \
        if daemon.feedback.exists() else []
    events_before = len(daemon.mqtt.events())
    body = json.dumps({"hazard": "fire"}).encode()
    for headers in ({}, {"Authorization": "Bearer nope"}):
        status, _, _ = fetch(daemon.url + "/api/cameras/gate/missed", method="POST",
                             headers={"Content-Type": "application/json", **headers},
                             body=body)
        assert status in (401, 403)
    alerts = api(daemon, "/api/events")["events"]
    for alert in alerts:
        status, _, _ = fetch(daemon.url + f"/api/events/{alert['id']}/ack", method="POST")
        assert status in (401, 403)
    after = sorted(p.name for p in daemon.feedback.glob("*")) \
        if daemon.feedback.exists() else []
    assert after == before
    assert not any(e["type"] == "ack" for e in daemon.mqtt.events()[events_before:])
    assert all(a["acknowledged_by"] is None for a in api(daemon, "/api/events")["events"])


def test_cross_site_post_is_refused_even_with_a_session(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    status, headers, _ = fetch(daemon.url + "/login", method="POST",
                               headers={"Content-Type": "application/x-www-form-urlencoded"},
                               body=f"username=operator&password={PASSWORD}".encode())
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    post = {"Cookie": cookie, "Content-Type": "application/json"}
    body = json.dumps({"hazard": "smoke"}).encode()
    # A forged form from another site: its Origin names that site.
    assert fetch(daemon.url + "/api/cameras/gate/missed", method="POST",
                 headers={**post, "Origin": "https://evil.example"}, body=body)[0] == 403
    # Same origin but without the session's CSRF token (what a forged request cannot read).
    assert fetch(daemon.url + "/api/cameras/gate/missed", method="POST", headers=post,
                 body=body)[0] == 403
    assert not daemon.feedback.exists() or not list(daemon.feedback.glob("*smoke*"))
    # The page carries the CSRF token; with it the same session may act.
    status, _, page = fetch(daemon.url + "/cameras/gate", headers={"Cookie": cookie})
    assert status == 200
    found = re.search(rb'name="csrf-token" content="([^"]+)"', page)
    assert found is not None
    assert fetch(daemon.url + "/api/cameras/gate/missed", method="POST",
                 headers={**post, "X-CSRF-Token": found.group(1).decode(),
                          "Origin": daemon.url}, body=body)[0] == 200
    assert list(daemon.feedback.glob("gate-*-missed-smoke-*.jpg"))


def test_camera_context_is_shown_as_text(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    status, headers, page = fetch(daemon.url + "/cameras/gate", headers=bearer())
    assert status == 200
    assert b"<script>window.pwned" not in page
    assert b"&lt;script&gt;window.pwned=1&lt;/script&gt; gate &amp; &lt;b&gt;yard&lt;/b&gt;" \
        in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]


def test_no_configured_secret_in_any_page_or_answer(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    daemon.wait_for(lambda: api(daemon, "/api/events")["events"], 40, "an alert")
    paths = ["/", "/cameras/yard", "/cameras/gate", "/cameras/scaffold", "/events",
             "/events?camera=yard&hazard=fire", "/login", "/api/cameras", "/api/events",
             "/api/cameras/gate/verdicts", "/api/cameras/nope/verdicts", "/api/events/nope",
             "/events?since=bad", "/static/console.js", "/static/console.css", "/readyz",
             "/metrics"]
    paths += [f"/api/events/{e['id']}" for e in api(daemon, "/api/events")["events"][:3]]
    secrets = [TOKEN, PASSWORD, VLM_KEY]
    for path in paths:
        for headers in ({}, bearer()):
            status, answer_headers, body = fetch(daemon.url + path, headers=headers)
            text = body.decode(errors="replace") + json.dumps(answer_headers)
            for secret in secrets:
                assert secret not in text, f"{path} ({status}) shows a configured secret"
    status, _, body = fetch(daemon.url + "/login", method="POST",
                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                            body=f"token={TOKEN}x".encode())
    assert status == 401
    assert TOKEN.encode() not in body


@pytest.mark.parametrize("path", ["/api/events/x/ack", "/api/events/x/false_alarm"])
def test_actions_on_unknown_alerts_say_so(console_daemon: ConsoleDaemon, path: str) -> None:
    status, _, body = fetch(console_daemon.url + path, method="POST", headers=bearer())
    assert status == 404
    assert b"no alert" in body


def publish(daemon: ConsoleDaemon, topic: str, payload: dict[str, Any] | bytes) -> None:
    """One QoS 1 message to the daemon's broker."""
    mqtt = daemon.config.mqtt
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    paho_publish.single(topic, body, qos=1, hostname=mqtt.host, port=mqtt.port)


def test_actions_as_mqtt_commands(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    commands = daemon.supervisor.console_commands
    assert commands is not None
    daemon.wait_for(commands.subscribed.is_set, 10, "the command subscription")
    publish(daemon, "monitor/console/missed", b"{not json")
    publish(daemon, "monitor/console/missed", {"camera": "nope", "hazard": "fire"})
    publish(daemon, "monitor/console/missed",
            {"camera": "scaffold", "hazard": "no_helmet", "by": "panel-1"})
    daemon.wait_for(lambda: list(daemon.feedback.glob("scaffold-*-missed-no_helmet-*.jpg")),
                    10, "the missed hard hat saved")
    assert not list(daemon.feedback.glob("nope-*"))
    alert = daemon.wait_for(lambda: api(daemon, "/api/events?active=true")["events"], 40,
                            "a raised alert")[0]
    publish(daemon, "monitor/console/ack", {"id": alert["id"], "by": "panel-1"})
    acks = daemon.wait_for(lambda: [e for e in daemon.mqtt.events() if e["type"] == "ack"
                                    and e["id"] == alert["id"]], 10, "the ack on MQTT")
    assert acks[0]["by"] == "panel-1"
    jsonschema.validate(acks[0], json.loads(
        (ROOT / "docs" / "schemas" / "event.schema.json").read_text()))


def test_health_events_reach_the_gate_tile_through_the_daemons_sink(
        console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon
    now = time.time()
    turned = HealthEvent("console-test-h1", EventType.START, "gate", HealthProblem.VIEW_CHANGED,
                         started_at=now - 20, at=now, detail="the scene no longer matches")
    daemon.loop.call_soon_threadsafe(daemon.supervisor.sink.health, turned)

    def gate_health() -> list[str]:
        cameras = {c["id"]: c for c in api(daemon, "/api/cameras")["cameras"]}
        return [h["problem"] for h in cameras["gate"]["health"]]

    daemon.wait_for(lambda: gate_health() == ["view_changed"], 10, "the problem on the gate")
    jsonschema.validate(api(daemon, "/api/cameras"), schema("cameras.schema.json"))
    status, _, page = fetch(daemon.url + "/", headers=bearer())
    assert status == 200
    gate_tile = page.decode().split('data-camera="gate"', 1)[1].split("</article>", 1)[0]
    assert 'class="problem view_changed"' in gate_tile

    def on_mqtt() -> bool:
        with daemon.mqtt.lock:
            return any(t == "monitor/health" and b"console-test-h1" in p
                       for t, p in daemon.mqtt.messages)

    daemon.wait_for(on_mqtt, 10, "the same health event on MQTT")
    ended = dataclasses.replace(turned, type=EventType.END, at=now + 1, ended_at=now + 1,
                                end_reason=HealthEndReason.RECOVERED)
    daemon.loop.call_soon_threadsafe(daemon.supervisor.sink.health, ended)
    daemon.wait_for(lambda: gate_health() == [], 10, "the problem gone from the gate")


def test_an_alerts_clip_is_linked_and_served_once_written(console_daemon: ConsoleDaemon) -> None:
    daemon = console_daemon

    def yard_alert_with_a_clip() -> dict[str, Any] | None:
        events = api(daemon, "/api/events?camera=yard")["events"]
        return next((e for e in events if e["clip"] and e["clip"]["ready"]), None)

    alert = daemon.wait_for(yard_alert_with_a_clip, 60, "a yard alert whose clip is written")
    link = f"/api/evidence/{alert['id']}/clip.mp4"
    status, _, page = fetch(daemon.url + "/events?camera=yard", headers=bearer())
    assert status == 200
    assert f'href="{link}"' in page.decode()
    status, headers, mp4 = fetch(daemon.url + link, headers=bearer())
    assert status == 200
    assert headers["Content-Type"] == "video/mp4"
    assert mp4[4:8] == b"ftyp"
    assert mp4 == Path(alert["clip"]["path"]).read_bytes()  # the file as written
    assert fetch(daemon.url + link)[0] == 401  # reading needs credentials here
