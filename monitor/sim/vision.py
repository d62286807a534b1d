"""The simulated model's eyes: judge a frame of a synthetic scene by its pixels.

:func:`judge` applies the colour contract of :mod:`monitor.sim.scenes` to any version of a
frame the daemon may send: resized (also squashed to another aspect ratio), JPEG-compressed,
decoded from H.264. It is pure and CPU-bound (a few milliseconds for a 1080p image).

Decision rules (fractions are of the whole image's area, so they hold at every size):

* fire: flame pixels in blobs at least 3 pixels thick (a 3x3 opening drops the 1-2 pixel rim
  where a yellow hat meets brown ground, which blends into flame colour) cover
  >= :data:`FIRE_YES` -> yes; >= :data:`FIRE_UNCERTAIN` -> uncertain; else no.
* smoke: smoke pixels >= :data:`SMOKE_YES` -> yes; >= :data:`SMOKE_UNCERTAIN` -> uncertain.
* persons: 8-connected components of the vest mask covering >= :data:`PERSON_MIN_AREA`. Above
  each vest the judge looks at a region as wide as the vest plus 25% and as tall as the vest
  (a vest is 1.5 times as tall as wide, so this is about 1.5 vest widths: the head and hat
  fit with room to spare; taking the height, not the width, keeps the region right when an
  image is squashed to another aspect ratio, e.g. 16:9 to 448x448). Hat pixels covering
  >= :data:`HAT_YES` of that region -> wears a hat; < :data:`HAT_UNCERTAIN` -> does not;
  between -> cannot tell.
* helmet status: no persons -> no_person; anyone undecidable -> uncertain; nobody missing ->
  all_worn; everybody missing -> none_worn; else some_missing. ``missing_count`` counts the
  persons without a hat, and each of them gets a grounding box (``bbox_2d``: hat to feet, in
  pixels of the judged image, as Qwen2.5-VL gives boxes in the image it was shown).
* fire and smoke get a ``location`` (thirds across, halves down) besides the description.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from monitor.model.answer import (
    MAX_BOXES,
    WIRE_MAX_HAZARD_BOXES,
    Answer,
    Decision,
    GroundingBox,
    Hazard,
    HazardFinding,
    HelmetFinding,
    HelmetStatus,
    PersonBox,
)
from monitor.model.verify import CropAnswer
from monitor.sim.scenes import (
    FLAME_RULE,
    HAT_RULE,
    SMOKE_RULE,
    VEST_RULE,
    BgrImage,
    ColourRule,
    Language,
    location,
)

Mask = npt.NDArray[np.uint8]

FIRE_YES = 0.0015
"""Flame pixels (after the opening) covering 0.15% of the image mean fire."""
FIRE_UNCERTAIN = 0.0003
SMOKE_YES = 0.02
SMOKE_UNCERTAIN = 0.005
PERSON_MIN_AREA = 0.0003
"""A vest blob smaller than 0.03% of the image is not taken for a person."""
HAT_YES = 0.08
HAT_UNCERTAIN = 0.03
HAT_REGION_WIDEN = 1.25
HAT_REGION_HEIGHT = 1.0
"""The hat region's height as a multiple of the vest's height."""
SMALL_VEST_PX = 10
"""A person whose vest is shorter than this (in pixels of the image judged; the head is then
about 5 pixels) is called bare-headed whatever they wear: too small to tell a hard hat from
hair, a VLM guesses. A zoom-in crop of the full-resolution frame shows them bigger."""
VEST_FILL = 0.88
"""Zoom-in on a flame-coloured region: a blob filling at least this share of its bounding box
is a rectangle (a vest, a sign, a lamp), not a flame (flames fill about 0.7)."""
CROP_SMOKE_YES = 0.05
"""Zoom-in on smoke: smoke pixels covering 5% of the crop mean real smoke."""
CROP_FLAME_MIN = 0.01
"""Zoom-in on fire: flame pixels covering less than 1% of the crop mean nothing there."""
PERSON_BOX_WIDEN = 0.15
"""A person's box reaches this share of the vest's width beyond it on each side."""

_OPEN_KERNEL = np.ones((3, 3), dtype=np.uint8)
_CLOSE_KERNEL = np.ones((9, 9), dtype=np.uint8)
BLOB_MIN_SHARE = 0.1
"""A flame or smoke blob gets a grounding box when it holds at least this share of its kind's
pixels."""


@dataclass(frozen=True, slots=True)
class Person:
    """One worker found by their vest; coordinates are fractions of the image."""

    x: float
    """Centre of the vest, across."""
    y: float
    """Top of the vest (the shoulders), down."""
    vest_area: float
    """The vest's share of the image's area."""
    hat_fraction: float
    """Share of the region above the vest covered by hat pixels."""
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    """The whole person (hat to feet) as ``(x1, y1, x2, y2)`` in pixels of the measured image:
    Qwen2.5-VL's grounding form, in the coordinates of the image the model was given."""
    vest_px: int = 0
    """The vest's height in pixels of the measured image (0: not measured)."""

    @property
    def wears_hat(self) -> bool | None:
        """True with a hat, False without, None when the hat pixels are too few to tell; a
        head too small to see (vest under :data:`SMALL_VEST_PX`) is taken for bare, the
        mistake real VLMs make on distant workers."""
        if 0 < self.vest_px < SMALL_VEST_PX:
            return False
        if self.hat_fraction >= HAT_YES:
            return True
        if self.hat_fraction < HAT_UNCERTAIN:
            return False
        return None


@dataclass(frozen=True, slots=True)
class Measurements:
    """What the judge measured in an image, before turning it into an answer."""

    width: int
    height: int
    flame_fraction: float
    flame_centre: tuple[float, float] | None
    smoke_fraction: float
    smoke_centre: tuple[float, float] | None
    persons: tuple[Person, ...]
    flame_boxes: tuple[tuple[int, int, int, int], ...] = ()
    """The largest flame regions as ``(x1, y1, x2, y2)`` pixels of the measured image."""
    smoke_boxes: tuple[tuple[int, int, int, int], ...] = ()
    """The largest smoke clouds, likewise."""


def _u8(array: object) -> Mask:
    """cv2's stubs type results as any-dtype arrays; these are uint8 (no copy is made)."""
    return np.asarray(array, dtype=np.uint8)


def _mask(image: BgrImage, rule: ColourRule) -> Mask:
    mask = _u8(cv2.inRange(image, rule.bgr_lower, rule.bgr_upper))
    if rule.max_spread is not None:
        # cv2 per-channel max/min: numpy's reductions over the channel axis are ~7x slower.
        blue, green, red = cv2.split(image)
        spread = cv2.subtract(cv2.max(cv2.max(blue, green), red),
                              cv2.min(cv2.min(blue, green), red))
        # THRESH_BINARY_INV: 255 where spread <= max_spread, 0 elsewhere.
        _, grey_enough = cv2.threshold(spread, rule.max_spread, 255, cv2.THRESH_BINARY_INV)
        mask = _u8(cv2.bitwise_and(mask, grey_enough))
    return mask


def _share_and_centre(mask: Mask) -> tuple[float, tuple[float, float] | None]:
    h, w = mask.shape
    moments = cv2.moments(mask, binaryImage=True)
    area = moments["m00"]
    if area == 0:
        return 0.0, None
    return area / (h * w), (moments["m10"] / area / w, moments["m01"] / area / h)


def _blob_boxes(mask: Mask, limit: int) -> tuple[tuple[int, int, int, int], ...]:
    """The bounding boxes of the ``limit`` largest blobs of ``mask`` that hold at least
    :data:`BLOB_MIN_SHARE` of its pixels (so specks and rims get no box of their own)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    total = int(stats[1:, cv2.CC_STAT_AREA].sum()) if count > 1 else 0
    blobs = sorted(((int(stats[i, cv2.CC_STAT_AREA]), i) for i in range(1, count)), reverse=True)
    boxes = []
    for area, i in blobs[:limit]:
        if area < BLOB_MIN_SHARE * total:
            break
        left, top, width, height = (int(v) for v in stats[i, :4])
        boxes.append((left, top, left + width, top + height))
    return tuple(boxes)


def measure(image: BgrImage) -> Measurements:
    """Measure flame, smoke, vests and hats in a BGR image of any size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 BGR image of shape (h, w, 3), got "
                         f"{image.shape} {image.dtype}")
    h, w = image.shape[:2]
    total = float(h * w)
    flame = _u8(cv2.morphologyEx(_mask(image, FLAME_RULE), cv2.MORPH_OPEN, _OPEN_KERNEL))
    flame_fraction, flame_centre = _share_and_centre(flame)
    smoke = _mask(image, SMOKE_RULE)
    smoke_fraction, smoke_centre = _share_and_centre(smoke)
    # Puffs of one cloud touch or nearly: closing joins them into one box.
    smoke_blobs = _u8(cv2.morphologyEx(smoke, cv2.MORPH_CLOSE, _CLOSE_KERNEL))
    vest = _mask(image, VEST_RULE)
    hat = _mask(image, HAT_RULE)
    count, _, stats, _ = cv2.connectedComponentsWithStats(vest, connectivity=8)
    persons: list[Person] = []
    for label in range(1, count):
        left, top, vest_w, vest_h, area = (int(v) for v in stats[label])
        if area < PERSON_MIN_AREA * total:
            continue
        extra = (HAT_REGION_WIDEN - 1.0) * vest_w / 2
        x0 = max(0, round(left - extra))
        x1 = min(w, round(left + vest_w + extra))
        y1 = top
        y0 = max(0, round(top - HAT_REGION_HEIGHT * vest_h))
        region_area = (x1 - x0) * (y1 - y0)
        hat_pixels = cv2.countNonZero(hat[y0:y1, x0:x1]) if region_area else 0
        # The figure around the vest (scenes' geometry): head and hat up to one vest height
        # above it, legs one vest height below, a little wider than the vest.
        margin = PERSON_BOX_WIDEN * vest_w
        box = (max(0, left - round(margin)), max(0, top - vest_h),
               min(w, left + vest_w + round(margin)), min(h, top + 2 * vest_h))
        persons.append(Person(
            x=(left + vest_w / 2) / w, y=top / h, vest_area=area / total,
            hat_fraction=hat_pixels / region_area if region_area else 0.0, box=box,
            vest_px=vest_h,
        ))
    persons.sort(key=lambda person: person.x)
    return Measurements(width=w, height=h, flame_fraction=flame_fraction,
                        flame_centre=flame_centre, smoke_fraction=smoke_fraction,
                        smoke_centre=smoke_centre, persons=tuple(persons),
                        flame_boxes=_blob_boxes(flame, WIRE_MAX_HAZARD_BOXES),
                        smoke_boxes=_blob_boxes(smoke_blobs, WIRE_MAX_HAZARD_BOXES))


def _grade(fraction: float, yes: float, uncertain: float) -> Decision:
    if fraction >= yes:
        return Decision.YES
    if fraction >= uncertain:
        return Decision.UNCERTAIN
    return Decision.NO


def _hazard(kind: str, answer: Decision, fraction: float, centre: tuple[float, float] | None,
            language: Language, *, boxes: tuple[tuple[int, int, int, int], ...] = ()
            ) -> HazardFinding:
    if answer is Decision.NO or centre is None:
        return HazardFinding(answer=Decision.NO, description="")
    where = location(*centre, language)
    # Boxes only for yes: the prompt asks for them there (an uncertain answer stays short).
    grounded = [GroundingBox(bbox_2d=list(b)) for b in boxes] if answer is Decision.YES else []
    return HazardFinding(answer=answer, location=where,
                         description=_hazard_text(kind, answer, where, fraction, language),
                         boxes=grounded)


def _hazard_text(kind: str, answer: Decision, where: str, fraction: float,
                 language: Language) -> str:
    share = f"{fraction * 100:.1f}%"
    if language == "zh":
        noun = "明火" if kind == "fire" else "烟雾"
        if answer is Decision.YES:
            text = f"画面{where}有{noun}，约占画面{share}。"
        else:
            text = f"画面{where}有少量疑似{noun}的颜色区域，无法确定。"
    elif answer is Decision.YES:
        noun = "Flames" if kind == "fire" else "Smoke"
        text = f"{noun} at the {where}, about {share} of the frame."
    else:
        noun = "flame" if kind == "fire" else "smoke"
        text = f"Small {noun}-coloured area at the {where}; unsure."
    return text


def _helmet(persons: tuple[Person, ...], language: Language) -> HelmetFinding:
    if not persons:
        return HelmetFinding(status=HelmetStatus.NO_PERSON, missing_count=0, description="")
    missing = [p for p in persons if p.wears_hat is False]
    unsure = [p for p in persons if p.wears_hat is None]
    if unsure:
        status = HelmetStatus.UNCERTAIN
    elif not missing:
        status = HelmetStatus.ALL_WORN
    elif len(missing) == len(persons):
        status = HelmetStatus.NONE_WORN
    else:
        status = HelmetStatus.SOME_MISSING

    def places(group: list[Person]) -> str:
        separator = "、" if language == "zh" else ", "
        return separator.join(location(p.x, p.y, language) for p in group)

    if language == "zh":
        parts = [f"画面中有{len(persons)}人"]
        if missing:
            parts.append(f"{len(missing)}人未佩戴安全帽（{places(missing)}）")
        if unsure:
            parts.append(f"{len(unsure)}人无法确定是否佩戴（{places(unsure)}）")
        if not missing and not unsure:
            parts.append("均已佩戴安全帽")
        text = "，".join(parts) + "。"
    else:
        # Short enough for the schema's description limit (60 characters).
        noun = "person" if len(persons) == 1 else "people"
        parts = [f"{len(persons)} {noun} in view"]
        if missing:
            parts.append(f"{len(missing)} without a hard hat ({places(missing)})")
        if unsure:
            parts.append(f"unsure for {len(unsure)} ({places(unsure)})")
        if not missing and not unsure:
            parts.append("all wearing hard hats")
        text = "; ".join(parts) + "."
    # No label: the prompt asks for bare bbox_2d items (a label would only cost tokens).
    boxes = [PersonBox(bbox_2d=list(p.box)) for p in missing][:MAX_BOXES]
    return HelmetFinding(status=status, missing_count=len(missing), description=text,
                         boxes=boxes)


def answer_from(measurements: Measurements, language: Language = "en") -> Answer:
    """Turn measurements into the model's answer, with descriptions in ``language``."""
    fire = _grade(measurements.flame_fraction, FIRE_YES, FIRE_UNCERTAIN)
    smoke = _grade(measurements.smoke_fraction, SMOKE_YES, SMOKE_UNCERTAIN)
    return Answer(
        fire=_hazard("fire", fire, measurements.flame_fraction, measurements.flame_centre,
                     language, boxes=measurements.flame_boxes),
        smoke=_hazard("smoke", smoke, measurements.smoke_fraction, measurements.smoke_centre,
                      language, boxes=measurements.smoke_boxes),
        helmet=_helmet(measurements.persons, language),
    )


_CROP_SEEN: dict[tuple[Language, str], str] = {
    ("en", "hat"): "hard hat", ("en", "bare"): "bare head", ("en", "unsure"): "cannot tell",
    ("en", "nobody"): "no person", ("en", "flames"): "flames", ("en", "vest"): "orange vest",
    ("en", "smoke"): "smoke", ("en", "nothing"): "nothing",
    ("zh", "hat"): "安全帽", ("zh", "bare"): "光头", ("zh", "unsure"): "看不清",
    ("zh", "nobody"): "无人", ("zh", "flames"): "火焰", ("zh", "vest"): "橙色背心",
    ("zh", "smoke"): "烟雾", ("zh", "nothing"): "无",
}


def answer_crop(image_bgr: BgrImage, hazard: Hazard, language: Language = "en") -> CropAnswer:
    """The simulated model's answer to a zoom-in question (:mod:`monitor.model.verify`) about
    a crop: the same colour contract, looked at closely.

    * ``no_helmet``: "hard hat on the head?" about the largest person in the crop (the small-head
      rule applies here too: only a crop with more pixels than the whole frame had helps);
    * ``fire``: "real flames?": flame pixels in a blob that fills its bounding box like a
      rectangle (:data:`VEST_FILL`) are a vest, not fire;
    * ``smoke``: "real smoke?": smoke pixels covering :data:`CROP_SMOKE_YES` of the crop.
    """
    def said(answer: Decision, key: str) -> CropAnswer:
        return CropAnswer(answer=answer, seen=_CROP_SEEN[language, key])

    if hazard is Hazard.NO_HELMET:
        persons = measure(image_bgr).persons
        if not persons:
            return said(Decision.UNCERTAIN, "nobody")
        wears = max(persons, key=lambda person: person.vest_area).wears_hat
        if wears is None:
            return said(Decision.UNCERTAIN, "unsure")
        return said(Decision.YES, "hat") if wears else said(Decision.NO, "bare")
    if hazard is Hazard.SMOKE:
        share, _ = _share_and_centre(_mask(image_bgr, SMOKE_RULE))
        return said(Decision.YES, "smoke") if share >= CROP_SMOKE_YES \
            else said(Decision.NO, "nothing")
    flame = _u8(cv2.morphologyEx(_mask(image_bgr, FLAME_RULE), cv2.MORPH_OPEN, _OPEN_KERNEL))
    share, _ = _share_and_centre(flame)
    if share < CROP_FLAME_MIN:
        return said(Decision.NO, "nothing")
    _, _, stats, _ = cv2.connectedComponentsWithStats(flame, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    _, _, width, height, area = (int(v) for v in stats[largest])
    if area / (width * height) >= VEST_FILL:
        return said(Decision.NO, "vest")
    return said(Decision.YES, "flames")


def judge(image_bgr: BgrImage, language: Language = "en") -> Answer:
    """The simulated model's answer about one BGR image (descriptions in ``language``)."""
    return answer_from(measure(image_bgr), language)


_ZH_ANSWER = {Decision.YES: "是", Decision.NO: "否", Decision.UNCERTAIN: "不确定"}
_ZH_STATUS = {
    HelmetStatus.ALL_WORN: "全部正确佩戴", HelmetStatus.SOME_MISSING: "部分未佩戴",
    HelmetStatus.NONE_WORN: "全部未佩戴", HelmetStatus.NO_PERSON: "无人员",
    HelmetStatus.UNCERTAIN: "不确定",
}


_NOTHING_SEEN: dict[tuple[Language, str], str] = {
    ("zh", "fire"): "图像中未发现火焰、烧焦物等火灾迹象。",
    ("zh", "smoke"): "图像中没有明显的烟雾。",
    ("zh", "helmet"): "图像中未发现人员。",
    ("en", "fire"): "No flames or burnt material are visible in the image.",
    ("en", "smoke"): "No visible smoke in the image.",
    ("en", "helmet"): "No people are visible in the image.",
}
"""What Qwen2.5-VL writes after a "no" when the seed's prompt asks for details: it explains
every answer, not only the positive ones, which is most of a free-text answer's length."""


def seed_text(answer: Answer, language: Language) -> str:
    """The answer in the seed guide's free-text format (what the model writes without a JSON
    schema), one field per line, each with its explanation as the model writes it;
    :func:`monitor.model.answer.parse_answer` reads it back."""

    def line(label: str, value: str, description: str, nothing: str) -> str:
        text = description or nothing
        # English values end with a full stop: the parser reads an English value up to
        # punctuation, so a description must not run on from it.
        if language == "zh":
            return f"【{label}】：{value} {text}".rstrip()
        return f"[{label}]: {value}. {text}".rstrip()

    helmet_nothing = _NOTHING_SEEN[language, "helmet"] \
        if answer.helmet.status is HelmetStatus.NO_PERSON else ""
    if language == "zh":
        lines = [
            line("火灾检测", _ZH_ANSWER[answer.fire.answer], answer.fire.description,
                 _NOTHING_SEEN[language, "fire"]),
            line("烟雾检测", _ZH_ANSWER[answer.smoke.answer], answer.smoke.description,
                 _NOTHING_SEEN[language, "smoke"]),
            line("安全帽检测", _ZH_STATUS[answer.helmet.status], answer.helmet.description,
                 helmet_nothing),
        ]
    else:
        lines = [
            line("Fire", answer.fire.answer.value, answer.fire.description,
                 _NOTHING_SEEN[language, "fire"]),
            line("Smoke", answer.smoke.answer.value, answer.smoke.description,
                 _NOTHING_SEEN[language, "smoke"]),
            line("Hard hats", answer.helmet.status.value.replace("_", " "),
                 answer.helmet.description, helmet_nothing),
        ]
    return "\n".join(lines)


def terse(answer: Answer) -> Answer:
    """The answer as a model following monitor's JSON instructions gives it: descriptions only
    where there is something to report (fire and smoke descriptions are already empty for
    "no"; the hard-hat one goes when everybody wears one or nobody is there)."""
    if answer.helmet.status in (HelmetStatus.ALL_WORN, HelmetStatus.NO_PERSON):
        helmet = answer.helmet.model_copy(update={"description": ""})
        return answer.model_copy(update={"helmet": helmet})
    return answer
