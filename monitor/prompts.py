"""System and user prompts (Chinese and English) and the request messages built from them.

The system prompt and the instructions are byte-identical for every request of a language, and
come before the image, so vLLM's automatic prefix cache reuses them across requests; only the
image (and, later, per-camera context) differs at the end of the prompt.
"""

from __future__ import annotations

from typing import Any, Literal

Language = Literal["zh", "en"]

SYSTEM_PROMPTS: dict[Language, str] = {
    "zh": "您是一个专业的安全检测 AI 助手。",
    "en": "You are a professional safety-inspection AI assistant.",
}

_QUESTIONS: dict[Language, str] = {
    "zh": (
        "请分析以下图片，并回答以下三个问题：1. 图像中是否存在火灾迹象？例如火焰、烧焦物等。"
        "2. 图像中是否有明显的烟雾？描述其位置和范围。"
        "3. 图像中人员是否正确佩戴了安全帽？指出哪些人未佩戴或佩戴不规范。"
        "如果有不确定的地方，请说明“无法确定”。"
    ),
    "en": (
        "Analyse the image and answer three questions: 1. Are there signs of fire, such as "
        "flames or burnt material? 2. Is there visible smoke? Describe where and how much. "
        "3. Is every person wearing a hard hat correctly? Point out who is not. "
        "Where you cannot tell, say so."
    ),
}

_JSON_FORMAT: dict[Language, str] = {
    "zh": (
        "只输出一个 JSON 对象：fire 与 smoke 各含 answer（yes/no/uncertain）和 description"
        "（中文描述位置和范围，否则为空）；helmet 含 status（all_worn/some_missing/none_worn/"
        "no_person/uncertain）、missing_count（未佩戴安全帽的人数）和 description。"
    ),
    "en": (
        "Output one JSON object only: fire and smoke each with answer (yes/no/uncertain) and "
        "description (where and how much, empty otherwise); helmet with status (all_worn/"
        "some_missing/none_worn/no_person/uncertain), missing_count (people without a hard "
        "hat) and description."
    ),
}

# The seed guide's answer format; used when the server cannot constrain output to JSON.
_TEXT_FORMAT: dict[Language, str] = {
    "zh": (
        "请用中文输出，采用以下格式：【火灾检测】：[是/否/不确定] 【烟雾检测】：[是/否/不确定] "
        "【安全帽检测】：[全部正确佩戴/部分未佩戴/全部未佩戴/无人员/不确定] "
        "如为“是”或“部分未佩戴”，请在描述中指出具体细节。"
    ),
    "en": (
        "Answer in English in this format: [Fire]: [yes/no/uncertain] [Smoke]: "
        "[yes/no/uncertain] [Hard hats]: [all worn/some missing/none worn/no person/uncertain] "
        "For yes or some missing, add the details after the answer."
    ),
}


def instructions(language: Language, *, structured: bool) -> str:
    """The user-turn instructions: the seed's three questions and the answer format."""
    answer_format = _JSON_FORMAT[language] if structured else _TEXT_FORMAT[language]
    return f"{_QUESTIONS[language]}{answer_format}"


def build_messages(
    image_data_url: str, language: Language, *, structured: bool
) -> list[dict[str, Any]]:
    """Chat messages for one frame: the fixed prefix first, the image last."""
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[language]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": instructions(language, structured=structured)},
                {"type": "image_url", "image_url": {"url": image_data_url}},
            ],
        },
    ]
