"""One camera's site rules, resolved from the configuration: per hazard its schedules,
minimum duration, escalation and zone rule (see ``README.md``, "Site rules").

:class:`SiteRules` is what the :class:`~monitor.alerts.tracker.HazardTracker` asks: is the
hazard watched at this time, how long must it be seen, when does an alert escalate, which of a
verdict's boxes count. Pure: schedules and zones are :mod:`monitor.rules`, times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from monitor.config import CameraConfig, HazardRulesConfig, MonitorConfig
from monitor.model.answer import Hazard
from monitor.rules.schedules import WeeklySchedule
from monitor.rules.zones import (
    DEFAULT_MIN_OVERLAP,
    Anchor,
    FrameBox,
    Placement,
    Zone,
    ZoneRule,
    place,
)

ANCHORS = {Hazard.NO_HELMET: Anchor.FEET, Hazard.FIRE: Anchor.OVERLAP,
           Hazard.SMOKE: Anchor.OVERLAP}
"""A person counts where they stand; fire and smoke by the share of their box in a zone."""


@dataclass(frozen=True, slots=True)
class HazardRules:
    """The rules of one hazard on one camera (the defaults: always watched, no duration, no
    escalation, no zones)."""

    schedules: tuple[WeeklySchedule, ...] = ()
    """All must be active for the hazard to be watched (the camera's and the hazard's)."""
    min_duration_s: float = 0.0
    escalate_after_s: float | None = None
    zones: ZoneRule = field(default_factory=ZoneRule)

    def in_schedule(self, at: float) -> bool:
        """Whether the hazard is watched at epoch second ``at``."""
        return all(schedule.is_active(at) for schedule in self.schedules)


@dataclass(frozen=True, slots=True)
class SiteRules:
    """The site rules of one camera (empty: every hazard always watched, anywhere)."""

    hazards: Mapping[Hazard, HazardRules] = field(default_factory=dict)
    zones: Mapping[str, Zone] = field(default_factory=dict)
    """The camera's zones by name, in configuration order."""

    def of(self, hazard: Hazard) -> HazardRules:
        """The rules of ``hazard``."""
        return self.hazards.get(hazard) or _NO_RULES

    def in_schedule(self, hazard: Hazard, at: float) -> bool:
        """Whether ``hazard`` is watched at epoch second ``at``."""
        return self.of(hazard).in_schedule(at)

    def place(self, hazard: Hazard, boxes: Sequence[FrameBox]) -> Placement | None:
        """Where ``hazard``'s boxes are; ``None`` when there is nothing to place (no boxes,
        or a camera without zones): the verdict then counts wherever it was seen."""
        if not boxes or not self.zones:
            return None
        return place(boxes, self.of(hazard).zones, self.zones)

    @classmethod
    def from_config(cls, config: MonitorConfig, camera: CameraConfig) -> SiteRules:
        """The rules ``config`` sets for ``camera`` (a camera's rule setting wins over
        ``[defaults.rules]``); names are checked at load (:func:`site_rule_problems`)."""
        schedules = {name: section.build(name) for name, section in config.schedules.items()}
        zones = {name: Zone(name, tuple(points)) for name, points in camera.zones.items()}
        camera_schedules = (schedules[camera.schedule],) if camera.schedule else ()
        hazards = {}
        for hazard in Hazard:
            rules = _merged(camera.rules.get(hazard.value),
                            config.defaults.rules.get(hazard.value))
            hazards[hazard] = HazardRules(
                schedules=camera_schedules
                + ((schedules[rules.schedule],) if rules.schedule else ()),
                min_duration_s=rules.min_duration_s or 0.0,
                escalate_after_s=rules.escalate_after_s,
                zones=ZoneRule(
                    include=tuple(zones[name] for name in rules.include_zones or ()),
                    exclude=tuple(zones[name] for name in rules.exclude_zones or ()),
                    anchor=ANCHORS[hazard],
                    min_overlap=rules.min_overlap or DEFAULT_MIN_OVERLAP),
            )
        return cls(hazards=hazards, zones=zones)


_NO_RULES = HazardRules()


def _merged(own: HazardRulesConfig | None,
            default: HazardRulesConfig | None) -> HazardRulesConfig:
    """A camera's rules of one hazard over the default ones, setting by setting."""
    merged = default.model_dump(exclude_none=True) if default else {}
    merged.update(own.model_dump(exclude_none=True) if own else {})
    return HazardRulesConfig(**merged)


class Corners(Protocol):
    """A box in frame pixels (:class:`monitor.alerts.payloads.Box`)."""

    @property
    def x1(self) -> float: ...
    @property
    def y1(self) -> float: ...
    @property
    def x2(self) -> float: ...
    @property
    def y2(self) -> float: ...


def frame_boxes(boxes: Sequence[Corners], width: int, height: int) -> tuple[FrameBox, ...]:
    """Pixel boxes of a ``width`` x ``height`` frame as fractions of it."""
    return tuple(FrameBox.from_pixels(b.x1, b.y1, b.x2, b.y2, width=width, height=height)
                 for b in boxes)


def describe(rules: SiteRules, hazards: Sequence[Hazard], now: float) -> list[str]:
    """One line per watched hazard that has site rules, saying what applies and whether its
    schedules are active at ``now`` (for ``monitor check-config``)."""
    lines = []
    for hazard in hazards:
        own = rules.of(hazard)
        parts = []
        if own.schedules:
            names = " and ".join(schedule.name for schedule in own.schedules)
            state = "active" if own.in_schedule(now) else "not active"
            parts.append(f"schedule {names} ({state} now)")
        if own.min_duration_s:
            parts.append(f"min_duration_s {own.min_duration_s:g}")
        if own.escalate_after_s is not None:
            parts.append(f"escalate_after_s {own.escalate_after_s:g}")
        if own.zones.include:
            parts.append("only in zones " + ", ".join(z.name for z in own.zones.include))
        if own.zones.exclude:
            parts.append("not in zones " + ", ".join(z.name for z in own.zones.exclude))
        if parts:
            lines.append(f"{hazard.value}: {'; '.join(parts)}")
    return lines
