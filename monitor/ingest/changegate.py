"""The change gate: skip the model when the scene has not changed since the last analysis.

Pure: it takes tiny grey thumbnails (:meth:`monitor.ingest.reader.CapturedFrame.grey_thumbnail`)
and ``now``, and returns decisions. A thumbnail of 64 pixels across averages hundreds of source
pixels into each of its own, so sensor noise and compression artefacts vanish while a person
walking in, smoke, flames or a change of light still move many thumbnail pixels by more than a
few grey levels.

Rules (the daemon adds one: the gate is bypassed while a hazard is positive or an alert is
active, so confirming and clearing always rest on fresh answers):

- no reference yet, or the last analysed frame is older than ``max_verdict_age_s``: analyse;
- otherwise analyse when more than ``area_threshold`` of the thumbnail's pixels differ from the
  last analysed frame's by more than ``pixel_threshold`` grey levels; else the last verdict
  stands (``reused``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.pixels import GreyImage

Thumbnail = npt.NDArray[Any]
"""A grey thumbnail; any integer array (OpenCV's results are loosely typed), used as uint8."""

THUMBNAIL_WIDTH = 64
PIXEL_THRESHOLD = 12
"""Grey levels a thumbnail pixel must move by to count as changed (noise stays below)."""


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The thumbnail size for a frame: 64 pixels across, the aspect ratio kept."""
    return THUMBNAIL_WIDTH, max(1, round(THUMBNAIL_WIDTH * height / max(1, width)))


def changed_fraction(a: Thumbnail, b: Thumbnail, pixel_threshold: int = PIXEL_THRESHOLD) -> float:
    """Fraction of pixels that differ by more than ``pixel_threshold`` grey levels (0..1)."""
    if a.shape != b.shape:
        return 1.0  # the stream changed resolution: treat as a new scene
    difference = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(np.count_nonzero(difference > pixel_threshold)) / difference.size


@dataclass(frozen=True, slots=True)
class GateDecision:
    """``analyse`` the frame, or reuse the last verdict; ``reason`` says why (for logs)."""

    analyse: bool
    reason: str
    changed: float | None = None


@dataclass(slots=True)
class ChangeGate:
    """Decides whether a sampled frame differs enough from the last analysed one."""

    max_verdict_age_s: float
    area_threshold: float = 0.005
    pixel_threshold: int = PIXEL_THRESHOLD
    _reference: GreyImage | None = None
    _reference_at: float | None = None

    def __post_init__(self) -> None:
        if self.max_verdict_age_s <= 0:
            raise ValueError(f"max_verdict_age_s must be positive, got {self.max_verdict_age_s}")
        if not 0.0 <= self.area_threshold < 1.0:
            raise ValueError(f"area_threshold is a fraction in [0, 1), got {self.area_threshold}")

    def check(self, thumbnail: Thumbnail, now: float) -> GateDecision:
        """Whether to analyse a frame whose thumbnail is ``thumbnail``, sampled at ``now``."""
        if self._reference is None or self._reference_at is None:
            return GateDecision(analyse=True, reason="first frame")
        age = now - self._reference_at
        if age >= self.max_verdict_age_s:
            return GateDecision(analyse=True, reason=f"last verdict {age:.0f} s old")
        changed = changed_fraction(self._reference, thumbnail, self.pixel_threshold)
        if changed > self.area_threshold:
            return GateDecision(analyse=True, reason=f"{changed:.1%} changed", changed=changed)
        return GateDecision(analyse=False, reason=f"unchanged ({changed:.2%})", changed=changed)

    def analysed(self, thumbnail: Thumbnail, now: float) -> None:
        """The frame with ``thumbnail`` was analysed at ``now``: it is the new reference."""
        self._reference = np.asarray(thumbnail, dtype=np.uint8)
        self._reference_at = now

    def reset(self) -> None:
        """Forget the reference (the next frame is analysed)."""
        self._reference = None
        self._reference_at = None
