"""What a notification says: filters, templates (zh/en, sandboxed), rate limit and digest.

Pure: no I/O, time comes in as ``now``. A :class:`Notification` is rendered once, when the
event is handed over, and stored as JSON in the channel's outbox, so what is delivered after a
restart is what was decided before it.

Templates written in the configuration run in Jinja2's
:class:`~jinja2.sandbox.SandboxedEnvironment`: config text is never given to ``str.format``
(which can reach attributes of the objects it formats) and the sandbox refuses access to
Python internals, so a template can only read the plain values of :func:`template_values`.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from monitor.alerts.payloads import EventPayload
from monitor.notifyconfig import RateLimitConfig

HAZARD_LABELS = {
    "en": {"fire": "Fire", "smoke": "Smoke", "no_helmet": "No hard hat"},
    "zh": {"fire": "火焰", "smoke": "烟雾", "no_helmet": "未戴安全帽"},
}
KIND_LABELS = {
    "en": {"start": "ALERT", "update": "Alert update", "end": "Cleared", "digest": "Digest",
           "test": "Test", "ack": "Acknowledged", "false_alarm": "False alarm",
           "health_start": "Camera problem", "health_end": "Camera recovered"},
    "zh": {"start": "告警", "update": "告警更新", "end": "告警解除", "digest": "告警汇总",
           "test": "测试", "ack": "已确认", "false_alarm": "误报",
           "health_start": "摄像头故障", "health_end": "摄像头恢复"},
}
PROBLEM_LABELS = {
    "en": {"offline": "offline", "frozen": "picture frozen", "blank": "picture blank",
           "view_changed": "view changed", "no_verdict": "no verdict",
           "model_unavailable": "model unavailable"},
    "zh": {"offline": "离线", "frozen": "画面冻结", "blank": "画面空白",
           "view_changed": "视角改变", "no_verdict": "无识别结果",
           "model_unavailable": "模型不可用"},
}

DEFAULT_TITLES = {
    "en": "{{ kind_label }}: {{ hazard_label }} on camera {{ camera }}",
    "zh": "【{{ kind_label }}】摄像头 {{ camera }}：{{ hazard_label }}",
}
DEFAULT_TEXTS = {
    "en": (
        "{{ kind_label }}: {{ hazard_label }} on camera {{ camera }} at {{ at }}.\n"
        "{% if detail %}{{ detail }}\n{% endif %}"
        "{% if missing_helmets %}People without a hard hat: {{ missing_helmets }}\n{% endif %}"
        "{% if end_reason %}Ended: {{ end_reason }}\n{% endif %}"
        "{% if by %}By: {{ by }}\n{% endif %}"
        "{% if snapshot_url %}Evidence: {{ snapshot_url }}\n{% endif %}"
        "{% if clip_url %}Clip: {{ clip_url }}\n{% endif %}"
        "Alert {{ id }}"
    ),
    "zh": (
        "【{{ kind_label }}】摄像头 {{ camera }} 于 {{ at }} 检测到{{ hazard_label }}。\n"
        "{% if detail %}{{ detail }}\n{% endif %}"
        "{% if missing_helmets %}未戴安全帽人数：{{ missing_helmets }}\n{% endif %}"
        "{% if end_reason %}结束原因：{{ end_reason }}\n{% endif %}"
        "{% if by %}操作人：{{ by }}\n{% endif %}"
        "{% if snapshot_url %}证据图片：{{ snapshot_url }}\n{% endif %}"
        "{% if clip_url %}视频片段：{{ clip_url }}\n{% endif %}"
        "告警编号 {{ id }}"
    ),
}
DIGEST_TEXTS = {
    "en": "{held} notification(s) for {hazard} on camera {camera} were held back by the "
          "rate limit between {first} and {last}: {counts}.",
    "zh": "限流期间（{first} 至 {last}）摄像头 {camera} 的{hazard}共有 {held} 条通知被合并："
          "{counts}。",
}

_ENVIRONMENT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel, as stored in its outbox.

    ``key`` identifies it for de-duplication (``<alert id>:<revision>`` for an event step):
    the webhook sends it as ``Idempotency-Key``. ``part`` is ``message`` or, for services that
    take an image as a message of its own (WeCom), ``image``.
    """

    key: str
    kind: str
    camera: str
    hazard: str | None
    title: str
    text: str
    at: str
    image_path: str | None = None
    image_url: str | None = None
    event: dict[str, Any] | None = None
    part: str = "message"
    problem: str | None = None
    """A health event's problem (``offline``...); ``None`` for alert steps."""

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Notification:
        """Read the stored form back."""
        return cls(**json.loads(data))


def wants(channel: Any, kind: str, camera: str, hazard: str | None) -> bool:
    """Whether ``channel`` (a ``[[notify]]`` table) takes this kind of event of this camera
    and hazard."""
    if not channel.enabled or kind not in channel.events:
        return False
    if channel.cameras is not None and camera not in channel.cameras:
        return False
    return not (hazard is not None and channel.hazards is not None
                and hazard not in channel.hazards)


def alert_event_names(payload: EventPayload) -> tuple[str, ...]:
    """The ``events`` filter names an alert step matches: its type, and ``false_alarm`` too
    for an end an operator marked a false alarm."""
    if payload.type == "end" and payload.end_reason == "false_alarm":
        return ("end", "false_alarm")
    return (payload.type,)


def notification_kind(payload: EventPayload) -> str:
    """The notification's ``kind``: the step's type, ``false_alarm`` for such an end."""
    return "false_alarm" if "false_alarm" in alert_event_names(payload) else payload.type


def template_values(payload: EventPayload, language: str) -> dict[str, Any]:
    """The plain values a template can use."""
    hazard = payload.hazard.value
    kind = notification_kind(payload)
    snapshot = payload.snapshot
    clip = payload.clip
    return {
        "id": payload.id, "revision": payload.revision, "type": kind, "camera": payload.camera,
        "hazard": hazard, "hazard_label": HAZARD_LABELS[language].get(hazard, hazard),
        "kind_label": KIND_LABELS[language].get(kind, kind), "at": payload.at,
        "started_at": payload.started_at, "ended_at": payload.ended_at,
        "detail": payload.detail, "missing_helmets": payload.missing_helmets,
        "end_reason": payload.end_reason, "confirming_verdicts": payload.confirming_verdicts,
        "snapshot_url": snapshot.url if snapshot else None,
        "snapshot_path": snapshot.path if snapshot else None, "model": payload.model,
        # The evidence clip (MP4): its URL is known at the start, the file follows after the
        # post-roll (clip_ready says whether it is written).
        "clip_url": clip.url if clip else None, "clip_path": clip.path if clip else None,
        "clip_ready": clip.ready if clip else None,
        # ack: who acknowledged it (the console's user or the MQTT command's "by").
        "by": payload.by, "event": "alert",
    }


class TemplateRenderError(Exception):
    """A configured template failed to render (the default one is used instead)."""


def render(template: str, values: dict[str, Any]) -> str:
    """``template`` rendered in the sandbox with ``values``.

    Raises:
        TemplateRenderError: the template is invalid or failed (names the reason).
    """
    try:
        return _ENVIRONMENT.from_string(template).render(values).strip()
    except TemplateError as exc:
        raise TemplateRenderError(f"template: {exc}") from exc


def template_problem(template: str) -> str | None:
    """Why ``template`` does not parse, or ``None`` (for configuration checks)."""
    try:
        _ENVIRONMENT.parse(template)
    except TemplateError as exc:
        return str(exc)
    return None


def notification_for(channel: Any, payload: EventPayload) -> tuple[Notification, str | None]:
    """The channel's notification of an event step, and the template problem (if the
    configured template failed and the default one was used)."""
    language = channel.language
    values = template_values(payload, language)
    problem = None
    try:
        title = render(channel.title_template or DEFAULT_TITLES[language], values)
        text = render(channel.template or DEFAULT_TEXTS[language], values)
    except TemplateRenderError as exc:
        problem = str(exc)
        title = render(DEFAULT_TITLES[language], values)
        text = render(DEFAULT_TEXTS[language], values)
    snapshot = payload.snapshot
    # An ack carries the revision of the step it acknowledges: its own key must differ, or a
    # receiver de-duplicating on Idempotency-Key would drop it as that step's redelivery.
    key = f"{payload.id}:{payload.revision}" + (":ack" if payload.type == "ack" else "")
    notification = Notification(
        key=key, kind=notification_kind(payload), camera=payload.camera,
        hazard=payload.hazard.value, title=title, text=text, at=payload.at,
        image_path=snapshot.path if snapshot and channel.image else None,
        image_url=snapshot.url if snapshot else None,
        event=payload.model_dump(mode="json"))
    return notification, problem


def probe_notification(channel: Any, at: str) -> Notification:
    """The message of ``monitor notify-test``."""
    if channel.language == "zh":
        title, text = "【测试】monitor 通知", f"这是通道 {channel.name} 的测试消息（{at}）。"
    else:
        title = "Test: monitor notification"
        text = f"This is a test message of channel {channel.name} ({at})."
    return Notification(key=f"test:{at}", kind="test", camera="-", hazard=None, title=title,
                        text=text, at=at)


@dataclass(slots=True)
class _Held:
    """What the rate limit held back for one camera and hazard."""

    counts: dict[str, int] = field(default_factory=dict)
    first: str = ""
    last: str = ""


_Subject = tuple[str, str | None, str | None]
"""What a rate limit counts per: (camera, hazard, health problem)."""


class RateLimiter:
    """At most ``max_messages`` per (camera, hazard) — per (camera, problem) for health
    events — in any ``window_s``; the rest is counted and summarised by :meth:`digests` once
    the window has room again."""

    def __init__(self, limit: RateLimitConfig) -> None:
        self.limit = limit
        self._sent: dict[_Subject, deque[float]] = {}
        self._held: dict[_Subject, _Held] = {}
        self.held_back = 0
        """Notifications summarised instead of sent (this process)."""

    def _room(self, key: _Subject, now: float) -> deque[float]:
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - self.limit.window_s:
            sent.popleft()
        return sent

    def admit(self, notification: Notification, now: float) -> bool:
        """Whether to send ``notification`` now; if not, it is counted for the digest."""
        key = (notification.camera, notification.hazard, notification.problem)
        sent = self._room(key, now)
        if len(sent) < self.limit.max_messages and key not in self._held:
            sent.append(now)
            return True
        held = self._held.setdefault(key, _Held(first=notification.at))
        held.counts[notification.kind] = held.counts.get(notification.kind, 0) + 1
        held.last = notification.at
        self.held_back += 1
        return False

    def digests(self, now: float, language: str) -> list[Notification]:
        """One summary per (camera, hazard) whose held-back notifications can go now."""
        due = []
        for key, held in list(self._held.items()):
            sent = self._room(key, now)
            if len(sent) >= self.limit.max_messages:
                continue
            sent.append(now)
            del self._held[key]
            due.append(digest_notification(key[0], key[1], held, language, problem=key[2]))
        return due


def digest_notification(camera: str, hazard: str | None, held: _Held,
                        language: str, *, problem: str | None = None) -> Notification:
    """The summary of what was held back."""
    labels = KIND_LABELS[language]
    hazard_label = HAZARD_LABELS[language].get(hazard or "", hazard or "-")
    if problem is not None:
        hazard_label = PROBLEM_LABELS[language].get(problem, problem)
    counts = ", ".join(f"{labels.get(kind, kind)} x{count}"
                       for kind, count in sorted(held.counts.items()))
    total = sum(held.counts.values())
    text = DIGEST_TEXTS[language].format(held=total, hazard=hazard_label, camera=camera,
                                         first=held.first, last=held.last, counts=counts)
    title = render(DEFAULT_TITLES[language], {"kind_label": labels["digest"],
                                              "hazard_label": hazard_label, "camera": camera})
    return Notification(key=f"digest:{camera}:{hazard or problem}:{held.last}",
                        kind="digest", camera=camera, hazard=hazard, title=title, text=text,
                        at=held.last, problem=problem)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (on a character boundary), ending in
    ``…`` when cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    cut = data[:max(0, max_bytes - 3)].decode("utf-8", errors="ignore")
    return cut + "…"


def truncate_chars(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, ending in ``…`` when cut."""
    return text if len(text) <= max_chars else text[:max_chars - 1] + "…"
