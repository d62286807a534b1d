"""Ingest decisions without I/O: stream meter, stall timeout, decode mode, change gate,
confirm-now, the pixel budget against Qwen's own rule, regions of interest, redaction."""

from __future__ import annotations

import math
import random
from typing import Any

import av.error
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from monitor.config import ConfigError, config_from_mapping
from monitor.ingest.changegate import (
    PIXEL_THRESHOLD,
    ChangeGate,
    changed_fraction,
    thumbnail_size,
)
from monitor.ingest.decode import (
    STALL_MIN_S,
    StreamMeter,
    choose_decode,
    keyframe_needed,
    picture_timeout_s,
    stall_timeout_s,
)
from monitor.ingest.frame import CapturedFrame, thumbnail_row_step
from monitor.ingest.reader import CameraReader
from monitor.ingest.sampling import IntervalSampler
from monitor.ingest.source import StreamSource, stream_source
from monitor.ingest.urls import with_credentials
from monitor.model.imaging import ROI_FILL, RegionOfInterest, smart_resize
from monitor.redaction import redact

# --- Stream meter, stall timeout, decode mode. ---------------------------------------------------


def feed(meter: StreamMeter, fps: float, gop: int, seconds: float, start: float = 0.0) -> None:
    """Packets of a stream at ``fps`` with a keyframe every ``gop`` packets."""
    for i in range(round(seconds * fps)):
        t = start + i / fps
        meter.packet(t, keyframe=i % gop == 0, now=100.0 + t)


def test_meter_measures_fps_and_gop_from_timestamps() -> None:
    meter = StreamMeter()
    feed(meter, fps=25, gop=50, seconds=4.1)
    assert meter.fps == pytest.approx(25.0)
    assert meter.gop_frames == 50
    assert meter.gop_s == pytest.approx(2.0)


def test_meter_without_timestamps_uses_arrival_times() -> None:
    meter = StreamMeter()
    for i in range(30):
        meter.packet(None, keyframe=i % 10 == 0, now=i * 0.1)
    assert meter.fps == pytest.approx(10.0)
    assert meter.gop_s == pytest.approx(1.0)


def test_meter_restarts_when_timestamps_jump_back() -> None:
    meter = StreamMeter()
    feed(meter, fps=10, gop=10, seconds=3, start=1000.0)
    feed(meter, fps=10, gop=20, seconds=4.5, start=0.0)  # camera rebooted: clock restarts
    assert meter.gop_frames == 20
    assert meter.gop_s == pytest.approx(2.0)


def test_meter_keeps_measurements_across_reconnects() -> None:
    meter = StreamMeter()
    feed(meter, fps=25, gop=25, seconds=3)
    meter.reset_connection()
    assert meter.gop_s == pytest.approx(1.0)
    assert meter.last_packet_at is None
    # The new connection has no rate of its own yet; the stall timeout keeps the old one.
    assert meter.fps is None
    assert meter.known_fps == pytest.approx(25.0)
    feed(meter, fps=5, gop=5, seconds=2, start=50.0)
    assert meter.known_fps == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(None, 10.0), (25.0, STALL_MIN_S), (5.0, 2.0), (1.0, 10.0), (0.2, 50.0)],
)
def test_stall_timeout_follows_the_frame_rate(fps: float | None, expected: float) -> None:
    assert stall_timeout_s(fps, fallback_s=10.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fps", "gop", "expected"),
    [(25.0, None, 10.0),  # GOP unknown: the configured read timeout
     (25.0, 2.0, 6.0),  # stall timeout (2 s at 25 fps) + two GOPs
     # A connection's first "GOP" of one frame (a keyframe sent at once on PLAY, then the
     # camera's own schedule) must not shrink the timeout to the stall timeout alone.
     (25.0, 0.04, 4.0),
     (1.0, 10.0, 30.0)],
)
def test_picture_timeout_allows_two_gops_past_the_stall(fps: float, gop: float | None,
                                                        expected: float) -> None:
    assert picture_timeout_s(fps, gop, read_timeout_s=10.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mode", "interval", "gop", "since_key", "expected"),
    [
        ("auto", 2.0, None, None, "keyframes"),  # unknown GOP: keyframes are valid samples
        ("auto", 2.0, 2.0, 0.5, "keyframes"),
        ("auto", 2.0, 2.04, 0.5, "keyframes"),  # timestamp jitter
        ("auto", 2.0, 4.0, 0.5, "all"),
        ("auto", 1.0, None, 3.0, "all"),  # no keyframe for 3 s: GOP longer than the interval
        ("keyframes", 0.5, 4.0, None, "keyframes"),
        ("all", 10.0, 1.0, None, "all"),
    ],
)
def test_decode_mode(mode: Any, interval: float, gop: float | None, since_key: float | None,
                     expected: str) -> None:
    assert choose_decode(mode, interval, gop, since_key) == expected


# --- Sampling: newest frame, confirm-now. --------------------------------------------------------


def test_due_without_new_frame_asks_to_wait_for_one() -> None:
    sampler = IntervalSampler(interval_s=2.0)
    sampler.taken(0.0, 4)
    decision = sampler.decide(2.0, 4)
    assert not decision.take
    assert decision.needs_frame
    assert not sampler.decide(1.0, 5).needs_frame  # not due yet: a plain wait


def test_confirm_now_takes_the_next_frame_after_the_minimum_gap() -> None:
    sampler = IntervalSampler(interval_s=5.0)
    sampler.taken(0.0, 1)
    sampler.expedite(min_gap_s=0.5)  # positive verdict arrived at t=0.3
    assert not sampler.decide(0.3, 2).take
    assert sampler.decide(0.5, 2).take
    sampler.taken(0.6, 2)
    # The cadence restarts from the confirmation sample: no burst of catch-up samples.
    assert not sampler.decide(1.0, 3).take
    assert not sampler.decide(5.0, 3).take
    assert sampler.decide(5.5, 3).take


def test_confirm_now_never_delays_a_due_sample() -> None:
    sampler = IntervalSampler(interval_s=1.0)
    sampler.taken(0.0, 1)
    sampler.expedite(min_gap_s=3.0)
    assert sampler.decide(1.0, 2).take


def test_expedite_rejects_negative_gap() -> None:
    with pytest.raises(ValueError, match="min_gap_s"):
        IntervalSampler(interval_s=1.0).expedite(-1.0)


# --- Change gate. ---------------------------------------------------------------------------------


def scene(seed: int = 0, noise: int = 0, box: tuple[int, int, int, int] | None = None,
          ) -> np.ndarray[Any, np.dtype[np.uint8]]:
    rng = np.random.default_rng(seed)
    image = np.full((36, 64), 120, dtype=np.int16)
    if noise:
        image += rng.integers(-noise, noise + 1, size=image.shape, dtype=np.int16)
    if box is not None:
        x, y, w, h = box
        image[y : y + h, x : x + w] = 230
    return np.clip(image, 0, 255).astype(np.uint8)


def test_gate_analyses_the_first_frame_then_skips_an_unchanged_scene() -> None:
    gate = ChangeGate(max_verdict_age_s=60.0)
    first = scene()
    assert gate.check(first, 0.0).analyse
    gate.analysed(first, 0.0)
    decision = gate.check(scene(seed=1, noise=3), 2.0)  # only noise: same scene
    assert not decision.analyse
    assert decision.changed == 0.0


def test_gate_passes_a_small_new_object() -> None:
    gate = ChangeGate(max_verdict_age_s=60.0)
    gate.analysed(scene(), 0.0)
    # A person far away: 3x5 thumbnail pixels of 64x36 (0.65 %).
    assert gate.check(scene(box=(40, 20, 3, 5)), 2.0).analyse


def test_gate_reanalyses_once_the_verdict_is_too_old() -> None:
    gate = ChangeGate(max_verdict_age_s=30.0)
    gate.analysed(scene(), 0.0)
    assert not gate.check(scene(), 29.0).analyse
    decision = gate.check(scene(), 30.0)
    assert decision.analyse
    assert "old" in decision.reason


def test_gate_treats_a_new_resolution_as_a_change() -> None:
    assert changed_fraction(scene(), np.zeros((10, 10), dtype=np.uint8)) == 1.0


def test_gate_reset_and_validation() -> None:
    gate = ChangeGate(max_verdict_age_s=5.0)
    gate.analysed(scene(), 0.0)
    gate.reset()
    assert gate.check(scene(), 1.0).analyse
    with pytest.raises(ValueError, match="max_verdict_age_s"):
        ChangeGate(max_verdict_age_s=0)
    with pytest.raises(ValueError, match="area_threshold"):
        ChangeGate(max_verdict_age_s=1, area_threshold=1.5)


def test_thumbnail_size_keeps_the_aspect_ratio() -> None:
    assert thumbnail_size(1920, 1080) == (64, 36)
    assert thumbnail_size(640, 480) == (64, 48)


@pytest.mark.parametrize(("width", "height", "step"),
                         [(1920, 1080, 6), (1280, 720, 4), (640, 360, 2), (320, 180, 1),
                          (3840, 2160, 12), (64, 20, 1)])
def test_a_thumbnail_reads_few_rows_and_matches_one_from_every_pixel(
        width: int, height: int, step: int) -> None:
    import av  # noqa: PLC0415 - only this test needs a decoded-picture object
    import cv2  # noqa: PLC0415

    size = thumbnail_size(width, height)
    assert thumbnail_row_step(height, size[1]) == step
    # A scene with large shapes and fine noise, as a camera picture in the decoder's format.
    rng = np.random.default_rng(7)
    grey = np.clip(rng.normal(0, 3, (height, width)) + 110, 0, 255)
    grey[height // 4: height // 2, width // 3: width // 2] = 220
    grey[:, : width // 8] = 30
    yuv = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    yuv[:height] = grey.astype(np.uint8)
    picture = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    frame = CapturedFrame("yard", 1, 0.0, 0.0, width, height, picture)
    thumbnail = frame.grey_thumbnail(*size)
    everything = cv2.resize(yuv[:height], size, interpolation=cv2.INTER_AREA)
    assert thumbnail.shape == everything.shape == (size[1], size[0])
    difference = np.abs(thumbnail.astype(np.int16) - everything.astype(np.int16))
    # Far inside the change gate's own threshold: the gate sees the same scene.
    assert difference.mean() < 1.0
    assert difference.max() < PIXEL_THRESHOLD


# --- Pixel budget against Qwen's rule. -----------------------------------------------------------


def qwen_smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                      max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """transformers' ``Qwen2VLImageProcessor`` ``smart_resize``, transcribed as published."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@given(st.integers(10, 5000), st.integers(10, 5000), st.integers(4, 16384),
       st.integers(4, 16384))
def test_pixel_budget_is_qwens_rule(height: int, width: int, tokens_a: int,
                                    tokens_b: int) -> None:
    if max(height, width) / min(height, width) > 200:
        return  # refused by both (Qwen raises too)
    low, high = sorted((tokens_a * 784, tokens_b * 784))
    assert smart_resize(height, width, min_pixels=low, max_pixels=high) == \
        qwen_smart_resize(height, width, min_pixels=low, max_pixels=high)


# --- Regions of interest. -------------------------------------------------------------------------


def test_rectangle_roi_crops_before_resizing() -> None:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[50:, 100:] = 255
    crop = RegionOfInterest(((0.5, 0.5), (1.0, 1.0))).crop(image)
    assert crop.shape == (50, 100, 3)
    assert crop.min() == 255


def test_polygon_roi_greys_out_the_outside() -> None:
    image = np.full((100, 100, 3), 255, dtype=np.uint8)
    triangle = RegionOfInterest(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    crop = triangle.crop(image)
    assert crop.shape == (100, 100, 3)
    assert tuple(crop[5, 5]) == (255, 255, 255)  # inside
    assert tuple(crop[95, 95]) == ROI_FILL  # outside


@pytest.mark.parametrize(
    ("points", "message"),
    [([[0.1, 0.1]], "2 points"), ([[0.1, 0.1], [1.5, 0.5]], "fractions"),
     ([[0.1, 0.1], [0.1, 0.9]], "no area")],
)
def test_bad_roi_is_a_config_error_naming_the_fix(points: list[list[float]],
                                                  message: str) -> None:
    data = {"cameras": [{"id": "c", "url": "rtsp://h/x", "roi": points}]}
    with pytest.raises(ConfigError, match=message) as caught:
        config_from_mapping(data)
    assert "cameras.0.roi" in str(caught.value)
    assert "lower half" in str(caught.value)


def test_ingest_settings_in_config() -> None:
    config = config_from_mapping({
        "defaults": {"decode": "keyframes", "change_gate": False},
        "cameras": [{"id": "c", "url": "/dev/video0", "backend": "opencv", "decode": "all",
                     "roi": [[0, 0], [0.5, 1]]}],
    })
    assert config.defaults.decode == "keyframes"
    assert config.cameras[0].decode == "all"
    with pytest.raises(ConfigError, match="decode"):
        config_from_mapping({"defaults": {"decode": "some"}})


# --- Redaction of credentials in every string form. ----------------------------------------------

PASSWORD = "s3cr:et@/x"


@pytest.mark.parametrize(
    "make_error",
    [
        lambda url: av.error.HTTPUnauthorizedError(-825242872, "Unauthorized", url),
        lambda url: av.error.InvalidDataError(1094995529, "Invalid data", url),
        lambda url: ConnectionRefusedError(111, f"Connection refused: {url}"),
        lambda url: OSError(f"cannot open {url}"),
        lambda url: ValueError(f"bad {url.replace('%3A', ':')}"),  # partly decoded
    ],
)
def test_errors_never_show_the_password(make_error: Any) -> None:
    url = with_credentials("rtsp://10.0.0.5:554/ch1", "viewer", PASSWORD)
    reader = CameraReader(StreamSource("c", url), rng=random.Random(0))
    exc = make_error(url)
    text = reader._describe(exc)
    for form in (PASSWORD, "s3cr%3Aet%40%2Fx", "s3cr:et@/x"):
        assert form not in text
    assert "s3cr" not in text
    assert PASSWORD not in repr(reader.status)
    assert reader.status.url == "rtsp://viewer:***@10.0.0.5:554/ch1"
    assert redact(url) == reader.status.url


@pytest.mark.parametrize("url", [
    with_credentials("rtsp://10.0.0.5:554/ch1", "viewer", PASSWORD),  # written into the URL
    "rtsp://10.0.0.5:554/ch1",  # given apart (below)
])
def test_a_source_never_shows_its_password(url: str) -> None:
    typed = "://" in url and "@" not in url
    source = StreamSource("c", url, username="viewer" if typed else None,
                          password=SecretStr(PASSWORD) if typed else None)
    assert source.url == "rtsp://10.0.0.5:554/ch1"  # the URL holds no credentials
    assert (source.username, source.password_text) == ("viewer", PASSWORD)
    for text in (repr(source), str(source), source.redacted_url):
        assert "s3cr" not in text
    assert source.redacted_url == "rtsp://viewer:***@10.0.0.5:554/ch1"
    # Only the opening call builds the URL with them, percent-encoded.
    assert source.opening_url() == "rtsp://viewer:s3cr%3Aet%40%2Fx@10.0.0.5:554/ch1"


def test_configured_credentials_replace_those_in_the_url() -> None:
    config = config_from_mapping({"cameras": [{
        "id": "c", "url": "rtsp://old:gone@10.0.0.5/ch1", "username": "viewer",
        "password": PASSWORD}]})
    source = stream_source(config, config.cameras[0])
    assert source.url == "rtsp://10.0.0.5/ch1"
    assert (source.username, source.password_text) == ("viewer", PASSWORD)
    assert "gone" not in source.opening_url()


def test_unauthorized_error_is_named_clearly() -> None:
    url = with_credentials("rtsp://10.0.0.5/ch1", "viewer", PASSWORD)
    reader = CameraReader(StreamSource("c", url))
    text = reader._describe(av.error.HTTPUnauthorizedError(-825242872, "Unauthorized", url))
    assert text.startswith("unauthorized:")


def test_a_stale_frame_is_passed_over_for_the_next_one_and_the_cadence_follows() -> None:
    sampler = IntervalSampler(interval_s=2.0)
    sampler.taken(0.0, 1)
    # Due at 2.0; the newest keyframe is 1.5 s old and the next comes within 0.5 s.
    decision = sampler.decide(2.0, 2, newest_age_s=1.5, frame_gap_s=2.0)
    assert not decision.take
    assert decision.needs_frame
    assert sampler.decide(2.5, 3, newest_age_s=0.0, frame_gap_s=2.0).take
    sampler.taken(2.5, 3)
    # The cadence now follows the arrivals: due at 4.5, when the next keyframe comes in.
    assert not sampler.decide(4.4, 3, newest_age_s=1.9, frame_gap_s=2.0).take
    assert sampler.decide(4.5, 4, newest_age_s=0.0, frame_gap_s=2.0).take


@pytest.mark.parametrize(
    ("age", "gap", "late_by"),
    [(0.5, 2.0, 0.0),  # fresh enough
     (2.5, 2.0, 0.0),  # older than a gap: the stream is late, take what there is
     (1.5, 2.0, 1.2),  # already waited half a gap past due
     (1.5, 4.0, 0.0)],  # frames come less often than the interval: never wait
)
def test_fresh_enough_or_overdue_frames_are_taken(age: float, gap: float,
                                                 late_by: float) -> None:
    sampler = IntervalSampler(interval_s=2.0)
    sampler.taken(0.0, 1)
    assert sampler.decide(2.0 + late_by, 2, newest_age_s=age, frame_gap_s=gap).take


@pytest.mark.parametrize(
    ("now", "wanted_at", "gop", "needed"),
    [(0.0, 0.0, 1.0, True),  # nobody said when: decode every keyframe
     (0.0, 4.0, 1.0, False),  # three more keyframes come before the sample is due
     (2.8, 4.0, 1.0, True),  # the next one might come too late
     (0.0, 4.0, None, True),  # GOP unknown
     (5.0, 4.0, 1.0, True)],  # overdue
)
def test_keyframe_needed(now: float, wanted_at: float, gop: float | None,
                         needed: bool) -> None:
    assert keyframe_needed(now, wanted_at, gop) is needed
