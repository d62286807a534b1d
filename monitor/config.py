"""The typed configuration tree: a TOML file plus ``MONITOR_`` environment overrides.

``load_config(path)`` is the only entry point. Environment variables win over the file
(``MONITOR_VLM__BASE_URL=...``, ``MONITOR_MQTT__PASSWORD=...``; ``__`` separates levels), so a
secret can stay out of the file. Unknown keys are errors, every field has a description, and
secrets are :class:`~pydantic.SecretStr`: they print as ``**********``.

Exceptions::

    Exception
    └── ConfigError  (one message per problem, each naming the field path)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.clipconfig import (
    ClipDefaults,
    ClipOverrides,
    ClipsConfig,
    ClipSettings,
    clip_problems,
    clip_settings,
)
from monitor.notifyconfig import (
    NotifyChannelConfig,
    channel_schedule_problems,
    channel_secrets,
    check_channel_names,
    masked_channel,
)
from monitor.redaction import redact
from monitor.rules.schedules import WEEKDAYS, WeeklySchedule, parse_time_range, timezone
from monitor.rules.zones import polygon_problem

HazardName = Literal["fire", "smoke", "no_helmet"]
"""The hazards a camera can watch (the model's answer names them the same way)."""
HAZARD_NAMES: tuple[HazardName, ...] = get_args(HazardName)

DEFAULT_CONFIG_PATH = Path("/etc/monitor/monitor.toml")
EX_CONFIG = 78
QUEUE_HEADROOM = 1
"""Default ``vlm.queue_headroom``: one request queued on each server beyond its batch hides
the gap between one answer and the next request (``bench/capacity.py``)."""
"""sysexits.h: configuration error. systemd's ``RestartPreventExitStatus=`` can name it."""

_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SECRET_FIELDS = {"password", "api_key"}


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _url_password(url: str) -> str | None:
    """The password embedded in ``url``, if any (so it is masked like the others)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def roi_problem(points: Sequence[tuple[float, float]]) -> str | None:
    """What is wrong with a region of interest, or ``None``: 2 points (rectangle corners)
    or 3 or more (polygon), fractions of the frame, with an area."""
    if len(points) < 2:
        return (f"a region of interest needs 2 points (rectangle) or 3 or more (polygon), "
                f"got {len(points)}")
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return f"region of interest points are fractions of the frame (0..1), got ({x}, {y})"
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    if max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
        return f"region of interest {list(points)} has no area"
    return None


def _api_root(value: str) -> str:
    """An http(s) API root such as ``http://127.0.0.1:8000/v1``, without trailing ``/``."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8000/v1, "
                         f"got {redact(value)!r}")
    return value.rstrip("/")


class EndpointConfig(_Section):
    """One vLLM server of the pool (``[[vlm.endpoints]]``)."""

    base_url: str = Field(description="OpenAI-compatible API root of this server, ending in /v1.")
    api_key: SecretStr | None = Field(
        default=None, description="This server's --api-key; default: vlm.api_key.")
    max_concurrency: int | None = Field(
        default=None, ge=1, le=1024,
        description="Requests in flight on this server (its --max-num-seqs); default: "
        "vlm.max_concurrency.")
    queue_headroom: int | None = Field(
        default=None, ge=0, le=64,
        description="Requests sent to this server beyond max_concurrency, which it queues; "
        "default: vlm.queue_headroom.")
    name: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Label in logs and metrics; default: the URL (password redacted).")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _api_root(value)


class VlmConfig(_Section):
    """The model server(s) (vLLM's OpenAI-compatible API serving Qwen2.5-VL)."""

    base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="OpenAI-compatible API root of the vLLM server, ending in /v1.",
    )
    model: str = Field(
        default="Qwen2.5-VL", description="The server's --served-model-name.", min_length=1
    )
    api_key: SecretStr = Field(
        default=SecretStr("EMPTY"), description="vLLM's --api-key, if the server sets one."
    )
    timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Deadline of one request, in seconds."
    )
    max_retries: int = Field(
        default=2, ge=0, le=10,
        description="Retries of a request after connection errors, 429 and 5xx answers.",
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=1024,
        description="Requests in flight at once across all cameras (match vLLM's max_num_seqs).",
    )
    queue_headroom: int = Field(
        default=QUEUE_HEADROOM, ge=0, le=64,
        description="Requests sent to each server beyond its max_concurrency, which the "
        "server queues: a place that frees in its batch is taken at once instead of idling "
        "while the next frame is encoded and sent; each can put an alerting camera's request "
        "behind one routine request on the server (0: none).")
    max_pixels: int = Field(
        default=1280 * 28 * 28, ge=4 * 28 * 28, le=16384 * 28 * 28,
        description="Pixel budget of an image sent to the model (28x28 pixels = one token).",
    )
    min_pixels: int = Field(
        default=4 * 28 * 28, ge=4 * 28 * 28, description="Smallest image sent to the model."
    )
    jpeg_quality: int = Field(default=85, ge=30, le=100, description="JPEG quality, 30-100.")
    language: Literal["zh", "en"] = Field(
        default="zh", description="Prompt and answer language: zh (Chinese, the default) or en."
    )
    structured_output: bool = Field(
        default=True,
        description="Ask for JSON constrained by a JSON schema (response_format json_schema); "
        "off: a labelled free-text answer (for servers without structured output).",
    )
    max_tokens: int = Field(
        default=800, ge=16, le=4096,
        description="Answer length cap: above the longest answer the JSON schema allows "
        "(~630 tokens), so no legal answer is cut; typical answers are 15-80 tokens.")
    endpoints: list[EndpointConfig] = Field(
        default_factory=list,
        description="Several vLLM servers ([[vlm.endpoints]]); empty: base_url alone.")
    max_frame_age_s: float = Field(
        default=6.0, gt=0, le=600,
        description="A frame older than this when its request's turn comes is dropped.")
    breaker_failures: int = Field(
        default=3, ge=1, le=100,
        description="Consecutive failures (connection, timeout, 429, 5xx) that take an "
        "endpoint out of the pool until GET /v1/models answers again.")
    breaker_probe_s: float = Field(
        default=2.0, gt=0, le=300,
        description="First delay before probing an endpoint taken out; doubles up to 60 s.")
    priority_scheduling: bool = Field(
        default=True,
        description="When every slot is busy, serve cameras with an unconfirmed positive or "
        "an active alert first, then cameras whose verdict nears max_verdict_age_s, then by "
        "camera priority, then the least recently analysed; false: first come, first served.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _api_root(value)

    @model_validator(mode="after")
    def _pixel_range(self) -> VlmConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels "
                             f"({self.max_pixels})")
        if self.endpoints and "base_url" in self.model_fields_set:
            raise ValueError("set either vlm.base_url (one server) or [[vlm.endpoints]] "
                             "(several), not both")
        urls = [endpoint.base_url for endpoint in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("vlm.endpoints lists the same base_url twice")
        return self


class MqttConfig(_Section):
    """The MQTT broker that receives alerts."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name or IP.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    username: str | None = Field(default=None, description="User name, if the broker wants one.")
    password: SecretStr | None = Field(default=None, description="Password for username.")
    topic_prefix: str = Field(
        default="monitor", min_length=1, description="First level of every topic."
    )
    client_id: str = Field(
        default_factory=lambda: f"monitor-{socket.gethostname()}",
        min_length=1, max_length=128,
        description="MQTT client id; unique per daemon (the broker drops duplicates).",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive, seconds.")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of events and state topics.")
    queue_size: int = Field(
        default=10_000, ge=10,
        description="Messages the durable outbox holds while the broker is unreachable "
        "(oldest dropped beyond, counted and logged).",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    tls: bool = Field(
        default=False, description="Connect with TLS (implied by ca_file or cert_file)."
    )
    ca_file: Path | None = Field(
        default=None, description="CA certificate(s) (PEM) that signed the broker's "
        "certificate; default: the system's trust store."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(
        default=None, description="Client private key (PEM) for cert_file."
    )
    tls_insecure: bool = Field(
        default=False, description="Skip the broker host name check (test setups only)."
    )
    outbox_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024,
        description="Payload bytes the outbox holds at most (oldest dropped beyond).",
    )
    outbox_max_age_s: float = Field(
        default=7 * 86400.0, gt=0,
        description="Events older than this are dropped from the outbox (counted, logged).",
    )
    discovery: bool = Field(
        default=False, description="Publish Home Assistant MQTT discovery (binary sensors)."
    )
    discovery_prefix: str = Field(
        default="homeassistant", min_length=1,
        description="Home Assistant's discovery prefix.",
    )
    snapshots: bool = Field(
        default=True,
        description="Publish the evidence JPEG retained on <prefix>/<camera>/<hazard>/snapshot.",
    )

    @model_validator(mode="after")
    def _tls_and_credentials(self) -> MqttConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not; set both")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is TLS."""
        return self.tls or self.ca_file is not None or self.cert_file is not None

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if any(char in value for char in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"must be a topic without wildcards (+, #) or leading/trailing "
                             f"'/', got {value!r}")
        return value


def _zone_polygon(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    problem = polygon_problem(points)
    if problem:
        raise ValueError(problem)
    return points


ZonePolygon = Annotated[list[tuple[float, float]], AfterValidator(_zone_polygon)]
"""A zone's points: [x, y] fractions of the frame, at least 3, with an area."""


class ScheduleExceptionConfig(_Section):
    """A dated exception of a schedule: a holiday (no ranges) or a day with other hours."""

    date: dt.date = Field(description="Local date, a TOML date: 2026-12-25.")
    ranges: list[str] = Field(
        default_factory=list, description="That day's ranges instead of its weekday's "
        "(empty: not active that day).")
    note: str = Field(default="", max_length=100, description="Why (for people reading it).")

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_time_range(text)
        return value


class ScheduleConfig(_Section):
    """A named weekly schedule (``[schedules.<name>]``): local time ranges per weekday."""

    timezone: str = Field(default="UTC", description="IANA timezone of the ranges, e.g. "
                          "Europe/Berlin (wall-clock hours are kept across DST changes).")
    monday: list[str] = Field(default_factory=list, description='Ranges "HH:MM-HH:MM"; '
                              '"22:00-06:00" runs into the next day; "00:00-24:00": all day.')
    tuesday: list[str] = Field(default_factory=list, description="As monday.")
    wednesday: list[str] = Field(default_factory=list, description="As monday.")
    thursday: list[str] = Field(default_factory=list, description="As monday.")
    friday: list[str] = Field(default_factory=list, description="As monday.")
    saturday: list[str] = Field(default_factory=list, description="As monday.")
    sunday: list[str] = Field(default_factory=list, description="As monday.")
    exceptions: list[ScheduleExceptionConfig] = Field(
        default_factory=list, description="Dated exceptions (holidays, short days).")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        timezone(value)
        return value

    @field_validator(*WEEKDAYS)
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_time_range(text)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ScheduleConfig:
        dates = [exception.date for exception in self.exceptions]
        if len(set(dates)) != len(dates):
            raise ValueError("an exception date is listed twice")
        if not any(getattr(self, day) for day in WEEKDAYS) \
                and not any(exception.ranges for exception in self.exceptions):
            raise ValueError("the schedule has no time range on any day: it would never be "
                             "active (remove it, or add ranges such as monday = "
                             '["07:00-17:00"])')
        return self

    def build(self, name: str) -> WeeklySchedule:
        """The schedule as the rules evaluate it."""
        return WeeklySchedule.parse(name, self.timezone,
                                    {day: getattr(self, day) for day in WEEKDAYS},
                                    {e.date: e.ranges for e in self.exceptions})


class HazardRulesConfig(_Section):
    """Site rules of one hazard (``[defaults.rules.<hazard>]``, ``[cameras.rules.<hazard>]``;
    a camera's setting wins over the default's)."""

    schedule: str | None = Field(
        default=None, description="Name of a [schedules.<name>]: the hazard is only asked "
        "about while it is active; a raised alert ends (end_reason schedule) when it ends.")
    min_duration_s: float | None = Field(
        default=None, ge=0, le=86400, description="An alert starts only once the hazard has "
        "been seen this long (capture times, first positive to now, no negative between), "
        "on top of confirm_frames.")
    escalate_after_s: float | None = Field(
        default=None, gt=0, le=7 * 86400, description="An alert still raised this long after "
        "its start gets an update event with severity high.")
    include_zones: list[str] | None = Field(
        default=None, description="Cameras only: the hazard counts only inside these zones.")
    exclude_zones: list[str] | None = Field(
        default=None, description="Cameras only: the hazard is ignored inside these zones.")
    min_overlap: float | None = Field(
        default=None, gt=0, le=1, description="Fire and smoke boxes: share of a box inside a "
        "zone for it to be in the zone (default 0.5).")


class DefaultsConfig(ClipDefaults, _Section):
    """Settings every camera inherits unless it overrides them."""

    interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="Seconds between analysed frames per camera."
    )
    confirm_frames: int = Field(
        default=2, ge=1, le=100,
        description="Consecutive positive verdicts that raise an alert.",
    )
    clear_frames: int = Field(
        default=3, ge=1, le=100,
        description="Consecutive negative verdicts that clear an alert.",
    )
    window_frames: int | None = Field(
        default=None, ge=1, le=1000,
        description="K of N: confirm_frames positives within this many verdicts raise an "
        "alert (default: confirm_frames, i.e. consecutive).",
    )
    clear_after_s: float | None = Field(
        default=None, gt=0, description="Also clear an alert after this many seconds "
        "without a positive verdict (default: only clear_frames).",
    )
    cooldown_s: float = Field(
        default=0.0, ge=0, description="Seconds after an alert ended before the same hazard "
        "on the same camera can be raised again.",
    )
    uncertain: Literal["neither", "positive"] = Field(
        default="neither", description="How an uncertain answer counts: neither (no effect) "
        "or positive.",
    )

    @model_validator(mode="after")
    def _window(self) -> DefaultsConfig:
        if self.window_frames is not None and self.window_frames < self.confirm_frames:
            raise ValueError(f"window_frames ({self.window_frames}) must be at least "
                             f"confirm_frames ({self.confirm_frames})")
        return self

    hazards: list[HazardName] = Field(
        default_factory=lambda: list(HAZARD_NAMES), min_length=1,
        description="Hazards watched: fire, smoke, no_helmet.",
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Deadline to open a stream, seconds."
    )
    read_timeout_s: float = Field(
        default=10.0, gt=0, le=120,
        description="Read timeout until a stream's frame rate is known; afterwards a stream "
        "silent for 10 frame intervals (at least 2 s) is reported offline and reopened.",
    )
    backend: Literal["pyav", "opencv"] = Field(
        default="pyav", description="Stream reader: pyav (keyframe-only decoding possible) or "
        "opencv (decodes every frame).",
    )
    decode: Literal["auto", "keyframes", "all"] = Field(
        default="auto", description="auto: keyframes only when interval_s >= the GOP measured "
        "from the stream, else all frames; keyframes / all force it (pyav only).",
    )
    rtsp_client: Literal["builtin", "ffmpeg"] = Field(
        default="builtin", description="pyav backend, rtsp:// over TCP: builtin (a lean "
        "RTSP/RTP receiver for H.264 and H.265, a fifth of FFmpeg's receive cost; other "
        "streams fall back to FFmpeg by themselves) or ffmpeg (FFmpeg's RTSP demuxer).",
    )
    change_gate: bool = Field(
        default=True, description="Skip the model when the scene has not changed since the "
        "last analysed frame (the last verdict stands until max_verdict_age_s).",
    )
    change_threshold: float = Field(
        default=0.005, ge=0, lt=1, description="Change gate: fraction of a 64-pixel-wide grey "
        "thumbnail that must change for a frame to count as a new scene.",
    )
    max_verdict_age_s: float = Field(
        default=60.0, gt=0, le=86400, description="Change gate: an unchanged scene is "
        "analysed anyway once the last verdict is this old.",
    )
    confirm_min_gap_s: float = Field(
        default=0.5, ge=0, le=3600, description="Confirm-now: after a positive verdict the "
        "next new frame is analysed at once, but at least this long after the previous one.",
    )
    status_heartbeat_s: float = Field(
        default=60.0, ge=5, le=3600, description="Camera status is published on every change "
        "and at least this often.",
    )
    rules: dict[HazardName, HazardRulesConfig] = Field(
        default_factory=dict, description="Site rules per hazard for every camera: schedule, "
        "min_duration_s, escalate_after_s (zones are per camera).")


class CameraConfig(ClipOverrides, _Section):
    """One camera."""

    id: str = Field(description="Short id used in topics and logs: letters, digits, - and _.")
    url: str = Field(
        description="Stream URL: rtsp://, rtsps://, http(s)://, a local file path, or a "
        "V4L2 device (/dev/video0)."
    )
    username: str | None = Field(default=None, description="Stream user name.")
    password: SecretStr | None = Field(default=None, description="Stream password.")
    enabled: bool = Field(default=True, description="false: configured but not watched.")
    transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTSP transport.")
    loop: bool = Field(
        default=False,
        description="Local files only: play again from the start at the end, in real time.",
    )
    interval_s: float | None = Field(default=None, gt=0, le=3600,
                                     description="Overrides defaults.interval_s.")
    hazards: list[HazardName] | None = Field(default=None, min_length=1,
                                         description="Overrides defaults.hazards.")
    context: str = Field(
        default="", max_length=500,
        description="Sent to the model after the image, e.g. 'welding happens here; sparks "
        "are not fire'.")
    backend: Literal["pyav", "opencv"] | None = Field(
        default=None, description="Overrides defaults.backend.")
    decode: Literal["auto", "keyframes", "all"] | None = Field(
        default=None, description="Overrides defaults.decode.")
    rtsp_client: Literal["builtin", "ffmpeg"] | None = Field(
        default=None, description="Overrides defaults.rtsp_client.")
    change_gate: bool | None = Field(default=None, description="Overrides defaults.change_gate.")
    roi: list[tuple[float, float]] | None = Field(
        default=None, description="Region analysed, as [x, y] fractions of the frame (0..1): "
        "2 points = rectangle corners, 3 or more = polygon. Cropped before resizing.")
    priority: int = Field(
        default=0, ge=0, le=100, description="Under overload, cameras of higher priority "
        "get model slots first (after alerting and overdue ones); 0-100.")

    schedule: str | None = Field(
        default=None, description="Name of a [schedules.<name>]: outside it the camera is "
        "not analysed and its alerts end (end_reason schedule).")
    zones: dict[str, ZonePolygon] = Field(
        default_factory=dict, description="Named polygons, [x, y] fractions of the frame "
        "(0..1), at least 3 points, for rules.<hazard>.include_zones / exclude_zones.")
    rules: dict[HazardName, HazardRulesConfig] = Field(
        default_factory=dict, description="Site rules per hazard; each setting overrides "
        "defaults.rules.<hazard>.")

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, value: dict[str, ZonePolygon]) -> dict[str, ZonePolygon]:
        for name in value:
            if not _CAMERA_ID.match(name):
                raise ValueError(f"zone name {name!r}: use 1-64 letters, digits, '-' or '_'")
        return value

    @field_validator("roi")
    @classmethod
    def _roi(cls, value: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if value is None:
            return None
        problem = roi_problem(value)
        if problem:
            raise ValueError(f"{problem}; e.g. roi = [[0.0, 0.5], [1.0, 1.0]] for the lower half")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _CAMERA_ID.match(value):
            raise ValueError(f"must be 1-64 letters, digits, '-' or '_' (it becomes an MQTT "
                             f"topic level), got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme and scheme not in {"rtsp", "rtsps", "http", "https", "file", "v4l2"}:
            raise ValueError(f"unsupported scheme {scheme!r}; use rtsp, rtsps, http(s), "
                             f"a file path or a V4L2 device such as /dev/video0")
        return value


class TelemetryConfig(_Section):
    """The HTTP endpoint for health checks and Prometheus metrics."""

    enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics.")
    host: str = Field(default="127.0.0.1",
                      description="Listen address; loopback keeps it off the network.")
    port: int = Field(default=9108, ge=0, le=65535, description="TCP port (0: any free one).")


class LoggingConfig(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe level logged."
    )
    format: Literal["auto", "text", "json"] = Field(
        default="auto",
        description="auto: text, without timestamps when stderr is the journal; "
        "json: one JSON object per line.",
    )


class SnapshotsConfig(_Section):
    """Evidence: the frame that started or updated an alert, saved as JPEG with boxes drawn."""

    enabled: bool = Field(default=True, description="Save evidence JPEGs.")
    max_count: int = Field(default=1000, ge=1, description="Keep at most this many files.")
    max_age_s: float = Field(default=30 * 86400.0, gt=0,
                             description="Delete files older than this.")
    max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024,
                           description="Keep at most this many bytes of files.")
    url_prefix: str | None = Field(
        default=None, description="If set, events carry <url_prefix>/<file path relative to "
        "the snapshot directory> (a web server you run serves the files)."
    )
    jpeg_quality: int = Field(default=85, ge=30, le=100, description="JPEG quality.")


class ConsoleConfig(_Section):
    """The operator console: web pages and a JSON API on the telemetry server's address.

    Off loopback it needs ``token`` or ``username`` + ``password`` (the daemon refuses to start
    otherwise); actions (acknowledge, false alarm, missed hazard) need them always.
    """

    enabled: bool = Field(default=True, description="Serve the console on [telemetry]'s "
                          "host and port (needs telemetry.enabled).")
    samples_per_camera: int = Field(default=8, ge=1, le=200, description="Analysed frames "
                                    "kept in memory per camera (JPEG as sent to the model).")
    max_events: int = Field(default=500, ge=10, le=100000,
                            description="Alerts kept in memory for the events page.")
    token: SecretStr | None = Field(default=None, description="Bearer token (header "
                                    "'Authorization: Bearer ...' or the login form).")
    username: str | None = Field(default=None, description="Login name, with password.")
    password: SecretStr | None = Field(default=None, description="Login password.")
    false_alarm_hold_s: float = Field(default=600.0, ge=0, description="After a false "
                                      "alarm, the same hazard on that camera stays quiet this "
                                      "long.")
    false_alarm_scene_change: float = Field(
        default=0.05, gt=0, le=1, description="The hold ends early when this fraction of the "
        "scene (a 64-pixel-wide grey thumbnail) differs from the false alarm's frame.")
    feedback_dir: Path | None = Field(default=None, description="Where operator labels go "
                                      "(manifest.csv + JPEGs, read by `monitor eval`); "
                                      "default: <state_dir>/feedback.")
    mqtt_commands: bool = Field(default=False, description="Also take the actions from "
                                "MQTT (<prefix>/console/ack, false_alarm, missed): the "
                                "broker's ACL decides who may publish them.")

    @model_validator(mode="after")
    def _login_pair(self) -> ConsoleConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("console: set both username and password, or neither")
        return self

    @property
    def has_credentials(self) -> bool:
        """Whether a token or a user/password is configured."""
        return self.token is not None or self.password is not None


class HealthConfig(_Section):
    """Camera health events: how long each problem must last before its event starts."""

    enabled: bool = Field(default=True, description="Publish health events.")
    offline_after_s: float = Field(
        default=60.0, ge=0, le=86400, description="A camera offline (no frames) this long.")
    frozen_after_s: float = Field(
        default=60.0, ge=0, le=86400,
        description="New frames arrive but the picture has not changed at all for this long.")
    blank_after_s: float = Field(
        default=30.0, ge=0, le=86400,
        description="The picture has been uniform (black, white, covered) this long.")
    view_changed_after_s: float = Field(
        default=300.0, ge=0, le=86400,
        description="The scene has not resembled the camera's usual view (turned away, "
        "knocked) for this long.")
    no_verdict_after_s: float = Field(
        default=300.0, ge=0, le=86400,
        description="An online camera's scene has not been judged for this long.")
    model_unavailable_after_s: float = Field(
        default=60.0, ge=0, le=86400,
        description="Every model endpoint has been out of service this long.")
    blank_max_contrast: float = Field(
        default=4.0, ge=0, le=64,
        description="A thumbnail whose grey levels vary by at most this standard deviation "
        "is blank.")
    view_min_similarity: float = Field(
        default=0.5, ge=-1, le=1,
        description="Correlation with the usual view (-1..1) below which the view changed.")


class VerificationConfig(_Section):
    """Zoom-in verification of positive verdicts (``[verification]``)."""

    hazards: list[HazardName] = Field(
        default_factory=lambda: list[HazardName](["no_helmet"]),
        description="Hazards whose positive verdicts are checked on crops of their boxes "
        "before they count toward an alert (empty: none).",
    )
    margin: float = Field(
        default=0.3, ge=0, le=3,
        description="Context around a box in the crop, as a fraction of the box's size on each "
        "side.",
    )
    max_crops: int = Field(
        default=3, ge=1, le=20,
        description="Most boxes checked per hazard and verdict (the largest first).",
    )
    max_tokens: int = Field(
        default=48, ge=8, le=256, description="Answer length cap of a focused question.",
    )


class MonitorConfig(BaseSettings):
    """The whole configuration of one daemon."""

    model_config = SettingsConfigDict(
        env_prefix="MONITOR_", env_nested_delimiter="__", extra="forbid",
        validate_default=True,
    )

    vlm: VlmConfig = Field(default_factory=VlmConfig, description="The model server.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="The MQTT broker.")
    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig,
                                     description="Per-camera defaults.")
    cameras: list[CameraConfig] = Field(default_factory=list, description="The cameras.")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig,
                                       description="Health and metrics endpoint.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    state_dir: Path = Field(
        default=Path("/var/lib/monitor"),
        description="Writable directory for the outbox database and evidence snapshots "
        "(systemd's StateDirectory=monitor).",
    )
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig,
                                       description="Evidence images of alerts.")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig,
                                   description="The operator console (web pages, JSON API).")
    clips: ClipsConfig = Field(default_factory=ClipsConfig,
                               description="Evidence clips of alerts, all cameras together.")
    notify: list[NotifyChannelConfig] = Field(
        default_factory=list, description="Notification channels ([[notify]] tables).")
    schedules: dict[str, ScheduleConfig] = Field(
        default_factory=dict, description="Named weekly schedules for site rules.")
    health: HealthConfig = Field(default_factory=HealthConfig,
                                 description="Camera health events.")
    verification: VerificationConfig = Field(
        default_factory=VerificationConfig,
        description="Zoom-in verification of positive verdicts.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, so ``MONITOR_...`` overrides what the file (init) says."""
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> MonitorConfig:
        seen: set[str] = set()
        for camera in self.cameras:
            if camera.id in seen:
                raise ValueError(f"camera id {camera.id!r} is used twice; ids must be unique")
            seen.add(camera.id)
        problems = clip_problems(self.defaults, [(c.id, c, c.backend or self.defaults.backend)
                                                 for c in self.cameras if c.enabled],
                                 self.clips, self.snapshots.enabled)
        if problems:
            raise ValueError("; ".join(problems))
        check_channel_names(self.notify)
        return self

    @model_validator(mode="after")
    def _console_off_loopback_needs_credentials(self) -> MonitorConfig:
        console, telemetry = self.console, self.telemetry
        if console.enabled and telemetry.enabled and not console.has_credentials \
                and not is_loopback_host(telemetry.host):
            raise ValueError(
                f"telemetry.host is {telemetry.host!r}, not loopback, and the operator console "
                f"would be reachable without login: set console.token (or console.username "
                f"and console.password), or console.enabled = false")
        return self

    def camera_interval_s(self, camera: CameraConfig) -> float:
        """The sampling interval that applies to ``camera``."""
        return camera.interval_s if camera.interval_s is not None else self.defaults.interval_s

    def camera_clip(self, camera: CameraConfig) -> ClipSettings | None:
        """The evidence clip settings of ``camera``; ``None`` when its clips are off."""
        return clip_settings(self.defaults, camera, camera.backend or self.defaults.backend,
                             self.snapshots.enabled)

    def camera_hazards(self, camera: CameraConfig) -> list[HazardName]:
        """The hazards watched on ``camera``."""
        return camera.hazards if camera.hazards is not None else self.defaults.hazards

    def secret_values(self) -> list[str]:
        """Every secret in the configuration, for the log redaction filter."""
        secrets = [self.vlm.api_key.get_secret_value()]
        secrets.extend(endpoint.api_key.get_secret_value() for endpoint in self.vlm.endpoints
                       if endpoint.api_key is not None)
        if self.mqtt.password is not None:
            secrets.append(self.mqtt.password.get_secret_value())
        for camera in self.cameras:
            if camera.password is not None:
                secrets.append(camera.password.get_secret_value())
            embedded = _url_password(camera.url)
            if embedded:
                secrets.append(embedded)
        secrets.extend(secret.get_secret_value() for secret in
                       (self.console.token, self.console.password) if secret is not None)
        secrets.extend(channel_secrets(self.notify))
        placeholder = VlmConfig.model_fields["api_key"].get_default(call_default_factory=True)
        return [secret for secret in secrets
                if secret and secret != placeholder.get_secret_value()]

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data with every secret masked."""
        data = self.model_dump(mode="json")
        for camera in data["cameras"]:
            camera["url"] = redact(camera["url"])
        data["vlm"]["base_url"] = redact(data["vlm"]["base_url"])
        for endpoint in data["vlm"]["endpoints"]:
            endpoint["base_url"] = redact(endpoint["base_url"])
        data["notify"] = [masked_channel(channel) for channel in self.notify]
        return data


def load_config(path: Path) -> MonitorConfig:
    """Read ``path`` (TOML), apply ``MONITOR_`` environment overrides, validate.

    Raises:
        ConfigError: one line per problem, each naming the file and the field path.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = (f"{path}: file not found (pass -c PATH or create it from "
                   "config/monitor.example.toml)")
        raise ConfigError([problem]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    apply_credentials(data, os.environ.get("CREDENTIALS_DIRECTORY"))
    return config_from_mapping(data, source=str(path))


CREDENTIAL_FILES = {
    "mqtt_password": ("mqtt", "password"),
    "vlm_api_key": ("vlm", "api_key"),
}
"""systemd credential name → (section, key). Cameras: ``camera_<id>_password``."""


def apply_credentials(data: dict[str, Any], directory: str | None) -> None:
    """Fill secrets from systemd credentials (``LoadCredential=``), which win over the file.

    systemd puts each credential in ``$CREDENTIALS_DIRECTORY/<name>``, readable only by the
    service; environment variables still win over both (pydantic-settings applies them later).
    """
    if not directory:
        return
    base = Path(directory)

    def read(name: str) -> str | None:
        path = base / name
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError([f"credential {name}: cannot read: {exc.strerror}"]) from None

    for name, (section, key) in CREDENTIAL_FILES.items():
        value = read(name)
        if value is not None:
            data.setdefault(section, {})[key] = value
    for camera in data.get("cameras", []):
        if isinstance(camera, dict) and isinstance(camera.get("id"), str):
            value = read(f"camera_{camera['id']}_password")
            if value is not None:
                camera["password"] = value


def config_from_mapping(data: dict[str, Any], *, source: str = "<config>") -> MonitorConfig:
    """Validate already-parsed configuration data (plus environment overrides)."""
    try:
        config = MonitorConfig(**data)
    except ValidationError as exc:
        raise ConfigError([f"{source}: {line}" for line in describe_errors(exc)]) from None
    problems = site_rule_problems(config)
    problems.extend(channel_schedule_problems(config.notify, config.schedules))
    if problems:
        raise ConfigError([f"{source}: {line}" for line in problems])
    return config


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per validation error: ``field.path: problem (got value)``, secrets masked."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "<root>"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config/monitor.example.toml)"
        elif error["type"] == "missing":
            message = "required key is missing"
        shown = ""
        last = str(error["loc"][-1]) if error["loc"] else ""
        # A [[notify]] value may be a bot key or a URL carrying one: never quoted back.
        if error["type"] not in {"missing", "extra_forbidden"} and last not in _SECRET_FIELDS \
                and error["loc"][:1] != ("notify",) \
                and isinstance(error.get("input"), str | int | float | bool):
            shown = f" (got {redact(str(error['input']))!r})"
        if shown and repr(redact(str(error["input"]))) in message:
            shown = ""
        lines.append(f"{path}: {message}{shown}")
    return lines


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on the loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def site_rule_problems(config: MonitorConfig) -> list[str]:
    """Site rules naming what does not exist, one line per problem: unknown schedules, zones
    set in ``[defaults.rules]`` (zones are per camera), unknown zone names of a camera."""
    problems = []
    known = sorted(config.schedules)

    def schedule_problem(path: str, name: str | None) -> None:
        if name is not None and name not in config.schedules:
            problems.append(f"{path}: unknown schedule {name!r} (defined: "
                            f"{', '.join(known) or 'none; add [schedules.' + name + ']'})")

    for hazard, rules in config.defaults.rules.items():
        schedule_problem(f"defaults.rules.{hazard}.schedule", rules.schedule)
        problems.extend(f"defaults.rules.{hazard}.{key}: zones are per camera; set it in "
                        f"[cameras.rules.{hazard}]"
                        for key in ("include_zones", "exclude_zones")
                        if getattr(rules, key) is not None)
    for index, camera in enumerate(config.cameras):
        schedule_problem(f"cameras.{index}.schedule", camera.schedule)
        for hazard, rules in camera.rules.items():
            path = f"cameras.{index}.rules.{hazard}"
            schedule_problem(f"{path}.schedule", rules.schedule)
            problems.extend(
                f"{path}.{key}: unknown zone {zone!r} on camera {camera.id!r} "
                f"(its zones: {', '.join(camera.zones) or 'none'})"
                for key in ("include_zones", "exclude_zones")
                for zone in getattr(rules, key) or () if zone not in camera.zones)
    return problems
