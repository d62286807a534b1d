"""JSON Schemas of the console's API answers and of its MQTT commands.

The models describe what :mod:`monitor.console.state` serialises (``to_json``); the files in
``docs/schemas/console/`` are generated from them::

    python -m monitor.console.schemas docs/schemas/console
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from monitor.alerts import payloads

HazardName = Literal["fire", "smoke", "no_helmet"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OverlayBoxModel(_Model):
    """A located region, in pixels of the served JPEG."""

    hazard: HazardName
    label: str
    x1: float
    y1: float
    x2: float
    y2: float


class ZoneModel(_Model):
    """A camera's named zone: ``points`` as ``[x, y]`` (fractions of the frame in a camera,
    pixels of the served JPEG in a sample)."""

    name: str
    points: list[list[float]]


class CropModel(_Model):
    """One zoom-in crop, in pixels of the served JPEG, and what the model said of it."""

    x1: float
    y1: float
    x2: float
    y2: float
    answer: Literal["yes", "no", "uncertain"] | None
    seen: str
    agrees: bool = Field(description="Whether this crop confirmed the hazard.")
    error: str | None


class SampleVerificationModel(_Model):
    """The zoom-in verification of one hazard of a sample."""

    hazard: HazardName
    outcome: Literal["confirmed", "rejected", "failed", "unverified"]
    text: str = Field(description="The outcome in words (e.g. 'rejected by zoom-in').")
    checks: list[CropModel]


class HealthModel(_Model):
    """An active camera health problem."""

    problem: Literal["offline", "frozen", "blank", "view_changed", "no_verdict",
                     "model_unavailable"]
    since: str = Field(description="When the problem began.")
    detail: str
    daemon_wide: bool = Field(description="The daemon's problem (every camera has it).")


class CropEvidenceModel(_Model):
    """A zoom-in crop's evidence JPEG: its file and where the console serves it."""

    path: str
    url: str


class SampleModel(_Model):
    """One analysed frame (``image``: the JPEG as sent to the model)."""

    id: int = Field(description="Sample id; its JPEG is /api/frames/<id>.jpg.")
    camera: str
    captured_at: str
    analysed_at: str
    latency_s: float
    frame_age_s: float = Field(description="How old the frame was when its answer came "
                               "(analysed_at - captured_at), seconds.")
    model: str
    width: int
    height: int
    summary: str = Field(description="The verdict in words.")
    hazards: list[HazardName] = Field(description="Hazards the answer reports.")
    boxes: list[OverlayBoxModel]
    answer: dict[str, Any] = Field(description="The model's answer (verdict schema's answer).")
    image: str
    zones: list[ZoneModel] = Field(description="The camera's zones, in served JPEG pixels.")
    verification: list[SampleVerificationModel]


class AlertStepModel(_Model):
    """One step of an alert: start, update, end, or an operator's ack."""

    type: Literal["start", "update", "end", "ack"]
    revision: int
    at: str
    detail: str
    confirming_verdicts: int
    verdicts: list[dict[str, Any]]
    snapshot: str | None = Field(description="Evidence image path on the daemon's host.")
    missing_helmets: int | None
    by: str | None
    severity: Literal["normal", "high"]
    zones: list[str]
    verification: dict[str, Any] | None = Field(
        description="Zoom-in verification of the step's hazard (event schema's verification).")


class AlertModel(_Model):
    """An alert with its steps."""

    id: str
    camera: str
    hazard: HazardName
    active: bool
    started_at: str
    ended_at: str | None
    end_reason: str | None
    detail: str
    acknowledged_by: str | None
    acknowledged_at: str | None
    snapshot: str | None
    steps: list[AlertStepModel]
    severity: Literal["normal", "high"] = Field(description="high once escalated.")
    zones: list[str] = Field(description="Zones where the hazard was seen (latest).")
    clip: dict[str, Any] | None = Field(description="The evidence clip (event schema's clip); "
                                        "served at /api/evidence/<id>/clip.mp4 once ready.")
    verification: dict[str, Any] | None = Field(description="The newest verification.")
    crops: list[CropEvidenceModel] = Field(description="Its crops' evidence JPEGs.")


class StreamModel(_Model):
    """A camera's stream as the console shows it."""

    state: str = Field(description="connecting, online, offline, unauthorized or stopped.")
    detail: str = Field(description="Online: size, codec and frame rate; else the last error.")


class CameraModel(_Model):
    """A camera as the console shows it."""

    id: str
    context: str
    hazards: list[HazardName]
    roi: list[list[float]] | None
    zones: list[ZoneModel]
    health: list[HealthModel] = Field(description="Active health problems, oldest first.")
    stream: StreamModel | None = Field(description="The stream's newest status; null before "
                                       "the first.")
    latest: SampleModel | None
    active_alerts: list[AlertModel]


class CamerasAnswer(_Model):
    """``GET /api/cameras``."""

    cameras: list[CameraModel]


class VerdictsAnswer(_Model):
    """``GET /api/cameras/<camera>/verdicts`` (newest first)."""

    camera: str
    verdicts: list[SampleModel]


class EventsAnswer(_Model):
    """``GET /api/events`` (newest first)."""

    events: list[AlertModel]


class AlertCommand(_Model):
    """MQTT ``<prefix>/console/ack`` and ``<prefix>/console/false_alarm``."""

    id: str = Field(description="The alert's id (the events' ``id``).")
    by: str = Field(default="mqtt", max_length=80, description="Who acts (logged, published).")


class MissedCommand(_Model):
    """MQTT ``<prefix>/console/missed``: the camera's newest analysed frame shows ``hazard``."""

    camera: str
    hazard: HazardName
    by: str = Field(default="mqtt", max_length=80, description="Who acts (logged).")


def schema_models() -> dict[str, type[BaseModel]]:
    """File stem → model."""
    return {"cameras": CamerasAnswer, "verdicts": VerdictsAnswer, "events": EventsAnswer,
            "alert": AlertModel, "command-alert": AlertCommand, "command-missed": MissedCommand}


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; returns the files."""
    return payloads.write_schemas(directory, schema_models())


if __name__ == "__main__":  # pragma: no cover - `python -m monitor.console.schemas DIR`
    for written in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas/"
                                      "console")):
        print(written)  # noqa: T201
