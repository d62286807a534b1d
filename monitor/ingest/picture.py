"""What a camera's picture says about the camera: frozen, blank, or turned away.

Pure: :class:`PictureWatch` takes the grey thumbnails the sampler's frames give
(:func:`monitor.ingest.changegate.thumbnail_size`, 64 pixels across; averaging hundreds of
source pixels into each removes sensor noise and compression artefacts) and returns
:class:`PictureConditions`. How long a condition must last to be a problem is the health
tracker's business (:mod:`monitor.alerts.health`).

- **frozen**: the frame is new (the stream still "plays") but its thumbnail is the previous
  sample's, pixel for pixel but for at most ``frozen_max_changed`` of them moving by more
  than one grey level (and it is not blank). A live camera's noise, clock overlay or any
  motion moves more; an encoder or a recorder stuck on one picture repeats it exactly.
- **blank**: the thumbnail is uniform: its standard deviation is at most ``blank_max_contrast``
  grey levels (black, white, a hand or a cap over the lens, fog on the dome).
- **view_changed**: the thumbnail no longer correlates with the reference view (zero-mean
  normalised correlation below ``view_min_similarity``; a change of light keeps the structure
  and the correlation, a camera turned to the wall does not). The reference follows the view
  while it matches (so slow changes such as a building going up are followed) and stays put
  while it does not, so only a sudden change that lasts counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.ingest.changegate import Thumbnail
from monitor.pixels import GreyImage


@dataclass(frozen=True, slots=True)
class PictureConditions:
    """What the newest sampled thumbnail shows."""

    frozen: bool = False
    blank: bool = False
    view_changed: bool = False
    similarity: float | None = None
    """Correlation with the reference view (``None``: no reference, or a uniform picture)."""
    contrast: float = 0.0
    """Standard deviation of the thumbnail, grey levels."""


def similarity(a: Thumbnail, b: Thumbnail) -> float | None:
    """Zero-mean normalised correlation of two thumbnails (-1..1); ``None`` when either is
    uniform (no structure to compare) or their sizes differ."""
    if a.shape != b.shape:
        return None
    x = a.astype(np.float32).ravel()
    y = b.astype(np.float32).ravel()
    x -= x.mean()
    y -= y.mean()
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norm < 1e-6:
        return None
    return float(np.dot(x, y)) / norm


@dataclass(slots=True)
class PictureWatch:
    """The picture conditions of one camera, sample after sample (see the module docstring)."""

    blank_max_contrast: float = 4.0
    view_min_similarity: float = 0.5
    frozen_max_changed: float = 0.001
    _previous: GreyImage | None = None
    _reference: GreyImage | None = None
    conditions: PictureConditions | None = None
    """The latest conditions (``None`` before the first sample)."""

    def __post_init__(self) -> None:
        if self.blank_max_contrast < 0:
            raise ValueError(f"blank_max_contrast must be >= 0, got {self.blank_max_contrast}")
        if not -1.0 <= self.view_min_similarity <= 1.0:
            raise ValueError(f"view_min_similarity is a correlation in [-1, 1], got "
                             f"{self.view_min_similarity}")
        if not 0.0 <= self.frozen_max_changed < 1.0:
            raise ValueError(f"frozen_max_changed is a fraction in [0, 1), got "
                             f"{self.frozen_max_changed}")

    def observe(self, thumbnail: Thumbnail) -> PictureConditions:
        """The conditions of a newly sampled frame's ``thumbnail`` (a new frame: the sampler
        never takes one twice)."""
        current = np.asarray(thumbnail, dtype=np.uint8)
        contrast = float(current.std())
        blank = contrast <= self.blank_max_contrast
        frozen = False
        if self._previous is not None and self._previous.shape == current.shape:
            moved = np.abs(self._previous.astype(np.int16) - current.astype(np.int16)) > 1
            # A uniform picture repeats itself too: that is reported as blank, not frozen.
            frozen = not blank and \
                float(np.count_nonzero(moved)) / moved.size <= self.frozen_max_changed
        self._previous = current
        score = None
        view_changed = False
        if not blank:
            if self._reference is None:
                self._reference = current
            else:
                score = similarity(self._reference, current)
                if score is not None and score < self.view_min_similarity:
                    view_changed = True
                else:
                    self._reference = current  # follow slow changes of a matching view
        self.conditions = PictureConditions(frozen=frozen, blank=blank,
                                            view_changed=view_changed, similarity=score,
                                            contrast=contrast)
        return self.conditions

    def reset(self) -> None:
        """Forget the previous picture and the reference view (the camera was reconnected
        or reconfigured)."""
        self._previous = None
        self._reference = None
        self.conditions = None
