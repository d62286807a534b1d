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

import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.urls import redact_url
from monitor.verdict import Hazard

DEFAULT_CONFIG_PATH = Path("/etc/monitor/monitor.toml")
EX_CONFIG = 78
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


class VlmConfig(_Section):
    """The model server (vLLM's OpenAI-compatible API serving Qwen2.5-VL)."""

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
    max_pixels: int = Field(
        default=1280 * 28 * 28, ge=4 * 28 * 28, le=16384 * 28 * 28,
        description="Pixel budget of an image sent to the model (28x28 pixels = one token).",
    )
    min_pixels: int = Field(
        default=4 * 28 * 28, ge=4 * 28 * 28, description="Smallest image sent to the model."
    )
    jpeg_quality: int = Field(default=85, ge=30, le=100, description="JPEG quality, 30-100.")
    language: Literal["zh", "en"] = Field(
        default="zh", description="Prompt and answer language: zh (the seed's) or en."
    )
    structured_output: bool = Field(
        default=True,
        description="Ask for JSON constrained by a JSON schema (response_format json_schema); "
        "off: the seed's free-text format.",
    )
    max_tokens: int = Field(default=300, ge=16, le=4096, description="Answer length cap.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8000/v1, "
                             f"got {redact_url(value)!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _pixel_range(self) -> VlmConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels "
                             f"({self.max_pixels})")
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
        default=10_000, ge=10, description="Messages held while the broker is unreachable."
    )

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if any(char in value for char in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"must be a topic without wildcards (+, #) or leading/trailing "
                             f"'/', got {value!r}")
        return value


class DefaultsConfig(_Section):
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
    hazards: list[Hazard] = Field(
        default_factory=lambda: list(Hazard), min_length=1,
        description="Hazards watched: fire, smoke, no_helmet.",
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Deadline to open a stream, seconds."
    )
    read_timeout_s: float = Field(
        default=10.0, gt=0, le=120,
        description="A stream that delivers nothing for this long is reopened.",
    )


class CameraConfig(_Section):
    """One camera."""

    id: str = Field(description="Short id used in topics and logs: letters, digits, - and _.")
    url: str = Field(
        description="Stream URL: rtsp://, rtsps://, http(s)://, or a local file path."
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
    hazards: list[Hazard] | None = Field(default=None, min_length=1,
                                         description="Overrides defaults.hazards.")

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
        if scheme and scheme not in {"rtsp", "rtsps", "http", "https", "file"}:
            raise ValueError(f"unsupported scheme {scheme!r}; use rtsp, rtsps, http(s), "
                             f"or a file path")
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
        return self

    def camera_interval_s(self, camera: CameraConfig) -> float:
        """The sampling interval that applies to ``camera``."""
        return camera.interval_s if camera.interval_s is not None else self.defaults.interval_s

    def camera_hazards(self, camera: CameraConfig) -> list[Hazard]:
        """The hazards watched on ``camera``."""
        return camera.hazards if camera.hazards is not None else self.defaults.hazards

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data with every secret masked."""
        data = self.model_dump(mode="json")
        for camera in data["cameras"]:
            camera["url"] = redact_url(camera["url"])
        data["vlm"]["base_url"] = redact_url(data["vlm"]["base_url"])
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
    return config_from_mapping(data, source=str(path))


def config_from_mapping(data: dict[str, Any], *, source: str = "<config>") -> MonitorConfig:
    """Validate already-parsed configuration data (plus environment overrides)."""
    try:
        return MonitorConfig(**data)
    except ValidationError as exc:
        raise ConfigError([f"{source}: {line}" for line in describe_errors(exc)]) from None


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
        if error["type"] not in {"missing", "extra_forbidden"} and last not in _SECRET_FIELDS \
                and isinstance(error.get("input"), str | int | float | bool):
            shown = f" (got {redact_url(str(error['input']))!r})"
        if shown and repr(redact_url(str(error["input"]))) in message:
            shown = ""
        lines.append(f"{path}: {message}{shown}")
    return lines
