"""The scene-change watch on real decoded-frame objects: a camera source the test changes, a
short check period, thumbnails computed as the pipeline computes them."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import numpy as np
import pytest

from monitor.ingest.frame import CapturedFrame
from monitor.pixels import GreyImage
from monitor.service.scenewatch import SceneWatch

CHECK_S = 0.01


class Source:
    """The newest frame, replaced by the test."""

    def __init__(self) -> None:
        self.frame: CapturedFrame | None = None
        self._rng = np.random.default_rng(16)

    def put(self, grey: int, *, noise: float = 3.0, width: int = 320,
            height: int = 180) -> CapturedFrame:
        """A frame of ``grey`` with sensor noise: same content, never the same pixels."""
        sequence = self.frame.sequence + 1 if self.frame else 1
        image = np.clip(grey + self._rng.normal(0.0, noise, (height, width, 3)), 0, 255)
        self.frame = CapturedFrame("yard", sequence, 0.0, 0.0, width, height,
                                   image.astype(np.uint8))
        return self.frame

    def latest(self) -> CapturedFrame | None:
        return self.frame


async def inline(work: Callable[[int, int], GreyImage], width: int, height: int) -> GreyImage:
    return work(width, height)


def watch() -> SceneWatch:
    return SceneWatch(area_threshold=0.005, offload=inline, check_every_s=CHECK_S)


async def watched_for(scene: SceneWatch, source: Source, seconds: float) -> None:
    scene.start(source)
    await asyncio.sleep(seconds)
    scene.stop()


@pytest.mark.asyncio
async def test_sensor_noise_on_an_unchanged_scene_is_no_change() -> None:
    source, scene = Source(), watch()
    await scene.analysed(source.put(90))
    scene.start(source)
    for _ in range(10):
        source.put(90)
        await asyncio.sleep(CHECK_S * 2)
    scene.stop()
    assert not scene.changed()


@pytest.mark.asyncio
async def test_a_new_scene_while_waiting_counts_as_changed_until_the_next_analysis() -> None:
    source, scene = Source(), watch()
    await scene.analysed(source.put(90))
    source.put(90)
    scene.start(source)
    source.put(200)  # flames, smoke, a person: most of the thumbnail moves
    await asyncio.wait_for(_until(scene.changed), timeout=5.0)
    scene.stop()
    assert scene.changed()
    await scene.analysed(source.put(200))
    assert not scene.changed()
    # The new reference is the analysed frame: the same scene again is no change.
    await watched_for(scene, source, CHECK_S * 5)
    assert not scene.changed()


@pytest.mark.asyncio
async def test_a_small_part_of_the_picture_changing_is_a_change() -> None:
    source, scene = Source(), watch()
    await scene.analysed(source.put(90))
    frame = source.put(90)
    frame._frame[60:120, 140:200] = 230  # a flame in one corner of the yard: about 6 %
    scene.start(source)
    await asyncio.wait_for(_until(scene.changed), timeout=5.0)
    scene.stop()
    assert scene.changed()


@pytest.mark.asyncio
async def test_a_new_picture_shape_counts_as_a_new_scene() -> None:
    source, scene = Source(), watch()
    await scene.analysed(source.put(90))
    source.put(90, width=320, height=240)  # the camera was reconfigured: 16:9 to 4:3
    scene.start(source)
    await asyncio.wait_for(_until(scene.changed), timeout=5.0)
    scene.stop()
    assert scene.changed()


@pytest.mark.asyncio
async def test_nothing_is_watched_before_a_first_analysis_or_once_a_change_is_known() -> None:
    source, scene = Source(), watch()
    source.put(90)
    await watched_for(scene, source, CHECK_S * 3)
    assert not scene.changed()  # no reference: the camera is overdue anyway
    await scene.analysed(source.put(90))
    scene.mark_changed()  # the change gate already saw the sampled frame differ
    assert scene.changed()
    scene.start(source)
    assert scene._task is None


@pytest.mark.asyncio
async def test_stopping_ends_the_watch() -> None:
    source, scene = Source(), watch()
    await scene.analysed(source.put(90))
    scene.start(source)
    task = scene._task
    assert task is not None
    scene.stop()
    source.put(200)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not scene.changed()


@pytest.mark.asyncio
async def test_the_watch_holds_no_frame_between_its_checks() -> None:
    # A picture the watch still held when the reader replaced it would be one more buffer in
    # the shared keyframe decoder's pool, for every waiting camera.
    source, scene = Source(), SceneWatch(area_threshold=0.005, offload=inline,
                                         check_every_s=0.2)
    await scene.analysed(source.put(90))
    compared = source.put(90)  # newer than the reference: its thumbnail is taken
    picture = weakref.ref(compared._frame)
    del compared
    scene.start(source)
    await asyncio.sleep(0.3)  # one check done, the next one not yet
    source.put(90)  # the reader replaces the frame the watch looked at
    gc.collect()
    alive = picture() is not None
    scene.stop()
    assert not alive
    assert not scene.changed()


def test_a_check_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="check_every_s must be positive"):
        SceneWatch(area_threshold=0.005, offload=inline, check_every_s=0)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(CHECK_S)
