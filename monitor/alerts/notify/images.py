"""Evidence images that fit a service's limit: a JPEG over it is scaled down and re-encoded.

CPU work (decode, resize, encode): callers run it in a thread, never on the event loop.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SHRINK_QUALITY = 80
SHRINK_ATTEMPTS = 4
MIN_SIDE = 160
"""Smaller than this, an image says nothing: give up instead."""


def fit_jpeg(image: bytes, max_bytes: int) -> bytes | None:
    """``image`` itself when it fits ``max_bytes``, else a smaller JPEG of it that does, or
    ``None`` when it cannot be decoded or does not fit even small."""
    if len(image) <= max_bytes:
        return image
    pixels = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        return None
    size = len(image)
    for _ in range(SHRINK_ATTEMPTS):
        # JPEG size grows about with the pixel count: scale the sides by the square root.
        scale = math.sqrt(max_bytes / size) * 0.9
        height, width = pixels.shape[:2]
        new_width, new_height = int(width * scale), int(height * scale)
        if min(new_width, new_height) < MIN_SIDE:
            return None
        pixels = cv2.resize(pixels, (new_width, new_height), interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, SHRINK_QUALITY])
        if not ok:
            return None
        data = encoded.tobytes()
        if len(data) <= max_bytes:
            return data
        size = len(data)
    return None
