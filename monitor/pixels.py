"""Pixel arrays handed between stages: one name each, shared by ingest, model and alerts.

A type vocabulary, not a stage: it imports nothing of the project, so every stage may use it
without depending on another.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BgrImage = npt.NDArray[np.uint8]
"""Height x width x 3, OpenCV's channel order (blue, green, red)."""
GreyImage = npt.NDArray[np.uint8]
"""Height x width, one luma channel."""
YuvPlanes = tuple[GreyImage, GreyImage, GreyImage]
"""Full-range 4:2:0 planes: luma (height x width), then blue and red chroma (half each way)."""
