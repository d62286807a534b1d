"""Pure parts: [[notify]] validation and masking, templates (zh/en, sandbox), filters, the
rate limit's digest, size limits, signatures and the meaning of each service's answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.alerts.notify.channels import (
    WECOM_MARKDOWN_BYTES,
    build_request,
    classify,
    dingtalk_sign,
    feishu_sign,
    ntfy_priority,
    webhook_signature,
)
from monitor.alerts.notify.images import fit_jpeg
from monitor.alerts.notify.messages import (
    Notification,
    RateLimiter,
    notification_for,
    truncate_utf8,
    wants,
)
from monitor.alerts.payloads import ClipRef
from monitor.config import ConfigError, config_from_mapping
from monitor.notifyconfig import RateLimitConfig
from tests.alerts.notify.support import CHANNEL, event_payload

ROOT = Path(__file__).resolve().parents[3]


def test_each_problem_of_the_notify_tables_is_one_line_without_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"notify": [
            {"name": "a", "type": "wecom", "url": "ftp://qyapi/send?key=abcdef-secret-key"},
            {"name": "a b", "type": "telegram", "chat_id": "1"},
            {"name": "c", "type": "pager"},
            {"name": "d", "type": "webhook", "url": "https://h/x", "events": ["fire"]},
            {"name": "e", "type": "email", "host": "smtp", "sender": "a@b", "recipients": [],
             "template": "{% if %}"},
        ]})
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "notify.0.wecom.url: url must be an http:// or https:// URL" in text
    assert "notify.1.telegram.name: a channel name is 1-64 letters" in text
    assert "notify.1.telegram.bot_token: required key is missing" in text
    assert "notify.2: Input tag 'pager'" in text
    assert "notify.3.webhook.events.0" in text
    assert "notify.4.email.recipients" in text
    assert "notify.4.email.template: not a valid Jinja2 template" in text
    assert "abcdef-secret-key" not in text


def test_channel_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="notify channel name 'x' is used twice"):
        config_from_mapping({"notify": [{"name": "x", "type": "ntfy", "url": "https://n/t"},
                                        {"name": "x", "type": "ntfy", "url": "https://n/u"}]})


def test_check_config_shows_channels_without_their_secrets(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text("""
[[notify]]
name = "site-wecom"
type = "wecom"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"

[[notify]]
name = "ops-hook"
type = "webhook"
url = "https://hooks.example.com/monitor?token=hook-token-123456"
secret = "hmac-secret-abcdef"
headers = { Authorization = "Bearer header-token-778899" }

[[notify]]
name = "lark"
type = "feishu"
url = "https://open.feishu.cn/open-apis/bot/v2/hook/0d2c3b4a-feishu-hook-token"
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    result = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", str(path)],
                            capture_output=True, text=True, env=env, timeout=60, check=False,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["notify"]
    assert [c["name"] for c in shown] == ["site-wecom", "ops-hook", "lark"]
    assert shown[0]["url"] == "https://qyapi.weixin.qq.com/***"
    assert shown[1]["headers"] == {"Authorization": "***"}
    for secret in ("693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa", "hook-token-123456",
                   "hmac-secret-abcdef", "header-token-778899", "0d2c3b4a-feishu-hook-token"):
        assert secret not in result.stdout + result.stderr


def test_the_redactor_learns_the_key_inside_a_webhook_url() -> None:
    config = config_from_mapping({"notify": [{
        "name": "d", "type": "dingtalk", "secret": "SEC-sign-secret",
        "url": "https://oapi.dingtalk.com/robot/send?access_token=tok-1234567890"}]})
    secrets = config.secret_values()
    assert "tok-1234567890" in secrets
    assert "SEC-sign-secret" in secrets


def channel(**fields: object) -> object:
    table = {"name": "n", "type": "ntfy", "url": "https://ntfy.example/t", **fields}
    return CHANNEL.validate_python(table)


def test_filters_by_event_type_camera_and_hazard() -> None:
    picky = channel(cameras=["gate"], hazards=["smoke"], events=["start", "false_alarm"])
    assert wants(picky, "start", "gate", "smoke")
    assert not wants(picky, "end", "gate", "smoke")
    assert not wants(picky, "start", "yard", "smoke")
    assert not wants(picky, "start", "gate", "fire")
    assert wants(picky, "false_alarm", "gate", "smoke")
    assert not wants(channel(enabled=False), "start", "gate", "fire")


def test_default_templates_in_both_languages() -> None:
    english, problem = notification_for(channel(), event_payload(url="https://e/1.jpg",
                                                                snapshot=Path("/x.jpg")))
    assert problem is None
    assert english.title == "ALERT: Fire on camera cam1"
    assert "flames near the pallets" in english.text
    assert "Evidence: https://e/1.jpg" in english.text
    chinese, _ = notification_for(channel(language="zh"), event_payload("end"))
    assert chinese.title == "【告警解除】摄像头 cam1：火焰"
    assert "结束原因：cleared" in chinese.text


def test_a_user_template_is_sandboxed() -> None:
    custom = channel(template="{{ camera }}/{{ hazard }} {{ missing_helmets or 0 }}")
    notification, problem = notification_for(custom, event_payload())
    assert (notification.text, problem) == ("cam1/fire 0", None)
    # Reaching Python internals is refused; the default template is used and the problem named.
    escape = channel(template="{{ camera.__class__.__mro__[1].__subclasses__() }}")
    notification, problem = notification_for(escape, event_payload())
    assert problem is not None
    assert "unsafe" in problem or "access" in problem
    assert notification.text.startswith("ALERT: Fire on camera cam1")


def note(kind: str, at: str, camera: str = "cam1") -> Notification:
    return Notification(key=f"k{at}", kind=kind, camera=camera, hazard="fire", title="t",
                        text="x", at=at)


def test_the_rate_limit_holds_a_storm_back_into_one_digest() -> None:
    limiter = RateLimiter(RateLimitConfig(max_messages=2, window_s=60))
    admitted = [limiter.admit(note("start" if i % 2 == 0 else "end", f"t{i}"), 100 + i)
                for i in range(10)]
    assert admitted == [True, True] + [False] * 8
    assert limiter.admit(note("start", "other", camera="cam2"), 105)  # its own budget
    assert limiter.digests(130, "en") == []  # the window is still full
    (digest,) = limiter.digests(161, "en")
    assert digest.kind == "digest"
    assert "8 notification(s)" in digest.text
    assert "ALERT x4" in digest.text
    assert "Cleared x4" in digest.text
    assert "between t2 and t9" in digest.text
    assert limiter.digests(162, "en") == []
    assert limiter.held_back == 8


def test_truncation_keeps_whole_characters() -> None:
    assert truncate_utf8("火" * 10, 10) == "火火…"
    assert len(truncate_utf8("火" * 10, 10).encode()) <= 10
    assert truncate_utf8("short", 10) == "short"


def test_signatures_follow_the_published_recipes() -> None:
    body = b'{"a":1}'
    assert webhook_signature("k", "1700000000", body) == "sha256=" + hmac.new(
        b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert dingtalk_sign("SECx", "1700000000000") == base64.b64encode(hmac.new(
        b"SECx", b"1700000000000\nSECx", hashlib.sha256).digest()).decode()
    assert feishu_sign("s", "1700000000") == base64.b64encode(hmac.new(
        b"1700000000\ns", b"", hashlib.sha256).digest()).decode()


def test_wecom_markdown_is_cut_to_its_limit() -> None:
    wecom = CHANNEL.validate_python({"name": "w", "type": "wecom",
                                     "url": "https://qyapi.weixin.qq.com/x?key=k"})
    long_note = Notification(key="k", kind="start", camera="c", hazard="fire", title="t",
                             text="火" * 5000, at="a")
    request = build_request(wecom, long_note, None, 0)
    assert request.body is not None
    content = json.loads(request.body)["markdown"]["content"]
    assert len(content.encode()) <= WECOM_MARKDOWN_BYTES


@pytest.mark.parametrize(("service", "status", "body", "kind"), [
    ("wecom", 200, {"errcode": 0, "errmsg": "ok"}, "ok"),
    ("wecom", 200, {"errcode": 45009, "errmsg": "freq"}, "retry"),
    ("wecom", 200, {"errcode": 93000, "errmsg": "invalid"}, "refused"),
    ("wecom", 200, {"errcode": 40008, "errmsg": "bad type"}, "dropped"),
    ("dingtalk", 200, {"errcode": 130101, "errmsg": "too fast"}, "retry"),
    ("dingtalk", 200, {"errcode": 310000, "errmsg": "sign not match"}, "refused"),
    ("dingtalk", 200, {"errcode": 400102, "errmsg": "robot stopped"}, "refused"),
    ("feishu", 200, {"code": 0, "msg": "success"}, "ok"),
    ("feishu", 200, {"StatusCode": 0, "StatusMessage": "success"}, "ok"),
    ("feishu", 400, {"code": 19021, "msg": "sign match fail"}, "refused"),
    ("feishu", 200, {"code": 11232, "msg": "frequency limited"}, "retry"),
    ("telegram", 429, {"ok": False, "parameters": {"retry_after": 7}}, "retry"),
    ("telegram", 401, {"ok": False, "description": "Unauthorized"}, "refused"),
    ("telegram", 400, {"ok": False, "description": "Bad Request: chat not found"}, "refused"),
    ("telegram", 400, {"ok": False, "description": "Bad Request: caption too long"},
     "dropped"),
    ("ntfy", 429, {"code": 42901}, "retry"),
    ("ntfy", 413, {"code": 41301}, "dropped"),
    ("webhook", 503, {}, "retry"),
    ("webhook", 401, {}, "refused"),
])
def test_what_each_answer_means(service: str, status: int, body: dict[str, object],
                                kind: str) -> None:
    outcome = classify(service, status, {"Retry-After": "3"}, json.dumps(body).encode())
    assert outcome.kind == kind, outcome.detail
    if kind == "refused":
        assert outcome.fix
    if service == "telegram" and kind == "retry":
        assert outcome.retry_after_s == 7
    if service == "ntfy" and kind == "retry":
        assert outcome.retry_after_s == 3


def test_a_changed_notify_section_is_reported_as_needing_a_restart() -> None:
    from monitor.service.reload import plan_reload  # noqa: PLC0415

    old = config_from_mapping({})
    new = config_from_mapping({"notify": [{"name": "n", "type": "ntfy",
                                           "url": "https://ntfy.example/t"}]})
    assert plan_reload(old, new).sections_needing_restart == ("notify",)


def test_the_evidence_clip_is_linked_when_it_has_a_url() -> None:
    payload = event_payload().model_copy(update={"clip": ClipRef(
        path="/var/lib/monitor/snapshots/cam1/a.mp4", url="https://e/cam1/a.mp4",
        ready=False, expected_at="2026-12-02T01:00:15.000+00:00")})
    english, _ = notification_for(channel(), payload)
    assert "Clip: https://e/cam1/a.mp4" in english.text
    chinese, _ = notification_for(channel(language="zh"), payload)
    assert "视频片段：https://e/cam1/a.mp4" in chinese.text
    assert english.event is not None
    assert english.event["clip"]["url"] == "https://e/cam1/a.mp4"  # the webhook's event


def test_an_image_over_the_limit_is_shrunk_to_fit() -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)  # compresses badly
    ok, encoded = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    big = encoded.tobytes()
    limit = len(big) // 4
    small = fit_jpeg(big, limit)
    assert small is not None
    assert len(small) <= limit
    decoded = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape[1] < 1280
    assert fit_jpeg(big, len(big)) is big
    assert fit_jpeg(b"not a jpeg" * 100, 10) is None


@pytest.mark.parametrize(("kind", "severity", "expected"), [
    ("start", "normal", 4), ("health_start", None, 4), ("update", "high", 5),
    ("update", "normal", 3), ("end", "normal", 3), ("health_end", None, 3), ("ack", None, 3),
    ("digest", None, 3), ("test", None, 3)])
def test_ntfy_priority_pages_for_starts_health_problems_and_escalations(
        kind: str, severity: str | None, expected: int) -> None:
    event = {"severity": severity} if severity is not None else None
    notification = Notification(key="k", kind=kind, camera="c", hazard="fire", title="t",
                                text="x", at="2026-12-02T00:00:00Z", event=event)
    assert ntfy_priority(4, notification) == expected
