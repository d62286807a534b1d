"""Each service's request and the meaning of its answer, as its published API describes them.

Pure: :func:`build_request` turns a :class:`~monitor.alerts.notify.messages.Notification`
(plus the evidence JPEG, if any, and ``now``) into an :class:`HttpRequest`; :func:`classify`
turns the HTTP answer into an :class:`Outcome`: delivered, retry (after the wait the service
asked for), refused for the whole channel (a bad key, token or signature: nothing gets
through until the configuration is fixed) or refused for this message only (dropped).

* ``webhook``: ``POST`` of JSON ``{"notification": {...}, "event": <EventPayload or
  HealthEventPayload>}``;
  ``X-Monitor-Timestamp`` (Unix seconds), ``X-Monitor-Signature: sha256=<hex>`` =
  HMAC-SHA256(secret, timestamp + "." + body) and ``Idempotency-Key``.
* ``wecom`` (group robot): ``{"msgtype": "markdown"|"text", ...}`` (4096 / 2048 bytes); the
  image is a message of its own, ``{"msgtype": "image", "image": {"base64", "md5"}}`` of at
  most 2 MB before encoding. HTTP 200 with ``errcode``: 45009 = rate limit, 93000 = invalid key.
* ``dingtalk`` (custom robot): signed mode adds ``timestamp`` (ms) and ``sign`` =
  urlencode(base64(HMAC-SHA256(secret, timestamp + "\\n" + secret))) to the query; markdown
  (a picture as ``![](url)``) or text, 20 000 bytes. ``errcode`` 130101 = sent too fast,
  310000 = signature, keyword or IP refused, 300001/400101/400102 = token invalid or robot off.
* ``feishu`` (custom bot): signed mode puts ``timestamp`` (s) and ``sign`` =
  base64(HMAC-SHA256(key = timestamp + "\\n" + secret, message = "")) in the body;
  ``msg_type`` text, body at most 20 KB. ``code`` 19021 = signature, 19022 = IP, 19024 =
  keyword, 11232 = rate limit.
* ``telegram``: ``sendPhoto`` (multipart, caption 1024 characters, photo up to 10 MB) or
  ``sendMessage`` (4096 characters). 429 carries ``parameters.retry_after``; 401 = token.
* ``ntfy``: ``PUT`` of the JPEG with ``Filename`` and the text in ``Message``, or ``POST`` of
  the text; ``Title``, ``Tags``, ``Priority`` headers (non-ASCII headers RFC 2047-encoded).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from email.header import Header
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from monitor.alerts.notify.messages import Notification, truncate_chars, truncate_utf8

WECOM_MARKDOWN_BYTES = 4096
WECOM_TEXT_BYTES = 2048
WECOM_IMAGE_BYTES = 2 * 1024 * 1024
DINGTALK_TEXT_BYTES = 20_000
FEISHU_TEXT_BYTES = 18_000
"""Feishu caps the request body at 20 KB; the rest is the JSON around the text."""
TELEGRAM_CAPTION_CHARS = 1024
TELEGRAM_TEXT_CHARS = 4096
TELEGRAM_PHOTO_BYTES = 10 * 1024 * 1024
NTFY_MESSAGE_BYTES = 4096
NTFY_ATTACHMENT_BYTES = 15 * 1024 * 1024
"""ntfy.sh's default attachment limit (a server of your own may set another)."""
RATE_LIMIT_WAIT_S = 60.0
"""WeCom, DingTalk and Feishu allow 20 messages a minute per robot and name no wait."""

OutcomeKind = Literal["ok", "retry", "refused", "dropped"]


@dataclass(frozen=True, slots=True)
class FormPart:
    """A field of a multipart body."""

    name: str
    value: str | bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request to a service (``body`` or ``form``)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    form: tuple[FormPart, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the service's answer means for this notification and the channel."""

    kind: OutcomeKind
    detail: str
    retry_after_s: float | None = None
    fix: str | None = None

    @property
    def delivered(self) -> bool:
        """The service took it."""
        return self.kind == "ok"


def _json_request(url: str, data: dict[str, Any],
                  headers: dict[str, str] | None = None) -> HttpRequest:
    body = json.dumps(data, ensure_ascii=False).encode()
    return HttpRequest("POST", url, {"Content-Type": "application/json", **(headers or {})},
                       body)


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's ``sign`` (before URL encoding)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """Feishu's ``sign``: the HMAC key is timestamp + "\\n" + secret, the message empty."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _header_value(text: str) -> str:
    """An HTTP header value: ASCII as is, anything else RFC 2047-encoded (ntfy decodes it)."""
    text = " ".join(text.split())
    if text.isascii():
        return text
    return Header(text, "utf-8").encode(maxlinelen=10_000)


def build_request(channel: Any, notification: Notification, image: bytes | None,
                  now: float) -> HttpRequest:
    """The request that delivers ``notification`` to ``channel`` (``image``: the evidence
    JPEG when the channel sends one and it fits the service's limit)."""
    kind = channel.type
    if kind == "webhook":
        return _webhook(channel, notification, now)
    if kind == "wecom":
        return _wecom(channel, notification, image)
    if kind == "dingtalk":
        return _dingtalk(channel, notification, now)
    if kind == "feishu":
        return _feishu(channel, notification, now)
    if kind == "telegram":
        return _telegram(channel, notification, image)
    if kind == "ntfy":
        return _ntfy(channel, notification, image)
    raise ValueError(f"channel type {kind!r} does not speak HTTP")


def _webhook(channel: Any, notification: Notification, now: float) -> HttpRequest:
    data = {"notification": {"key": notification.key, "kind": notification.kind,
                             "camera": notification.camera, "hazard": notification.hazard,
                             "title": notification.title, "text": notification.text,
                             "at": notification.at, "image_url": notification.image_url,
                             "problem": notification.problem},
            "event": notification.event}
    body = json.dumps(data, ensure_ascii=False).encode()
    timestamp = str(int(now))
    headers = {name: value.get_secret_value() for name, value in channel.headers.items()}
    headers.update({"Content-Type": "application/json", "X-Monitor-Timestamp": timestamp,
                    "Idempotency-Key": notification.key})
    if channel.secret is not None:
        headers["X-Monitor-Signature"] = webhook_signature(
            channel.secret.get_secret_value(), timestamp, body)
    return HttpRequest("POST", channel.url.get_secret_value(), headers, body)


def _wecom(channel: Any, notification: Notification, image: bytes | None) -> HttpRequest:
    url = channel.url.get_secret_value()
    if notification.part == "image":
        if image is None:
            raise ValueError("a WeCom image message needs the image")
        return _json_request(url, {"msgtype": "image", "image": {
            "base64": base64.b64encode(image).decode(),
            "md5": hashlib.md5(image, usedforsecurity=False).hexdigest()}})
    if channel.msgtype == "markdown":
        content = truncate_utf8(f"**{notification.title}**\n{notification.text}",
                                WECOM_MARKDOWN_BYTES)
        return _json_request(url, {"msgtype": "markdown", "markdown": {"content": content}})
    content = truncate_utf8(f"{notification.title}\n{notification.text}", WECOM_TEXT_BYTES)
    return _json_request(url, {"msgtype": "text", "text": {"content": content}})


def _dingtalk(channel: Any, notification: Notification, now: float) -> HttpRequest:
    url = channel.url.get_secret_value()
    if channel.secret is not None:
        timestamp = str(int(now * 1000))
        sign = dingtalk_sign(channel.secret.get_secret_value(), timestamp)
        url = _with_query(url, f"timestamp={timestamp}&sign={quote(sign, safe='')}")
    if channel.msgtype == "markdown":
        picture = f"\n\n![evidence]({notification.image_url})" if (
            notification.image_url and channel.image) else ""
        text = truncate_utf8(f"### {notification.title}\n\n{notification.text}",
                             DINGTALK_TEXT_BYTES - len(picture.encode())) + picture
        return _json_request(url, {"msgtype": "markdown",
                                   "markdown": {"title": notification.title, "text": text}})
    content = truncate_utf8(f"{notification.title}\n{notification.text}", DINGTALK_TEXT_BYTES)
    return _json_request(url, {"msgtype": "text", "text": {"content": content}})


def _feishu(channel: Any, notification: Notification, now: float) -> HttpRequest:
    text = f"{notification.title}\n{notification.text}"
    if notification.image_url and channel.image:
        text += f"\n{notification.image_url}"
    data: dict[str, Any] = {"msg_type": "text",
                            "content": {"text": truncate_utf8(text, FEISHU_TEXT_BYTES)}}
    if channel.secret is not None:
        timestamp = str(int(now))
        data = {"timestamp": timestamp,
                "sign": feishu_sign(channel.secret.get_secret_value(), timestamp), **data}
    return _json_request(channel.url.get_secret_value(), data)


def _telegram(channel: Any, notification: Notification, image: bytes | None) -> HttpRequest:
    base = f"{channel.api_url}/bot{channel.bot_token.get_secret_value()}"
    text = f"{notification.title}\n{notification.text}"
    if image is not None and len(image) <= TELEGRAM_PHOTO_BYTES:
        return HttpRequest("POST", f"{base}/sendPhoto", form=(
            FormPart("chat_id", channel.chat_id),
            FormPart("caption", truncate_chars(text, TELEGRAM_CAPTION_CHARS)),
            FormPart("photo", image, filename="evidence.jpg", content_type="image/jpeg")))
    return _json_request(f"{base}/sendMessage", {
        "chat_id": channel.chat_id, "text": truncate_chars(text, TELEGRAM_TEXT_CHARS)})


NTFY_TAGS = {"fire": "fire", "smoke": "dash", "no_helmet": "construction_worker"}


NTFY_DEFAULT_PRIORITY = 3
NTFY_URGENT_PRIORITY = 5


def ntfy_priority(channel_priority: int, notification: Notification) -> int:
    """ntfy's priority (1-5) of a notification: the channel's ``priority`` for an alert's
    start and a camera health problem's start (a camera that went dark is a safety failure
    too), the highest for an escalation (an update whose severity was raised: it is meant
    to wake someone else), ntfy's default for the rest (ends, acks, digests, tests)."""
    if notification.kind in ("start", "health_start"):
        return channel_priority
    if notification.kind == "update" and (notification.event or {}).get("severity") == "high":
        return NTFY_URGENT_PRIORITY
    return NTFY_DEFAULT_PRIORITY


def _ntfy(channel: Any, notification: Notification, image: bytes | None) -> HttpRequest:
    url = channel.url.get_secret_value()
    alarming = ntfy_priority(channel.priority, notification) > NTFY_DEFAULT_PRIORITY
    signal = "warning" if notification.kind == "health_start" else "rotating_light"
    headers = {"Title": _header_value(notification.title),
               "Priority": str(ntfy_priority(channel.priority, notification)),
               "Tags": ",".join(tag for tag in (signal if alarming else "",
                                                NTFY_TAGS.get(notification.hazard or "", ""))
                                if tag)}
    if not headers["Tags"]:
        del headers["Tags"]
    if channel.token is not None:
        headers["Authorization"] = f"Bearer {channel.token.get_secret_value()}"
    text = truncate_utf8(notification.text, NTFY_MESSAGE_BYTES)
    if image is not None and len(image) <= NTFY_ATTACHMENT_BYTES:
        headers["Filename"] = "evidence.jpg"
        headers["Message"] = _header_value(text)
        return HttpRequest("PUT", url, headers, image)
    return HttpRequest("POST", url, headers, text.encode())


EMAIL_ATTACHMENT_BYTES = 10 * 1024 * 1024
"""Many mail servers refuse messages over 10-25 MB."""


def image_limit(channel: Any) -> int:
    """The largest image the service takes, bytes."""
    limits = {"wecom": WECOM_IMAGE_BYTES, "telegram": TELEGRAM_PHOTO_BYTES,
              "ntfy": NTFY_ATTACHMENT_BYTES}
    return limits.get(channel.type, EMAIL_ATTACHMENT_BYTES)


def sends_image(channel: Any) -> bool:
    """Whether the channel attaches the image file (others link it, when it has a URL)."""
    return bool(channel.image) and channel.type in {"wecom", "telegram", "ntfy", "email"}


# ---------------------------------------------------------------- answers

WECOM_CODES: dict[int, tuple[OutcomeKind, str]] = {
    45009: ("retry", "rate limit (20 messages a minute per robot)"),
    -1: ("retry", "system busy"),
    93000: ("refused", ("invalid webhook key: copy the robot's webhook URL again (group "
                       "settings → robots) into url")),
    93004: ("refused", "the robot was removed or disabled: add it again and copy its URL"),
    93008: ("refused", "the robot is not in the group any more: add it again"),
}
DINGTALK_CODES: dict[int, tuple[OutcomeKind, str]] = {
    130101: ("retry", "sent too fast (20 messages a minute per robot)"),
    -1: ("retry", "system busy"),
    310000: ("refused", ("signature, keyword or IP refused: set secret to the robot's 加签 "
                        "secret (SEC...), or put the robot's keyword in the template, or allow "
                        "this host's IP in the robot's security settings")),
    300001: ("refused", "access_token invalid: copy the robot's webhook URL again into url"),
    400101: ("refused", "access_token missing or invalid: copy the robot's webhook URL again"),
    400102: ("refused", "the robot is stopped: enable it in the group's robot settings"),
}
FEISHU_CODES: dict[int, tuple[OutcomeKind, str]] = {
    11232: ("retry", "frequency limited"),
    19021: ("refused", ("signature refused: set secret to the bot's signing secret and check "
                       "the host's clock (the timestamp may be at most 1 hour off)")),
    19022: ("refused", "IP not allowed: add this host's IP to the bot's allow list"),
    19024: ("refused", "keyword missing: put the bot's keyword in the template"),
    19001: ("refused", "invalid webhook: copy the bot's webhook URL again into url"),
}


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def classify(channel_type: str, status: int, headers: dict[str, str],
             body: bytes) -> Outcome:
    """The meaning of a service's answer (see the module docstring)."""
    data = _json(body)
    if channel_type in {"wecom", "dingtalk"} and data is not None and "errcode" in data:
        table = WECOM_CODES if channel_type == "wecom" else DINGTALK_CODES
        return _coded(int(data["errcode"]), str(data.get("errmsg", "")), table, status)
    if channel_type == "feishu" and data is not None and ("code" in data
                                                          or "StatusCode" in data):
        code = int(data.get("code", data.get("StatusCode", 0)))
        return _coded(code, str(data.get("msg", data.get("StatusMessage", ""))),
                      FEISHU_CODES, status)
    if channel_type == "telegram" and data is not None and "ok" in data:
        return _telegram_answer(status, data, headers)
    return _http_answer(status, headers, body)


def _coded(code: int, message: str, table: dict[int, tuple[OutcomeKind, str]],
           status: int) -> Outcome:
    if code == 0 and status < 300:
        return Outcome("ok", f"HTTP {status}, errcode 0")
    detail = f"HTTP {status}, errcode {code} {message!r}"
    kind, meaning = table.get(code, ("dropped", ""))
    if kind == "retry":
        return Outcome("retry", f"{detail}: {meaning}", retry_after_s=RATE_LIMIT_WAIT_S
                       if "limit" in meaning or "fast" in meaning else None)
    if kind == "refused":
        return Outcome("refused", detail, fix=meaning)
    if status >= 500:
        return Outcome("retry", detail)
    return Outcome("dropped", f"{detail}: the service refused this message")


def _telegram_answer(status: int, data: dict[str, Any], headers: dict[str, str]) -> Outcome:
    if data.get("ok") is True:
        return Outcome("ok", f"HTTP {status}, ok")
    description = str(data.get("description", ""))
    detail = f"HTTP {status}, {description!r}"
    parameters = data.get("parameters") or {}
    if status == 429:
        wait = parameters.get("retry_after") if isinstance(parameters, dict) else None
        return Outcome("retry", detail, retry_after_s=float(wait) if isinstance(
            wait, int | float) else _retry_after(headers))
    if status == 401:
        return Outcome("refused", detail, fix="bot_token invalid: copy the token @BotFather "
                       "gave into bot_token")
    if status == 403 or (status == 400 and "chat not found" in description.lower()):
        return Outcome("refused", detail, fix="the bot cannot post to chat_id: check the id "
                       "and add the bot to the chat")
    if status >= 500:
        return Outcome("retry", detail)
    return Outcome("dropped", f"{detail}: the service refused this message")


def _http_answer(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    snippet = body[:200].decode("utf-8", "replace").strip()
    detail = f"HTTP {status}" + (f" {snippet!r}" if snippet else "")
    if 200 <= status < 300:
        return Outcome("ok", f"HTTP {status}")
    if status == 429:
        return Outcome("retry", detail, retry_after_s=_retry_after(headers))
    if status in {408, 425} or status >= 500:
        return Outcome("retry", detail, retry_after_s=_retry_after(headers))
    if status in {401, 403}:
        return Outcome("refused", detail, fix="the service refused the credentials: check the "
                       "channel's url, secret, token or headers")
    if status == 404:
        return Outcome("refused", detail, fix="the URL does not exist: check url")
    return Outcome("dropped", f"{detail}: the service refused this message")
