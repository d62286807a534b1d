"""Zoom-in verification: one short, focused question about a crop of a positive verdict's box.

A VLM judging a whole frame shrunk to the pixel budget confuses things that a closer look
tells apart: an orange hi-vis vest, a sunset or welding glare taken for flames; a distant head
(ten pixels at the default budget) taken for bare. So when a verdict is positive for a hazard
under verification (``[verification] hazards``) and grounds it with boxes, each box is cropped
with a margin from the full-resolution frame and the model is asked one question about it
(:func:`crop_messages`), answered in a tiny strict schema (:class:`CropAnswer`, about 8
tokens): for a person "is a hard hat ON THE HEAD (held in the hand or hung on a belt does not
count)?", for fire or smoke "is this real fire/smoke, or a vest, light, reflection, steam,
dust?".

This module is the pure part: the questions, the schema, parsing (:func:`parse_crop_answer`),
the crop rectangle (:func:`crop_region`) and the decision (:func:`gate`: what the tracker sees
after verification). The requests are the client's (:meth:`monitor.model.client.ModelSlot.
check_crop`), the crops and their order the pipeline's (:mod:`monitor.service.verification`).

The decision, per verified hazard:

* ``confirmed``: at least one crop agrees (a person without a hard hat on the head; real
  flames or smoke): the verdict stands, with only the agreeing boxes (and, for hard hats, the
  count of people confirmed);
* ``rejected``: every crop asked disagrees: the hazard becomes a negative (fire/smoke ``no``,
  hard hats ``all_worn``), so it neither raises an alert nor keeps one from clearing;
* ``failed``: no crop could be asked (model errors) or every one said ``uncertain``: the hazard
  becomes ``uncertain`` (by default neither positive nor negative, see ``defaults.uncertain``);
* ``unverified``: the verdict gave no box to aim at: it stands as it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.model.answer import (
    Answer,
    Decision,
    GroundingBox,
    Hazard,
    HelmetStatus,
    InvalidAnswerError,
)
from monitor.model.prompts import SYSTEM_PROMPTS, Language
from monitor.pixels import BgrImage

SEEN_MAX = 24
"""Longest ``seen`` word kept (and allowed by the schema)."""
MIN_CROP_SIDE_PX = 64
"""A crop is at least this many frame pixels wide and tall (a tiny box still shows context)."""

CROP_QUESTIONS: dict[tuple[Language, Hazard], str] = {
    ("en", Hazard.NO_HELMET): (
        "Zoom-in check of one person. Is this person wearing a hard hat ON THE HEAD? A hard hat "
        "held in the hand, hung on a belt or lying nearby does not count. answer: yes (on the "
        "head), no, or uncertain; seen: what is on the head, in 1-3 words."),
    ("en", Hazard.FIRE): (
        "Zoom-in check of one region. Is this real fire (flames)? An orange vest or clothing, "
        "a lamp or light, a reflection, a sunset or a painted object is not. answer: yes (real "
        "fire), no, or uncertain; seen: what it is, in 1-3 words."),
    ("en", Hazard.SMOKE): (
        "Zoom-in check of one region. Is this real smoke? Steam, dust, fog, cloud, glare or a "
        "grey surface is not. answer: yes (real smoke), no, or uncertain; seen: what it is, "
        "in 1-3 words."),
    ("zh", Hazard.NO_HELMET): (
        "放大检查一名人员：此人是否把安全帽戴在头上？拿在手里、挂在腰带上或放在旁边都不算。"
        "answer：yes（戴在头上）、no 或 uncertain；seen：头上是什么，1-3 个词。"),
    ("zh", Hazard.FIRE): (
        "放大检查一个区域：这是真实的火焰吗？橙色背心或衣物、灯光、反光、夕阳或涂装物体都不是。"
        "answer：yes（真实火焰）、no 或 uncertain；seen：它是什么，1-3 个词。"),
    ("zh", Hazard.SMOKE): (
        "放大检查一个区域：这是真实的烟雾吗？蒸汽、灰尘、雾、云、眩光或灰色表面都不是。"
        "answer：yes（真实烟雾）、no 或 uncertain；seen：它是什么，1-3 个词。"),
}
"""The focused question per language and hazard (the simulator recognises them by text)."""


class CropAnswer(BaseModel):
    """The model's answer to a focused question: ``{"answer": "no", "seen": "bare head"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Decision = Field(description="yes, no, or uncertain (see the question)")
    seen: str = Field(default="", max_length=SEEN_MAX,
                      description="What is there, in 1-3 words.")


def crop_answer_schema() -> dict[str, Any]:
    """The JSON Schema sent as ``response_format`` with a focused question."""
    return CropAnswer.model_json_schema()


def crop_messages(image_data_url: str, language: Language, hazard: Hazard) -> list[dict[str, Any]]:
    """Chat messages for one focused question: the question first (a fixed prefix per hazard,
    cached by vLLM), then the crop."""
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[language]},
        {"role": "user", "content": [
            {"type": "text", "text": CROP_QUESTIONS[language, hazard]},
            {"type": "image_url", "image_url": {"url": image_data_url}},
        ]},
    ]


_WORDS = {"yes": Decision.YES, "no": Decision.NO, "uncertain": Decision.UNCERTAIN,
          "是": Decision.YES, "否": Decision.NO, "不确定": Decision.UNCERTAIN,
          "无法确定": Decision.UNCERTAIN}
_LEADING_WORD = re.compile(r"^\W*(yes|no|uncertain|是|否|不确定|无法确定)(?![A-Za-z])",
                           re.IGNORECASE)


def parse_crop_answer(text: str) -> CropAnswer:
    """The answer to a focused question: JSON of :class:`CropAnswer` (also in a code fence),
    or text that starts with yes / no / uncertain (是 / 否 / 不确定).

    Raises:
        InvalidAnswerError: anything else (an invalid check never confirms a hazard).
    """
    stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    stripped = stripped.strip()
    if not stripped:
        raise InvalidAnswerError("empty answer", text)
    if stripped.startswith("{"):
        try:
            return CropAnswer.model_validate(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise InvalidAnswerError(f"malformed JSON: {exc.msg} at char {exc.pos}",
                                     text) from None
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "<root>"
            raise InvalidAnswerError(f"JSON does not match the check's schema: {where}: "
                                     f"{error['msg']}", text) from None
    match = _LEADING_WORD.match(stripped)
    if match is None:
        raise InvalidAnswerError("neither JSON nor a leading yes/no/uncertain", text)
    rest = stripped[match.end():].strip(" .,:;!-。，：；")
    return CropAnswer(answer=_WORDS[match.group(1).lower()], seen=rest[:SEEN_MAX])


def agrees(hazard: Hazard, answer: CropAnswer) -> bool:
    """Whether a crop's answer confirms ``hazard`` (``uncertain`` never does)."""
    if hazard is Hazard.NO_HELMET:
        return answer.answer is Decision.NO  # no hard hat on the head
    return answer.answer is Decision.YES  # real fire / real smoke


def crop_region(box: GroundingBox, frame_width: int, frame_height: int, *,
                margin: float) -> tuple[int, int, int, int]:
    """The rectangle ``(x1, y1, x2, y2)`` to crop from the frame for ``box`` (frame pixels):
    the box widened by ``margin`` times its size on every side, at least
    :data:`MIN_CROP_SIDE_PX` on a side, clipped to the frame."""
    if frame_width <= 0 or frame_height <= 0:
        raise ValueError(f"frame size must be positive, got {frame_width}x{frame_height}")
    x1, y1, x2, y2 = box.bbox_2d
    pad_x = max(margin * (x2 - x1), (MIN_CROP_SIDE_PX - (x2 - x1)) / 2, 0.0)
    pad_y = max(margin * (y2 - y1), (MIN_CROP_SIDE_PX - (y2 - y1)) / 2, 0.0)
    left, top = max(0, round(x1 - pad_x)), max(0, round(y1 - pad_y))
    right, bottom = min(frame_width, round(x2 + pad_x)), min(frame_height, round(y2 + pad_y))
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"box {box.bbox_2d} lies outside the {frame_width}x{frame_height} frame")
    return left, top, right, bottom


class CheckOutcome(StrEnum):
    """What verification made of one hazard of a verdict (see the module docstring)."""

    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    FAILED = "failed"
    UNVERIFIED = "unverified"


@dataclass(frozen=True, slots=True)
class CropCheck:
    """One focused question about one box: the crop, the answer (or why there is none)."""

    box: GroundingBox
    """The verdict's box, in frame pixels."""
    region: tuple[int, int, int, int]
    """The rectangle cropped from the full-resolution frame."""
    answer: CropAnswer | None
    error: str | None = None
    """Why the question got no valid answer (the model's error, redacted)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    image: BgrImage | None = field(default=None, repr=False, compare=False)
    """The crop (full resolution), kept for the evidence store."""
    evidence_path: str | None = None
    """Where the crop was saved as evidence (set once it was)."""

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens the question cost (0 when unknown)."""
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


@dataclass(frozen=True, slots=True)
class HazardCheck:
    """Verification of one hazard of one verdict."""

    hazard: Hazard
    outcome: CheckOutcome
    checks: tuple[CropCheck, ...] = ()

    @property
    def tokens(self) -> int:
        """What the focused questions cost."""
        return sum(check.tokens for check in self.checks)


def decide(hazard: Hazard, checks: tuple[CropCheck, ...]) -> HazardCheck:
    """The outcome of one hazard's crop checks (see the module docstring)."""
    if not checks:
        return HazardCheck(hazard, CheckOutcome.UNVERIFIED)
    answered = [c.answer for c in checks if c.answer is not None]
    if any(agrees(hazard, a) for a in answered):
        outcome = CheckOutcome.CONFIRMED
    elif answered and len(answered) == len(checks) \
            and all(a.answer is not Decision.UNCERTAIN for a in answered):
        outcome = CheckOutcome.REJECTED
    else:
        outcome = CheckOutcome.FAILED
    return HazardCheck(hazard, outcome, checks)


def gate(answer: Answer, results: tuple[HazardCheck, ...]) -> Answer:
    """The answer as the tracker sees it after verification (see the module docstring)."""
    for result in results:
        if result.outcome is CheckOutcome.UNVERIFIED:
            continue
        agreeing = [c.box for c in result.checks
                    if c.answer is not None and agrees(result.hazard, c.answer)]
        if result.hazard is Hazard.NO_HELMET:
            helmet = answer.helmet
            if result.outcome is CheckOutcome.CONFIRMED:
                helmet = helmet.model_copy(update={"boxes": agreeing,
                                                   "missing_count": len(agreeing)})
            elif result.outcome is CheckOutcome.REJECTED:
                helmet = helmet.model_copy(update={
                    "status": HelmetStatus.ALL_WORN, "boxes": [], "missing_count": 0,
                    "description": _note(result, helmet.description)})
            else:
                helmet = helmet.model_copy(update={"status": HelmetStatus.UNCERTAIN})
            answer = answer.model_copy(update={"helmet": helmet})
            continue
        name = "fire" if result.hazard is Hazard.FIRE else "smoke"
        finding = answer.fire if result.hazard is Hazard.FIRE else answer.smoke
        if result.outcome is CheckOutcome.CONFIRMED:
            finding = finding.model_copy(update={"boxes": agreeing})
        elif result.outcome is CheckOutcome.REJECTED:
            finding = finding.model_copy(update={
                "answer": Decision.NO, "boxes": [],
                "description": _note(result, finding.description)})
        else:
            finding = finding.model_copy(update={"answer": Decision.UNCERTAIN})
        answer = answer.model_copy(update={name: finding})
    return answer


def _note(result: HazardCheck, description: str) -> str:
    """The description of a rejected finding: what the zoom-in saw instead."""
    seen = ", ".join(dict.fromkeys(c.answer.seen for c in result.checks
                                   if c.answer is not None and c.answer.seen))
    text = f"rejected by zoom-in ({seen})" if seen else "rejected by zoom-in"
    return f"{text}: {description}"[:200] if description else text


@dataclass(frozen=True, slots=True)
class Verification:
    """Everything verification did for one verdict, hazard by hazard."""

    results: tuple[HazardCheck, ...] = ()
    original: Answer | None = None
    """The model's whole-frame answer before :func:`gate` (the verdict carries the gated one)."""

    def result(self, hazard: Hazard) -> HazardCheck | None:
        """The check of ``hazard``, if it was verified."""
        return next((r for r in self.results if r.hazard is hazard), None)

    @property
    def tokens(self) -> int:
        """What all focused questions of the verdict cost."""
        return sum(result.tokens for result in self.results)

    def with_evidence(self, hazard: Hazard, paths: list[str | None]) -> Verification:
        """The same verification with the crops of ``hazard`` saved at ``paths`` (in order)."""
        results = []
        for result in self.results:
            if result.hazard is hazard:
                saved = tuple(replace(check, evidence_path=path)
                              for check, path in zip(result.checks, paths, strict=False))
                results.append(replace(result, checks=saved + result.checks[len(saved):]))
            else:
                results.append(result)
        return replace(self, results=tuple(results))
