"""What a notification of a camera health event says: its filter and its templates (zh/en).

Pure, like :mod:`monitor.alerts.notify.messages`: a
:class:`~monitor.alerts.payloads.HealthEventPayload` (the one ``<prefix>/health`` carries)
becomes a :class:`~monitor.alerts.notify.messages.Notification` of kind ``health_start`` or
``health_end``, rate-limited per camera and problem, stored and delivered like an alert step.
"""

from __future__ import annotations

from typing import Any

from monitor.alerts.notify.messages import (
    KIND_LABELS,
    PROBLEM_LABELS,
    Notification,
    TemplateRenderError,
    render,
)
from monitor.alerts.payloads import HealthEventPayload

DAEMON_CAMERA = "-"
"""The ``camera`` of a problem that is the daemon's, not one camera's (model_unavailable)."""

DEFAULT_HEALTH_TITLES = {
    "en": "{{ kind_label }}: camera {{ camera }} {{ problem_label }}",
    "zh": "【{{ kind_label }}】摄像头 {{ camera }}：{{ problem_label }}",
}
DEFAULT_HEALTH_TEXTS = {
    "en": (
        "{% if type == 'start' %}Camera {{ camera }}: {{ problem_label }} since {{ started_at }}."
        "{% else %}Camera {{ camera }}: {{ problem_label }} ended at {{ at }} ({{ end_reason }}),"
        " began {{ started_at }}.{% endif %}\n"
        "{% if detail %}{{ detail }}\n{% endif %}"
        "Health event {{ id }}"
    ),
    "zh": (
        "{% if type == 'start' %}摄像头 {{ camera }}：自 {{ started_at }} 起{{ problem_label }}。"
        "{% else %}摄像头 {{ camera }}：{{ problem_label }}已于 {{ at }} 结束（{{ end_reason }}），"
        "开始于 {{ started_at }}。{% endif %}\n"
        "{% if detail %}{{ detail }}\n{% endif %}"
        "事件编号 {{ id }}"
    ),
}


def wants_health(channel: Any, payload: HealthEventPayload) -> bool:
    """Whether ``channel`` takes this health event: ``health`` in its ``events``, the problem
    in its ``health_problems`` (if set), the camera in its ``cameras`` (if set; a problem of
    the daemon's, without a camera, concerns every camera and passes). ``hazards`` does not
    apply."""
    if not channel.enabled or "health" not in channel.events:
        return False
    if channel.health_problems is not None and payload.problem not in channel.health_problems:
        return False
    return payload.camera is None or channel.cameras is None \
        or payload.camera in channel.cameras


def health_template_values(payload: HealthEventPayload, language: str) -> dict[str, Any]:
    """The plain values a health template can use."""
    kind = f"health_{payload.type}"
    problem = payload.problem.value
    return {
        "event": "health", "id": payload.id, "type": payload.type,
        "camera": payload.camera or DAEMON_CAMERA, "problem": problem,
        "problem_label": PROBLEM_LABELS[language].get(problem, problem),
        "kind_label": KIND_LABELS[language].get(kind, kind), "at": payload.at,
        "started_at": payload.started_at, "ended_at": payload.ended_at,
        "detail": payload.detail, "end_reason": payload.end_reason,
    }


def health_notification_for(channel: Any,
                            payload: HealthEventPayload) -> tuple[Notification, str | None]:
    """The channel's notification of a health event, and the template problem (if the
    configured template failed and the default one was used)."""
    language = channel.language
    values = health_template_values(payload, language)
    problem = None
    try:
        title = render(channel.health_title_template or DEFAULT_HEALTH_TITLES[language],
                       values)
        text = render(channel.health_template or DEFAULT_HEALTH_TEXTS[language], values)
    except TemplateRenderError as exc:
        problem = str(exc)
        title = render(DEFAULT_HEALTH_TITLES[language], values)
        text = render(DEFAULT_HEALTH_TEXTS[language], values)
    notification = Notification(
        key=f"health:{payload.id}:{payload.type}", kind=f"health_{payload.type}",
        camera=values["camera"], hazard=None, title=title, text=text, at=payload.at,
        event=payload.model_dump(mode="json"), problem=payload.problem.value)
    return notification, problem
