"""The production model client against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from monitor.config import VlmConfig
from monitor.imaging import EncodedImage, encode_for_model
from monitor.sim.scenes import PRESETS, render_frame
from monitor.sim.server import SimBehaviour, SimServer
from monitor.verdict import Answer, HelmetStatus
from monitor.vlm import (
    VlmAnswerError,
    VlmClient,
    VlmRequestRejectedError,
    VlmUnavailableError,
)


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimBehaviour(seed=1)) as server:
        yield server


def fire_image(t: float = 8.0) -> EncodedImage:
    return encode_for_model(render_frame(PRESETS["fire"](), t), max_pixels=448 * 448)


def client_for(sim: SimServer, **overrides: object) -> VlmClient:
    settings = {"base_url": sim.base_url, "timeout_s": 5, "max_retries": 0, **overrides}
    return VlmClient(VlmConfig.model_validate(settings))


@pytest.mark.asyncio
@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("language", ["zh", "en"])
async def test_verdict_in_both_answer_forms(sim: SimServer, structured: bool,
                                            language: str) -> None:
    client = client_for(sim, structured_output=structured, language=language)
    try:
        verdict = await client.analyse("cam", fire_image(), captured_at=123.0)
    finally:
        await client.aclose()
    assert verdict.answer.fire.answer is Answer.YES
    assert verdict.answer.smoke.answer is Answer.NO
    assert verdict.answer.helmet.status is HelmetStatus.ALL_WORN
    assert verdict.captured_at == 123.0
    assert verdict.prompt_tokens is not None
    assert verdict.prompt_tokens >= fire_image().tokens
    assert verdict.completion_tokens
    assert verdict.latency_s >= 0


@pytest.mark.asyncio
async def test_no_fire_before_it_starts(sim: SimServer) -> None:
    client = client_for(sim)
    try:
        verdict = await client.analyse("cam", fire_image(t=1.0), captured_at=0.0)
    finally:
        await client.aclose()
    assert verdict.answer.fire.answer is Answer.NO


@pytest.mark.asyncio
async def test_unknown_model_is_rejected_with_the_servers_reason(sim: SimServer) -> None:
    client = client_for(sim, model="Qwen2.5-VL-typo")
    try:
        with pytest.raises(VlmRequestRejectedError, match="404") as caught:
            await client.analyse("cam", fire_image(), captured_at=0.0)
    finally:
        await client.aclose()
    assert "Qwen2.5-VL-typo" in str(caught.value)


@pytest.mark.asyncio
async def test_server_errors_are_retried_then_reported(sim: SimServer) -> None:
    sim.set_behaviour(fail_rate=1.0, status_code_on_fail=503)
    client = client_for(sim, max_retries=1)
    try:
        with pytest.raises(VlmUnavailableError, match="HTTP 503"):
            await client.analyse("cam", fire_image(), captured_at=0.0)
    finally:
        await client.aclose()
    assert sim.stats["failed"] == 2  # the first try and one retry


@pytest.mark.asyncio
async def test_bad_answer_is_an_answer_error_with_the_text(sim: SimServer) -> None:
    sim.set_behaviour(bad_answer_rate=1.0)
    client = client_for(sim)
    try:
        with pytest.raises(VlmAnswerError, match="invalid model answer"):
            await client.analyse("cam", fire_image(), captured_at=0.0)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_hanging_server_ends_in_a_timeout(sim: SimServer) -> None:
    sim.set_behaviour(hang_rate=1.0)
    client = client_for(sim, timeout_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(VlmUnavailableError, match=r"no answer within 0\.5 s"):
            await client.analyse("cam", fire_image(), captured_at=0.0)
    finally:
        await client.aclose()
    assert time.monotonic() - started < 5


@pytest.mark.asyncio
async def test_unreachable_server() -> None:
    client = VlmClient(VlmConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2))
    try:
        with pytest.raises(VlmUnavailableError, match="cannot connect"):
            await client.analyse("cam", fire_image(), captured_at=0.0)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_global_concurrency_limit(sim: SimServer) -> None:
    sim.set_behaviour(latency_s=0.3)
    client = client_for(sim, max_concurrency=2)
    image = fire_image()
    started = time.monotonic()
    try:
        await asyncio.gather(*(client.analyse(f"c{i}", image, 0.0) for i in range(4)))
    finally:
        await client.aclose()
    # Four 0.3 s requests, two at a time: at least two rounds.
    assert time.monotonic() - started >= 0.6
