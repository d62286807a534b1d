"""False alarms' holds: the hazard stays quiet on that camera until the scene changes or the
hold time ends, whichever comes first.

The scene is compared the way the change gate compares it (:mod:`monitor.ingest.changegate`):
grey thumbnails 64 pixels across, here of the JPEGs the model judged (decoded only while a hold
is active, off the event loop). The threshold is much larger than the gate's: flames flicker
and smoke drifts, which must not end the hold; a truck parking or the light going on does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from monitor.ingest.changegate import changed_fraction, thumbnail_size
from monitor.model.answer import Hazard
from monitor.pixels import GreyImage


def jpeg_thumbnail(jpeg: bytes) -> GreyImage:
    """The grey thumbnail of a JPEG (blocking CPU work: call it in a thread)."""
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("not a decodable JPEG")
    height, width = image.shape[:2]
    small = cv2.resize(image, thumbnail_size(width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Hold:
    """One false alarm's hold."""

    camera_id: str
    hazard: Hazard
    until: float
    reference: GreyImage = field(repr=False)


class SceneHolds:
    """The active holds, and which of them a new frame of a camera ends (pure)."""

    def __init__(self, scene_change: float) -> None:
        self._scene_change = scene_change
        self._holds: dict[tuple[str, Hazard], Hold] = {}

    def add(self, hold: Hold) -> None:
        """Start (or restart) a hold."""
        self._holds[(hold.camera_id, hold.hazard)] = hold

    def __bool__(self) -> bool:
        return bool(self._holds)

    def cameras(self) -> set[str]:
        """Cameras with a hold."""
        return {camera for camera, _ in self._holds}

    def ended(self, camera_id: str, thumbnail: GreyImage, now: float) -> list[Hazard]:
        """The camera's holds a frame with ``thumbnail`` ends because the scene changed;
        holds past their time are forgotten (the tracker ends those by itself)."""
        lifted = []
        for key, hold in list(self._holds.items()):
            if hold.until <= now:
                del self._holds[key]
            elif hold.camera_id == camera_id and changed_fraction(
                    hold.reference, thumbnail) > self._scene_change:
                del self._holds[key]
                lifted.append(hold.hazard)
        return lifted
