"""Frames to model input: the pixel budget on Qwen2.5-VL's 28-pixel grid, JPEG, data URLs.

Qwen2.5-VL cuts an image into 14x14 patches and merges 2x2 of them into one token, so its
processor resizes every image to a multiple of 28 on both sides, within ``min_pixels`` and
``max_pixels`` (``smart_resize`` in Qwen's ``qwen_vl_utils`` and in transformers'
``Qwen2VLImageProcessor``). Resizing here to exactly that size means the server does no second
resize, the image costs a known number of tokens, and no bandwidth is spent on pixels the server
would throw away.

Everything here is pure and blocking (CPU-bound): call it from a worker thread, never from the
event loop.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from monitor.config import roi_problem
from monitor.pixels import BgrImage, YuvPlanes

PATCH_GRID = 28
"""Qwen2.5-VL: 14-pixel patches, 2x2 merged into one token."""
MAX_ASPECT_RATIO = 200
DEFAULT_MIN_PIXELS = 4 * PATCH_GRID * PATCH_GRID
DEFAULT_MAX_PIXELS = 16384 * PATCH_GRID * PATCH_GRID


Point = tuple[float, float]
ROI_FILL = (114, 114, 114)
"""Grey that fills the part of a polygon ROI's bounding box outside the polygon."""


class ImageBudgetError(ValueError):
    """An image cannot be fitted to the pixel budget (degenerate size or aspect ratio)."""


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = PATCH_GRID,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """The (height, width) Qwen2.5-VL's processor resizes an image to.

    Both sides become multiples of ``factor``, the area lands within
    ``[min_pixels, max_pixels]`` and the aspect ratio is kept as closely as the grid allows.
    This follows ``smart_resize`` of transformers' ``Qwen2VLImageProcessor`` rule for rule so
    the token count computed here is the one the server bills.
    """
    if height <= 0 or width <= 0:
        raise ImageBudgetError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageBudgetError(
            f"aspect ratio of {width}x{height} exceeds {MAX_ASPECT_RATIO}:1; crop the image"
        )
    if min_pixels > max_pixels:
        raise ImageBudgetError(f"min_pixels {min_pixels} exceeds max_pixels {max_pixels}")
    resized_h = max(factor, round(height / factor) * factor)
    resized_w = max(factor, round(width / factor) * factor)
    if resized_h * resized_w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        resized_h = max(factor, math.floor(height / beta / factor) * factor)
        resized_w = max(factor, math.floor(width / beta / factor) * factor)
    elif resized_h * resized_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_h = math.ceil(height * beta / factor) * factor
        resized_w = math.ceil(width * beta / factor) * factor
    return resized_h, resized_w


def image_tokens(height: int, width: int, *, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """How many image tokens Qwen2.5-VL spends on an image of this size."""
    resized_h, resized_w = smart_resize(height, width, min_pixels=min_pixels,
                                        max_pixels=max_pixels)
    return (resized_h // PATCH_GRID) * (resized_w // PATCH_GRID)


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """A frame ready for the model: JPEG bytes at the budgeted size, and the scale used."""

    jpeg: bytes
    width: int
    height: int
    source_width: int
    source_height: int

    @property
    def data_url(self) -> str:
        """The ``data:image/jpeg;base64,...`` URL that goes into the ``image_url`` part."""
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg).decode("ascii")

    @property
    def tokens(self) -> int:
        """Image tokens this image costs (its size is already on the grid)."""
        return (self.height // PATCH_GRID) * (self.width // PATCH_GRID)


def encode_for_model(
    image: BgrImage,
    *,
    max_pixels: int,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    jpeg_quality: int = 85,
) -> EncodedImage:
    """Resize a BGR frame to its pixel budget on the 28-pixel grid and JPEG-encode it."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageBudgetError(f"expected a BGR image of shape (h, w, 3), got {image.shape}")
    source_h, source_w = image.shape[:2]
    target_h, target_w = smart_resize(source_h, source_w, min_pixels=min_pixels,
                                      max_pixels=max_pixels)
    if (target_h, target_w) != (source_h, source_w):
        # INTER_AREA is the right filter for shrinking (no aliasing); shrinking is the norm.
        interpolation = cv2.INTER_AREA if target_h * target_w < source_h * source_w \
            else cv2.INTER_LINEAR
        image = np.asarray(cv2.resize(image, (target_w, target_h), interpolation=interpolation),
                           dtype=np.uint8)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ImageBudgetError(f"JPEG encoding failed for a {target_w}x{target_h} image")
    return EncodedImage(jpeg=buffer.tobytes(), width=target_w, height=target_h,
                        source_width=source_w, source_height=source_h)


def encode_yuv_jpeg(planes: YuvPlanes, quality: int) -> bytes:
    """Full-range 4:2:0 planes as JPEG bytes: libjpeg-turbo compresses the Y, U and V planes
    as they are, reading their rows where they lie (no contiguous copies), with no colour
    conversion at all. CPU work: off the loop."""
    luma, blue, red = planes
    return bytes(simplejpeg.encode_jpeg_yuv_planes(luma, blue, red, quality=quality))


def encode_bgr_jpeg(image: BgrImage, quality: int) -> bytes:
    """A BGR image as JPEG bytes (``ValueError`` if OpenCV cannot encode it)."""
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {image.shape[1]}x{image.shape[0]} frame")
    return bytes(buffer.tobytes())


@dataclass(frozen=True, slots=True)
class RegionOfInterest:
    """The part of a camera's view that is analysed, as fractions of the frame (0..1).

    Two points are a rectangle (top-left, bottom-right corners); three or more a polygon, whose
    bounding box is cropped and whose outside is filled with neutral grey, so the model neither
    sees nor spends tokens on what lies outside.
    """

    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        problem = roi_problem(self.points)
        if problem:
            raise ValueError(problem)

    @property
    def is_rectangle(self) -> bool:
        """Whether the region is a plain rectangle (no mask needed)."""
        return len(self.points) == 2

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The pixel bounding box ``(x0, y0, x1, y1)`` (end exclusive) in a frame this size."""
        xs = [x for x, _ in self.points]
        ys = [y for _, y in self.points]
        x0, x1 = math.floor(min(xs) * width), math.ceil(max(xs) * width)
        y0, y1 = math.floor(min(ys) * height), math.ceil(max(ys) * height)
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def crop(self, image: BgrImage) -> BgrImage:
        """The region of ``image``: its bounding box, the outside of a polygon greyed out."""
        height, width = image.shape[:2]
        x0, y0, x1, y1 = self.box(width, height)
        cropped = image[y0:y1, x0:x1]
        if self.is_rectangle:
            return np.ascontiguousarray(cropped)
        polygon = np.array([[round(x * width) - x0, round(y * height) - y0]
                            for x, y in self.points], dtype=np.int32)
        mask = np.zeros(cropped.shape[:2], dtype=np.uint8)
        cv2.fillPoly(mask, [polygon], 255)
        result = np.empty_like(cropped)
        result[...] = ROI_FILL
        np.copyto(result, cropped, where=mask[..., None] > 0)
        return result


def decode_jpeg(data: bytes) -> BgrImage:
    """Decode JPEG/PNG bytes into a BGR image, or raise ``ValueError`` naming the problem."""
    if not data:
        # OpenCV asserts on an empty buffer (cv2.error) instead of returning None.
        raise ValueError("cannot decode image: it is empty (0 bytes)")
    array = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ValueError(f"cannot decode image ({len(data)} bytes): {exc.err or exc}") from None
    if image is None:
        raise ValueError(f"cannot decode image ({len(data)} bytes; not a JPEG/PNG?)")
    return np.asarray(image, dtype=np.uint8)
