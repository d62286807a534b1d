"""The VLM simulator over real HTTP: vLLM-like validation, right answers in both formats,
usage accounting, and fault injection changed at run time."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from monitor.model.answer import (
    Decision,
    HelmetStatus,
    InvalidAnswerError,
    answer_json_schema,
    parse_answer,
)
from monitor.model.imaging import EncodedImage, encode_for_model, image_tokens
from monitor.model.prompts import Language, build_messages
from monitor.sim import scenes
from monitor.sim.server import (
    DEFAULT_MODEL_NAME,
    VLLM_MAX_PIXELS,
    SimBehaviour,
    SimServer,
    estimate_text_tokens,
)

BUDGET = 256 * 28 * 28


def _frame(preset: str, t: float, *, max_pixels: int = BUDGET) -> EncodedImage:
    return encode_for_model(scenes.render_frame(scenes.PRESETS[preset](), t),
                            max_pixels=max_pixels)


@pytest.fixture(scope="module")
def fire_image() -> EncodedImage:
    return _frame("fire", 8.0)


@pytest.fixture(scope="module")
def no_helmet_image() -> EncodedImage:
    return _frame("no_helmet", 8.0)


def _schema_format() -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": "safety_answer", "schema": answer_json_schema()}}


def _body(image_url: str, language: Language = "en", *, structured: bool = False,
          model: str = DEFAULT_MODEL_NAME) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model, "max_tokens": 512, "temperature": 0.0,
        "messages": build_messages(image_url, language, structured=structured),
    }
    if structured:
        body["response_format"] = _schema_format()
    return body


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer() as server:
        yield server


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _post(http: aiohttp.ClientSession, sim: SimServer,
                body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{sim.base_url}/chat/completions", json=body) as response:
        return response.status, await response.json()


async def _set(http: aiohttp.ClientSession, sim: SimServer, **changes: Any) -> dict[str, Any]:
    async with http.post(f"http://127.0.0.1:{sim.port}/sim/behaviour", json=changes) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def _content(payload: dict[str, Any]) -> str:
    content = payload["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


# --- Answers. -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_json_schema_request_with_openai_client(sim: SimServer,
                                                      fire_image: EncodedImage) -> None:
    async with AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0) as client:
        # build_messages returns plain dicts, the client's stubs want its TypedDicts.
        completion = await client.chat.completions.create(  # type: ignore[call-overload]
            model=DEFAULT_MODEL_NAME,
            messages=build_messages(fire_image.data_url, "zh", structured=True),
            response_format=_schema_format(),
            max_tokens=512,
        )
    assert completion.object == "chat.completion"
    assert completion.model == DEFAULT_MODEL_NAME
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content or ""
    assert content.startswith("{")
    assert " " not in content.split('"description"')[0]  # compact JSON
    answer = parse_answer(content)
    assert answer.fire.answer is Decision.YES
    assert "左下方" in answer.fire.description  # Chinese prompt, Chinese description
    assert answer.smoke.answer is Decision.NO
    assert answer.helmet.status is HelmetStatus.ALL_WORN
    assert completion.usage is not None
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)
    assert completion.usage.completion_tokens > 10


@pytest.mark.asyncio
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_text_request_answers_in_the_seed_format(
    sim: SimServer, http: aiohttp.ClientSession, no_helmet_image: EncodedImage,
    language: Language,
) -> None:
    status, payload = await _post(http, sim, _body(no_helmet_image.data_url, language))
    assert status == 200
    content = _content(payload)
    if language == "zh":
        assert content.startswith("【火灾检测】：否")
        assert "部分未佩戴" in content
    else:
        assert content.startswith("[Fire]: no.")
        assert "[Hard hats]: some missing." in content
    answer = parse_answer(content)
    assert (answer.fire.answer, answer.smoke.answer, answer.helmet.status) == (
        Decision.NO, Decision.NO, HelmetStatus.SOME_MISSING)
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert payload["id"].startswith("chatcmpl-")
    assert sim.stats["text_answers"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(("preset", "t"), [("smoke", 9.0), ("quiet", 9.0), ("fire", 20.0)])
async def test_answers_match_the_script(sim: SimServer, http: aiohttp.ClientSession,
                                        preset: str, t: float) -> None:
    image = _frame(preset, t)
    status, payload = await _post(http, sim, _body(image.data_url, structured=True))
    assert status == 200
    answer = parse_answer(_content(payload))
    expected = scenes.expected_answer(scenes.PRESETS[preset](), t)
    assert (answer.fire.answer, answer.smoke.answer, answer.helmet.status) == (
        expected.fire.answer, expected.smoke.answer, expected.helmet.status)


@pytest.mark.asyncio
async def test_prompt_tokens_include_the_image_tokens(sim: SimServer,
                                                      http: aiohttp.ClientSession) -> None:
    small = _frame("quiet", 1.0, max_pixels=BUDGET)
    large = _frame("quiet", 1.0, max_pixels=4 * BUDGET)
    usages = []
    for image in (small, large):
        status, payload = await _post(http, sim, _body(image.data_url))
        assert status == 200
        usages.append(payload["usage"])
        tokens = image_tokens(image.height, image.width, max_pixels=VLLM_MAX_PIXELS)
        assert tokens == image.tokens
        assert payload["usage"]["prompt_tokens"] > tokens + 50  # + the prompt's text
    # Same text, different image: the difference is exactly the image tokens' difference.
    assert usages[1]["prompt_tokens"] - usages[0]["prompt_tokens"] == large.tokens - small.tokens


@pytest.mark.asyncio
async def test_png_data_urls_are_accepted(sim: SimServer, http: aiohttp.ClientSession) -> None:
    import cv2  # noqa: PLC0415  # only this test needs PNG encoding

    ok, png = cv2.imencode(".png", scenes.render_frame(scenes.fire(), 8.0))
    assert ok
    url = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")
    status, payload = await _post(http, sim, _body(url, structured=True))
    assert status == 200
    assert parse_answer(_content(payload)).fire.answer is Decision.YES


@pytest.mark.asyncio
async def test_max_tokens_cuts_the_answer(sim: SimServer, http: aiohttp.ClientSession,
                                          fire_image: EncodedImage) -> None:
    body = _body(fire_image.data_url, structured=True)
    body["max_tokens"] = 10
    status, payload = await _post(http, sim, body)
    assert status == 200
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 10
    with pytest.raises(InvalidAnswerError):
        parse_answer(_content(payload))


# --- Validation. --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_and_models(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"http://127.0.0.1:{sim.port}/health") as response:
        assert response.status == 200
    async with AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0) as client:
        models = await client.models.list()
    assert [model.id for model in models.data] == [DEFAULT_MODEL_NAME]


@pytest.mark.asyncio
async def test_unknown_model_is_404_like_vllm(sim: SimServer,
                                              fire_image: EncodedImage) -> None:
    async with AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=build_messages(fire_image.data_url, "en", structured=False),  # type: ignore[arg-type]
            )
    assert caught.value.status_code == 404
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["message"] == "The model `gpt-4o` does not exist."
    assert body["type"] == "NotFoundError"
    assert body["code"] == 404
    assert sim.stats["not_found"] == 1


def _two_images(url: str) -> dict[str, Any]:
    body = _body(url)
    body["messages"][1]["content"].append({"type": "image_url", "image_url": {"url": url}})
    return body


def _no_image(url: str) -> dict[str, Any]:
    body = _body(url)
    body["messages"][1]["content"].pop()
    return body


@pytest.mark.asyncio
@pytest.mark.parametrize(("make_body", "message"), [
    (lambda url: _body("data:image/jpeg;base64," + base64.b64encode(b"not a jpeg").decode()),
     "Failed to load image: cannot identify image file"),
    (lambda url: _body("data:image/jpeg;base64,@@@notbase64@@@"),
     "Failed to load image: invalid base64"),
    (lambda url: _body("https://example.com/frame.jpg"), "only accepts data URLs"),
    (lambda url: _body("file:///tmp/frame.jpg"), "Failed to load image"),
    (_two_images, "At most 1 image(s)"),
    (_no_image, "exactly one image"),
    (lambda url: {**_body(url), "stream": True}, "streaming"),
    (lambda url: {"model": DEFAULT_MODEL_NAME}, "messages"),
])
async def test_bad_requests_are_400(sim: SimServer, http: aiohttp.ClientSession,
                                    fire_image: EncodedImage, make_body: Any,
                                    message: str) -> None:
    status, payload = await _post(http, sim, make_body(fire_image.data_url))
    assert status == 400
    assert payload["object"] == "error"
    assert payload["error"]["type"] == "BadRequestError"
    assert payload["error"]["code"] == 400
    assert message in payload["error"]["message"]
    assert sim.stats["bad_request"] == 1


@pytest.mark.asyncio
async def test_body_that_is_not_json_is_400(sim: SimServer,
                                            http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.base_url}/chat/completions", data=b"{nope") as response:
        assert response.status == 400


# --- Fault injection. ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fail_rate_one_gives_500_and_status_is_configurable(
    http: aiohttp.ClientSession, fire_image: EncodedImage,
) -> None:
    async with SimServer(SimBehaviour(fail_rate=1.0)) as sim:
        status, payload = await _post(http, sim, _body(fire_image.data_url))
        assert status == 500
        assert payload["error"]["type"] == "InternalServerError"
        await _set(http, sim, status_code_on_fail=503)
        status, payload = await _post(http, sim, _body(fire_image.data_url))
        assert status == 503
        assert sim.stats["failed"] == 2


@pytest.mark.asyncio
async def test_bad_answer_rate_one_gives_unparseable_text(
    http: aiohttp.ClientSession, fire_image: EncodedImage,
) -> None:
    async with SimServer(SimBehaviour(bad_answer_rate=1.0)) as sim:
        for structured in (True, False):
            status, payload = await _post(http, sim, _body(fire_image.data_url,
                                                           structured=structured))
            assert status == 200
            with pytest.raises(InvalidAnswerError):
                parse_answer(_content(payload))
        assert sim.stats["bad_answer"] == 2


@pytest.mark.asyncio
async def test_behaviour_changes_mid_run(sim: SimServer, http: aiohttp.ClientSession,
                                         fire_image: EncodedImage) -> None:
    body = _body(fire_image.data_url, structured=True)
    assert (await _post(http, sim, body))[0] == 200
    settings = await _set(http, sim, fail_rate=1.0, status_code_on_fail=429)
    assert settings["fail_rate"] == 1.0
    assert settings["latency_s"] == 0.0  # partial update: the rest unchanged
    assert (await _post(http, sim, body))[0] == 429
    await _set(http, sim, fail_rate=0, force_text=True)
    status, payload = await _post(http, sim, body)
    assert status == 200
    assert _content(payload).startswith("[Fire]: yes.")  # JSON asked, text given
    await _set(http, sim, force_text=False, latency_s=0.3)
    started = time.monotonic()
    status, payload = await _post(http, sim, body)
    assert status == 200
    assert time.monotonic() - started >= 0.3
    assert parse_answer(_content(payload)).fire.answer is Decision.YES
    async with http.get(f"http://127.0.0.1:{sim.port}/sim/stats") as response:
        stats = await response.json()
    assert (stats["requests"], stats["ok"], stats["failed"]) == (4, 3, 1)
    assert (stats["json_answers"], stats["text_answers"], stats["in_flight"]) == (2, 1, 0)
    async with http.delete(f"http://127.0.0.1:{sim.port}/sim/stats") as response:
        assert (await response.json())["requests"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("changes", [
    {"fail_rate": 1.5}, {"no_such_setting": 1}, {"latency_s": "slow"},
    {"status_code_on_fail": 404}, {"force_text": 1},
])
async def test_bad_behaviour_updates_are_400_and_change_nothing(
    sim: SimServer, http: aiohttp.ClientSession, changes: dict[str, Any],
) -> None:
    before = sim.behaviour
    async with http.post(f"http://127.0.0.1:{sim.port}/sim/behaviour",
                         json=changes) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "BadRequestError"
    assert sim.behaviour == before


@pytest.mark.asyncio
async def test_hang_lasts_until_the_client_gives_up_and_stop_is_prompt(
    http: aiohttp.ClientSession, fire_image: EncodedImage,
) -> None:
    sim = SimServer(SimBehaviour(hang_rate=1.0))
    await sim.start()
    try:
        timeout = aiohttp.ClientTimeout(total=0.3)
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(f"{sim.base_url}/chat/completions", timeout=timeout,
                                 json=_body(fire_image.data_url)):
                pass
        # The client's disconnect cancels the hanging handler.
        for _ in range(50):
            if sim.stats["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
        assert sim.stats["hung"] == 1
        assert sim.stats["in_flight"] == 0
        # A hang still waiting when the server stops is answered at once, not after an hour.
        pending = asyncio.create_task(_post(http, sim, _body(fire_image.data_url)))
        while sim.stats["in_flight"] == 0:  # polling a counter, not an event
            await asyncio.sleep(0.01)
    finally:
        started = time.monotonic()
        await sim.stop()
        assert time.monotonic() - started < 2.0
    status, _payload = await pending
    assert status == 503


@pytest.mark.asyncio
async def test_same_seed_same_faults(http: aiohttp.ClientSession,
                                     fire_image: EncodedImage) -> None:
    runs = []
    for _ in range(2):
        async with SimServer(SimBehaviour(fail_rate=0.5, seed=7)) as sim:
            runs.append([(await _post(http, sim, _body(fire_image.data_url)))[0]
                         for _ in range(12)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


def test_behaviour_validation() -> None:
    with pytest.raises(ValueError, match="probability"):
        SimBehaviour(hang_rate=2.0)
    with pytest.raises(TypeError, match="number"):
        SimBehaviour(latency_s=True)
    assert SimBehaviour().updated({"fail_rate": 0.25}).fail_rate == 0.25


# --- The blocking entry point. ------------------------------------------------------------------


def test_run_sim_server_serves_until_sigterm() -> None:
    code = (
        "from monitor.sim.server import run_sim_server\n"
        "run_sim_server('127.0.0.1', 0, on_ready=lambda s: print('READY', s.port, flush=True))\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("READY "), line + (process.stderr.read()
                                                      if process.stderr else "")
            port = int(line.split()[1])

            async def health() -> int:
                async with aiohttp.ClientSession() as session, session.get(
                        f"http://127.0.0.1:{port}/health") as response:
                    return response.status

            assert asyncio.run(health()) == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


# --- Failure kinds by header, service-time model, grounding boxes. ----------------------------


async def _post_with_fault(http: aiohttp.ClientSession, sim: SimServer, body: dict[str, Any],
                           fault: str) -> aiohttp.ClientResponse:
    return await http.post(f"{sim.base_url}/chat/completions", json=body,
                           headers={"X-Sim-Fault": fault})


@pytest.mark.asyncio
@pytest.mark.parametrize(("fault", "status"), [("500", 500), ("503", 503), ("429", 429)])
async def test_header_status_faults(sim: SimServer, http: aiohttp.ClientSession,
                                    fire_image: EncodedImage, fault: str, status: int) -> None:
    async with await _post_with_fault(http, sim, _body(fire_image.data_url), fault) as response:
        assert response.status == status
        assert (await response.json())["error"]["code"] == status
        if status == 429:
            assert response.headers["Retry-After"] == "0"
    assert sim.stats[f"fault_{fault}"] == 1
    # The header is per request: the next one is answered.
    assert (await _post(http, sim, _body(fire_image.data_url)))[0] == 200


@pytest.mark.asyncio
async def test_header_reset_drops_the_connection(sim: SimServer, http: aiohttp.ClientSession,
                                                 fire_image: EncodedImage) -> None:
    with pytest.raises(aiohttp.ClientError):
        async with await _post_with_fault(http, sim, _body(fire_image.data_url), "reset"):
            pass
    assert sim.stats["fault_reset"] == 1


@pytest.mark.asyncio
async def test_header_timeout_hangs(sim: SimServer, http: aiohttp.ClientSession,
                                    fire_image: EncodedImage) -> None:
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(f"{sim.base_url}/chat/completions",
                             json=_body(fire_image.data_url),
                             headers={"X-Sim-Fault": "timeout"},
                             timeout=aiohttp.ClientTimeout(total=0.2)):
            pass
    assert sim.stats["hung"] == 1


@pytest.mark.asyncio
async def test_header_content_faults(sim: SimServer, http: aiohttp.ClientSession,
                                     fire_image: EncodedImage) -> None:
    body = _body(fire_image.data_url, structured=True)
    body["max_tokens"] = 256
    async with await _post_with_fault(http, sim, body, "bad_body") as response:
        assert response.status == 200
        with pytest.raises(ValueError, match="Expecting value"):
            json.loads(await response.text())
    answers = {}
    for fault in ("malformed_json", "schema_violation", "prose", "long", "empty_choices"):
        async with await _post_with_fault(http, sim, body, fault) as response:
            assert response.status == 200
            answers[fault] = await response.json()
    assert answers["empty_choices"]["choices"] == []
    long_answer = answers["long"]["choices"][0]
    assert long_answer["finish_reason"] == "length"
    assert answers["long"]["usage"]["completion_tokens"] == 256
    for fault in ("malformed_json", "schema_violation", "prose", "long"):
        with pytest.raises(InvalidAnswerError):
            parse_answer(_content(answers[fault]))
    with pytest.raises(InvalidAnswerError, match="malformed JSON"):
        parse_answer(_content(answers["malformed_json"]))
    assert sim.stats["bad_answer"] == 6


@pytest.mark.asyncio
async def test_unknown_fault_header_is_400(sim: SimServer, http: aiohttp.ClientSession,
                                           fire_image: EncodedImage) -> None:
    async with await _post_with_fault(http, sim, _body(fire_image.data_url), "gremlins") as r:
        assert r.status == 400
        assert "X-Sim-Fault" in (await r.json())["error"]["message"]


@pytest.mark.asyncio
async def test_configured_fault_rates_are_drawn(http: aiohttp.ClientSession,
                                                fire_image: EncodedImage) -> None:
    behaviour = SimBehaviour(seed=3, empty_choices_rate=0.5, schema_violation_rate=0.5)
    async with SimServer(behaviour) as sim:
        for _ in range(10):
            await _post(http, sim, _body(fire_image.data_url, structured=True))
        assert sim.stats["fault_empty_choices"] + sim.stats["fault_schema_violation"] == 10
        assert sim.stats["fault_empty_choices"] > 0
        assert sim.stats["fault_schema_violation"] > 0
    with pytest.raises(ValueError, match="must not exceed 1"):
        SimBehaviour(reset_rate=0.6, long_answer_rate=0.6)
    with pytest.raises(ValueError, match="fault must be"):
        SimBehaviour(fault="gremlins")


@pytest.mark.asyncio
async def test_batch_capacity_queues_the_rest(http: aiohttp.ClientSession,
                                              fire_image: EncodedImage) -> None:
    async with SimServer(SimBehaviour(latency_s=0.2, batch_capacity=2)) as sim:
        started = time.monotonic()
        results = await asyncio.gather(*(_post(http, sim, _body(fire_image.data_url))
                                         for _ in range(4)))
        elapsed = time.monotonic() - started
        assert [status for status, _ in results] == [200] * 4
        assert sim.stats["max_in_service"] == 2
        assert sim.stats["queued"] == 2
    assert elapsed >= 0.4  # two rounds of 0.2 s


@pytest.mark.asyncio
async def test_service_time_grows_with_image_and_answer_tokens(
    sim: SimServer, http: aiohttp.ClientSession,
) -> None:
    small = _frame("quiet", 1.0, max_pixels=64 * 28 * 28)
    sim.set_behaviour(latency_per_image_token_s=0.001)
    started = time.monotonic()
    assert (await _post(http, sim, _body(small.data_url)))[0] == 200
    assert time.monotonic() - started >= small.tokens * 0.001
    sim.set_behaviour(latency_per_image_token_s=0.0, latency_per_completion_token_s=0.01)
    started = time.monotonic()
    status, payload = await _post(http, sim, _body(small.data_url))
    assert status == 200
    assert time.monotonic() - started >= payload["usage"]["completion_tokens"] * 0.01


@pytest.mark.asyncio
async def test_context_length_is_enforced_like_vllm(http: aiohttp.ClientSession,
                                                    fire_image: EncodedImage) -> None:
    async with SimServer(max_model_len=400) as sim:
        status, payload = await _post(http, sim, _body(fire_image.data_url))
    assert status == 400
    assert "maximum context length is 400 tokens" in payload["error"]["message"]


@pytest.mark.asyncio
async def test_json_answer_is_terse_with_grounding_boxes(
    sim: SimServer, http: aiohttp.ClientSession,
) -> None:
    image = _frame("no_helmet", 8.0)
    status, payload = await _post(http, sim, _body(image.data_url, structured=True))
    assert status == 200
    content = _content(payload)
    assert '"description":""' not in content  # empty fields are left out
    answer = parse_answer(content)
    assert answer.helmet.status is HelmetStatus.SOME_MISSING
    (box,) = answer.helmet.boxes
    x1, y1, x2, y2 = box.bbox_2d
    # The worker without a hat stands at x = 0.70 of the width, feet at 0.86 of the height.
    assert x1 < 0.70 * image.width < x2
    assert y1 < 0.80 * image.height < y2 <= image.height


def test_token_estimate_follows_qwens_split() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("1920") == 4  # digits one by one
    assert estimate_text_tokens("hello world") == 2
    assert estimate_text_tokens("图像中没有明显的烟雾") == 8  # 10 characters / 1.4
    assert estimate_text_tokens('{"a":"b"}') == 5
