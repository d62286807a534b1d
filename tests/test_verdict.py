"""Parsing of model answers: JSON (plain, fenced, with prose), the seed's text, and garbage."""

from __future__ import annotations

import json

import pytest

from monitor.verdict import (
    Answer,
    Hazard,
    HelmetStatus,
    InvalidAnswerError,
    SafetyAnswer,
    answer_json_schema,
    parse_answer,
)

VALID = {
    "fire": {"answer": "yes", "description": "flames at the left"},
    "smoke": {"answer": "no", "description": ""},
    "helmet": {"status": "some_missing", "missing_count": 1, "description": "worker at right"},
}


def test_plain_json() -> None:
    answer = parse_answer(json.dumps(VALID))
    assert answer.fire.answer is Answer.YES
    assert answer.fire.description == "flames at the left"
    assert answer.helmet.status is HelmetStatus.SOME_MISSING
    assert answer.helmet.missing_count == 1


@pytest.mark.parametrize(
    "wrapper",
    [
        "```json\n{}\n```",
        "```\n{}\n```",
        "Here is my analysis:\n{}\nStay safe.",
        "  {}  ",
    ],
)
def test_json_in_fences_and_prose(wrapper: str) -> None:
    answer = parse_answer(wrapper.format(json.dumps(VALID)))
    assert answer == SafetyAnswer.model_validate(VALID)


def test_seed_chinese_format() -> None:
    text = ("【火灾检测】：是，画面左下方有明火 【烟雾检测】：[否] "
            "【安全帽检测】：部分未佩戴 右侧一名工人未戴安全帽")
    answer = parse_answer(text)
    assert answer.fire.answer is Answer.YES
    assert "明火" in answer.fire.description
    assert answer.smoke.answer is Answer.NO
    assert answer.helmet.status is HelmetStatus.SOME_MISSING
    assert "右侧" in answer.helmet.description


def test_seed_chinese_uncertain_and_no_person() -> None:
    answer = parse_answer("【火灾检测】：无法确定\n【烟雾检测】：不确定\n【安全帽检测】：无人员")
    assert answer.fire.answer is Answer.UNCERTAIN
    assert answer.smoke.answer is Answer.UNCERTAIN
    assert answer.helmet.status is HelmetStatus.NO_PERSON


def test_english_format() -> None:
    answer = parse_answer("[Fire]: no [Smoke]: yes, thick smoke top left [Hard hats]: all worn")
    assert answer.fire.answer is Answer.NO
    assert answer.fire.description == ""
    assert answer.smoke.answer is Answer.YES
    assert answer.smoke.description == "thick smoke top left"
    assert answer.helmet.status is HelmetStatus.ALL_WORN


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        ("   \n", "empty answer"),
        ("I cannot see anything special in this picture.", "no JSON object"),
        (('{"fire": {"answer": "maybe"}, "smoke": {"answer": "no"}, '
         '"helmet": {"status": "all_worn"}}'), "fire.answer"),
        ('{"fire": {"answer": "no"}}', "smoke"),
        ("【火灾检测】：可能 【烟雾检测】：否 【安全帽检测】：全部正确佩戴", "expected one of"),
        ("【火灾检测】：是 【烟雾检测】：否", "安全帽检测"),
        ('{"fire": {"answer": "yes"', "no JSON object"),
    ],
)
def test_invalid_answers_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InvalidAnswerError) as caught:
        parse_answer(text)
    assert reason in str(caught.value)


def test_invalid_answer_keeps_a_truncated_excerpt() -> None:
    text = "x" * 5000
    with pytest.raises(InvalidAnswerError) as caught:
        parse_answer(text)
    assert len(caught.value.raw_excerpt) < 400
    assert "4700 more chars" in caught.value.raw_excerpt


def test_positive_negative_per_hazard() -> None:
    answer = SafetyAnswer.model_validate(VALID)
    assert answer.is_positive(Hazard.FIRE)
    assert not answer.is_negative(Hazard.FIRE)
    assert answer.is_negative(Hazard.SMOKE)
    assert not answer.is_positive(Hazard.SMOKE)
    assert answer.is_positive(Hazard.NO_HELMET)
    unsure = parse_answer("【火灾检测】：不确定 【烟雾检测】：不确定 【安全帽检测】：不确定")
    for hazard in Hazard:
        assert not unsure.is_positive(hazard)
        assert not unsure.is_negative(hazard)


def test_schema_is_strict_and_complete() -> None:
    schema = answer_json_schema()
    assert set(schema["required"]) == {"fire", "smoke", "helmet"}
    assert schema["additionalProperties"] is False
    answer_enum = schema["$defs"]["Answer"]["enum"]
    assert answer_enum == ["yes", "no", "uncertain"]
