"""System and user prompts (Chinese and English) and the request messages built from them.

Order matters for the GPU. vLLM's automatic prefix cache reuses the KV cache of a prompt's
longest already-seen prefix, so every request starts with the same bytes: the system prompt,
then the instructions (byte-identical for every camera of a language and answer form). Only
then come the parts that differ per request: the image, and last the camera's own context and
hazards. The seed's request put the image first, so nothing after it could ever be reused.

The instructions are short on purpose: with ``response_format`` of type ``json_schema`` the
server enforces the answer's structure, so the prompt only has to say what the fields mean,
not how to format them. Descriptions are asked to be brief and left out when there is nothing
to report: completion tokens are the expensive, sequential part of a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from monitor.model.answer import Hazard

Language = Literal["zh", "en"]

SYSTEM_PROMPTS: dict[Language, str] = {
    "zh": "您是一个专业的安全检测 AI 助手。",
    "en": "You are a professional safety-inspection AI assistant.",
}

# Structured answers: what each JSON field means. The keys, enums and nesting are enforced by
# the schema, so they are named here only so the model knows which question each answers.
_JSON_INSTRUCTIONS: dict[Language, str] = {
    "zh": (
        "检查图像：1. 是否有火灾迹象（火焰、烧焦物）？2. 是否有明显烟雾？"
        "3. 人员是否都正确佩戴安全帽？只输出 JSON。fire、smoke 为 yes/no/uncertain，"
        "为 yes 时加 *_location（如左下方）、简短的 *_description 和 *_boxes（最大的火焰或"
        '烟雾区域，每处一项 {"bbox_2d": [x1, y1, x2, y2]}）。hard_hats 为 all_worn/'
        "some_missing/none_worn/no_person/uncertain；有人未戴时加 missing（人数）、boxes"
        '（每人一项 {"bbox_2d": [x1, y1, x2, y2]}，本图像素坐标）和 hard_hats_description。'
        "无法确定时答 uncertain。无内容的字段省略，描述不超过 20 字。"
    ),
    "en": (
        "Inspect the image: 1. signs of fire (flames, burnt material)? 2. visible smoke? "
        "3. is everyone wearing a hard hat correctly? Output JSON only. fire, smoke: "
        "yes/no/uncertain; for yes add *_location (e.g. bottom-left), a short "
        '*_description and *_boxes (one {"bbox_2d": [x1, y1, x2, y2]} per largest flame or '
        "smoke region). hard_hats: all_worn/some_missing/none_worn/no_person/uncertain; when "
        'someone has none, add missing (count), boxes (one {"bbox_2d": [x1, y1, x2, y2]} per '
        "person, pixels of this image) and hard_hats_description. Answer uncertain when you "
        "cannot tell. Leave out empty fields; descriptions at most 15 words."
    ),
}

# The seed guide's questions and answer format; used when the server cannot constrain output
# to JSON (``structured_output = false``).
_TEXT_INSTRUCTIONS: dict[Language, str] = {
    "zh": (
        "请分析图片，回答：1. 是否存在火灾迹象（火焰、烧焦物等）？2. 是否有明显的烟雾？"
        "3. 人员是否正确佩戴了安全帽？无法确定时回答“不确定”。请用中文简洁输出，采用以下格式："
        "【火灾检测】：[是/否/不确定] 【烟雾检测】：[是/否/不确定] "
        "【安全帽检测】：[全部正确佩戴/部分未佩戴/全部未佩戴/无人员/不确定] "
        "如为“是”或“部分未佩戴”，在答案后用一句话指出位置和细节。"
    ),
    "en": (
        "Analyse the image: 1. signs of fire (flames, burnt material)? 2. visible smoke? "
        "3. is everyone wearing a hard hat correctly? Say uncertain when you cannot tell. "
        "Answer briefly in English in this format: [Fire]: [yes/no/uncertain] "
        "[Smoke]: [yes/no/uncertain] [Hard hats]: [all worn/some missing/none worn/no person/"
        "uncertain] For yes or some missing, add one sentence with where and what."
    ),
}

_HAZARD_NAMES: dict[Language, dict[Hazard, str]] = {
    "zh": {Hazard.FIRE: "火灾", Hazard.SMOKE: "烟雾", Hazard.NO_HELMET: "安全帽"},
    "en": {Hazard.FIRE: "fire", Hazard.SMOKE: "smoke", Hazard.NO_HELMET: "hard hats"},
}
_UNCERTAIN_WORD: dict[tuple[Language, bool], str] = {
    ("zh", True): "uncertain", ("zh", False): "不确定",
    ("en", True): "uncertain", ("en", False): "uncertain",
}

CONTEXT_MAX_CHARS = 500
"""Longest per-camera context accepted (it is sent with every request of the camera)."""


def instructions(language: Language, *, structured: bool) -> str:
    """The user-turn instructions: the seed's three questions and the answer format.

    Byte-identical for a given language and answer form, so it is part of the cached prefix.
    """
    table = _JSON_INSTRUCTIONS if structured else _TEXT_INSTRUCTIONS
    return table[language]


def camera_context(language: Language, *, structured: bool, context: str = "",
                   hazards: Sequence[Hazard] | None = None) -> str:
    """The per-camera text that follows the image ("" when the camera has none).

    ``context`` is the operator's note about the view (for example "welding happens here;
    sparks are not fire"); ``hazards``, when a subset of all, tells the model which questions
    matter so the rest are answered with one short word.
    """
    context = context.strip()
    if len(context) > CONTEXT_MAX_CHARS:
        raise ValueError(f"camera context is {len(context)} characters; at most "
                         f"{CONTEXT_MAX_CHARS} are sent with every request")
    parts: list[str] = []
    if context:
        parts.append(f"本摄像头说明：{context}" if language == "zh"
                     else f"About this camera: {context}")
    watched = list(dict.fromkeys(hazards)) if hazards is not None else list(Hazard)
    if set(watched) != set(Hazard):
        names = _HAZARD_NAMES[language]
        uncertain = _UNCERTAIN_WORD[language, structured]
        if language == "zh":
            listed = "、".join(names[h] for h in watched)
            parts.append(f"本摄像头只检查{listed}，其余项回答 {uncertain}，不加描述。")
        else:
            listed = ", ".join(names[h] for h in watched)
            parts.append(f"This camera checks only {listed}; answer {uncertain} for the rest, "
                         "without description.")
    return "\n".join(parts)


def build_messages(
    image_data_url: str,
    language: Language,
    *,
    structured: bool,
    context: str = "",
    hazards: Sequence[Hazard] | None = None,
) -> list[dict[str, Any]]:
    """Chat messages for one frame: the fixed prefix first, the image and the camera last."""
    content: list[dict[str, Any]] = [
        {"type": "text", "text": instructions(language, structured=structured)},
        {"type": "image_url", "image_url": {"url": image_data_url}},
    ]
    tail = camera_context(language, structured=structured, context=context, hazards=hazards)
    if tail:
        content.append({"type": "text", "text": tail})
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[language]},
        {"role": "user", "content": content},
    ]
