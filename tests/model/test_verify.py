"""Zoom-in verification, the pure part: parsing focused answers, crop rectangles, the gate."""

from __future__ import annotations

import pytest

from monitor.model.answer import (
    Answer,
    Decision,
    GroundingBox,
    Hazard,
    HelmetStatus,
    InvalidAnswerError,
)
from monitor.model.verify import (
    CROP_QUESTIONS,
    MIN_CROP_SIDE_PX,
    CheckOutcome,
    CropAnswer,
    CropCheck,
    crop_answer_schema,
    crop_messages,
    crop_region,
    decide,
    gate,
    parse_crop_answer,
)

BOX = GroundingBox(bbox_2d=[100, 100, 140, 180])


@pytest.mark.parametrize(("text", "answer", "seen"), [
    ('{"answer":"no","seen":"bare head"}', Decision.NO, "bare head"),
    ('{"answer":"yes"}', Decision.YES, ""),
    ('```json\n{"answer":"uncertain","seen":"blur"}\n```', Decision.UNCERTAIN, "blur"),
    ("Yes, a hard hat on the head.", Decision.YES, "a hard hat on the head"),
    ("no - orange vest", Decision.NO, "orange vest"),
    ("否，橙色背心", Decision.NO, "橙色背心"),
    ("不确定", Decision.UNCERTAIN, ""),
])
def test_focused_answers_parse_from_json_or_a_leading_word(text: str, answer: Decision,
                                                           seen: str) -> None:
    assert parse_crop_answer(text) == CropAnswer(answer=answer, seen=seen)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty answer"),
    ('{"answer":"maybe"}', "answer"),
    ('{"answer":"no","extra":1}', "extra"),
    ('{"answer":"no"', "malformed JSON"),
    ("The person seems to be standing near a truck.", "leading yes/no"),
    ("nothing", "leading yes/no"),  # "no" must be a whole word
])
def test_anything_else_is_an_invalid_check_naming_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InvalidAnswerError, match=reason):
        parse_crop_answer(text)


def test_the_schema_is_small_and_strict() -> None:
    schema = crop_answer_schema()
    assert schema["required"] == ["answer"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"answer", "seen"}


def test_messages_put_the_fixed_question_before_the_crop() -> None:
    messages = crop_messages("data:image/jpeg;base64,AA==", "en", Hazard.NO_HELMET)
    text, image = messages[1]["content"]
    assert text["text"] == CROP_QUESTIONS["en", Hazard.NO_HELMET]
    assert "ON THE HEAD" in text["text"]
    assert image["type"] == "image_url"
    assert set(CROP_QUESTIONS) == {(lang, h) for lang in ("en", "zh") for h in Hazard}


def test_a_crop_is_the_box_with_its_margin_clipped_to_the_frame() -> None:
    # 40x80 box, margin 0.5: 20 px more left and right, 40 more above and below.
    assert crop_region(BOX, 1920, 1080, margin=0.5) == (80, 60, 160, 220)
    # At the frame's corner: clipped.
    corner = GroundingBox(bbox_2d=[0, 0, 100, 100])
    assert crop_region(corner, 1920, 1080, margin=0.5) == (0, 0, 150, 150)
    # A tiny box still gets some context around it.
    tiny = GroundingBox(bbox_2d=[500, 500, 504, 506])
    x1, y1, x2, y2 = crop_region(tiny, 1920, 1080, margin=0.3)
    assert (x2 - x1, y2 - y1) == (MIN_CROP_SIDE_PX, MIN_CROP_SIDE_PX)


def test_a_box_outside_the_frame_cannot_be_cropped() -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_region(GroundingBox(bbox_2d=[3000, 3000, 3100, 3100]), 1920, 1080, margin=0.0)


def check(answer: Decision | None, box: GroundingBox = BOX) -> CropCheck:
    return CropCheck(box=box, region=(0, 0, 10, 10),
                     answer=CropAnswer(answer=answer, seen="vest") if answer else None,
                     error=None if answer else "HTTP 500")


def helmet_answer(*boxes: GroundingBox) -> Answer:
    return Answer.model_validate({
        "fire": {"answer": "yes", "boxes": [{"bbox_2d": [1, 1, 50, 50]}]},
        "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": len(boxes),
                   "boxes": [b.model_dump() for b in boxes]}})


def test_outcomes_follow_the_crops() -> None:
    fire = Hazard.FIRE
    assert decide(fire, ()).outcome is CheckOutcome.UNVERIFIED
    assert decide(fire, (check(Decision.NO), check(Decision.YES))).outcome \
        is CheckOutcome.CONFIRMED
    assert decide(fire, (check(Decision.NO), check(Decision.NO))).outcome \
        is CheckOutcome.REJECTED
    # Not every crop answered, or one was unsure: not a rejection.
    assert decide(fire, (check(Decision.NO), check(None))).outcome is CheckOutcome.FAILED
    assert decide(fire, (check(Decision.UNCERTAIN),)).outcome is CheckOutcome.FAILED
    # For a person, "no" (no hard hat on the head) is what confirms.
    assert decide(Hazard.NO_HELMET, (check(Decision.NO),)).outcome is CheckOutcome.CONFIRMED
    assert decide(Hazard.NO_HELMET, (check(Decision.YES),)).outcome is CheckOutcome.REJECTED


def test_the_gate_keeps_confirmed_boxes_and_turns_rejections_negative() -> None:
    near, far = BOX, GroundingBox(bbox_2d=[600, 100, 610, 120])
    answer = helmet_answer(near, far)
    confirmed = decide(Hazard.NO_HELMET, (check(Decision.NO, near), check(Decision.YES, far)))
    rejected_fire = decide(Hazard.FIRE, (check(Decision.NO),))
    gated = gate(answer, (confirmed, rejected_fire))
    assert gated.is_positive(Hazard.NO_HELMET)
    assert gated.helmet.boxes == [near]
    assert gated.helmet.missing_count == 1
    assert gated.is_negative(Hazard.FIRE)
    assert gated.fire.boxes == []
    assert gated.fire.description.startswith("rejected by zoom-in (vest)")
    # A rejected person: everyone in view wears a hard hat after all.
    only_far = gate(answer, (decide(Hazard.NO_HELMET, (check(Decision.YES, far),)),))
    assert only_far.helmet.status is HelmetStatus.ALL_WORN
    assert only_far.is_negative(Hazard.NO_HELMET)
    # No usable answer: uncertain (neither raises nor clears, by default).
    failed = gate(answer, (decide(Hazard.FIRE, (check(None),)),))
    assert failed.fire.answer is Decision.UNCERTAIN
    # Unverified (no box): as the model said.
    assert gate(answer, (decide(Hazard.SMOKE, ()),)) == answer
