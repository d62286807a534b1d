"""Prompts: a byte-identical prefix first, the image and the camera's own text last."""

from __future__ import annotations

import json

import pytest

from monitor.model.answer import Hazard
from monitor.model.prompts import CONTEXT_MAX_CHARS, Language, build_messages, camera_context


def _prefix(messages: list[dict[str, object]]) -> str:
    """Everything before the image, serialised as the server sees it."""
    system, user = messages
    parts = user["content"]
    assert isinstance(parts, list)
    return json.dumps([system, parts[0]], ensure_ascii=False)


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("structured", [True, False])
def test_prefix_is_identical_for_every_camera(language: Language, structured: bool) -> None:
    plain = build_messages("data:image/jpeg;base64,AAAA", language, structured=structured)
    other = build_messages("data:image/jpeg;base64,BBBB", language, structured=structured,
                           context="Welding bay.", hazards=[Hazard.FIRE])
    assert _prefix(plain) == _prefix(other)
    kinds = [part["type"] for part in other[1]["content"]]
    assert kinds == ["text", "image_url", "text"]  # the camera's text after the image
    assert [part["type"] for part in plain[1]["content"]] == ["text", "image_url"]


def test_instructions_name_the_schema_fields() -> None:
    for language in ("zh", "en"):
        text = build_messages("u", language, structured=True)[1]["content"][0]["text"]
        for field in ("fire", "smoke", "hard_hats", "missing", "boxes", "bbox_2d"):
            assert field in text, (language, field)


def test_seed_questions_and_format_in_text_mode() -> None:
    text = build_messages("u", "zh", structured=False)[1]["content"][0]["text"]
    assert "【火灾检测】" in text
    assert "【安全帽检测】" in text


def test_camera_context_and_hazards() -> None:
    assert camera_context("en", structured=True) == ""
    assert camera_context("en", structured=True, hazards=list(Hazard)) == ""
    text = camera_context("en", structured=True, context=" Welding bay; sparks are not fire. ",
                          hazards=[Hazard.FIRE, Hazard.SMOKE])
    assert text.splitlines() == [
        "About this camera: Welding bay; sparks are not fire.",
        ("This camera checks only fire, smoke; answer uncertain for the rest, without "
         "description."),
    ]
    zh = camera_context("zh", structured=False, hazards=[Hazard.NO_HELMET])
    assert zh == "本摄像头只检查安全帽，其余项回答 不确定，不加描述。"


def test_context_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match=f"at most {CONTEXT_MAX_CHARS}"):
        camera_context("en", structured=True, context="x" * (CONTEXT_MAX_CHARS + 1))
