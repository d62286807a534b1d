"""Synthetic construction-site scenes: scripted fire, smoke and workers, rendered and encoded.

A :class:`Scene` is a size, a frame rate, a GOP length, a duration and a script of
:class:`ScriptedObject` s, each visible from ``start_s`` (inclusive) to ``end_s`` (exclusive) at
a position given relative to the frame (0..1), so one script renders at any resolution.
:func:`render_frame` draws the scene at a time, :func:`write_scene` encodes it as H.264 MP4 for
the RTSP test server, :func:`expected_answer` says what the simulated model must answer, and
:data:`PRESETS` holds the scenes the demo, tests and benchmarks use.

Colour contract
===============

The simulated model (:mod:`monitor.sim.vision`) sees nothing but these colours, so they are THE
contract between the renderer and the judge. All values are RGB; OpenCV images are BGR, so
every colour is reversed when drawn.

==========  ==========================================  ========================================
what        drawn as (RGB)                              pixel rule the judge applies (RGB)
==========  ==========================================  ========================================
background  sky (135,180,235) above the horizon,        must match none of the rules below, also
            ground (120,100,70) below, a slowly         when blended with each other and with
            moving dark-blue truck (40,60,120) with     per-frame noise of +-4 on every channel
            dark wheels, per-frame noise +-4 on every
            pixel
fire        flickering flame blob, orange (255,120,0)   flame: R>=200, 60<=G<=175, B<=90
            with a yellow-orange core (255,165,30)
smoke       soft light-grey cloud (185,185,185), puffs  smoke: 150<=R,G,B<=215 and
            in 160..210, edges blended into the scene   max(R,G,B)-min(R,G,B)<=14
worker      hi-vis vest rectangle, lime (120,230,40);   vest: G>=180, R<=170, B<=100
            skin head (225,180,140) right above it,
            dark trousers (50,50,60) below it
hard hat    yellow (255,215,0) dome and brim on the     hat: R>=220, G>=180, B<=90
            head of a ``worker_helmet``
look-alike  ``worker_orange_vest``: a worker with a     matches the flame rule (the whole-frame
            hard hat in an orange vest (250,115,20)     judge calls it fire); a crop shows a
                                                        filled rectangle, not a flame
==========  ==========================================  ========================================

The rules were checked against blends of every pair of neighbouring colours (anti-aliased edges,
JPEG and H.264 chroma subsampling mix neighbours): no background blend matches any rule, and a
rule matched by a blend only ever occurs on the edge of the object it belongs to, with two
exceptions: the rim where a yellow hat meets the brown ground blends into flame colour for a
pixel or two (at most ~0.013% of the image for the presets, below even the "uncertain" level;
the judge also ignores flame regions thinner than 3 pixels), and where a head meets the sky the
half-and-half blend is smoke-grey for a pixel (far below the smoke thresholds).

Geometry
========

Sizes scale with the frame *height* times the object's ``scale``; positions are fractions of
the width and height. Anchors: fire at the flame's base centre, smoke at the cloud's centre, a
worker at the feet. A worker at scale 1 is 0.20 of the frame height tall (trousers 0.075, vest
0.05 wide x 0.075 tall, head 0.038, hat 0.045 above the vest's top edge).

Everything here is CPU-bound and blocking; the daemon never imports it, only tests, the demo and
benchmarks do.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
import numpy.typing as npt

from monitor.model.answer import Answer, Decision, HazardFinding, HelmetFinding, HelmetStatus

BgrImage = npt.NDArray[np.uint8]
Rgb = tuple[int, int, int]
ObjectKind = Literal["fire", "smoke", "worker_helmet", "worker_no_helmet", "worker_orange_vest"]
Language = Literal["zh", "en"]

# --- The colour contract (RGB). -----------------------------------------------------------------

SKY: Rgb = (135, 180, 235)
GROUND: Rgb = (120, 100, 70)
TRUCK: Rgb = (40, 60, 120)
TRUCK_DARK: Rgb = (25, 28, 35)
"""Wheels and windows: dark, so they cannot match any rule."""
FLAME: Rgb = (255, 120, 0)
FLAME_CORE: Rgb = (255, 165, 30)
SMOKE: Rgb = (185, 185, 185)
SMOKE_GREYS: tuple[int, ...] = (185, 172, 198, 205, 165, 190)
"""Grey levels of the cloud's puffs, all within 160..210."""
VEST: Rgb = (120, 230, 40)
SKIN: Rgb = (225, 180, 140)
HAT: Rgb = (255, 215, 0)
TROUSERS: Rgb = (50, 50, 60)
ORANGE_VEST: Rgb = (250, 115, 20)
"""An orange hi-vis vest: flame-coloured on purpose (the look-alike a whole-frame judge calls
fire; its rectangular shape gives it away on a zoomed-in crop)."""

HORIZON = 0.42
"""Fraction of the height where the sky ends and the ground begins."""
NOISE_AMPLITUDE = 4


@dataclass(frozen=True, slots=True)
class ColourRule:
    """An inclusive per-channel box in RGB, plus an optional limit on the channels' spread."""

    r: tuple[int, int]
    g: tuple[int, int]
    b: tuple[int, int]
    max_spread: int | None = None
    """When set, max(R,G,B) - min(R,G,B) must not exceed it (greyness)."""

    def matches(self, rgb: Rgb) -> bool:
        """Whether one RGB colour satisfies the rule (the judge applies it to whole images)."""
        r, g, b = rgb
        inside = (self.r[0] <= r <= self.r[1] and self.g[0] <= g <= self.g[1]
                  and self.b[0] <= b <= self.b[1])
        if self.max_spread is not None:
            inside = inside and max(rgb) - min(rgb) <= self.max_spread
        return inside

    @property
    def bgr_lower(self) -> tuple[int, int, int]:
        """Lower bounds in OpenCV's BGR order (for ``cv2.inRange``)."""
        return (self.b[0], self.g[0], self.r[0])

    @property
    def bgr_upper(self) -> tuple[int, int, int]:
        """Upper bounds in OpenCV's BGR order (for ``cv2.inRange``)."""
        return (self.b[1], self.g[1], self.r[1])


FLAME_RULE = ColourRule(r=(200, 255), g=(60, 175), b=(0, 90))
SMOKE_RULE = ColourRule(r=(150, 215), g=(150, 215), b=(150, 215), max_spread=14)
VEST_RULE = ColourRule(r=(0, 170), g=(180, 255), b=(0, 100))
HAT_RULE = ColourRule(r=(220, 255), g=(180, 255), b=(0, 90))


# --- Scene description. -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptedObject:
    """One object of a scene's script, visible for ``start_s <= t < end_s``.

    ``x`` and ``y`` are the anchor as fractions of the frame's width and height (fire: base of
    the flame; smoke: centre of the cloud; worker: feet); ``scale`` multiplies the default size.
    """

    kind: ObjectKind
    start_s: float
    end_s: float
    x: float
    y: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("fire", "smoke", "worker_helmet", "worker_no_helmet",
                             "worker_orange_vest"):
            raise ValueError(f"unknown object kind {self.kind!r}")
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(f"need 0 <= start_s < end_s, got {self.start_s}..{self.end_s}")
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise ValueError(f"x and y are fractions of the frame, got ({self.x}, {self.y})")
        if not 0.1 <= self.scale <= 5.0:
            raise ValueError(f"scale must be within 0.1..5, got {self.scale}")

    def active(self, t: float) -> bool:
        """Whether the object is in the picture at time ``t`` (seconds)."""
        return self.start_s <= t < self.end_s


@dataclass(frozen=True, slots=True)
class Scene:
    """A scripted synthetic camera view.

    ``gop`` is the keyframe interval in frames of the encoded file (and so how long a client
    joining the RTSP stream mid-way waits for its first decodable frame). ``seed`` fixes the
    noise pattern, so rendering is deterministic.
    """

    width: int
    height: int
    fps: int
    gop: int
    duration_s: float
    objects: tuple[ScriptedObject, ...] = ()
    name: str = "custom"
    seed: int = 0
    traffic: bool = True
    """Draw the truck that crosses the site (off: a static view, e.g. for change-gate
    benchmarks where only the scripted objects move)."""

    def __post_init__(self) -> None:
        # yuv420p halves the chroma planes, so H.264 in MP4 needs even sides.
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even and >= 16, got "
                             f"{self.width}x{self.height}")
        if not 1 <= self.fps <= 240:
            raise ValueError(f"fps must be within 1..240, got {self.fps}")
        if self.gop < 1:
            raise ValueError(f"gop must be >= 1 frame, got {self.gop}")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")

    @property
    def frame_count(self) -> int:
        """Frames in the encoded file: one every ``1/fps`` seconds from t=0."""
        return max(1, round(self.duration_s * self.fps))

    def active_objects(self, t: float) -> list[ScriptedObject]:
        """The objects in the picture at time ``t``."""
        return [obj for obj in self.objects if obj.active(t)]


# --- Locations, shared with the judge so both describe places alike. -----------------------------

_ZH_PLACES = {
    ("left", "top"): "左上方", ("centre", "top"): "中上方", ("right", "top"): "右上方",
    ("left", "bottom"): "左下方", ("centre", "bottom"): "中下方", ("right", "bottom"): "右下方",
}


def location(x: float, y: float, language: Language = "en") -> str:
    """Where a point given as fractions of the frame is: thirds across, halves down."""
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    row = "top" if y < 0.5 else "bottom"
    if language == "zh":
        return _ZH_PLACES[column, row]
    return f"{row}-{column}"


# --- Rendering. ---------------------------------------------------------------------------------


def _bgr(rgb: Rgb) -> tuple[int, int, int]:
    return (rgb[2], rgb[1], rgb[0])


_SHIFT = 4
"""Fixed-point bits for cv2 drawing: sub-pixel positions keep slow motion smooth."""
_ONE = 1 << _SHIFT
_NOISE_MARGIN = 32
"""The noise field is this much larger than the frame; each frame reads a shifted window."""


def _fx(value: float) -> int:
    """A pixel coordinate in cv2's fixed-point format (see ``_SHIFT``)."""
    return round(value * _ONE)


@functools.lru_cache(maxsize=4)
def _background(width: int, height: int) -> BgrImage:
    image = np.empty((height, width, 3), dtype=np.uint8)
    horizon = round(height * HORIZON)
    image[:horizon] = _bgr(SKY)
    image[horizon:] = _bgr(GROUND)
    image.flags.writeable = False
    return image


@functools.lru_cache(maxsize=4)
def _noise_field(width: int, height: int, seed: int) -> BgrImage:
    # One random field, read through a different window per frame: fresh-looking noise every
    # frame at the cost of a slice instead of ~6M random draws per 1080p frame.
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 2 * NOISE_AMPLITUDE + 1,
                         size=(height + _NOISE_MARGIN, width + _NOISE_MARGIN, 3), dtype=np.uint8)
    field.flags.writeable = False
    return field


def _draw_truck(image: BgrImage, t: float, scene: Scene) -> None:
    w, h = scene.width, scene.height
    truck_w, truck_h = 0.30 * h, 0.12 * h
    # Crosses the frame left to right in about 40 s, then comes round again.
    travel = w + 2 * truck_w
    left = (t * w / 40.0 + 0.35 * w) % travel - truck_w
    bottom = (HORIZON + 0.13) * h
    top = bottom - truck_h
    cv2.rectangle(image, (_fx(left), _fx(top)), (_fx(left + truck_w), _fx(bottom)),
                  _bgr(TRUCK), -1, cv2.LINE_AA, _SHIFT)
    cab_left = left + truck_w
    cv2.rectangle(image, (_fx(cab_left), _fx(top + 0.35 * truck_h)),
                  (_fx(cab_left + 0.3 * truck_w), _fx(bottom)), _bgr(TRUCK), -1, cv2.LINE_AA,
                  _SHIFT)
    cv2.rectangle(image, (_fx(cab_left + 0.1 * truck_w), _fx(top + 0.45 * truck_h)),
                  (_fx(cab_left + 0.25 * truck_w), _fx(top + 0.7 * truck_h)),
                  _bgr(TRUCK_DARK), -1, cv2.LINE_AA, _SHIFT)
    wheel_r = 0.22 * truck_h
    for wheel_x in (left + 0.2 * truck_w, left + 0.8 * truck_w, cab_left + 0.15 * truck_w):
        cv2.circle(image, (_fx(wheel_x), _fx(bottom)), _fx(wheel_r), _bgr(TRUCK_DARK), -1,
                   cv2.LINE_AA, _SHIFT)


def _flame_outline(cx: float, base_y: float, *, width: float, height: float, t: float,
                   phase: float) -> npt.NDArray[np.int32]:
    """A flickering teardrop: wide and round at the base, tongues licking upwards."""
    theta = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
    flicker = (1.0 + 0.12 * np.sin(4 * theta + 9.0 * t + phase)
               + 0.08 * np.sin(7 * theta - 13.0 * t + 2 * phase))
    upper = np.cos(theta) > 0
    # Up from the centre the flame reaches 70% of its height, down 30%; upwards it narrows.
    reach = np.where(upper, 0.70, 0.30) * height
    narrowing = 1.0 - 0.55 * np.clip(np.cos(theta), 0.0, None) ** 2
    centre_y = base_y - 0.30 * height
    xs = cx + 0.5 * width * np.sin(theta) * narrowing * flicker
    ys = centre_y - reach * np.cos(theta) * np.where(upper, flicker, 1.0)
    return np.round(np.stack([xs, ys], axis=1) * _ONE).astype(np.int32)


def _draw_fire(image: BgrImage, obj: ScriptedObject, t: float, index: int) -> None:
    h, w = image.shape[:2]
    size = h * obj.scale
    cx, base_y = obj.x * w, obj.y * h
    phase = 1.7 * index
    # Height sways too, so the blob's area changes frame to frame like a real flame's.
    height = 0.20 * size * (1.0 + 0.08 * math.sin(5.3 * t + phase))
    outer = _flame_outline(cx, base_y, width=0.11 * size, height=height, t=t, phase=phase)
    core = _flame_outline(cx, base_y - 0.02 * size, width=0.055 * size, height=0.55 * height,
                          t=t, phase=phase + 1.0)
    cv2.fillPoly(image, [outer], _bgr(FLAME), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, [core], _bgr(FLAME_CORE), cv2.LINE_AA, _SHIFT)


# Puffs of a cloud: centre offset (fractions of the cloud's width, height) and half-axes.
_PUFFS: tuple[tuple[float, float, float, float], ...] = (
    (0.00, 0.00, 0.30, 0.38),
    (-0.22, 0.08, 0.22, 0.32),
    (0.22, 0.06, 0.24, 0.34),
    (-0.08, -0.22, 0.22, 0.28),
    (0.13, -0.20, 0.20, 0.28),
    (0.00, 0.22, 0.30, 0.24),
)


def _draw_smoke(image: BgrImage, obj: ScriptedObject, t: float, index: int) -> None:
    h, w = image.shape[:2]
    size = h * obj.scale
    cloud_w, cloud_h = 0.50 * size, 0.32 * size
    age = t - obj.start_s
    # Drifts sideways and up a little and breathes, so the cloud is visibly alive.
    cx = obj.x * w + 0.03 * size * math.sin(0.5 * age + index)
    cy = obj.y * h - 0.01 * size * age / (1.0 + 0.1 * age)
    blur_sigma = max(1.0, 0.02 * size)
    pad = int(3 * blur_sigma) + 2
    x0 = max(0, int(cx - 0.6 * cloud_w) - pad)
    x1 = min(w, int(cx + 0.6 * cloud_w) + pad)
    y0 = max(0, int(cy - 0.6 * cloud_h) - pad)
    y1 = min(h, int(cy + 0.6 * cloud_h) + pad)
    if x1 <= x0 or y1 <= y0:
        return
    # The soft cloud is drawn and blurred at a working scale of at most ~360 lines, then
    # enlarged: blurring a 1080p-sized patch with a wide kernel costs ~50 ms a frame, this ~3.
    shrink = max(1.0, size / 360.0)
    work_w = max(2, round((x1 - x0) / shrink))
    work_h = max(2, round((y1 - y0) / shrink))
    # Premultiplied drawing: grey*alpha and alpha are blurred alike, so the soft edge fades
    # into the background instead of darkening towards black.
    alpha = np.zeros((work_h, work_w), dtype=np.float32)
    grey = np.zeros_like(alpha)
    for puff, (dx, dy, ax, ay) in enumerate(_PUFFS):
        breathe = 1.0 + 0.05 * math.sin(0.9 * age + puff)
        centre = (_fx((cx + dx * cloud_w - x0) / shrink), _fx((cy + dy * cloud_h - y0) / shrink))
        axes = (_fx(ax * cloud_w * breathe / shrink), _fx(ay * cloud_h * breathe / shrink))
        level = float(SMOKE_GREYS[puff % len(SMOKE_GREYS)])
        cv2.ellipse(alpha, centre, axes, 0.0, 0.0, 360.0, 1.0, -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(grey, centre, axes, 0.0, 0.0, 360.0, level, -1, cv2.LINE_8, _SHIFT)
    alpha = cv2.GaussianBlur(alpha, (0, 0), blur_sigma / shrink)
    grey = cv2.GaussianBlur(grey, (0, 0), blur_sigma / shrink)
    if shrink > 1.0:
        alpha = cv2.resize(alpha, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        grey = cv2.resize(grey, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    # image = background * (1 - alpha) + premultiplied grey, done in place on the patch.
    patch = image[y0:y1, x0:x1]
    blended = patch.astype(np.float32)
    blended *= (1.0 - alpha)[..., None]
    blended += grey[..., None] + 0.5
    np.clip(blended, 0, 255, out=blended)
    patch[...] = blended.astype(np.uint8)


def _draw_worker(image: BgrImage, obj: ScriptedObject, t: float, index: int) -> None:
    h, w = image.shape[:2]
    size = h * obj.scale
    # A gentle sway keeps workers from being frozen statues in the video.
    cx = obj.x * w + 0.004 * size * math.sin(0.8 * t + 1.3 * index)
    feet = obj.y * h
    vest_w, vest_h, legs_h = 0.05 * size, 0.075 * size, 0.075 * size
    vest_bottom = feet - legs_h
    vest_top = vest_bottom - vest_h
    head_r = 0.019 * size
    head_cy = vest_top - head_r
    legs_w = 0.042 * size
    cv2.rectangle(image, (_fx(cx - legs_w / 2), _fx(vest_bottom)), (_fx(cx + legs_w / 2),
                  _fx(feet)), _bgr(TROUSERS), -1, cv2.LINE_AA, _SHIFT)
    cv2.rectangle(image, (_fx(cx - vest_w / 2), _fx(vest_top)), (_fx(cx + vest_w / 2),
                  _fx(vest_bottom)), _bgr(ORANGE_VEST if obj.kind == "worker_orange_vest"
                                          else VEST), -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(image, (_fx(cx), _fx(head_cy)), _fx(head_r), _bgr(SKIN), -1, cv2.LINE_AA, _SHIFT)
    if obj.kind in ("worker_helmet", "worker_orange_vest"):
        dome_cy = head_cy - 0.004 * size
        cv2.ellipse(image, (_fx(cx), _fx(dome_cy)), (_fx(0.024 * size), _fx(0.022 * size)),
                    0.0, 180.0, 360.0, _bgr(HAT), -1, cv2.LINE_AA, _SHIFT)
        brim_w = 0.056 * size
        cv2.rectangle(image, (_fx(cx - brim_w / 2), _fx(dome_cy - 0.002 * size)),
                      (_fx(cx + brim_w / 2), _fx(dome_cy + 0.003 * size)), _bgr(HAT), -1,
                      cv2.LINE_AA, _SHIFT)


def render_frame(scene: Scene, t: float) -> BgrImage:
    """The scene at time ``t`` (seconds) as a new ``(height, width, 3)`` uint8 BGR image.

    Deterministic: the same scene and time give the same pixels. Objects are drawn in a fixed
    order (smoke behind fire behind workers) whatever their order in the script.
    """
    w, h = scene.width, scene.height
    image = _background(w, h).copy()
    if scene.traffic:
        _draw_truck(image, t, scene)
    active = list(enumerate(scene.objects))
    drawers: Sequence[tuple[tuple[ObjectKind, ...], Callable[..., None]]] = (
        (("smoke",), _draw_smoke),
        (("fire",), _draw_fire),
        (("worker_helmet", "worker_no_helmet", "worker_orange_vest"), _draw_worker),
    )
    for kinds, draw in drawers:
        for index, obj in active:
            if obj.kind in kinds and obj.active(t):
                draw(image, obj, t, index)
    frame_index = round(t * scene.fps)
    noise = _noise_field(w, h, scene.seed)
    dy = (frame_index * 13) % _NOISE_MARGIN
    dx = (frame_index * 7 + frame_index // _NOISE_MARGIN) % _NOISE_MARGIN
    # Saturating uint8 arithmetic: + (0..8) then - 4 is noise of -4..+4 without int16 copies.
    cv2.add(image, noise[dy : dy + h, dx : dx + w], dst=image)
    cv2.subtract(image, (NOISE_AMPLITUDE,) * 3 + (0,), dst=image)  # type: ignore[call-overload]
    return image


def frames(scene: Scene) -> Iterator[tuple[float, BgrImage]]:
    """Every frame of the scene with its time: ``(i / fps, image)`` for each frame ``i``."""
    for i in range(scene.frame_count):
        t = i / scene.fps
        yield t, render_frame(scene, t)


Span = tuple[float, float]
"""A stretch of a scene's time, ``(start_s, end_s)``, end exclusive."""


def faulty_frames(scene: Scene, *, frozen: Sequence[Span] = (),
                  blank: Sequence[Span] = ()) -> Iterator[tuple[float, BgrImage]]:
    """The scene's frames with camera faults: during a ``frozen`` span every frame repeats the
    picture of the span's first frame (a stuck encoder: the stream plays, the picture does
    not move); during a ``blank`` span every frame is black (a covered lens)."""
    held: BgrImage | None = None
    for t, image in frames(scene):
        stuck = next((span for span in frozen if span[0] <= t < span[1]), None)
        if stuck is None:
            held = None
        elif held is None:
            held = image
        if any(start <= t < end for start, end in blank):
            yield t, np.zeros_like(image)
        else:
            yield t, held if held is not None else image


def default_bitrate(scene: Scene) -> int:
    """A bitrate (bits/s) that keeps the scene's flat colours clean: 0.1 bit per pixel."""
    return max(100_000, int(0.1 * scene.width * scene.height * scene.fps))


def write_scene(scene: Scene, path: str | Path, *, bitrate: int | None = None,
                preset: str = "veryfast", codec: Literal["h264", "h265"] = "h264",
                frozen: Sequence[Span] = (), blank: Sequence[Span] = ()) -> Path:
    """Encode the scene as H.264 (libx264) or H.265 (libx265), yuv420p, in an MP4 file with
    ``+faststart``.

    Keyframes come exactly every ``scene.gop`` frames (no scene-cut keyframes; x264 clamps its
    own ``min-keyint`` to ``gop/2+1`` but scene-cut detection is off, so only the fixed interval
    places them) and there are no B-frames, so an RTSP server can send the file as is and a
    client sees the encode order equal the display order. ``bitrate`` is in bits/s (default
    :func:`default_bitrate`); ``preset`` is x264's speed preset; ``frozen`` and ``blank`` spans
    fake camera faults (:func:`faulty_frames`). Returns the path written.
    """
    path = Path(path)
    rate = bitrate if bitrate is not None else default_bitrate(scene)
    # One slice per frame (sliced-threads=0): multi-slice frames came out of the RTSP test
    # server with per-slice timestamps and decoded corrupt; most cameras send one slice too.
    x264_params = (f"keyint={scene.gop}:min-keyint={scene.gop}:scenecut=0:bframes=0:"
                   "sliced-threads=0:slices=1")
    options = {"preset": preset, "x264-params": x264_params, "keyint_min": str(scene.gop),
               "sc_threshold": "0", "bf": "0"}
    if codec == "h265":
        options = {"preset": preset, "x265-params": (
            f"keyint={scene.gop}:min-keyint={scene.gop}:scenecut=0:bframes=0:log-level=error")}
    with av.open(str(path), "w", format="mp4",
                 container_options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264" if codec == "h264" else "libx265",
                                      rate=Fraction(scene.fps), options=options)
        stream.width = scene.width
        stream.height = scene.height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = rate
        context = stream.codec_context
        context.gop_size = scene.gop
        context.max_b_frames = 0
        # swscale converts BGR to YUV with BT.601 (limited range); say so in the stream, or a
        # player may assume BT.709 for HD sizes and shift the contract's colours.
        context.colorspace = 6  # AVCOL_SPC_SMPTE170M
        context.color_primaries = 6  # AVCOL_PRI_SMPTE170M
        context.color_trc = 6  # AVCOL_TRC_SMPTE170M
        context.color_range = 1  # AVCOL_RANGE_MPEG
        for index, (_, image) in enumerate(faulty_frames(scene, frozen=frozen, blank=blank)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# --- Ground truth. ------------------------------------------------------------------------------


def expected_answer(scene: Scene, t: float, language: Language = "en") -> Answer:
    """What a correct model says about the frame at time ``t`` (from the script, not pixels).

    Descriptions name the objects' scripted places; tests compare the answers, statuses and
    ``missing_count``, not the wording.
    """
    active = scene.active_objects(t)
    fires = [obj for obj in active if obj.kind == "fire"]
    smokes = [obj for obj in active if obj.kind == "smoke"]
    workers = sorted((obj for obj in active if obj.kind.startswith("worker")),
                     key=lambda obj: obj.x)
    missing = [obj for obj in workers if obj.kind == "worker_no_helmet"]
    # A worker in an orange vest wears a hard hat, and nothing of them is fire.

    def places(objs: list[ScriptedObject]) -> str:
        return ", ".join(location(obj.x, obj.y, language) for obj in objs)

    if not workers:
        status = HelmetStatus.NO_PERSON
    elif not missing:
        status = HelmetStatus.ALL_WORN
    elif len(missing) == len(workers):
        status = HelmetStatus.NONE_WORN
    else:
        status = HelmetStatus.SOME_MISSING
    if language == "zh":
        fire_text = f"{places(fires)}有明火" if fires else ""
        smoke_text = f"{places(smokes)}有烟雾" if smokes else ""
        helmet_text = f"{places(missing)}的人员未佩戴安全帽" if missing else ""
    else:
        fire_text = f"flames at the {places(fires)}" if fires else ""
        smoke_text = f"smoke at the {places(smokes)}" if smokes else ""
        helmet_text = f"no hard hat: person at the {places(missing)}" if missing else ""
    return Answer(
        fire=HazardFinding(answer=Decision.YES if fires else Decision.NO, description=fire_text),
        smoke=HazardFinding(answer=Decision.YES if smokes else Decision.NO,
                            description=smoke_text),
        helmet=HelmetFinding(status=status, missing_count=len(missing),
                             description=helmet_text),
    )


# --- Presets. -----------------------------------------------------------------------------------

_FOREVER = 1e9
"""``end_s`` of objects present for the whole scene (however long a caller makes it)."""


def _scene(name: str, duration_s: float, objects: Sequence[ScriptedObject], *,
           width: int, height: int, fps: int, gop: int, seed: int) -> Scene:
    return Scene(width=width, height=height, fps=fps, gop=gop, duration_s=duration_s,
                 objects=tuple(objects), name=name, seed=seed)


def fire(*, width: int = 640, height: int = 360, fps: int = 10, gop: int = 20,
         seed: int = 0) -> Scene:
    """Nothing wrong for 4 s, fire from 4 s to 14 s, nothing after; 24 s. A worker wearing a
    hard hat is in view all the time (so only the fire alert should fire)."""
    return _scene("fire", 24.0, [
        ScriptedObject("fire", 4.0, 14.0, x=0.30, y=0.80),
        ScriptedObject("worker_helmet", 0.0, _FOREVER, x=0.75, y=0.88),
    ], width=width, height=height, fps=fps, gop=gop, seed=seed)


def smoke(*, width: int = 640, height: int = 360, fps: int = 10, gop: int = 20,
          seed: int = 0) -> Scene:
    """Smoke (no flames) from 4 s to 14 s; 24 s. A worker wearing a hard hat is in view."""
    return _scene("smoke", 24.0, [
        ScriptedObject("smoke", 4.0, 14.0, x=0.40, y=0.30),
        ScriptedObject("worker_helmet", 0.0, _FOREVER, x=0.78, y=0.88),
    ], width=width, height=height, fps=fps, gop=gop, seed=seed)


def no_helmet(*, width: int = 640, height: int = 360, fps: int = 10, gop: int = 20,
              seed: int = 0) -> Scene:
    """A worker with a hard hat all along; from 3 s on a second worker without one; 20 s."""
    return _scene("no_helmet", 20.0, [
        ScriptedObject("worker_helmet", 0.0, _FOREVER, x=0.30, y=0.88),
        ScriptedObject("worker_no_helmet", 3.0, _FOREVER, x=0.70, y=0.86),
    ], width=width, height=height, fps=fps, gop=gop, seed=seed)


def quiet(*, width: int = 640, height: int = 360, fps: int = 10, gop: int = 20,
          seed: int = 0) -> Scene:
    """Two workers with hard hats and no hazard; 20 s (nothing should ever alert)."""
    return _scene("quiet", 20.0, [
        ScriptedObject("worker_helmet", 0.0, _FOREVER, x=0.25, y=0.88),
        ScriptedObject("worker_helmet", 0.0, _FOREVER, x=0.65, y=0.84),
    ], width=width, height=height, fps=fps, gop=gop, seed=seed)


PRESETS: dict[str, Callable[..., Scene]] = {
    "fire": fire,
    "smoke": smoke,
    "no_helmet": no_helmet,
    "quiet": quiet,
}
"""Named scenes; each takes ``width``, ``height``, ``fps``, ``gop`` and ``seed`` keywords."""


# --- Look-alikes: scenes the whole-frame judge gets wrong the way real VLMs do. ------------------

FAR_WORKER_SCALE = 0.45
"""A distant worker: 0.09 of the frame height tall (a 100-pixel worker of a 1080p frame)."""


def vest_lookalike(*, width: int = 640, height: int = 360, fps: int = 10, gop: int = 20,
                   seed: int = 0) -> Scene:
    """No hazard at all, 20 s: a worker in an orange hi-vis vest (and a hard hat) walks in at
    3 s and leaves at 15 s; a worker in a green vest and a hard hat stays. The whole-frame
    judge takes the orange vest for flames (a false fire); a zoom-in on it says it is not."""
    return _scene("vest_lookalike", 20.0, [
        ScriptedObject("worker_orange_vest", 3.0, 15.0, x=0.35, y=0.90),
        ScriptedObject("worker_helmet", 0.0, _FOREVER, x=0.75, y=0.86),
    ], width=width, height=height, fps=fps, gop=gop, seed=seed)


def far_worker(*, width: int = 640, height: int = 360, fps: int = 10, gop: int = 20,
               seed: int = 0) -> Scene:
    """No hazard, 20 s: from 3 s on a distant worker wearing a hard hat stands at the back.
    Where the image sent is so small that their vest is under
    :data:`monitor.sim.vision.SMALL_VEST_PX` pixels tall (a 960x540 frame at a 160-token
    budget, say), the whole-frame judge calls the head bare (a false no-helmet); a crop of the
    full-resolution frame shows the hat."""
    return _scene("far_worker", 20.0, [
        ScriptedObject("worker_helmet", 3.0, _FOREVER, x=0.62, y=0.62, scale=FAR_WORKER_SCALE),
    ], width=width, height=height, fps=fps, gop=gop, seed=seed)


LOOKALIKES: dict[str, Callable[..., Scene]] = {
    "vest_lookalike": vest_lookalike,
    "far_worker": far_worker,
}
"""Scenes with no hazard that the whole-frame judge calls hazardous (kept out of
:data:`PRESETS`, whose scenes it judges right); same keywords as the presets."""
