"""Zones: named polygons of a camera's view, and which boxes of a verdict fall in them.

A zone's points are fractions of the frame (``[x, y]``, 0..1, origin top-left), like
``roi``: they stay right when the camera's resolution changes, and the configuration can be
checked against the frame at load. Boxes come in frame pixels and are divided by the frame's
size.

Where a box is depends on what it shows (:class:`Anchor`):

* a person (no hard hat): where they stand, the bottom centre of the box;
* fire or smoke: the share of the box's area inside the zone (``min_overlap``, default half).

A hazard's rule keeps the boxes inside any of its ``include`` zones (all boxes when it has
none) and not inside any of its ``exclude`` zones. Pure geometry, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

Point = tuple[float, float]
MIN_AREA = 1e-4
"""Smallest zone area, as a fraction of the frame (a hundredth of each side): anything less is
a line or a typo, and would silently match nothing."""
DEFAULT_MIN_OVERLAP = 0.5


class Anchor(StrEnum):
    """How a box is placed in a zone."""

    FEET = "feet"
    """The bottom centre of the box (a person stands there)."""
    OVERLAP = "overlap"
    """The share of the box's area inside the zone (fire, smoke)."""


@dataclass(frozen=True, slots=True)
class FrameBox:
    """A box in fractions of the frame: ``x1 <= x2``, ``y1 <= y2``."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_pixels(cls, x1: float, y1: float, x2: float, y2: float, *, width: int,
                    height: int) -> FrameBox:
        """A pixel box of a ``width`` x ``height`` frame, in fractions (corners ordered)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        return cls(min(x1, x2) / width, min(y1, y2) / height, max(x1, x2) / width,
                   max(y1, y2) / height)

    @property
    def feet(self) -> Point:
        """Bottom centre."""
        return ((self.x1 + self.x2) / 2, self.y2)

    @property
    def area(self) -> float:
        """Area as a fraction of the frame."""
        return (self.x2 - self.x1) * (self.y2 - self.y1)


def polygon_area(points: Sequence[Point]) -> float:
    """Area of a simple polygon (shoelace formula; the sign of the winding dropped)."""
    twice = 0.0
    for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]], strict=True):
        twice += x1 * y2 - x2 * y1
    return abs(twice) / 2


def polygon_problem(points: Sequence[Point]) -> str | None:
    """What is wrong with a zone's polygon, or ``None``: at least 3 points, each inside the
    frame (fractions 0..1), enclosing an area."""
    if len(points) < 3:
        return f"a zone needs at least 3 points, got {len(points)}"
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return (f"point ({x}, {y}) is outside the frame; zone points are fractions of "
                    f"the frame, 0..1")
    if polygon_area(points) < MIN_AREA:
        return (f"the zone has (almost) no area ({polygon_area(points):.6f} of the frame): "
                f"its points are on one line or repeated")
    return None


def contains(points: Sequence[Point], point: Point) -> bool:
    """Whether ``point`` is inside the polygon (even-odd ray casting)."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]], strict=True):
        if (y1 > y) != (y2 > y):
            crossing = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < crossing:
                inside = not inside
    return inside


def overlap_fraction(box: FrameBox, points: Sequence[Point]) -> float:
    """The share of ``box``'s area inside the polygon (0..1); a box without area counts by its
    centre (1.0 or 0.0)."""
    if box.area <= 0:
        return 1.0 if contains(points, ((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2)) else 0.0
    clipped = _clip_to_box(list(points), box)
    return min(1.0, polygon_area(clipped) / box.area) if len(clipped) >= 3 else 0.0


def _clip_to_box(points: list[Point], box: FrameBox) -> list[Point]:
    """Sutherland-Hodgman: the polygon cut to the box (a convex window, so the area of the
    result is the area of the intersection, also for concave polygons)."""
    for axis, bound, keep_above in ((0, box.x1, True), (0, box.x2, False),
                                    (1, box.y1, True), (1, box.y2, False)):
        points = _clip(points, axis, bound, keep_above=keep_above)
    return points


def _clip(points: list[Point], axis: int, bound: float, *, keep_above: bool) -> list[Point]:
    """The polygon cut to the half plane ``point[axis] >= bound`` (or ``<=``)."""

    def inside(point: Point) -> bool:
        return point[axis] >= bound if keep_above else point[axis] <= bound

    def cut(a: Point, b: Point) -> Point:
        t = (bound - a[axis]) / (b[axis] - a[axis])
        x, y = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
        return (bound, y) if axis == 0 else (x, bound)

    result: list[Point] = []
    if not points:
        return result
    previous = points[-1]
    for current in points:
        if inside(current):
            if not inside(previous):
                result.append(cut(previous, current))
            result.append(current)
        elif inside(previous):
            result.append(cut(previous, current))
        previous = current
    return result


@dataclass(frozen=True, slots=True)
class Zone:
    """A named polygon of one camera's view (fractions of the frame)."""

    name: str
    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        problem = polygon_problem(self.points)
        if problem:
            raise ValueError(f"zone {self.name!r}: {problem}")

    def holds(self, box: FrameBox, anchor: Anchor, min_overlap: float) -> bool:
        """Whether ``box`` is in this zone, as ``anchor`` places it."""
        if anchor is Anchor.FEET:
            return contains(self.points, box.feet)
        return overlap_fraction(box, self.points) >= min_overlap


@dataclass(frozen=True, slots=True)
class ZoneRule:
    """Which boxes of one hazard count: inside an ``include`` zone (any box when there is
    none) and inside no ``exclude`` zone."""

    include: tuple[Zone, ...] = ()
    exclude: tuple[Zone, ...] = ()
    anchor: Anchor = Anchor.OVERLAP
    min_overlap: float = DEFAULT_MIN_OVERLAP

    def __post_init__(self) -> None:
        if not 0 < self.min_overlap <= 1:
            raise ValueError(f"min_overlap is a fraction of the box, 0 < x <= 1, got "
                             f"{self.min_overlap}")

    @property
    def limits(self) -> bool:
        """Whether the rule can drop a box at all."""
        return bool(self.include or self.exclude)

    def counts(self, box: FrameBox) -> bool:
        """Whether ``box`` counts for the hazard."""
        if self.include and not any(z.holds(box, self.anchor, self.min_overlap)
                                    for z in self.include):
            return False
        return not any(z.holds(box, self.anchor, self.min_overlap) for z in self.exclude)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a verdict's boxes of one hazard are, after the zone rule."""

    kept: tuple[FrameBox, ...]
    dropped: tuple[FrameBox, ...]
    zones: tuple[str, ...]
    """Names of the camera's zones holding at least one kept box (in configuration order)."""


def place(boxes: Sequence[FrameBox], rule: ZoneRule, zones: Mapping[str, Zone]) -> Placement:
    """Split ``boxes`` into those the rule keeps and drops, and name the zones of the kept."""
    kept = tuple(box for box in boxes if rule.counts(box))
    dropped = tuple(box for box in boxes if box not in kept)
    names = tuple(name for name, zone in zones.items()
                  if any(zone.holds(box, rule.anchor, rule.min_overlap) for box in kept))
    return Placement(kept=kept, dropped=dropped, zones=names)
