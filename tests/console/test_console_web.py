"""The console's pages over real HTTP, fed directly (no daemon): the model's words and camera
contexts are shown as text, live updates arrive as Server-Sent Events, an open stream does
not hold up shutdown, and without credentials the buttons are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from monitor.config import ConsoleConfig
from monitor.console.auth import ConsoleAuth
from monitor.console.state import CameraView, ConsoleState
from monitor.console.web import ConsoleWeb
from monitor.model.answer import Answer, Verdict
from monitor.model.imaging import EncodedImage

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"
T0 = 1_700_000_000.0


def hostile_verdict(at: float) -> Verdict:
    answer = Answer.model_validate({
        "fire": {"answer": "yes", "description": HOSTILE[:60], "location": "<b>left</b>"},
        "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": 1, "description": HOSTILE,
                   "boxes": [{"bbox_2d": [1, 2, 30, 40], "label": "</title><script>x</script>"}]},
    })
    image = EncodedImage(jpeg=b"\xff\xd8\xff\xd9", width=64, height=36, source_width=64,
                         source_height=36)
    return Verdict(camera_id="cam", answer=answer, captured_at=at, analysed_at=at + 0.2,
                   latency_s=0.2, model="m", endpoint="e", image=image)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[str, ConsoleState, web.AppRunner]]:
    state = ConsoleState([CameraView(camera_id="cam", context=HOSTILE, hazards=("fire",),
                                     roi=((0.0, 0.5), (1.0, 1.0)))])
    app = web.Application()
    ConsoleWeb(state, ConsoleAuth(ConsoleConfig())).add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", state, runner
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_model_words_and_context_are_escaped(
        served: tuple[str, ConsoleState, web.AppRunner]) -> None:
    url, state, _ = served
    state.record_verdict(hostile_verdict(T0))
    pages = {}
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/cameras/cam", "/events"):
            async with http.get(url + path) as response:
                assert response.status == 200
                pages[path] = await response.text()
    for page in pages.values():
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "</title><script>" not in page
    # The model's description in the tile's summary, escaped.
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" \
        in pages["/"]
    # The camera's context and the box label on the camera page, escaped.
    assert '<p class="context">&lt;script&gt;alert(&#39;x&#39;)' in pages["/cameras/cam"]
    assert "<title>&lt;/title&gt;&lt;script&gt;x&lt;/script&gt;</title>" in pages["/cameras/cam"]
    assert '<rect class="box no_helmet"' in pages["/cameras/cam"]


@pytest.mark.asyncio
async def test_live_updates_and_shutdown_with_an_open_stream(
        served: tuple[str, ConsoleState, web.AppRunner]) -> None:
    url, state, runner = served
    async with aiohttp.ClientSession() as http, http.get(url + "/api/stream") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        await asyncio.wait_for(stream.content.readuntil(b": connected\n\n"), 5)
        sample = state.record_verdict(hostile_verdict(T0 + 1))
        assert sample is not None
        event = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
        assert event.startswith(b"event: sample\ndata: ")
        assert f'"image": "/api/frames/{sample.sample_id}.jpg"'.encode() in event
        async with http.get(url + f"/api/frames/{sample.sample_id}.jpg") as frame:
            assert await frame.read() == b"\xff\xd8\xff\xd9"
            assert "immutable" in frame.headers["Cache-Control"]
        # The daemon stops with a viewer still connected: the stream ends, nothing hangs.
        await asyncio.wait_for(runner.cleanup(), 10)
        assert await asyncio.wait_for(stream.content.read(), 5) == b""


@pytest.mark.asyncio
async def test_without_credentials_reading_is_open_and_actions_are_refused(
        served: tuple[str, ConsoleState, web.AppRunner]) -> None:
    url, state, _ = served
    state.record_verdict(hostile_verdict(T0))
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/cameras") as response:
            assert response.status == 200
        async with http.post(url + "/api/cameras/cam/missed", json={"hazard": "fire"}) as resp:
            assert resp.status == 403
            assert "console.token" in await resp.text()
        async with http.get(url + "/cameras/cam") as response:
            assert 'data-action="missed"' not in await response.text()
