"""The production model client against the simulator over real HTTP: answers, boxes, every
failure kind, retries, the endpoint pool (routing, breaker, fairness) and stale frames."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from monitor.config import VlmConfig
from monitor.model.answer import Decision, Hazard, HelmetStatus
from monitor.model.client import (
    Analysis,
    CropReply,
    VlmAnswerError,
    VlmCameraBusyError,
    VlmClient,
    VlmRequestRejectedError,
    VlmStaleFrameError,
    VlmUnavailableError,
)
from monitor.model.imaging import EncodedImage, encode_for_model
from monitor.model.verify import crop_region
from monitor.sim.scenes import LOOKALIKES, PRESETS, BgrImage, render_frame
from monitor.sim.server import SimBehaviour, SimServer
from monitor.sim.vision import judge

SECRET = "sk-very-secret-key"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimBehaviour(seed=1)) as server:
        yield server


_IMAGES: dict[tuple[str, float, int], EncodedImage] = {}


def scene_image(preset: str = "fire", t: float = 8.0, *, max_pixels: int = 448 * 448,
                width: int = 640, height: int = 360) -> EncodedImage:
    key = (f"{preset}@{width}x{height}", t, max_pixels)
    if key not in _IMAGES:
        frame = render_frame(PRESETS[preset](width=width, height=height), t)
        _IMAGES[key] = encode_for_model(frame, max_pixels=max_pixels)
    return _IMAGES[key]


def make_client(*base_urls: str, **overrides: object) -> VlmClient:
    # No queue headroom unless a test asks for it: most tests here count the client's own
    # slots (max_concurrency); the headroom has tests of its own.
    settings: dict[str, object] = {"timeout_s": 5, "max_retries": 0, "api_key": SECRET,
                                   "queue_headroom": 0, **overrides}
    if len(base_urls) == 1:
        settings["base_url"] = base_urls[0]
    else:
        settings["endpoints"] = [{"base_url": url} for url in base_urls]
    return VlmClient(VlmConfig.model_validate(settings), retry_base_s=0.01,
                     rng=random.Random(0))


async def analyse(client: VlmClient, image: EncodedImage | None = None, camera: str = "cam",
                  ) -> Analysis:
    """One camera frame captured now, sent as it is."""
    return await client.analyse_image(image or scene_image(), camera_id=camera,
                                      captured_at=time.time())


# --- Answers. -----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("language", ["zh", "en"])
async def test_verdict_in_both_answer_forms(sim: SimServer, structured: bool,
                                            language: str) -> None:
    client = make_client(sim.base_url, structured_output=structured, language=language)
    captured = time.time()
    try:
        analysis = await client.analyse_image(scene_image(), camera_id="cam",
                                              captured_at=captured)
    finally:
        await client.aclose()
    verdict = analysis.verdict("cam", captured)
    assert verdict.answer.decision == (Decision.YES, Decision.NO, HelmetStatus.ALL_WORN)
    assert verdict.captured_at == captured
    assert verdict.endpoint == sim.base_url
    assert verdict.prompt_tokens is not None
    assert verdict.prompt_tokens >= scene_image().tokens
    assert verdict.completion_tokens
    assert verdict.latency_s >= 0
    assert sim.stats["json_answers" if structured else "text_answers"] == 1


@pytest.mark.asyncio
async def test_request_is_prefix_cache_friendly_and_constrained(sim: SimServer) -> None:
    client = make_client(sim.base_url)
    try:
        first = client.request_body(scene_image("fire"), context="Welding bay.",
                                    hazards=[Hazard.FIRE])
        second = client.request_body(scene_image("quiet"))
    finally:
        await client.aclose()
    assert first["temperature"] == 0.0
    assert first["max_tokens"] == 800
    assert first["response_format"]["type"] == "json_schema"
    assert "guided_json" not in first
    assert "extra_body" not in first
    # System prompt and instructions: byte-identical and first; image and context last.
    assert first["messages"][0] == second["messages"][0]
    parts, other = first["messages"][1]["content"], second["messages"][1]["content"]
    assert parts[0] == other[0]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert "Welding bay." in parts[2]["text"]
    assert [p["type"] for p in other] == ["text", "image_url"]


@pytest.mark.asyncio
async def test_boxes_are_mapped_back_to_the_original_frame(sim: SimServer) -> None:
    # A 1920x1080 frame sent at a quarter of its pixels: the simulator answers in the sent
    # image's pixels, the verdict must be in the frame's.
    image = scene_image("no_helmet", 8.0, max_pixels=512 * 28 * 28, width=1920, height=1080)
    assert image.width < 1920
    client = make_client(sim.base_url)
    try:
        verdict = await analyse(client, image)
    finally:
        await client.aclose()
    helmet = verdict.answer.helmet
    assert helmet.status is HelmetStatus.SOME_MISSING
    assert len(helmet.boxes) == 1
    x1, y1, x2, y2 = helmet.boxes[0].bbox_2d
    # The scripted worker without a hat: feet at (0.70, 0.86) of the frame, 0.2 frame heights
    # tall (scenes' geometry), so its box is about x 1317..1371, y 713..929.
    truth = (0.70 * 1920 - 27, 0.86 * 1080 - 0.2 * 1080, 0.70 * 1920 + 27, 0.86 * 1080)
    inter_w = min(x2, truth[2]) - max(x1, truth[0])
    inter_h = min(y2, truth[3]) - max(y1, truth[1])
    inter = max(0.0, inter_w) * max(0.0, inter_h)
    union = (x2 - x1) * (y2 - y1) + (truth[2] - truth[0]) * (truth[3] - truth[1]) - inter
    assert inter / union > 0.5, (helmet.boxes[0].bbox_2d, truth)


@pytest.mark.asyncio
async def test_camera_context_and_hazards_reach_the_server(sim: SimServer) -> None:
    client = make_client(sim.base_url, language="en")
    try:
        plain = await analyse(client, camera="a")
        with_context = await client.analyse_image(
            scene_image(), camera_id="b", captured_at=time.time(),
            context="Welding happens here; sparks are not fire.", hazards=[Hazard.SMOKE])
    finally:
        await client.aclose()
    assert plain.prompt_tokens is not None
    assert with_context.prompt_tokens is not None
    assert with_context.prompt_tokens > plain.prompt_tokens + 10


# --- Refusals: not retried, and they say which request and why. ------------------------------


@pytest.mark.asyncio
async def test_unknown_model_is_rejected_with_the_servers_reason(sim: SimServer) -> None:
    client = make_client(sim.base_url, model="Qwen2.5-VL-typo", max_retries=2)
    try:
        with pytest.raises(VlmRequestRejectedError, match="404") as caught:
            await analyse(client)
    finally:
        await client.aclose()
    message = str(caught.value)
    assert "Qwen2.5-VL-typo" in message
    assert "camera cam's frame" in message
    assert "--served-model-name" in message
    assert sim.stats["requests"] == 1  # not retried


@pytest.mark.asyncio
async def test_image_too_large_for_the_context_is_explained() -> None:
    async with SimServer(max_model_len=1000) as small:
        client = make_client(small.base_url, max_retries=2)
        image = scene_image(max_pixels=1280 * 28 * 28, width=1920, height=1080)
        try:
            with pytest.raises(VlmRequestRejectedError) as caught:
                await analyse(client, image)
        finally:
            await client.aclose()
        assert small.stats["bad_request"] == 1
    message = str(caught.value)
    assert "HTTP 400" in message
    assert "maximum context length is 1000 tokens" in message
    assert f"{image.width}x{image.height}, {image.tokens} image tokens" in message
    assert "lower vlm.max_pixels" in message


# --- Every failure kind over real HTTP. -------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("fault", "error", "message"), [
    ("500", VlmUnavailableError, "HTTP 500"),
    ("503", VlmUnavailableError, "HTTP 503"),
    ("429", VlmUnavailableError, "HTTP 429"),
    ("reset", VlmUnavailableError, r"cannot connect \([^)]+\)"),  # a reason, never "()"
    ("bad_body", VlmAnswerError, "unusable response"),
    ("malformed_json", VlmAnswerError, "malformed JSON"),
    ("schema_violation", VlmAnswerError, "does not match the schema"),
    ("prose", VlmAnswerError, "no JSON object"),
    ("long", VlmAnswerError, "cut at max_tokens=800"),
    ("empty_choices", VlmAnswerError, "without choices"),
])
async def test_failure_kinds(sim: SimServer, fault: str, error: type[Exception],
                             message: str) -> None:
    sim.set_behaviour(fault=fault)
    client = make_client(sim.base_url, max_retries=1)
    try:
        with pytest.raises(error, match=message) as caught:
            await analyse(client)
    finally:
        await client.aclose()
    retried = error is VlmUnavailableError
    assert sim.stats[f"fault_{fault}"] == (2 if retried else 1)
    if retried:
        assert "after 1 retry" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.asyncio
async def test_invalid_answer_keeps_the_raw_text(sim: SimServer) -> None:
    sim.set_behaviour(bad_answer_rate=1.0)
    client = make_client(sim.base_url)
    try:
        with pytest.raises(VlmAnswerError) as caught:
            await analyse(client)
    finally:
        await client.aclose()
    assert caught.value.raw_text
    assert len(str(caught.value)) < 700  # the log line holds a truncated excerpt


@pytest.mark.asyncio
async def test_a_hanging_server_ends_in_a_timeout(sim: SimServer) -> None:
    sim.set_behaviour(fault="timeout")
    client = make_client(sim.base_url, timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(VlmUnavailableError, match=r"no answer within 0\.3 s"):
            await analyse(client)
    finally:
        await client.aclose()
    assert time.monotonic() - started < 3


@pytest.mark.asyncio
async def test_unreachable_server_never_shows_the_key() -> None:
    client = make_client("http://127.0.0.1:9/v1", timeout_s=2)
    try:
        with pytest.raises(VlmUnavailableError, match="cannot connect") as caught:
            await analyse(client)
    finally:
        await client.aclose()
    assert SECRET not in str(caught.value)
    assert caught.value.endpoint == "http://127.0.0.1:9/v1"


@pytest.mark.asyncio
async def test_retry_moves_to_another_endpoint() -> None:
    async with SimServer(SimBehaviour(fault="503")) as bad, SimServer() as good:
        client = make_client(bad.base_url, good.base_url, max_retries=2)
        try:
            verdict = await analyse(client)
        finally:
            await client.aclose()
        assert bad.stats["failed"] == 1
        assert good.stats["ok"] == 1
    assert verdict.endpoint == good.base_url


# --- The pool: routing, limits, breaker. -------------------------------------------------------


@pytest.mark.asyncio
async def test_per_endpoint_concurrency_limit(sim: SimServer) -> None:
    sim.set_behaviour(latency_s=0.2)
    client = make_client(sim.base_url, max_concurrency=2)
    try:
        await asyncio.gather(*(analyse(client, camera=f"c{i}") for i in range(4)))
    finally:
        await client.aclose()
    assert sim.stats["max_in_service"] == 2


@pytest.mark.asyncio
async def test_queue_headroom_keeps_that_many_requests_waiting_on_the_server() -> None:
    """max_concurrency 2 and queue_headroom 1 against a server that serves two at once: three
    in flight, the third waits in the server's queue and enters service the moment one of
    the two leaves, never four."""
    async with SimServer(SimBehaviour(latency_s=0.2, batch_capacity=2)) as sim:
        client = make_client(sim.base_url, max_concurrency=2, queue_headroom=1)
        in_flight: list[int] = []

        async def watch() -> None:
            while True:
                in_flight.append(sim.stats["in_flight"])
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(analyse(client, camera=f"c{i}") for i in range(6)))
        finally:
            watcher.cancel()
            await client.aclose()
    assert max(in_flight) == 3
    assert sim.stats["max_in_service"] == 2
    assert sim.stats["queued"] >= 2
    assert sim.stats["ok"] == 6


@pytest.mark.asyncio
async def test_an_endpoints_own_queue_headroom_overrides_the_default() -> None:
    config = VlmConfig.model_validate({"queue_headroom": 2, "endpoints": [
        {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": 4},
        {"base_url": "http://127.0.0.1:10/v1", "queue_headroom": 0}]})
    client = VlmClient(config)
    try:
        assert client.describe() == ["http://127.0.0.1:9/v1: in service, 0/4+2 in flight",
                                     "http://127.0.0.1:10/v1: in service, 0/8 in flight"]
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_least_in_flight_routing_spreads_the_load() -> None:
    async with SimServer(SimBehaviour(latency_s=0.2)) as one, \
            SimServer(SimBehaviour(latency_s=0.2)) as two:
        client = make_client(one.base_url, two.base_url, max_concurrency=4)
        try:
            await asyncio.gather(*(analyse(client, camera=f"c{i}") for i in range(6)))
        finally:
            await client.aclose()
        assert (one.stats["ok"], two.stats["ok"]) == (3, 3)
        assert one.stats["max_in_service"] == two.stats["max_in_service"] == 3


@pytest.mark.asyncio
async def test_one_request_in_flight_per_camera(sim: SimServer) -> None:
    sim.set_behaviour(latency_s=0.2)
    client = make_client(sim.base_url)
    try:
        results = await asyncio.gather(analyse(client), analyse(client),
                                       return_exceptions=True)
    finally:
        await client.aclose()
    assert sum(isinstance(r, VlmCameraBusyError) for r in results) == 1
    assert sim.stats["requests"] == 1


@pytest.mark.asyncio
async def test_breaker_opens_fails_fast_and_closes_when_the_server_answers() -> None:
    sim = SimServer()
    await sim.start()
    port = sim.port
    client = make_client(sim.base_url, breaker_failures=2, breaker_probe_s=0.05, timeout_s=2)
    try:
        await analyse(client)
        await sim.stop()
        for _ in range(2):
            with pytest.raises(VlmUnavailableError, match="cannot connect"):
                await analyse(client)
        # Open: every camera is told why at once; nothing waits, nothing piles up.
        started = time.monotonic()
        results = await asyncio.gather(*(analyse(client, camera=f"c{i}") for i in range(8)),
                                       return_exceptions=True)
        assert time.monotonic() - started < 0.5
        assert all(isinstance(r, VlmUnavailableError) for r in results)
        assert "the only model endpoint is out of service" in str(results[0])
        assert "probing GET /v1/models" in str(results[0])
        assert "out of service" in client.describe()[0]
        # The server comes back on the same port: the probe puts the endpoint back.
        sim = SimServer()
        await sim.start(port=port)
        deadline = time.monotonic() + 5
        while "in service" not in client.describe()[0] or "out of" in client.describe()[0]:
            assert time.monotonic() < deadline, client.describe()
            await asyncio.sleep(0.02)
        await analyse(client)
        assert sim.stats["ok"] == 1
    finally:
        await client.aclose()
        await sim.stop()


@pytest.mark.asyncio
async def test_queue_fails_at_once_when_the_last_endpoint_goes_down() -> None:
    async with SimServer(SimBehaviour(latency_s=0.3)) as sim:
        client = make_client(sim.base_url, max_concurrency=1, breaker_failures=1,
                             breaker_probe_s=30)
        try:
            first = asyncio.create_task(analyse(client, camera="slow"))
            while sim.stats["in_flight"] == 0:  # polling a counter, not an event
                await asyncio.sleep(0.01)
            waiting = [asyncio.create_task(analyse(client, camera=f"w{i}")) for i in range(3)]
            await asyncio.sleep(0)  # let them queue
            sim.set_behaviour(fault="503")
            await first  # answered with the old behaviour
            # The next request fails and opens the breaker; the queue behind it fails with it.
            results = await asyncio.gather(*waiting, return_exceptions=True)
        finally:
            await client.aclose()
    assert all(isinstance(r, VlmUnavailableError) for r in results), results
    assert sim.stats["failed"] == 1


@pytest.mark.asyncio
async def test_fairness_eight_cameras_capacity_two() -> None:
    async with SimServer(SimBehaviour(latency_s=0.02, batch_capacity=2)) as sim:
        client = make_client(sim.base_url, max_concurrency=2)
        counts: Counter[str] = Counter()
        stop = asyncio.Event()
        image = scene_image()

        async def camera(name: str) -> None:
            while not stop.is_set():
                await analyse(client, image, camera=name)
                counts[name] += 1
                if sum(counts.values()) >= 96:
                    stop.set()

        try:
            await asyncio.gather(*(camera(f"cam{i}") for i in range(8)))
        finally:
            await client.aclose()
        assert sim.stats["max_in_service"] == 2
    mean = sum(counts.values()) / 8
    assert len(counts) == 8
    for name, count in counts.items():
        assert abs(count - mean) <= 0.2 * mean, (name, counts)


# --- Stale frames. ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_frame_already_too_old_is_not_sent(sim: SimServer) -> None:
    client = make_client(sim.base_url, max_frame_age_s=1)
    try:
        with pytest.raises(VlmStaleFrameError, match="max_frame_age_s"):
            await client.analyse_image(scene_image(), camera_id="cam",
                                       captured_at=time.time() - 5)
    finally:
        await client.aclose()
    assert sim.stats["requests"] == 0


@pytest.mark.asyncio
async def test_a_frame_that_went_stale_waiting_for_its_slot_is_dropped(sim: SimServer) -> None:
    sim.set_behaviour(latency_s=0.4)
    client = make_client(sim.base_url, max_concurrency=1, max_frame_age_s=0.2)
    try:
        first = asyncio.create_task(analyse(client, camera="a"))
        while sim.stats["in_flight"] == 0:
            await asyncio.sleep(0.01)
        # Encoded before its turn, sent as it is: too old once camera a's answer frees the slot.
        with pytest.raises(VlmStaleFrameError, match="max_frame_age_s"):
            await analyse(client, camera="b")
        await first
    finally:
        await client.aclose()
    assert sim.stats["requests"] == 1


@pytest.mark.asyncio
async def test_the_slot_comes_first_then_the_freshest_frame(sim: SimServer) -> None:
    """Camera b waits for the only slot while a's request runs; the frame it had when it began
    waiting is stale by then, so it picks the newest one after the slot is its own."""
    sim.set_behaviour(latency_s=0.4)
    client = make_client(sim.base_url, max_concurrency=1, max_frame_age_s=0.2)
    try:
        first = asyncio.create_task(analyse(client, camera="a"))
        while sim.stats["in_flight"] == 0:
            await asyncio.sleep(0.01)
        waited_from = time.time()
        async with client.request("b") as request:
            while True:
                async with request.slot() as slot:
                    assert first.done()  # the slot was free only once a's answer came
                    with pytest.raises(VlmStaleFrameError):
                        slot.check_age(waited_from, now=time.time())
                    newest_at = time.time()
                    slot.check_age(newest_at, now=time.time())
                    analysis = await slot.analyse(scene_image("quiet"), captured_at=newest_at)
                    break
    finally:
        await client.aclose()
    assert analysis.answer.fire.answer is Decision.NO  # the quiet (newer) frame's
    assert analysis.captured_at == newest_at
    assert sim.stats["requests"] == 2


@pytest.mark.asyncio
async def test_a_retry_takes_a_slot_again_and_sends_the_frame_freshest_then() -> None:
    """The first attempt hangs until its timeout on one endpoint; the retry waits for a slot
    again (none held while backing off) and sends the frame that is newest then: the first one
    went stale meanwhile, and a request holding only that one is dropped, not resent."""
    async with SimServer(SimBehaviour(fault="timeout")) as hanging, SimServer() as good:
        client = make_client(hanging.base_url, good.base_url, max_retries=1, timeout_s=0.4,
                             max_frame_age_s=0.3, max_concurrency=1)
        picked: list[tuple[str, float, list[str]]] = []
        try:
            async with client.request("cam") as request:
                while True:
                    async with request.slot() as slot:
                        captured = time.time()
                        picked.append((slot.endpoint, captured, client.describe()))
                        for earlier in picked[:-1]:
                            with pytest.raises(VlmStaleFrameError):
                                slot.check_age(earlier[1], now=time.time())
                        image = scene_image("quiet" if len(picked) > 1 else "fire")
                        analysis = await slot.analyse(image, captured_at=captured)
                        break
            # The same, with an image encoded once: its retry finds it stale and drops it.
            with pytest.raises(VlmStaleFrameError):
                await client.analyse_image(scene_image(), camera_id="cam",
                                           captured_at=time.time())
        finally:
            await client.aclose()
        assert [p[0] for p in picked] == [hanging.base_url, good.base_url]
        # The retry's slot is the only one held: the hanging endpoint's was given back.
        assert f"{hanging.base_url}: in service, 0/1 in flight" in picked[1][2]
        assert analysis.captured_at == picked[1][1]
        assert analysis.answer.fire.answer is Decision.NO
        assert good.stats["ok"] == 1  # the stale image was never sent to it
        assert hanging.stats["requests"] == 2


@pytest.mark.asyncio
async def test_a_slot_sends_one_request_and_frees_the_camera(sim: SimServer) -> None:
    client = make_client(sim.base_url)
    try:
        async with client.request("cam") as request:
            with pytest.raises(VlmCameraBusyError):
                async with client.request("cam"):
                    pass
            async with request.slot() as slot:
                await slot.analyse(scene_image(), captured_at=time.time())
                with pytest.raises(RuntimeError, match="one request"):
                    await slot.analyse(scene_image(), captured_at=time.time())
        assert client.describe() == [f"{sim.base_url}: in service, 0/8 in flight"]
        await analyse(client)  # the camera is free again
    finally:
        await client.aclose()
    assert sim.stats["requests"] == 2


# --- Zoom-in questions. ---------------------------------------------------------------------------


async def ask_crop(client: VlmClient, image: EncodedImage, hazard: Hazard) -> CropReply:
    async with client.request("cam") as request:
        while True:
            async with request.slot() as slot:
                return await slot.check_crop(image, hazard, max_tokens=48)


@pytest.mark.asyncio
@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("language", ["zh", "en"])
async def test_zoom_in_questions_get_short_answers_about_the_crop(
        sim: SimServer, structured: bool, language: str) -> None:
    # The orange vest a whole frame calls fire is, up close, a vest; a real flame is fire.
    # (The boxes come from the judge itself: a text answer carries none.)
    vest_frame = render_frame(LOOKALIKES["vest_lookalike"](), 6.0)
    fire_frame = render_frame(PRESETS["fire"](), 8.0)

    def crop(frame: BgrImage) -> EncodedImage:
        [box] = judge(frame).boxes(Hazard.FIRE)
        x1, y1, x2, y2 = crop_region(box, 640, 360, margin=0.3)
        return encode_for_model(frame[y1:y2, x1:x2].copy(), max_pixels=448 * 448)

    client = make_client(sim.base_url, structured_output=structured, language=language)
    try:
        vest = await ask_crop(client, crop(vest_frame), Hazard.FIRE)
        fire = await ask_crop(client, crop(fire_frame), Hazard.FIRE)
    finally:
        await client.aclose()
    assert vest.answer.answer is Decision.NO
    assert fire.answer.answer is Decision.YES
    assert vest.answer.seen  # what it is instead, in the prompt's language
    assert vest.completion_tokens is not None
    assert vest.completion_tokens < 16  # tiny next to a whole-frame answer
    assert sim.stats["crop_answers"] == 2


@pytest.mark.asyncio
async def test_an_unusable_zoom_in_answer_is_an_answer_error(sim: SimServer) -> None:
    client = make_client(sim.base_url)
    sim.set_behaviour(fault="prose")
    try:
        with pytest.raises(VlmAnswerError, match="neither JSON nor a leading"):
            await ask_crop(client, scene_image(), Hazard.FIRE)
    finally:
        await client.aclose()
