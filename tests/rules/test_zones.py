"""Zone geometry (pure): polygons checked, points placed, boxes overlapped, rules applied."""

from __future__ import annotations

import pytest

from monitor.rules.zones import (
    Anchor,
    FrameBox,
    Zone,
    ZoneRule,
    contains,
    overlap_fraction,
    place,
    polygon_problem,
)

LEFT_HALF = ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))
# An L: the square 0..1 without its top-right quarter.
ELL = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))


def test_polygon_problems_name_the_fault() -> None:
    assert polygon_problem(LEFT_HALF) is None
    assert "at least 3 points" in str(polygon_problem([(0.0, 0.0), (1.0, 1.0)]))
    assert "outside the frame" in str(polygon_problem([(0.0, 0.0), (1.2, 0.0), (1.0, 1.0)]))
    assert "no area" in str(polygon_problem([(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]))
    with pytest.raises(ValueError, match="zone 'weld'"):
        Zone("weld", ((0.1, 0.1), (0.1, 0.1), (0.1, 0.1)))


def test_points_in_convex_and_concave_polygons() -> None:
    assert contains(LEFT_HALF, (0.25, 0.5))
    assert not contains(LEFT_HALF, (0.75, 0.5))
    assert contains(ELL, (0.25, 0.25))
    assert contains(ELL, (0.75, 0.75))
    assert not contains(ELL, (0.75, 0.25))  # the notch


def test_overlap_is_the_share_of_the_box_inside() -> None:
    assert overlap_fraction(FrameBox(0.4, 0.4, 0.6, 0.6), LEFT_HALF) == pytest.approx(0.5)
    assert overlap_fraction(FrameBox(0.1, 0.1, 0.2, 0.2), LEFT_HALF) == pytest.approx(1.0)
    assert overlap_fraction(FrameBox(0.6, 0.1, 0.9, 0.2), LEFT_HALF) == 0.0
    # Concave: a box over the notch's corner has three of its four quarters inside.
    assert overlap_fraction(FrameBox(0.4, 0.4, 0.6, 0.6), ELL) == pytest.approx(0.75)
    # A box without area counts by its centre.
    assert overlap_fraction(FrameBox(0.2, 0.2, 0.2, 0.2), LEFT_HALF) == 1.0


def test_pixel_boxes_become_fractions_of_the_frame() -> None:
    box = FrameBox.from_pixels(320, 360, 160, 90, width=640, height=360)
    assert box == FrameBox(0.25, 0.25, 0.5, 1.0)
    assert box.feet == (0.375, 1.0)
    with pytest.raises(ValueError, match="positive"):
        FrameBox.from_pixels(0, 0, 1, 1, width=0, height=10)


def test_a_person_counts_where_they_stand() -> None:
    office = Zone("office", LEFT_HALF)
    rule = ZoneRule(exclude=(office,), anchor=Anchor.FEET)
    # Head right of the line, feet left of it: in the office.
    leaning = FrameBox(0.45, 0.2, 0.55, 0.9)
    assert leaning.feet == pytest.approx((0.5, 0.9))
    standing_in = FrameBox(0.3, 0.2, 0.6, 0.9)  # feet at x 0.45
    standing_out = FrameBox(0.45, 0.2, 0.75, 0.9)  # feet at x 0.6
    assert not rule.counts(standing_in)
    assert rule.counts(standing_out)


def test_include_and_exclude_zones_and_the_names_of_kept_boxes() -> None:
    scaffold = Zone("scaffold", ((0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5)))
    weld = Zone("weld", ((0.0, 0.0), (0.3, 0.0), (0.3, 0.3), (0.0, 0.3)))
    zones = {"scaffold": scaffold, "weld": weld}
    sparks = FrameBox(0.05, 0.05, 0.25, 0.25)  # in weld (and scaffold)
    flames = FrameBox(0.6, 0.1, 0.8, 0.3)      # in scaffold only
    ground = FrameBox(0.6, 0.7, 0.8, 0.9)      # in no zone
    only_scaffold = ZoneRule(include=(scaffold,), exclude=(weld,))
    placed = place([sparks, flames, ground], only_scaffold, zones)
    assert placed.kept == (flames,)
    assert placed.dropped == (sparks, ground)
    assert placed.zones == ("scaffold",)
    anywhere = place([sparks, ground], ZoneRule(), zones)
    assert anywhere.kept == (sparks, ground)
    assert anywhere.zones == ("scaffold", "weld")
    assert not ZoneRule().limits
    assert only_scaffold.limits
    # A box 60 % in the welding bay is in it at the default 0.5, not at 0.9.
    half = FrameBox(0.15, 0.1, 0.4, 0.2)
    assert not ZoneRule(exclude=(weld,)).counts(half)
    assert ZoneRule(exclude=(weld,), min_overlap=0.9).counts(half)
    with pytest.raises(ValueError, match="min_overlap"):
        ZoneRule(min_overlap=0.0)
