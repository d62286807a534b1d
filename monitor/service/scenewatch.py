"""The scene-change watch: while a camera's request waits for a model slot, does its scene
change?

Under overload a camera's request waits about a turn (interval x load) for a slot. A fire
that starts during that wait would otherwise be seen only at the camera's normal turn. So,
while the request waits, the pipeline runs :meth:`SceneWatch.watch`: every
:data:`SCENE_CHECK_S` it compares the newest frame's grey thumbnail (the change gate's, see
:mod:`monitor.ingest.changegate`) with the last analysed frame's; once more than
``area_threshold`` of it changed, :meth:`SceneWatch.changed` is true and the pool
(:mod:`monitor.model.priority`) serves the camera before unchanged ones of equal priority.

Nothing runs when a slot is free at once (the first check waits :data:`SCENE_CHECK_S`): the
unloaded daemon does what it did, plus one thumbnail of each analysed frame (the reference,
computed after its slot is given back; the frame itself is not kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from monitor.ingest.changegate import PIXEL_THRESHOLD, changed_fraction, thumbnail_size
from monitor.pixels import GreyImage

SCENE_CHECK_S = 0.5
"""How often a waiting camera's newest frame is compared with its last analysed one: a
fraction of the wait it shortens, and at most two thumbnails a second per waiting camera."""


class WatchedFrame(Protocol):
    """What the watch needs of a frame (:class:`monitor.ingest.frame.CapturedFrame`)."""

    @property
    def sequence(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    def grey_thumbnail(self, width: int, height: int) -> GreyImage: ...


class WatchedSource(Protocol):
    """The camera's newest frame (:meth:`monitor.ingest.reader.CameraReader.latest`)."""

    def latest(self) -> WatchedFrame | None: ...


Offload = Callable[[Callable[[int, int], GreyImage], int, int], Awaitable[GreyImage]]
"""Runs a thumbnail's conversion off the event loop (the pipeline's executor)."""


class SceneWatch:
    """One camera's watch (see the module docstring); its pipeline owns it."""

    def __init__(self, *, area_threshold: float, offload: Offload,
                 pixel_threshold: int = PIXEL_THRESHOLD,
                 check_every_s: float = SCENE_CHECK_S) -> None:
        if check_every_s <= 0:
            raise ValueError(f"check_every_s must be positive, got {check_every_s}")
        self._area_threshold = area_threshold
        self._pixel_threshold = pixel_threshold
        self._check_every_s = check_every_s
        self._offload = offload
        self._reference: GreyImage | None = None
        self._reference_sequence: int | None = None
        self._changed = False
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> bool:
        """The scene changed markedly since the last analysed frame (read by the pool)."""
        return self._changed

    def mark_changed(self) -> None:
        """The change gate already saw the sampled frame differ from the last analysed one."""
        self._changed = True

    async def analysed(self, frame: WatchedFrame) -> None:
        """``frame`` was analysed: nothing changed since, and its thumbnail is the new
        reference."""
        self._changed = False
        self._reference = await self._offload(frame.grey_thumbnail,
                                              *thumbnail_size(frame.width, frame.height))
        self._reference_sequence = frame.sequence

    def start(self, source: WatchedSource) -> None:
        """Watch ``source`` until :meth:`stop` (a request began waiting for a slot)."""
        self.stop()
        if self._reference is not None and not self._changed:
            self._task = asyncio.create_task(self.watch(source),
                                             name="scene-watch")

    def stop(self) -> None:
        """Stop watching (the slot came, or the wait ended otherwise); idempotent."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def watch(self, source: WatchedSource) -> None:
        """Compare the newest frame with the last analysed one every ``check_every_s``
        until one differs markedly (then :meth:`changed` is true and it returns)."""
        reference = self._reference
        if reference is None:
            return
        compared = self._reference_sequence
        while not self._changed:
            await asyncio.sleep(self._check_every_s)
            thumbnail, compared = await self._newer_thumbnail(source, compared)
            if thumbnail is not None and changed_fraction(
                    reference, thumbnail, self._pixel_threshold) > self._area_threshold:
                self._changed = True

    async def _newer_thumbnail(self, source: WatchedSource, compared: int | None,
                               ) -> tuple[GreyImage | None, int | None]:
        """The newest frame's thumbnail when it is newer than frame ``compared`` (``None``
        otherwise), and the sequence number compared from now on.

        The frame is not held from one check to the next: a picture the reader replaces
        meanwhile would stay alive, one more buffer in the shared keyframe decoder's pool.
        """
        frame = source.latest()
        if frame is None or frame.sequence == compared:
            return None, compared
        # Each at its own size: a new aspect ratio counts as a new scene.
        thumbnail = await self._offload(frame.grey_thumbnail,
                                        *thumbnail_size(frame.width, frame.height))
        return thumbnail, frame.sequence
