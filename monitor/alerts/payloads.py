"""MQTT payloads and topic names: the public interface of the alerts, as pydantic models.

These models are the single source of truth for what subscribers receive:
``python -m monitor.alerts.payloads docs/schemas`` writes their JSON Schemas, and a test checks that
the committed files are current. They depend on the model's answer types only (what a verdict
says), never on ingest or I/O modules: building a payload is pure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from monitor.alerts.discovery import BinarySensorDiscovery
from monitor.alerts.health import HealthEvent, HealthProblem
from monitor.alerts.tracker import AlertEvent, Observation
from monitor.model.answer import Answer, Hazard, Verdict
from monitor.model.verify import CropCheck, HazardCheck, agrees


def iso_time(epoch_s: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObservationPayload(_Payload):
    """One verdict behind an event step."""

    captured_at: str = Field(description="Capture time of the analysed frame (ISO 8601 UTC).")
    positive: bool = Field(description="Whether the verdict reported the hazard.")
    detail: str = Field(description="The model's description.")
    missing_helmets: int | None = Field(description="no_helmet: people without a hard hat.")

    @classmethod
    def from_observation(cls, seen: Observation) -> ObservationPayload:
        """The wire form of a tracker observation."""
        return cls(captured_at=iso_time(seen.at), positive=seen.positive, detail=seen.detail,
                   missing_helmets=seen.missing_helmets)


class Box(_Payload):
    """A region the model pointed at, in pixels of the original frame."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


class SnapshotRef(_Payload):
    """Where the evidence image of an event step is."""

    path: str = Field(description="File path on the daemon's host.")
    url: str | None = Field(default=None, description="snapshots.url_prefix + relative path.")
    topic: str | None = Field(default=None, description="Retained MQTT topic with the JPEG.")


class ClipRef(_Payload):
    """Where the evidence clip of an alert is, or will be.

    The ``start`` event goes out at once, before the clip's post-roll has been recorded: it
    names the file that will exist (``ready`` false) and when (``expected_at``). Later steps
    of the alert say ``ready`` true once it is written, and a :class:`ClipPayload` on
    ``<prefix>/clips`` announces it (or why there is none)."""

    path: str = Field(description="MP4 file path on the daemon's host.")
    url: str | None = Field(default=None, description="snapshots.url_prefix + relative path.")
    ready: bool = Field(description="Whether the file is complete (false in the start event).")
    expected_at: str = Field(description="When the file will be complete (ISO 8601 UTC).")


class CropCheckPayload(_Payload):
    """One zoom-in question about one box of a positive verdict."""

    box: Box = Field(description="The verdict's box, in pixels of the original frame.")
    crop: list[int] = Field(description="[x1, y1, x2, y2] cropped from the full-resolution "
                            "frame (the box with its margin).")
    answer: Literal["yes", "no", "uncertain"] | None = Field(
        description="The focused answer (no_helmet: hard hat on the head?; fire/smoke: real?); "
        "null when the question failed.")
    seen: str = Field(description="What the model saw in the crop, in a few words.")
    agrees: bool = Field(description="Whether this crop confirms the hazard.")
    error: str | None = Field(default=None, description="Why the question got no answer.")
    evidence: str | None = Field(default=None,
                                 description="File path of the crop's evidence JPEG.")

    @classmethod
    def from_check(cls, hazard: Hazard, check: CropCheck) -> CropCheckPayload:
        """The wire form of one crop check."""
        x1, y1, x2, y2 = check.box.bbox_2d
        answer = check.answer
        return cls(box=Box(label=check.box.label or hazard.value, x1=x1, y1=y1, x2=x2, y2=y2),
                   crop=list(check.region), answer=answer.answer.value if answer else None,
                   seen=answer.seen if answer else "",
                   agrees=answer is not None and agrees(hazard, answer), error=check.error,
                   evidence=check.evidence_path)


class VerificationPayload(_Payload):
    """Zoom-in verification of one hazard of a verdict."""

    hazard: Hazard
    outcome: Literal["confirmed", "rejected", "failed", "unverified"] = Field(
        description="confirmed: a crop agrees, the verdict counts; rejected: every crop "
        "disagrees, it counts as negative; failed: no usable answer, it counts as uncertain; "
        "unverified: no box to crop, it counts as given.")
    tokens: int = Field(description="Prompt + completion tokens the questions cost.")
    checks: list[CropCheckPayload]

    @classmethod
    def from_result(cls, result: HazardCheck) -> VerificationPayload:
        """The wire form of one hazard's verification."""
        return cls(hazard=result.hazard, outcome=result.outcome.value, tokens=result.tokens,
                   checks=[CropCheckPayload.from_check(result.hazard, c) for c in result.checks])


class EventPayload(_Payload):
    """A step of an alert's lifecycle (``<prefix>/events``, QoS 1, not retained).

    ``(id, revision)`` identifies a step: de-duplicate redeliveries with it."""

    id: str = Field(description="Stable for the whole alert (start, updates, end).")
    revision: int = Field(ge=0, description="0 for start, +1 per later step of the alert.")
    type: Literal["start", "update", "end", "ack"] = Field(
        description="ack: an operator acknowledged the alert (its ON/OFF is unchanged).")
    camera: str
    hazard: Hazard
    started_at: str
    ended_at: str | None
    at: str = Field(description="When this step happened (capture time of its verdict).")
    detail: str = Field(description="The model's description at the start or latest update.")
    confirming_verdicts: int = Field(description="Number of verdicts behind this step.")
    verdicts: list[ObservationPayload] = Field(description="The verdicts behind this step.")
    missing_helmets: int | None = Field(description="no_helmet: people without a hard hat.")
    end_reason: Literal["cleared", "timeout", "restart", "removed", "reconfigured",
                        "false_alarm", "schedule"] | None = None
    model: str | None = Field(default=None, description="Model that gave the verdict.")
    latency_s: float | None = Field(default=None, description="Model request latency.")
    boxes: list[Box] = Field(default_factory=list, description="Regions the model located.")
    snapshot: SnapshotRef | None = None
    by: str | None = Field(default=None, description="ack: who acknowledged the alert (an "
                           "ack carries the revision of the step it acknowledges); end with "
                           "end_reason false_alarm: who called it a false alarm.")
    clip: ClipRef | None = Field(default=None, description="The alert's evidence clip (MP4), "
                                 "when the camera keeps one.")
    severity: Literal["normal", "high"] = Field(
        default="normal", description="high once the alert lasted escalate_after_s (an update "
        "says so; later steps keep it).")
    zones: list[str] = Field(
        default_factory=list, description="The camera's zones where the hazard was seen "
        "(boxes that counted under its site rules); empty without boxes or zones.")
    verification: VerificationPayload | None = Field(
        default=None, description="Zoom-in verification of the verdict behind this step.")

    @classmethod
    def from_event(cls, event: AlertEvent, *, verdict: Verdict | None = None,
                   boxes: Sequence[Box] = (), snapshot: SnapshotRef | None = None,
                   clip: ClipRef | None = None) -> EventPayload:
        """The wire form of a tracker event (with the verdict that caused it, if any)."""
        return cls(
            id=event.event_id, revision=event.revision, type=event.type.value,
            camera=event.camera_id, hazard=event.hazard, started_at=iso_time(event.started_at),
            ended_at=iso_time(event.ended_at) if event.ended_at is not None else None,
            at=iso_time(event.at), detail=event.detail,
            confirming_verdicts=event.confirming_verdicts,
            verdicts=[ObservationPayload.from_observation(seen) for seen in event.verdicts],
            missing_helmets=event.missing_helmets,
            end_reason=event.end_reason.value if event.end_reason else None,
            model=verdict.model if verdict else None,
            latency_s=round(verdict.latency_s, 3) if verdict else None,
            boxes=list(boxes), snapshot=snapshot, clip=clip,
            severity=event.severity.value, zones=list(event.zones),
            verification=_verification_of(verdict, event.hazard), by=event.by,
        )


class ClipPayload(_Payload):
    """An alert's evidence clip is written, or could not be (``<prefix>/clips``, QoS 1, not
    retained)."""

    id: str = Field(description="The alert's id (the events' ``id``).")
    camera: str
    hazard: Hazard
    ready: bool = Field(description="The file exists and is complete.")
    path: str = Field(description="MP4 file path on the daemon's host.")
    url: str | None = Field(default=None, description="snapshots.url_prefix + relative path.")
    duration_s: float | None = Field(description="Length of the clip, seconds.")
    pre_roll_s: float | None = Field(
        description="Seconds of the clip before the frame that raised the alert.")
    size_bytes: int | None = Field(description="Size of the file.")
    error: str | None = Field(default=None, description="Why there is no clip (ready false).")


class StatusPayload(_Payload):
    """A camera stream's state (``<prefix>/<camera>/status``, retained)."""

    camera: str
    online: bool
    url: str = Field(description="Stream URL with the password replaced by ***.")
    width: int | None
    height: int | None
    codec: str | None
    fps: float | None
    last_error: str | None
    reconnects: int
    updated_at: str
    state: str = Field(description="connecting, online, offline, unauthorized or stopped")
    gop_frames: int | None = Field(description="Measured keyframe interval, frames.")
    gop_s: float | None = Field(description="Measured keyframe interval, seconds.")
    decode: str | None = Field(description="Decoding in use: keyframes or all.")
    backend: str = Field(description="pyav or opencv.")
    stall_timeout_s: float | None = Field(
        description="Silence after which the stream is reopened (from its frame rate).")
    frames_read: int = Field(description="Frames delivered by the stream since start.")
    frames_dropped: int = Field(
        description="Delivered frames replaced by a newer one before being sampled.")


class VerdictPayload(_Payload):
    """The latest validated answer for a camera (``<prefix>/<camera>/verdict``, retained)."""

    camera: str
    captured_at: str
    analysed_at: str
    latency_s: float
    model: str
    answer: Answer
    prompt_tokens: int | None
    completion_tokens: int | None
    verification: list[VerificationPayload] | None = Field(
        default=None, description="Zoom-in verification of the verdict's positives; answer is "
        "then the verified answer.")
    unverified_answer: Answer | None = Field(
        default=None, description="The model's whole-frame answer before verification.")

    @classmethod
    def from_verdict(cls, verdict: Verdict) -> VerdictPayload:
        """The wire form of a verdict."""
        checked = verdict.verification
        return cls(
            camera=verdict.camera_id, captured_at=iso_time(verdict.captured_at),
            analysed_at=iso_time(verdict.analysed_at), latency_s=round(verdict.latency_s, 3),
            model=verdict.model, answer=verdict.answer, prompt_tokens=verdict.prompt_tokens,
            completion_tokens=verdict.completion_tokens,
            verification=[VerificationPayload.from_result(r) for r in checked.results]
            if checked else None,
            unverified_answer=checked.original if checked else None,
        )


class HealthEventPayload(_Payload):
    """A step of a camera health problem's lifecycle (``<prefix>/health``, QoS 1, not
    retained). ``id`` is the same for the problem's ``start`` and its ``end``."""

    id: str = Field(description="Stable for the problem (start and end).")
    type: Literal["start", "end"]
    camera: str | None = Field(description="The camera; null: the daemon's (model_unavailable).")
    problem: HealthProblem = Field(
        description="offline, frozen, blank, view_changed, no_verdict or model_unavailable.")
    started_at: str = Field(description="When the problem began (before its threshold).")
    ended_at: str | None
    at: str = Field(description="When this step happened.")
    detail: str = Field(description="What was observed (a stream error, how long...).")
    end_reason: Literal["recovered", "shutdown", "removed"] | None = None

    @classmethod
    def from_event(cls, event: HealthEvent) -> HealthEventPayload:
        """The wire form of a health event."""
        return cls(id=event.event_id, type="end" if event.end_reason else "start",
                   camera=event.camera_id, problem=event.problem,
                   started_at=iso_time(event.started_at),
                   ended_at=iso_time(event.ended_at) if event.ended_at is not None else None,
                   at=iso_time(event.at), detail=event.detail,
                   end_reason=event.end_reason.value if event.end_reason else None)


def _verification_of(verdict: Verdict | None, hazard: Hazard) -> VerificationPayload | None:
    """The verification of ``hazard`` in ``verdict``, in wire form (``None``: none ran)."""
    if verdict is None or verdict.verification is None:
        return None
    result = verdict.verification.result(hazard)
    return VerificationPayload.from_result(result) if result is not None else None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str

    @property
    def availability(self) -> str:
        """Retained ``online``/``offline``."""
        return f"{self.prefix}/availability"

    @property
    def events(self) -> str:
        """Alert events (QoS 1, not retained)."""
        return f"{self.prefix}/events"

    @property
    def clips(self) -> str:
        """Evidence clips written (QoS 1, not retained)."""
        return f"{self.prefix}/clips"

    @property
    def health(self) -> str:
        """Camera health events (QoS 1, not retained)."""
        return f"{self.prefix}/health"

    def hazard(self, camera_id: str, hazard: Hazard) -> str:
        """Retained ``ON``/``OFF`` per camera and hazard."""
        return f"{self.prefix}/{camera_id}/{hazard.value}"

    def snapshot(self, camera_id: str, hazard: Hazard) -> str:
        """Retained JPEG of the latest alert frame per camera and hazard."""
        return f"{self.prefix}/{camera_id}/{hazard.value}/snapshot"

    def status(self, camera_id: str) -> str:
        """Retained stream status per camera."""
        return f"{self.prefix}/{camera_id}/status"

    def verdict(self, camera_id: str) -> str:
        """Retained latest verdict per camera."""
        return f"{self.prefix}/{camera_id}/verdict"


def write_schemas(directory: Path,
                  models: Mapping[str, type[BaseModel]] | None = None) -> list[Path]:
    """Write the JSON Schema of every JSON payload (or of ``models``: file stem → model) into
    ``directory``; returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in (schema_models() if models is None else models).items():
        path = directory / f"{name}.schema.json"
        path.write_text(schema_text(model), encoding="utf-8")
        written.append(path)
    return written


def schema_models() -> dict[str, type[BaseModel]]:
    """File stem → payload model."""
    return {"event": EventPayload, "status": StatusPayload, "verdict": VerdictPayload,
            "clip": ClipPayload,
            "ha-binary-sensor-discovery": BinarySensorDiscovery,
            "health-event": HealthEventPayload}


def schema_text(model: type[BaseModel]) -> str:
    """The JSON Schema of ``model`` as the committed file holds it."""
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m monitor.alerts.payloads docs/schemas`
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for written_path in write_schemas(target):
        sys.stdout.write(f"wrote {written_path}\n")
