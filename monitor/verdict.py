"""The model's answer: its schema, and parsing of everything a server may send back.

Two answer forms are accepted:

* JSON matching :class:`SafetyAnswer` (what vLLM returns when the request carries a
  ``json_schema`` response format), also when wrapped in a code fence or surrounded by prose;
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
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_T = TypeVar("_T")

RAW_TEXT_LOG_LIMIT = 300
"""How many characters of an unparseable answer are kept for the log line."""


class Answer(StrEnum):
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


class HazardFinding(BaseModel):
    """The answer to "is there fire?" or "is there smoke?"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Answer = Field(description="yes, no, or uncertain")
    description: str = Field(
        default="", max_length=500, description="What was seen and where; empty when no."
    )


class HelmetFinding(BaseModel):
    """The answer to "is everyone wearing a hard hat?"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: HelmetStatus = Field(description="Hard-hat status of the people in view")
    missing_count: int = Field(
        default=0, ge=0, le=1000, description="How many people are without a hard hat"
    )
    description: str = Field(
        default="", max_length=500, description="Who is without a hard hat and where."
    )


class SafetyAnswer(BaseModel):
    """The structured answer the model is asked for (its JSON Schema constrains decoding)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fire: HazardFinding
    smoke: HazardFinding
    helmet: HelmetFinding

    def is_positive(self, hazard: Hazard) -> bool:
        """Whether this answer reports ``hazard`` (``uncertain`` is not positive)."""
        if hazard is Hazard.FIRE:
            return self.fire.answer is Answer.YES
        if hazard is Hazard.SMOKE:
            return self.smoke.answer is Answer.YES
        return self.helmet.status in (HelmetStatus.SOME_MISSING, HelmetStatus.NONE_WORN)

    def is_negative(self, hazard: Hazard) -> bool:
        """Whether this answer positively rules ``hazard`` out (``uncertain`` does not)."""
        if hazard is Hazard.FIRE:
            return self.fire.answer is Answer.NO
        if hazard is Hazard.SMOKE:
            return self.smoke.answer is Answer.NO
        return self.helmet.status in (HelmetStatus.ALL_WORN, HelmetStatus.NO_PERSON)

    def detail(self, hazard: Hazard) -> str:
        """The model's description for ``hazard``."""
        if hazard is Hazard.FIRE:
            return self.fire.description
        if hazard is Hazard.SMOKE:
            return self.smoke.description
        return self.helmet.description


def answer_json_schema() -> dict[str, Any]:
    """The JSON Schema sent as ``response_format`` so the server constrains decoding to it."""
    return SafetyAnswer.model_json_schema()


@dataclass(frozen=True, slots=True)
class Verdict:
    """One validated model answer about one frame of one camera."""

    camera_id: str
    answer: SafetyAnswer
    captured_at: float
    """Wall-clock time (epoch seconds) at which the frame was read from the stream."""
    analysed_at: float
    """Wall-clock time at which the answer arrived."""
    latency_s: float
    model: str
    endpoint: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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


_CODE_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_answer(text: str) -> SafetyAnswer:
    """Parse a model's text into a :class:`SafetyAnswer`.

    Raises:
        InvalidAnswerError: with the reason and the truncated text.
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidAnswerError("empty answer", text)
    json_error: str | None = None
    for candidate in _json_candidates(stripped):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        try:
            return SafetyAnswer.model_validate(data)
        except ValidationError as exc:
            json_error = _first_validation_problem(exc)
    try:
        return _parse_seed_text(stripped)
    except InvalidAnswerError:
        if json_error is not None:
            reason = f"JSON does not match the schema: {json_error}"
            raise InvalidAnswerError(reason, text) from None
        raise


def _first_validation_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "<root>"
    return f"{location}: {error['msg']}"


def _json_candidates(text: str) -> list[str]:
    """The substrings that may hold the JSON object: the whole text, fenced blocks, and the
    outermost ``{...}`` span (answers with prose around the JSON)."""
    candidates = [text]
    candidates.extend(match.group(1).strip() for match in _CODE_FENCE.finditer(text))
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first : last + 1])
    return candidates


# The seed's format puts the answer in brackets or not: "【火灾检测】：[是]" or "【火灾检测】：是".
_ZH_FIELD = r"【{label}】\s*[：:]\s*\[?\s*(?P<value>[^\]\s【，,。；;]+)"
_EN_FIELD = (
    r"\[\s*{label}\s*\]\s*:\s*\[?\s*(?P<value>[A-Za-z][A-Za-z ]*?)\s*(?:\]|[,.;]|(?=[\n\[])|$)"
)

_ZH_ANSWERS = {"是": Answer.YES, "否": Answer.NO, "不确定": Answer.UNCERTAIN,
               "无法确定": Answer.UNCERTAIN}
_ZH_HELMET = {
    "全部正确佩戴": HelmetStatus.ALL_WORN,
    "部分未佩戴": HelmetStatus.SOME_MISSING,
    "全部未佩戴": HelmetStatus.NONE_WORN,
    "无人员": HelmetStatus.NO_PERSON,
    "不确定": HelmetStatus.UNCERTAIN,
    "无法确定": HelmetStatus.UNCERTAIN,
}
_EN_ANSWERS = {"yes": Answer.YES, "no": Answer.NO, "uncertain": Answer.UNCERTAIN}
_EN_HELMET = {
    "all worn": HelmetStatus.ALL_WORN,
    "some missing": HelmetStatus.SOME_MISSING,
    "none worn": HelmetStatus.NONE_WORN,
    "no person": HelmetStatus.NO_PERSON,
    "uncertain": HelmetStatus.UNCERTAIN,
}


def _field(text: str, pattern: str, label: str) -> tuple[str, str] | None:
    """The value of one labelled field and the description text that follows it."""
    match = re.search(pattern.format(label=re.escape(label)), text, re.IGNORECASE)
    if match is None:
        return None
    rest = text[match.end() :]
    # The description runs up to the next labelled field.
    next_label = re.search(r"【|\[\s*[A-Za-z ]+\s*\]\s*:", rest)
    description = rest[: next_label.start()] if next_label else rest
    return match.group("value").strip(), description.strip(" ：:，,。.;；\n\t]")


def _parse_seed_text(text: str) -> SafetyAnswer:
    if "【" in text:
        labels, pattern, answers, helmets = (
            ("火灾检测", "烟雾检测", "安全帽检测"), _ZH_FIELD, _ZH_ANSWERS, _ZH_HELMET)
    else:
        labels, pattern, answers, helmets = (
            ("Fire", "Smoke", "Hard hats"), _EN_FIELD, _EN_ANSWERS, _EN_HELMET)
    fields = [_field(text, pattern, label) for label in labels]
    missing = [label for label, found in zip(labels, fields, strict=True) if found is None]
    if missing:
        raise InvalidAnswerError(f"no JSON object and no field {', '.join(missing)}", text)
    (fire_value, fire_text), (smoke_value, smoke_text), (helmet_value, helmet_text) = (
        found for found in fields if found is not None
    )

    def lookup(table: dict[str, _T], value: str, label: str) -> _T:
        key = value.lower()
        if key not in table:
            expected = " / ".join(table)
            raise InvalidAnswerError(f"{label} is {value!r}, expected one of {expected}", text)
        return table[key]

    helmet_status = lookup(helmets, helmet_value, labels[2])
    return SafetyAnswer(
        fire=HazardFinding(answer=lookup(answers, fire_value, labels[0]),
                           description=truncate(fire_text, 500)[:500]),
        smoke=HazardFinding(answer=lookup(answers, smoke_value, labels[1]),
                            description=truncate(smoke_text, 500)[:500]),
        helmet=HelmetFinding(status=helmet_status, description=truncate(helmet_text, 500)[:500]),
    )
