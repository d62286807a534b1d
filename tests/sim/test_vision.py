"""The simulator's scenes and its judge: rendered frames, after the resizing and JPEG the daemon
applies, must be judged as the script says; the colour contract must hold; the encoded video
must have the promised shape."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.model.answer import Answer, Decision, Hazard, HelmetStatus, parse_answer
from monitor.model.imaging import decode_jpeg, encode_for_model
from monitor.sim import scenes
from monitor.sim.scenes import (
    FLAME,
    FLAME_CORE,
    FLAME_RULE,
    GROUND,
    HAT,
    HAT_RULE,
    NOISE_AMPLITUDE,
    SKIN,
    SKY,
    SMOKE_GREYS,
    SMOKE_RULE,
    TROUSERS,
    TRUCK,
    TRUCK_DARK,
    VEST,
    VEST_RULE,
    BgrImage,
    ColourRule,
    Language,
    ObjectKind,
    Rgb,
    Scene,
    ScriptedObject,
)
from monitor.sim.vision import Measurements, Person, answer_crop, answer_from, judge, seed_text

SMALL_BUDGET = 256 * 28 * 28
"""200,704 pixels: the smallest budget the judge must cope with."""


def _jpeg(image: BgrImage, quality: int = 70) -> BgrImage:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return decode_jpeg(buffer.tobytes())


def _resized(image: BgrImage, width: int, height: int) -> BgrImage:
    return _jpeg(np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                            dtype=np.uint8))


def _small(image: BgrImage) -> BgrImage:
    return decode_jpeg(encode_for_model(image, max_pixels=SMALL_BUDGET, jpeg_quality=70).jpeg)


VARIANTS: dict[str, Callable[[BgrImage], BgrImage]] = {
    "1280x720": lambda image: _resized(image, 1280, 720),
    "448x448": lambda image: _resized(image, 448, 448),
    "200k-q70": _small,
}

KEY_TIMES: dict[str, tuple[float, ...]] = {
    "fire": (2.0, 8.3, 13.5, 18.0),
    "smoke": (2.0, 8.3, 13.5, 18.0),
    "no_helmet": (1.5, 3.2, 12.0),
    "quiet": (0.0, 11.1),
}


def _essentials(answer: Answer) -> tuple[str, str, str, int]:
    return (answer.fire.answer.value, answer.smoke.answer.value, answer.helmet.status.value,
            answer.helmet.missing_count)


@pytest.fixture(scope="module")
def full_hd_frames() -> dict[tuple[str, float], tuple[Scene, BgrImage]]:
    frames: dict[tuple[str, float], tuple[Scene, BgrImage]] = {}
    for name, times in KEY_TIMES.items():
        scene = scenes.PRESETS[name](width=1920, height=1080)
        for t in times:
            frames[name, t] = (scene, scenes.render_frame(scene, t))
    return frames


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(("preset", "t"),
                         [(name, t) for name, times in KEY_TIMES.items() for t in times])
def test_presets_judged_as_scripted_after_resize_and_jpeg(
    full_hd_frames: dict[tuple[str, float], tuple[Scene, BgrImage]],
    preset: str, t: float, variant: str,
) -> None:
    scene, frame = full_hd_frames[preset, t]
    image = VARIANTS[variant](frame)
    assert _essentials(judge(image)) == _essentials(scenes.expected_answer(scene, t))


@pytest.mark.parametrize("preset", sorted(scenes.PRESETS))
def test_presets_at_default_size_judged_as_scripted_every_second(preset: str) -> None:
    scene = scenes.PRESETS[preset]()
    assert (scene.width, scene.height, scene.fps, scene.gop) == (640, 360, 10, 20)
    for t in np.arange(0.25, scene.duration_s, 1.0):
        frame = scenes.render_frame(scene, float(t))
        expected = _essentials(scenes.expected_answer(scene, float(t)))
        assert _essentials(judge(frame)) == expected, f"raw frame at {t}s"
        assert _essentials(judge(_small(frame))) == expected, f"200k px q70 at {t}s"


def test_preset_scripts() -> None:
    fire = scenes.fire()
    assert fire.duration_s == 24.0
    assert [scenes.expected_answer(fire, t).fire.answer for t in (3.9, 4.0, 13.9, 14.0)] == [
        Decision.NO, Decision.YES, Decision.YES, Decision.NO]
    assert all(scenes.expected_answer(fire, t).helmet.status is HelmetStatus.ALL_WORN
               for t in (0.0, 10.0, 23.9))
    smoke = scenes.smoke()
    assert [scenes.expected_answer(smoke, t).smoke.answer for t in (3.9, 4.0, 13.9, 14.0)] == [
        Decision.NO, Decision.YES, Decision.YES, Decision.NO]
    no_helmet = scenes.no_helmet()
    assert no_helmet.duration_s == 20.0
    assert scenes.expected_answer(no_helmet, 2.9).helmet.status is HelmetStatus.ALL_WORN
    after = scenes.expected_answer(no_helmet, 3.0).helmet
    assert (after.status, after.missing_count) == (HelmetStatus.SOME_MISSING, 1)
    quiet = scenes.quiet()
    assert not any(scenes.expected_answer(quiet, t).is_positive(hazard)
                   for t in (0.0, 19.9) for hazard in Hazard)


def test_presets_take_size_overrides_and_render_deterministically() -> None:
    scene = scenes.PRESETS["fire"](width=1280, height=720, fps=25, gop=50)
    assert (scene.width, scene.height, scene.fps, scene.gop) == (1280, 720, 25, 50)
    frame = scenes.render_frame(scene, 5.0)
    assert frame.shape == (720, 1280, 3)
    assert frame.dtype == np.uint8
    assert np.array_equal(frame, scenes.render_frame(scene, 5.0))
    # Noise and the moving truck change every frame: the video has motion even when quiet.
    assert not np.array_equal(frame, scenes.render_frame(scene, 5.1))


def test_judge_describes_location_in_the_requested_language() -> None:
    scene = scenes.fire()
    frame = scenes.render_frame(scene, 8.0)
    english = judge(frame, "en")
    assert "bottom-left" in english.fire.description
    chinese = judge(frame, "zh")
    assert "左下方" in chinese.fire.description
    no_helmet = judge(scenes.render_frame(scenes.no_helmet(), 8.0), "en").helmet
    assert "bottom-right" in no_helmet.description
    assert no_helmet.missing_count == 1


# --- The colour contract. -----------------------------------------------------------------------

RULES = {"flame": FLAME_RULE, "smoke": SMOKE_RULE, "vest": VEST_RULE, "hat": HAT_RULE}
BACKGROUND = {"sky": SKY, "ground": GROUND, "truck": TRUCK, "truck_dark": TRUCK_DARK}


def _blend(a: Rgb, b: Rgb, alpha: float) -> Rgb:
    return (round(a[0] * alpha + b[0] * (1 - alpha)), round(a[1] * alpha + b[1] * (1 - alpha)),
            round(a[2] * alpha + b[2] * (1 - alpha)))


def _noisy(colour: Rgb) -> list[Rgb]:
    offsets = (-NOISE_AMPLITUDE, 0, NOISE_AMPLITUDE)
    return [(colour[0] + dr, colour[1] + dg, colour[2] + db)
            for dr, dg, db in itertools.product(offsets, repeat=3)]


def test_background_and_its_blends_match_no_rule() -> None:
    colours = list(BACKGROUND.values())
    blends = [_blend(a, b, alpha) for a, b in itertools.combinations(colours, 2)
              for alpha in np.linspace(0, 1, 21)]
    for colour in blends:
        for noisy in _noisy(colour):
            matched = [name for name, rule in RULES.items() if rule.matches(noisy)]
            assert not matched, f"background colour {noisy} matches {matched}"


@pytest.mark.parametrize(("colour", "rule_name"), [
    (FLAME, "flame"), (FLAME_CORE, "flame"), (VEST, "vest"), (HAT, "hat"),
    *[((grey, grey, grey), "smoke") for grey in SMOKE_GREYS],
])
def test_object_colours_match_their_rule_only(colour: Rgb, rule_name: str) -> None:
    for noisy in _noisy(colour):
        clipped: Rgb = (min(255, max(0, noisy[0])), min(255, max(0, noisy[1])),
                        min(255, max(0, noisy[2])))
        matched = [name for name, rule in RULES.items() if rule.matches(clipped)]
        assert matched == [rule_name], f"{clipped} matches {matched}"


@pytest.mark.parametrize("colour", [SKIN, TROUSERS])
def test_body_colours_match_no_rule(colour: Rgb) -> None:
    assert not any(rule.matches(colour) for rule in RULES.values())


def test_colour_rule_bounds_are_bgr_for_opencv() -> None:
    rule = ColourRule(r=(1, 2), g=(3, 4), b=(5, 6))
    assert (rule.bgr_lower, rule.bgr_upper) == ((5, 3, 1), (6, 4, 2))


def test_empty_scene_is_all_negative() -> None:
    scene = Scene(width=640, height=360, fps=10, gop=20, duration_s=1.0)
    frame = scenes.render_frame(scene, 0.5)
    for image in (frame, _small(frame), _resized(frame, 448, 448)):
        assert _essentials(judge(image)) == ("no", "no", "no_person", 0)


# --- Thresholds and the text format. ------------------------------------------------------------


def _measurements(flame: float, smoke: float, hats: list[float]) -> Measurements:
    persons = tuple(Person(x=(i + 1) / (len(hats) + 1), y=0.7, vest_area=0.002, hat_fraction=h)
                    for i, h in enumerate(hats))
    return Measurements(width=640, height=360, flame_fraction=flame, flame_centre=(0.2, 0.8),
                        smoke_fraction=smoke, smoke_centre=(0.5, 0.3), persons=persons)


@pytest.mark.parametrize(("flame", "expected"), [
    (0.0, Decision.NO), (0.00029, Decision.NO), (0.0003, Decision.UNCERTAIN),
    (0.00149, Decision.UNCERTAIN), (0.0015, Decision.YES),
])
def test_fire_thresholds(flame: float, expected: Decision) -> None:
    assert answer_from(_measurements(flame, 0.0, [])).fire.answer is expected


@pytest.mark.parametrize(("smoke", "expected"), [
    (0.0049, Decision.NO), (0.005, Decision.UNCERTAIN), (0.0199, Decision.UNCERTAIN),
    (0.02, Decision.YES),
])
def test_smoke_thresholds(smoke: float, expected: Decision) -> None:
    assert answer_from(_measurements(0.0, smoke, [])).smoke.answer is expected


@pytest.mark.parametrize(("hats", "status", "missing"), [
    ([], HelmetStatus.NO_PERSON, 0),
    ([0.2, 0.08], HelmetStatus.ALL_WORN, 0),
    ([0.2, 0.0], HelmetStatus.SOME_MISSING, 1),
    ([0.029, 0.0], HelmetStatus.NONE_WORN, 2),
    ([0.2, 0.05], HelmetStatus.UNCERTAIN, 0),
])
def test_helmet_status(hats: list[float], status: HelmetStatus, missing: int) -> None:
    helmet = answer_from(_measurements(0.0, 0.0, hats)).helmet
    assert (helmet.status, helmet.missing_count) == (status, missing)


CASES = [
    (flame, smoke, hats)
    for flame in (0.0, 0.0005, 0.01)
    for smoke in (0.0, 0.01, 0.05)
    for hats in ([], [0.2], [0.2, 0.0], [0.0], [0.05])
]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_seed_text_parses_back_for_every_answer(language: Language) -> None:
    for flame, smoke, hats in CASES:
        answer = answer_from(_measurements(flame, smoke, hats), language)
        text = seed_text(answer, language)
        parsed = parse_answer(text)
        assert parsed.fire.answer is answer.fire.answer, text
        assert parsed.smoke.answer is answer.smoke.answer, text
        assert parsed.helmet.status is answer.helmet.status, text
        # A "no" is explained in free text (as Qwen does); a "yes" keeps its description.
        if answer.fire.description:
            assert parsed.fire.description == answer.fire.description.rstrip("。."), text
        else:
            assert parsed.fire.description, text
        if answer.helmet.description:
            assert parsed.helmet.description == answer.helmet.description.rstrip("。."), text


# --- Random placements. -------------------------------------------------------------------------


@st.composite
def single_object_scenes(draw: st.DrawFn) -> ScriptedObject:
    kinds: list[ObjectKind] = ["fire", "smoke", "worker_helmet", "worker_no_helmet"]
    kind = draw(st.sampled_from(kinds))
    if kind == "fire":
        return ScriptedObject("fire", 0.0, 10.0, x=draw(st.floats(0.1, 0.9)),
                              y=draw(st.floats(0.45, 0.95)), scale=draw(st.floats(0.7, 1.5)))
    if kind == "smoke":
        return ScriptedObject("smoke", 0.0, 10.0, x=draw(st.floats(0.25, 0.75)),
                              y=draw(st.floats(0.2, 0.6)), scale=draw(st.floats(0.7, 1.3)))
    scale = draw(st.floats(0.7, 2.0))
    # Keep the whole worker, hat included (0.21 of the height at scale 1), in the picture.
    feet = draw(st.floats(0.23 * scale + 0.02, 0.97))
    return ScriptedObject(kind, 0.0, 10.0, x=draw(st.floats(0.08, 0.92)), y=feet, scale=scale)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=single_object_scenes(), t=st.floats(0.0, 9.9))
def test_random_single_objects_judged_right_at_small_budget(obj: ScriptedObject,
                                                            t: float) -> None:
    scene = Scene(width=640, height=360, fps=10, gop=20, duration_s=10.0, objects=(obj,))
    image = _small(scenes.render_frame(scene, t))
    assert _essentials(judge(image)) == _essentials(scenes.expected_answer(scene, t))


# --- Encoding. ----------------------------------------------------------------------------------

SHORT = Scene(width=320, height=180, fps=10, gop=5, duration_s=2.5, name="short", objects=(
    ScriptedObject("fire", 1.0, 2.0, x=0.3, y=0.8),
    ScriptedObject("worker_no_helmet", 0.0, 10.0, x=0.7, y=0.9),
))


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenes.write_scene(SHORT, tmp_path_factory.mktemp("video") / "short.mp4")


def test_write_scene_size_frames_and_keyframe_interval(short_video: Path) -> None:
    with av.open(str(short_video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (320, 180)
        assert stream.average_rate == 10
        packets = [packet for packet in container.demux(stream) if packet.size]
    assert len(packets) == SHORT.frame_count == 25
    keyframes = [index for index, packet in enumerate(packets) if packet.is_keyframe]
    assert keyframes == [0, 5, 10, 15, 20]
    # No B-frames: packets come in presentation order.
    pts = [packet.pts for packet in packets if packet.pts is not None]
    assert len(pts) == len(packets)
    assert pts == sorted(pts)


def test_write_scene_is_faststart_mp4(short_video: Path) -> None:
    data = short_video.read_bytes()
    assert data[4:8] == b"ftyp"
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_decoded_video_frames_are_judged_as_scripted(short_video: Path) -> None:
    with av.open(str(short_video)) as container:
        decoded = [np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
                   for frame in container.decode(video=0)]
    assert len(decoded) == 25
    for index in (3, 14, 22):
        t = index / SHORT.fps
        expected = _essentials(scenes.expected_answer(SHORT, t))
        assert _essentials(judge(decoded[index])) == expected, f"frame {index}"
        assert _essentials(judge(_small(decoded[index]))) == expected, f"frame {index} small"


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs GStreamer")
def test_gstreamer_parses_the_file(short_video: Path) -> None:
    subprocess.run(
        ["gst-launch-1.0", "-q", "filesrc", f"location={short_video}", "!", "qtdemux", "!",
         "h264parse", "!", "fakesink"],
        check=True, timeout=30, capture_output=True,
    )


def test_scene_validation() -> None:
    with pytest.raises(ValueError, match="even"):
        Scene(width=641, height=360, fps=10, gop=20, duration_s=1.0)
    with pytest.raises(ValueError, match="start_s"):
        ScriptedObject("fire", 5.0, 4.0, x=0.5, y=0.5)
    with pytest.raises(ValueError, match="fractions"):
        ScriptedObject("smoke", 0.0, 4.0, x=1.5, y=0.5)


def test_fire_and_smoke_answers_carry_boxes_around_the_scripted_objects() -> None:
    fire_scene, smoke_scene = scenes.fire(), scenes.smoke()
    fire_answer = judge(scenes.render_frame(fire_scene, 6.0))
    (x1, y1, x2, y2), = (b.bbox_2d for b in fire_answer.boxes(Hazard.FIRE))
    # The flame's base is scripted at (0.30, 0.80) of 640x360.
    assert x1 < 0.30 * 640 < x2
    assert y1 < 0.80 * 360 <= y2 + 2
    smoke_answer = judge(scenes.render_frame(smoke_scene, 6.0))
    (sx1, sy1, sx2, sy2), = (b.bbox_2d for b in smoke_answer.boxes(Hazard.SMOKE))
    assert sx1 < 0.40 * 640 < sx2
    assert sy1 < 0.30 * 360 < sy2
    # Nothing to report: no boxes (quiet frames cost no extra tokens).
    assert not judge(scenes.render_frame(fire_scene, 1.0)).has_boxes


# --- Look-alikes and zoom-in answers. ------------------------------------------------------------

LOOKALIKE_BUDGET = 160 * 28 * 28
"""A small budget: a 960x540 frame is sent as 448x252, where a distant worker's head is ~4 px."""


def _zoom(frame: BgrImage, answer: Answer, hazard: Hazard, scale: float) -> BgrImage:
    """The crop of the answer's first box from the full frame (boxes in ``scale`` pixels)."""
    x1, y1, x2, y2 = (round(v / scale) for v in answer.boxes(hazard)[0].bbox_2d)
    pad_x, pad_y = (x2 - x1) // 3 + 8, (y2 - y1) // 3 + 8
    return frame[max(0, y1 - pad_y):y2 + pad_y, max(0, x1 - pad_x):x2 + pad_x].copy()


@pytest.mark.parametrize(("name", "hazard"), [("vest_lookalike", Hazard.FIRE),
                                              ("far_worker", Hazard.NO_HELMET)])
def test_lookalikes_fool_the_whole_frame_but_not_the_zoom_in(name: str, hazard: Hazard) -> None:
    scene = scenes.LOOKALIKES[name](width=960, height=540)
    frame = scenes.render_frame(scene, 6.0)
    sent = encode_for_model(frame, max_pixels=LOOKALIKE_BUDGET)
    whole = judge(decode_jpeg(sent.jpeg))
    # The scene has no hazard, yet the whole frame reports one (and grounds it).
    assert not scenes.expected_answer(scene, 6.0).is_positive(hazard)
    assert whole.is_positive(hazard)
    crop = _zoom(frame, whole, hazard, sent.width / 960)
    close = answer_crop(crop, hazard)
    # Up close the truth shows: a vest is not fire, the distant head wears a hard hat.
    assert close.answer is (Decision.NO if hazard is Hazard.FIRE else Decision.YES)
    assert close.seen == ("orange vest" if hazard is Hazard.FIRE else "hard hat")


@pytest.mark.parametrize(("name", "hazard", "seen"), [("fire", Hazard.FIRE, "flames"),
                                                      ("smoke", Hazard.SMOKE, "smoke"),
                                                      ("no_helmet", Hazard.NO_HELMET,
                                                       "bare head")])
def test_real_hazards_are_confirmed_up_close(name: str, hazard: Hazard, seen: str) -> None:
    frame = scenes.render_frame(scenes.PRESETS[name](width=960, height=540), 8.0)
    sent = encode_for_model(frame, max_pixels=LOOKALIKE_BUDGET)
    whole = judge(decode_jpeg(sent.jpeg))
    close = answer_crop(_zoom(frame, whole, hazard, sent.width / 960), hazard, "en")
    assert close.seen == seen
    assert close.answer is (Decision.NO if hazard is Hazard.NO_HELMET else Decision.YES)
    # Chinese descriptions when asked in Chinese.
    assert answer_crop(_zoom(frame, whole, hazard, sent.width / 960), hazard, "zh").seen \
        != seen


def test_a_crop_of_nothing_is_no_fire_and_no_person() -> None:
    empty = scenes.render_frame(Scene(width=160, height=160, fps=10, gop=20, duration_s=1.0),
                                0.0)
    assert answer_crop(empty, Hazard.FIRE).answer is Decision.NO
    assert answer_crop(empty, Hazard.SMOKE).answer is Decision.NO
    assert answer_crop(empty, Hazard.NO_HELMET).answer is Decision.UNCERTAIN
