"""What the console draws over a sample besides the model's boxes: the camera's named zones and
the zoom-in crops, in pixels of the image sent to the model (the JPEG served as it is).

Pure geometry, no I/O. Zones are configured as fractions of the whole frame; the sent image is
the frame (or its region of interest's bounding box, whose corner is the verdict's
``image_offset``) scaled to the model's budget. The frame's own size is not part of a verdict,
so under a region of interest it is recovered from the region's span: the bounding box is
rounded outwards to whole pixels, an error of at most two pixels over the frame's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.model.verify import CheckOutcome, Verification, agrees

Point = tuple[float, float]

OUTCOME_WORDS = {CheckOutcome.CONFIRMED: "confirmed by zoom-in",
                 CheckOutcome.REJECTED: "rejected by zoom-in",
                 CheckOutcome.FAILED: "zoom-in failed",
                 CheckOutcome.UNVERIFIED: "not verified (no box)"}
"""How a hazard's verification outcome reads on a page."""


@dataclass(frozen=True, slots=True)
class ZoneView:
    """A camera's named zone, as configured: ``[x, y]`` fractions of the frame."""

    name: str
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class SentGeometry:
    """How the sent image relates to the frame: ``size`` pixels scaled from ``source`` pixels
    whose top-left corner lies at ``offset`` in a frame of ``frame`` pixels."""

    size: tuple[int, int]
    source: tuple[int, int]
    offset: tuple[int, int]
    frame: tuple[float, float]

    @classmethod
    def of(cls, size: tuple[int, int], source: tuple[int, int], offset: tuple[int, int],
           roi: Sequence[Point] | None) -> SentGeometry:
        """The geometry of a sample; ``roi``: the camera's region of interest, if any."""
        if not roi:
            return cls(size, source, offset, (float(source[0]), float(source[1])))
        xs, ys = [p[0] for p in roi], [p[1] for p in roi]
        span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
        frame_w = source[0] / span_x if span_x > 0 else float(source[0])
        frame_h = source[1] / span_y if span_y > 0 else float(source[1])
        return cls(size, source, offset, (frame_w, frame_h))

    def frame_to_sent(self, x: float, y: float) -> Point:
        """A point in frame pixels, in sent-image pixels (rounded to 0.1)."""
        sx = self.size[0] / self.source[0] if self.source[0] else 1.0
        sy = self.size[1] / self.source[1] if self.source[1] else 1.0
        return (round((x - self.offset[0]) * sx, 1), round((y - self.offset[1]) * sy, 1))

    def fraction_to_sent(self, x: float, y: float) -> Point:
        """A point in fractions of the frame, in sent-image pixels."""
        return self.frame_to_sent(x * self.frame[0], y * self.frame[1])


def zone_overlays(zones: Sequence[ZoneView], geometry: SentGeometry) -> list[dict[str, object]]:
    """The zones as ``{"name", "points"}`` polygons in sent-image pixels (parts may lie outside
    the image under a region of interest: the SVG clips them)."""
    return [{"name": zone.name,
             "points": [list(geometry.fraction_to_sent(x, y)) for x, y in zone.points]}
            for zone in zones]


def verification_overlays(verification: Verification | None,
                          geometry: SentGeometry) -> list[dict[str, object]]:
    """Each verified hazard's outcome and its crops (``crop``: the rectangle cut from the
    frame, in sent-image pixels; ``agrees``: whether that crop confirmed the hazard)."""
    if verification is None:
        return []
    answer: list[dict[str, object]] = []
    for result in verification.results:
        checks = []
        for check in result.checks:
            x1, y1 = geometry.frame_to_sent(check.region[0], check.region[1])
            x2, y2 = geometry.frame_to_sent(check.region[2], check.region[3])
            confirmed = check.answer is not None and agrees(result.hazard, check.answer)
            checks.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2,
                           "answer": check.answer.answer.value if check.answer else None,
                           "seen": check.answer.seen if check.answer else "",
                           "agrees": confirmed, "error": check.error})
        answer.append({"hazard": result.hazard.value, "outcome": result.outcome.value,
                       "text": OUTCOME_WORDS[result.outcome], "checks": checks})
    return answer

