"""Picture checks on thumbnails of real rendered and encoded frames: a live scene is none of
frozen, blank or turned away; a repeated picture is frozen; black is blank; another view is a
changed view, a change of light is not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from monitor.ingest.changegate import thumbnail_size
from monitor.ingest.frame import CapturedFrame
from monitor.ingest.picture import PictureWatch, similarity
from monitor.sim.scenes import PRESETS, write_scene


def thumbnails(path: Path, every: int = 5) -> list[np.ndarray]:
    """Thumbnails of every ``every``-th decoded frame, the way the pipeline makes them."""
    result = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every:
                continue
            captured = CapturedFrame("cam", index, 0.0, 0.0, frame.width, frame.height, frame)
            result.append(captured.grey_thumbnail(*thumbnail_size(frame.width, frame.height)))
    return result


@pytest.fixture(scope="module")
def faulty_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quiet scene, 10 s: frozen from 3 s to 6 s, black from 7 s to 9 s."""
    scene = dataclasses.replace(PRESETS["quiet"](), duration_s=10.0)
    path = tmp_path_factory.mktemp("picture") / "faulty.mp4"
    return write_scene(scene, path, frozen=[(3.0, 6.0)], blank=[(7.0, 9.0)])


def test_a_live_scene_then_a_frozen_then_a_black_picture(faulty_clip: Path) -> None:
    watch = PictureWatch()
    seen = [watch.observe(t) for t in thumbnails(faulty_clip)]  # one every 0.5 s
    # 0..3 s live, 3..6 s frozen (the first frozen sample still differs from the one before),
    # 6..7 s live, 7..9 s black, 9..10 s live.
    live = [c for i, c in enumerate(seen) if i * 0.5 < 3.0 or 6.5 <= i * 0.5 < 7.0
            or i * 0.5 >= 9.5]
    frozen = [c for i, c in enumerate(seen) if 3.5 <= i * 0.5 < 6.0]
    black = [c for i, c in enumerate(seen) if 7.0 <= i * 0.5 < 9.0]
    assert live
    assert frozen
    assert black
    assert not any(c.frozen or c.blank or c.view_changed for c in live)
    assert all(c.frozen and not c.blank for c in frozen)
    assert all(c.blank and not c.frozen for c in black)


def test_a_scene_turned_away_is_a_changed_view_a_darker_one_is_not() -> None:
    rng = np.random.default_rng(1)
    view = rng.integers(30, 220, size=(36, 64), dtype=np.uint8)
    wall = rng.integers(30, 220, size=(36, 64), dtype=np.uint8)
    watch = PictureWatch()
    assert not watch.observe(view).view_changed
    dusk = (view.astype(np.float32) * 0.6 + 10).astype(np.uint8)
    dusk_seen = watch.observe(dusk)
    assert not dusk_seen.view_changed
    assert dusk_seen.similarity is not None
    assert dusk_seen.similarity > 0.95
    turned = watch.observe(wall)
    assert turned.view_changed
    # The reference stays the usual view while the camera looks elsewhere...
    assert watch.observe(wall).view_changed
    # ...and the view coming back ends it.
    assert not watch.observe(dusk).view_changed


def test_similarity_of_uniform_or_differently_sized_pictures_is_undefined() -> None:
    flat = np.full((36, 64), 7, dtype=np.uint8)
    busy = np.arange(36 * 64, dtype=np.uint8).reshape(36, 64)
    assert similarity(flat, busy) is None
    assert similarity(busy, busy[:, :32]) is None
    assert similarity(busy, busy) == pytest.approx(1.0)


def test_limits_out_of_range_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="view_min_similarity"):
        PictureWatch(view_min_similarity=2.0)
    with pytest.raises(ValueError, match="blank_max_contrast"):
        PictureWatch(blank_max_contrast=-1.0)
