"""The model's answer: its schema, and parsing of everything a server may send back.

Two answer forms are accepted:

* JSON of the flat :class:`WireDecision` (what vLLM returns when the request carries its
  ``json_schema`` as response format) or of the nested :class:`Answer`, also when
  wrapped in a code fence or surrounded by prose;
* the seed guide's free-text format, in Chinese
  (``【火灾检测】：是 【烟雾检测】：否 【安全帽检测】：部分未佩戴``) or its English
  counterpart (``[Fire]: yes [Smoke]: no [Hard hats]: some missing``).

Anything else raises :class:`InvalidAnswerError`, which carries the (truncated) raw text so the
caller can log it; an invalid answer never becomes a verdict and so never raises an alert.

Exceptions::

    ValueError
    └── InvalidAnswerError
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from monitor.model.imaging import EncodedImage
    from monitor.model.verify import Verification

RAW_TEXT_LOG_LIMIT = 300
"""How many characters of an unparseable answer are kept for the log line."""


class Decision(StrEnum):
    """A yes/no question's answer, with room for the model to say it cannot tell."""

    YES = "yes"
    NO = "no"
    UNCERTAIN = "uncertain"


class HelmetStatus(StrEnum):
    """Whether the people in view wear hard hats."""

    ALL_WORN = "all_worn"
    SOME_MISSING = "some_missing"
    NONE_WORN = "none_worn"
    NO_PERSON = "no_person"
    UNCERTAIN = "uncertain"


class Hazard(StrEnum):
    """The hazards the monitor raises alerts for; the values are MQTT topic segments."""

    FIRE = "fire"
    SMOKE = "smoke"
    NO_HELMET = "no_helmet"


DESCRIPTION_MAX = 200
"""Longest description kept (and allowed by the schema: it also caps the answer's length)."""
LOCATION_MAX = 60
MAX_BOXES = 20
"""Most boxes one answer may carry (the schema's ``maxItems``)."""
WIRE_LOCATION_MAX = 20
WIRE_DESCRIPTION_MAX = 60
WIRE_MAX_BOXES = 6
"""Limits of the form the model writes (:class:`WireDecision`): they bound the longest legal
answer (about 630 tokens in Chinese), which ``vlm.max_tokens`` must exceed - an answer cut by
``max_tokens`` is invalid JSON, and an invalid answer never raises an alert."""
WIRE_MAX_HAZARD_BOXES = 2
"""Most ``fire_boxes`` / ``smoke_boxes`` the model writes (the biggest regions: enough to aim a
zoom-in at, for few tokens)."""
COORDINATE_MAX = 16384
"""Largest pixel coordinate accepted in a box (Qwen2.5-VL's images are far smaller)."""


class HazardFinding(BaseModel):
    """The answer to "is there fire?" or "is there smoke?"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Decision = Field(description="yes, no, or uncertain")
    location: str = Field(
        default="", max_length=LOCATION_MAX,
        description="Where in the image (e.g. bottom-left); empty when no.",
    )
    description: str = Field(
        default="", max_length=DESCRIPTION_MAX,
        description="What was seen, briefly; empty when no.",
    )
    boxes: list[GroundingBox] = Field(
        default_factory=list, max_length=MAX_BOXES,
        description="Where the flames or the smoke are; given only for yes.",
    )


class GroundingBox(BaseModel):
    """A region the model points at (a flame, a smoke cloud, a person without a hard hat), in
    Qwen2.5-VL's grounding form.

    Qwen2.5-VL grounds objects as ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` in absolute
    pixels of the image it was given (not 0..1000 like Qwen2-VL). :meth:`Answer.to_frame`
    maps them to the original frame's pixels. Corners given the wrong way round are swapped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bbox_2d: list[Annotated[int, Field(ge=0, le=COORDINATE_MAX)]] = Field(
        min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels of the image"
    )
    label: str = Field(default="", max_length=40, description="What the box shows.")

    @field_validator("bbox_2d")
    @classmethod
    def _ordered(cls, value: list[int]) -> list[int]:
        x1, y1, x2, y2 = value
        # A model may give the corners in either order; the box is the same.
        return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


PersonBox = GroundingBox
"""A person without a hard hat: the grounding box's first use, and its name before fire and
smoke had boxes too (kept for code that imports it)."""

HazardFinding.model_rebuild()


class HelmetFinding(BaseModel):
    """The answer to "is everyone wearing a hard hat?"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: HelmetStatus = Field(description="Hard-hat status of the people in view")
    missing_count: int = Field(
        default=0, ge=0, le=1000, description="How many people are without a hard hat"
    )
    description: str = Field(
        default="", max_length=DESCRIPTION_MAX,
        description="Who is without a hard hat and where, briefly.",
    )
    boxes: list[GroundingBox] = Field(
        default_factory=list, max_length=MAX_BOXES,
        description="One box per person without a hard hat.",
    )

    @model_validator(mode="after")
    def _count_covers_boxes(self) -> HelmetFinding:
        # Each box is a person without a hard hat: the count cannot be smaller.
        if len(self.boxes) > self.missing_count:
            object.__setattr__(self, "missing_count", len(self.boxes))
        return self


class Answer(BaseModel):
    """The structured answer the model is asked for (its JSON Schema constrains decoding)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fire: HazardFinding
    smoke: HazardFinding
    helmet: HelmetFinding

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, data: Any) -> Any:
        # The model writes the flat WireAnswer (the schema sent); accept it wherever an answer
        # is validated, so a raw model answer validates as it is.
        if _is_flat(data):
            return WireAnswer.model_validate(data).to_answer().model_dump()
        return data

    def is_positive(self, hazard: Hazard) -> bool:
        """Whether this answer reports ``hazard`` (``uncertain`` is not positive)."""
        return self._says(hazard, Decision.YES,
                          (HelmetStatus.SOME_MISSING, HelmetStatus.NONE_WORN))

    def is_negative(self, hazard: Hazard) -> bool:
        """Whether this answer positively rules ``hazard`` out (``uncertain`` does not)."""
        return self._says(hazard, Decision.NO, (HelmetStatus.ALL_WORN, HelmetStatus.NO_PERSON))

    def _says(self, hazard: Hazard, decision: Decision,
              helmet: tuple[HelmetStatus, ...]) -> bool:
        """Fire and smoke: their decision is ``decision``; hard hats: the status is one of
        ``helmet``."""
        if hazard is Hazard.NO_HELMET:
            return self.helmet.status in helmet
        finding = self.fire if hazard is Hazard.FIRE else self.smoke
        return finding.answer is decision

    def detail(self, hazard: Hazard) -> str:
        """The model's description for ``hazard`` (with its location when it gave one)."""
        if hazard is Hazard.NO_HELMET:
            return self.helmet.description
        finding = self.fire if hazard is Hazard.FIRE else self.smoke
        if finding.location and finding.location not in finding.description:
            return f"{finding.description} ({finding.location})" if finding.description \
                else finding.location
        return finding.description

    @property
    def decision(self) -> tuple[Decision, Decision, HelmetStatus]:
        """What the answer decides (fire, smoke, hard hats), without the wording."""
        return (self.fire.answer, self.smoke.answer, self.helmet.status)

    def to_frame(self, sent_width: int, sent_height: int, frame_width: int,
                 frame_height: int) -> Answer:
        """The answer with its boxes mapped from the image sent (``sent_*``, the resized
        image the model saw) to the original frame, clipped to the frame."""
        if not self.has_boxes:
            return self
        if min(sent_width, sent_height, frame_width, frame_height) <= 0:
            raise ValueError(f"image sizes must be positive, got {sent_width}x{sent_height} "
                             f"and {frame_width}x{frame_height}")
        scale_x, scale_y = frame_width / sent_width, frame_height / sent_height

        def mapped(box: PersonBox) -> PersonBox:
            x1, y1, x2, y2 = box.bbox_2d
            return PersonBox(label=box.label, bbox_2d=[
                min(frame_width, round(x1 * scale_x)), min(frame_height, round(y1 * scale_y)),
                min(frame_width, round(x2 * scale_x)), min(frame_height, round(y2 * scale_y)),
            ])

        return self._with_boxes(mapped)

    def shifted(self, dx: int, dy: int) -> Answer:
        """The answer with its boxes moved by ``(dx, dy)`` pixels (a cropped region's boxes
        into the whole frame's coordinates)."""
        if not self.has_boxes or (dx, dy) == (0, 0):
            return self

        def moved(b: GroundingBox) -> GroundingBox:
            return GroundingBox(label=b.label, bbox_2d=[b.bbox_2d[0] + dx, b.bbox_2d[1] + dy,
                                                        b.bbox_2d[2] + dx, b.bbox_2d[3] + dy])

        return self._with_boxes(moved)

    @property
    def has_boxes(self) -> bool:
        """Whether any finding (fire, smoke, hard hats) carries a grounding box."""
        return bool(self.fire.boxes or self.smoke.boxes or self.helmet.boxes)

    def boxes(self, hazard: Hazard) -> list[GroundingBox]:
        """The grounding boxes the answer gives for ``hazard``."""
        if hazard is Hazard.NO_HELMET:
            return list(self.helmet.boxes)
        return list((self.fire if hazard is Hazard.FIRE else self.smoke).boxes)

    def _with_boxes(self, change: Callable[[GroundingBox], GroundingBox]) -> Answer:
        """The answer with ``change`` applied to every box of every finding."""
        return self.model_copy(update={
            name: finding.model_copy(update={"boxes": [change(b) for b in finding.boxes]})
            for name, finding in (("fire", self.fire), ("smoke", self.smoke),
                                  ("helmet", self.helmet))
        })


class WireAnswer(BaseModel):
    """The answer as the model writes it: flat, each decision first, details only when needed.

    Completion tokens are generated one at a time, so the form the model writes is kept short:
    a frame with nothing to report is ``{"fire":"no","smoke":"no","hard_hats":"all_worn"}``
    (about 15 tokens). Locations, descriptions, the count and the grounding boxes are optional
    and follow their decision (the schema keeps this order). :meth:`to_answer` turns it into
    the nested :class:`Answer` the rest of the monitor uses; the nested form is accepted
    from a model too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fire: Decision = Field(description="Signs of fire: yes, no, or uncertain")
    fire_location: str = Field(default="", max_length=WIRE_LOCATION_MAX)
    fire_description: str = Field(default="", max_length=WIRE_DESCRIPTION_MAX)
    fire_boxes: list[GroundingBox] = Field(
        default_factory=list, max_length=WIRE_MAX_HAZARD_BOXES,
        description="For yes: one bbox_2d per flame region, in pixels of the image "
        f"(at most {WIRE_MAX_HAZARD_BOXES}, the largest)")
    smoke: Decision = Field(description="Visible smoke: yes, no, or uncertain")
    smoke_location: str = Field(default="", max_length=WIRE_LOCATION_MAX)
    smoke_description: str = Field(default="", max_length=WIRE_DESCRIPTION_MAX)
    smoke_boxes: list[GroundingBox] = Field(
        default_factory=list, max_length=WIRE_MAX_HAZARD_BOXES,
        description="For yes: one bbox_2d per smoke cloud, in pixels of the image "
        f"(at most {WIRE_MAX_HAZARD_BOXES}, the largest)")
    hard_hats: HelmetStatus = Field(description="Hard-hat status of the people in view")
    missing: int = Field(default=0, ge=0, le=1000,
                         description="People without a hard hat")
    boxes: list[GroundingBox] = Field(
        default_factory=list, max_length=WIRE_MAX_BOXES,
        description="One bbox_2d per person without a hard hat, in pixels of the image "
        f"(at most {WIRE_MAX_BOXES}; missing counts them all)")
    hard_hats_description: str = Field(default="", max_length=WIRE_DESCRIPTION_MAX)

    def to_answer(self) -> Answer:
        """The nested form."""
        return Answer(
            fire=HazardFinding(answer=self.fire, location=self.fire_location,
                               description=self.fire_description, boxes=self.fire_boxes),
            smoke=HazardFinding(answer=self.smoke, location=self.smoke_location,
                                description=self.smoke_description, boxes=self.smoke_boxes),
            helmet=HelmetFinding(status=self.hard_hats, missing_count=self.missing,
                                 description=self.hard_hats_description, boxes=self.boxes),
        )

    @classmethod
    def from_answer(cls, answer: Answer) -> WireAnswer:
        """The flat form of a nested answer, cut to the wire limits as the schema cuts what a
        model writes (used by the simulator)."""
        loc, text = WIRE_LOCATION_MAX, WIRE_DESCRIPTION_MAX
        return cls(
            fire=answer.fire.answer, fire_location=answer.fire.location[:loc],
            fire_description=answer.fire.description[:text],
            fire_boxes=answer.fire.boxes[:WIRE_MAX_HAZARD_BOXES],
            smoke=answer.smoke.answer, smoke_location=answer.smoke.location[:loc],
            smoke_description=answer.smoke.description[:text],
            smoke_boxes=answer.smoke.boxes[:WIRE_MAX_HAZARD_BOXES],
            hard_hats=answer.helmet.status, missing=answer.helmet.missing_count,
            boxes=answer.helmet.boxes[:WIRE_MAX_BOXES],
            hard_hats_description=answer.helmet.description[:text],
        )


def answer_json_schema() -> dict[str, Any]:
    """The JSON Schema sent as ``response_format`` so the server constrains decoding to it
    (the flat :class:`WireDecision`)."""
    return WireAnswer.model_json_schema()


@dataclass(frozen=True, slots=True)
class Verdict:
    """One validated model answer about one frame of one camera."""

    camera_id: str
    answer: Answer
    captured_at: float
    """Wall-clock time (epoch seconds) at which the frame was read from the stream."""
    analysed_at: float
    """Wall-clock time at which the answer arrived."""
    latency_s: float
    model: str
    endpoint: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    image: EncodedImage | None = field(default=None, repr=False, compare=False)
    """The JPEG that was sent (the operator console shows it as it is, never re-encoded)."""
    image_offset: tuple[int, int] = (0, 0)
    """Where the sent image's top-left corner lies in the frame (a region of interest's
    crop); the answer's boxes are in frame pixels."""
    verification: Verification | None = None
    """Zoom-in verification of its positives (:mod:`monitor.model.verify`), when any ran:
    ``answer`` is then the gated answer and ``verification.original`` the model's."""


class InvalidAnswerError(ValueError):
    """The model's text is neither valid JSON of the schema nor the seed's text format."""

    def __init__(self, reason: str, raw_text: str) -> None:
        self.reason = reason
        self.raw_excerpt = truncate(raw_text)
        super().__init__(f"invalid model answer ({reason}): {self.raw_excerpt!r}")


def truncate(text: str, limit: int = RAW_TEXT_LOG_LIMIT) -> str:
    """``text`` cut to ``limit`` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more chars]"


_CODE_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.DOTALL)
_MAX_EMBEDDED_ATTEMPTS = 64
"""Bounds the scan for JSON objects inside prose (a very long answer stays cheap to reject)."""


def parse_answer(text: str) -> Answer:
    """Parse a model's text into a :class:`Answer`.

    The whole text as one JSON object of the schema (what constrained decoding returns) is
    taken as it is: its strings are data, never searched for verdicts. Otherwise every verdict
    the text holds is collected (JSON in code fences, JSON objects inside prose, the seed's
    labelled fields); they must agree on every decision, or the answer is invalid. So text that
    quotes or injects a second verdict (a sign in the picture saying "fire: yes", prose with
    a fake JSON verdict) can make an answer invalid, never flip it.

    Raises:
        InvalidAnswerError: with the reason and the truncated text.
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidAnswerError("empty answer", text)
    problems: list[str] = []
    whole = _validate_json_text(stripped, problems)
    if whole is not None:
        return whole
    verdicts: list[tuple[str, Answer]] = []
    for block in _CODE_FENCE.findall(stripped):
        found = _validate_json_text(block.strip(), problems)
        if found is not None:
            verdicts.append(("fenced JSON", found))
    for data in _embedded_objects(stripped):
        found = _validate(data, problems)
        if found is not None:
            verdicts.append(("JSON in prose", found))
    seed = _parse_seed_text(stripped)
    if isinstance(seed, Answer):
        verdicts.append(("labelled fields", seed))
    elif seed.conflict or not verdicts:
        problems.insert(0, seed.reason) if seed.conflict else problems.append(seed.reason)
    if not verdicts or (isinstance(seed, _SeedProblem) and seed.conflict):
        raise InvalidAnswerError(_summary(problems), text)
    decisions = {answer.decision for _, answer in verdicts}
    if len(decisions) > 1:
        forms = ", ".join(f"{form}: {_describe_decision(answer)}" for form, answer in verdicts)
        raise InvalidAnswerError(f"conflicting verdicts in one answer ({forms})", text)
    return verdicts[0][1]


def _summary(problems: list[str]) -> str:
    if not problems:
        return "no JSON object and no labelled fields"
    unique = list(dict.fromkeys(problems))
    return "; ".join(unique[:3])


def _describe_decision(answer: Answer) -> str:
    fire, smoke, helmet = answer.decision
    return f"fire={fire.value} smoke={smoke.value} helmet={helmet.value}"


def _is_flat(data: object) -> bool:
    """Whether ``data`` is the flat wire form (``"hard_hats"``, or ``"fire"`` as a string)."""
    return isinstance(data, dict) and ("hard_hats" in data or isinstance(data.get("fire"), str))


def _validate(data: object, problems: list[str]) -> Answer | None:
    """The flat wire form or the nested form (errors named in the form given)."""
    try:
        if _is_flat(data):
            return WireAnswer.model_validate(data).to_answer()
        return Answer.model_validate(data)
    except ValidationError as exc:
        problems.append(f"JSON does not match the schema: {_first_validation_problem(exc)}")
        return None


def _validate_json_text(text: str, problems: list[str]) -> Answer | None:
    """The text as one JSON object of the schema, or ``None`` (the problem appended)."""
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # Typically an answer cut by max_tokens, or a server that ignored the schema.
        problems.append(f"malformed JSON: {exc.msg} at char {exc.pos}")
        return None
    return _validate(data, problems)


def _first_validation_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "<root>"
    return f"{location}: {error['msg']}"


def _embedded_objects(text: str) -> list[dict[str, Any]]:
    """The top-level JSON objects inside prose, in order (nested ones are part of theirs)."""
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    start = text.find("{")
    attempts = 0
    while start != -1 and attempts < _MAX_EMBEDDED_ATTEMPTS:
        attempts += 1
        try:
            data, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(data, dict):
            objects.append(data)
        start = text.find("{", end)
    return objects


# --- The seed's labelled text format. ----------------------------------------------------------

_ZH_ANSWERS = {"是": Decision.YES, "否": Decision.NO, "不确定": Decision.UNCERTAIN,
               "无法确定": Decision.UNCERTAIN}
_ZH_HELMET = {
    "全部正确佩戴": HelmetStatus.ALL_WORN,
    "全部佩戴": HelmetStatus.ALL_WORN,
    "均已佩戴": HelmetStatus.ALL_WORN,
    "部分未佩戴": HelmetStatus.SOME_MISSING,
    "全部未佩戴": HelmetStatus.NONE_WORN,
    "无人员": HelmetStatus.NO_PERSON,
    "不确定": HelmetStatus.UNCERTAIN,
    "无法确定": HelmetStatus.UNCERTAIN,
}
_EN_ANSWERS = {"yes": Decision.YES, "no": Decision.NO, "uncertain": Decision.UNCERTAIN}
_EN_HELMET = {
    "all worn": HelmetStatus.ALL_WORN,
    "some missing": HelmetStatus.SOME_MISSING,
    "none worn": HelmetStatus.NONE_WORN,
    "no person": HelmetStatus.NO_PERSON,
    "uncertain": HelmetStatus.UNCERTAIN,
}


def _alternatives(values: Mapping[str, object], *, english: bool) -> str:
    # Longest first, so 全部未佩戴 is not read as a shorter value; English values may be
    # written with "_" (the JSON enum) or a space.
    ordered = sorted(values, key=len, reverse=True)
    if english:
        return "|".join(re.escape(v).replace(r"\ ", "[ _]") for v in ordered)
    return "|".join(re.escape(v) for v in ordered)


# A value followed by "/" is the prompt's template echoed back ("[是/否/不确定]"), not an answer.
_NOT_TEMPLATE = r"(?!\s*[/\uff0f|])"
_ZH_LABEL = r"【\s*{label}\s*】\**\s*[：:]?\s*[*\[「“\"]*\s*(?P<value>{values}){tail}"
_EN_LABEL = (r"(?<![A-Za-z])\[?\s*\**\s*{label}\s*\**\s*\]?\s*\**\s*[:：]\s*\**\s*\[?\s*"
             r"(?P<value>{values})(?![A-Za-z]){tail}")
_NEXT_LABEL = re.compile(
    r"【|(?<![A-Za-z])\[?\s*\**\s*(?:fire|smoke|hard ?hats?|helmets?)(?: detection)?\s*\**\s*"
    r"\]?\s*\**\s*[:：]", re.IGNORECASE)

_FIELDS_ZH = (
    ("火灾检测", r"火灾检测", _ZH_ANSWERS),
    ("烟雾检测", r"烟雾检测", _ZH_ANSWERS),
    ("安全帽检测", r"安全帽检测", _ZH_HELMET),
)
_FIELDS_EN = (
    ("Fire", r"fire(?: detection)?", _EN_ANSWERS),
    ("Smoke", r"smoke(?: detection)?", _EN_ANSWERS),
    ("Hard hats", r"(?:hard ?hats?|helmets?)(?: detection)?", _EN_HELMET),
)


@dataclass(frozen=True, slots=True)
class _SeedProblem:
    reason: str
    conflict: bool = False
    """Some field was given twice with different values (never "fixed" by other forms)."""


def _parse_seed_text(text: str) -> Answer | _SeedProblem:
    """The seed's labelled fields (Chinese ``【火灾检测】：是`` or English ``[Fire]: yes``)."""
    zh = "【" in text
    fields = _FIELDS_ZH if zh else _FIELDS_EN
    values: list[tuple[str, str]] = []
    missing: list[str] = []
    for name, label, table in fields:
        pattern = (_ZH_LABEL if zh else _EN_LABEL).format(
            label=label, values=_alternatives(table, english=not zh), tail=_NOT_TEMPLATE)
        matches = list(re.finditer(pattern, text, re.IGNORECASE))
        if not matches:
            given_value = re.search((_ZH_LABEL if zh else _EN_LABEL).format(
                label=label, values=r"[^\s\]】,，。;；]{1,16}", tail=""), text, re.IGNORECASE)
            if given_value is not None:
                expected = " / ".join(table)
                return _SeedProblem(f"{name} is {given_value.group('value')!r}, expected one "
                                    f"of {expected}")
            missing.append(name)
            continue
        given = {_normalise(m.group("value")) for m in matches}
        if len(given) > 1:
            return _SeedProblem(f"field {name} given {len(matches)} times with different "
                                f"values ({' / '.join(sorted(given))})", conflict=True)
        first = matches[0]
        rest = text[first.end():]
        following = _NEXT_LABEL.search(rest)
        description = rest[: following.start()] if following else rest
        values.append((_normalise(first.group("value")),
                       description.strip(" ：:，,。.;；\n\t]*-")))
    if missing:
        labelled = "【】" if zh else "[Label]: value"
        return _SeedProblem(f"no JSON object and no {labelled} field {', '.join(missing)} "
                            f"with a valid value")
    (fire, fire_text), (smoke, smoke_text), (helmet, helmet_text) = values
    answers = _ZH_ANSWERS if zh else _EN_ANSWERS
    helmets = _ZH_HELMET if zh else _EN_HELMET
    return Answer(
        fire=HazardFinding(answer=answers[fire], description=fire_text[:DESCRIPTION_MAX]),
        smoke=HazardFinding(answer=answers[smoke], description=smoke_text[:DESCRIPTION_MAX]),
        helmet=HelmetFinding(status=helmets[helmet],
                             description=helmet_text[:DESCRIPTION_MAX]),
    )


def _normalise(value: str) -> str:
    return value.lower().replace("_", " ").strip()
