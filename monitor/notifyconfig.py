"""The ``[[notify]]`` tables: notification channels, their filters, language and rate limit.

Each table is one channel with a unique ``name`` and a ``type`` (``webhook``, ``wecom``,
``dingtalk``, ``feishu``, ``telegram``, ``ntfy``, ``email``) and the fields of that type.
Part of the configuration tree (:class:`monitor.config.MonitorConfig` has ``notify``), kept in
a module of its own so the channel vocabulary grows without touching the rest.

Secrets: every bot key, token, signing secret, SMTP password, custom header value and every
webhook URL (WeCom, DingTalk and Feishu put the robot's key in the URL's query string or
path) is a :class:`~pydantic.SecretStr`; :func:`channel_secrets` lists them for the redactor
and :func:`masked_channel` shows a channel without them (``check-config``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NotifyEventName = Literal["start", "update", "end", "ack", "false_alarm", "health"]
"""What a channel can be sent. ``start``/``update``/``end`` are alert steps; ``ack`` (an
operator acknowledged the alert) and ``false_alarm`` (an ``end`` whose end reason is
``false_alarm``: it matches ``end`` too) are an operator's answers to an alert; ``health`` is
the start and the end of a camera health problem (``<prefix>/health``)."""
NOTIFY_EVENT_NAMES: tuple[NotifyEventName, ...] = get_args(NotifyEventName)
NotifyHazardName = Literal["fire", "smoke", "no_helmet"]
"""The hazards (same names as :data:`monitor.config.HazardName`)."""
NotifyHealthProblemName = Literal["offline", "frozen", "blank", "view_changed", "no_verdict",
                                  "model_unavailable"]
"""The camera health problems (same names as :class:`monitor.alerts.health.HealthProblem`,
which this layer cannot import)."""

_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitConfig(_Table):
    """At most ``max_messages`` per camera and hazard in any ``window_s``; what is held back
    goes out as one digest when the window allows again."""

    max_messages: int = Field(default=3, ge=1, description="Messages per camera+hazard per "
                              "window.")
    window_s: float = Field(default=300.0, gt=0, description="The window, seconds.")


def _default_events() -> list[NotifyEventName]:
    return ["start", "end"]


class _ChannelBase(_Table):
    """What every channel has: its name, filters, language, template, limits."""

    name: str = Field(description="Unique channel name (letters, digits, _ and -), used in "
                      "logs, metrics, /readyz and `monitor notify-test NAME`.")
    enabled: bool = Field(default=True, description="Send to this channel.")
    cameras: list[str] | None = Field(default=None, description="Camera ids; default: all.")
    hazards: list[NotifyHazardName] | None = Field(default=None,
                                                   description="Hazards; default: all.")
    events: list[NotifyEventName] = Field(
        default_factory=_default_events,
        description="Event types: start, update, end, ack, false_alarm, health.")
    language: Literal["en", "zh"] = Field(default="en", description="Default template language.")
    template: str | None = Field(
        default=None, description="Jinja2 template of the message text (sandboxed); default: "
        "the built-in one of `language`.")
    title_template: str | None = Field(default=None,
                                       description="Jinja2 template of the title/subject.")
    image: bool = Field(default=True, description="Attach the evidence image where the "
                        "service can carry one.")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig,
                                        description="Per camera and hazard.")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per request.")
    retry_cap_s: float = Field(default=300.0, ge=1, description="Longest wait between retries.")
    max_age_s: float = Field(default=86400.0, gt=0, description="Drop a notification that "
                             "could not be delivered for this long.")
    max_messages: int = Field(default=1000, ge=1, description="Queue bound of this channel.")
    health_problems: list[NotifyHealthProblemName] | None = Field(
        default=None, description="With event health: only these problems; default: all.")
    health_template: str | None = Field(
        default=None, description="Jinja2 template of a health event's text; default: the "
        "built-in one of `language`.")
    health_title_template: str | None = Field(
        default=None, description="Jinja2 template of a health event's title/subject.")
    schedule: str | None = Field(
        default=None, description="Quiet hours: name of a [schedules.<name>]; outside it the "
        "channel sends nothing (but urgent_hazards) and sends one digest of what it held back "
        "when the schedule is active again.")
    urgent_hazards: list[NotifyHazardName] = Field(
        default_factory=list, description="Alert steps of these hazards are sent outside "
        "`schedule` too (e.g. fire pages at night).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CHANNEL_NAME.match(value):
            raise ValueError("a channel name is 1-64 letters, digits, '_' or '-', starting "
                             "with a letter or digit")
        return value

    @field_validator("template", "title_template", "health_template", "health_title_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SandboxedEnvironment().parse(value)
            except TemplateError as exc:
                raise ValueError(f"not a valid Jinja2 template: {exc}") from None
        return value

    def secret_values(self) -> list[str]:
        """The channel's secrets as plain strings (for the redactor)."""
        values: list[str] = []
        for field_name in type(self).model_fields:
            value = getattr(self, field_name)
            if isinstance(value, SecretStr):
                values.extend(_secret_forms(value.get_secret_value()))
            elif isinstance(value, dict):
                values.extend(item.get_secret_value() for item in value.values()
                              if isinstance(item, SecretStr))
        return [value for value in values if value]


def _secret_forms(secret: str) -> list[str]:
    """A secret and, when it is a URL, the parts of it that carry the key: query values and
    path segments (a Feishu hook puts its token in the path)."""
    forms = [secret]
    try:
        parts = urlsplit(secret)
    except ValueError:
        return forms
    if parts.scheme in {"http", "https"} and parts.netloc:
        forms.extend(value for _key, value in parse_qsl(parts.query) if len(value) >= 8)
        forms.extend(segment for segment in parts.path.split("/") if len(segment) >= 16)
        if parts.password:
            forms.append(parts.password)
    return forms


def _check_http_url(secret: SecretStr, what: str) -> SecretStr:
    url = secret.get_secret_value()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"{what} must be an http:// or https:// URL")
    return secret


class WebhookChannel(_ChannelBase):
    """A JSON POST of the event to your own endpoint, signed with a shared secret."""

    type: Literal["webhook"]
    url: SecretStr = Field(description="Endpoint URL (a secret: it may carry a token).")
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key of the "
                                     "X-Monitor-Signature header.")
    headers: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="Extra request headers (values secret).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_http_url(value, "url")


class WecomChannel(_ChannelBase):
    """A WeCom (企业微信) group robot."""

    type: Literal["wecom"]
    url: SecretStr = Field(description="The robot's webhook URL, "
                           "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...")
    msgtype: Literal["markdown", "text"] = Field(default="markdown", description="Message type.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_http_url(value, "url")


class DingtalkChannel(_ChannelBase):
    """A DingTalk (钉钉) custom robot, signed mode when ``secret`` is set."""

    type: Literal["dingtalk"]
    url: SecretStr = Field(description="The robot's webhook URL, "
                           "https://oapi.dingtalk.com/robot/send?access_token=...")
    secret: SecretStr | None = Field(default=None, description="The robot's signing secret "
                                     "(SEC...), for the 加签 security setting.")
    msgtype: Literal["markdown", "text"] = Field(default="markdown", description="Message type.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_http_url(value, "url")


class FeishuChannel(_ChannelBase):
    """A Feishu/Lark custom bot, signed mode when ``secret`` is set."""

    type: Literal["feishu"]
    url: SecretStr = Field(description="The bot's webhook URL, "
                           "https://open.feishu.cn/open-apis/bot/v2/hook/...")
    secret: SecretStr | None = Field(default=None, description="The bot's signing secret.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_http_url(value, "url")


class TelegramChannel(_ChannelBase):
    """A Telegram bot posting to one chat."""

    type: Literal["telegram"]
    bot_token: SecretStr = Field(description="The token @BotFather gave (123456:ABC...).")
    chat_id: str = Field(min_length=1, description="Chat id (-100... for groups) or @channel.")
    api_url: str = Field(default="https://api.telegram.org", description="Bot API server.")

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        _check_http_url(SecretStr(value), "api_url")
        return value.rstrip("/")


class NtfyChannel(_ChannelBase):
    """An ntfy topic (ntfy.sh or your own server)."""

    type: Literal["ntfy"]
    url: SecretStr = Field(description="Topic URL, https://ntfy.sh/<topic> (a secret: on a "
                           "public server the topic name is the only protection).")
    token: SecretStr | None = Field(default=None, description="Access token (Bearer).")
    priority: int = Field(default=4, ge=1, le=5, description="ntfy priority of alert starts "
                          "and camera health problems (escalations get 5, the rest 3).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        return _check_http_url(value, "url")


class EmailChannel(_ChannelBase):
    """E-mail over SMTP, the evidence image attached."""

    type: Literal["email"]
    host: str = Field(min_length=1, description="SMTP server.")
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="Default: 587 (starttls), 465 (tls), 25 (none).")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls: upgrade a plain connection; tls: implicit "
        "TLS; none: plain (local relays only).")
    username: str | None = Field(default=None, description="SMTP login.")
    password: SecretStr | None = Field(default=None, description="SMTP password.")
    sender: str = Field(min_length=3, description="From: address.")
    recipients: list[str] = Field(min_length=1, description="To: addresses.")
    ca_file: str | None = Field(default=None, description="CA bundle for the server's "
                                "certificate (default: the system's).")

    @model_validator(mode="after")
    def _login(self) -> EmailChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def effective_port(self) -> int:
        """The port to connect to."""
        if self.port is not None:
            return self.port
        return {"starttls": 587, "tls": 465, "none": 25}[self.security]


NotifyChannelConfig = Annotated[
    WebhookChannel | WecomChannel | DingtalkChannel | FeishuChannel | TelegramChannel
    | NtfyChannel | EmailChannel,
    Field(discriminator="type"),
]
"""One ``[[notify]]`` table."""


def check_channel_names(channels: list[Any]) -> None:
    """Raise ``ValueError`` when two channels share a name."""
    seen: set[str] = set()
    for channel in channels:
        if channel.name in seen:
            raise ValueError(f"notify channel name {channel.name!r} is used twice; names "
                             "must be unique")
        seen.add(channel.name)


def channel_schedule_problems(channels: list[Any], schedules: Iterable[str]) -> list[str]:
    """One line per channel whose ``schedule`` names no ``[schedules.<name>]``."""
    known = sorted(schedules)
    return [f"notify.{index}.schedule: unknown schedule {channel.schedule!r} of channel "
            f"{channel.name!r} (defined: "
            f"{', '.join(known) or 'none; add [schedules.' + channel.schedule + ']'})"
            for index, channel in enumerate(channels)
            if channel.schedule is not None and channel.schedule not in known]


def channel_secrets(channels: list[Any]) -> list[str]:
    """Every secret of ``channels``, for the redactor."""
    return [value for channel in channels for value in channel.secret_values()]


def masked_channel(channel: _ChannelBase) -> dict[str, Any]:
    """A channel as plain data without its secrets: URLs show scheme and host only."""
    data: dict[str, Any] = channel.model_dump(mode="json")
    for field_name in type(channel).model_fields:
        value = getattr(channel, field_name)
        if isinstance(value, SecretStr):
            data[field_name] = _masked_secret(value.get_secret_value())
        elif isinstance(value, dict) and value:
            data[field_name] = dict.fromkeys(value, "***")
    return data


def _masked_secret(secret: str) -> str:
    try:
        parts = urlsplit(secret)
    except ValueError:
        return "***"
    if parts.scheme in {"http", "https"} and parts.hostname:
        return f"{parts.scheme}://{parts.hostname}/***"
    return "***"
