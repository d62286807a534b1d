"""The event-loop lag metric, scraped over real HTTP from a running health server."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from monitor.service.telemetry import HealthServer, Metrics, Readiness


def gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def lag_max(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("monitor_event_loop_lag_max_seconds")
    assert value is not None
    return value


@pytest.mark.asyncio
async def test_a_blocked_loop_shows_on_metrics_and_leaves_the_window() -> None:
    metrics = Metrics()
    server = HealthServer(metrics, lambda: Readiness(ready=True))
    await server.start("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(1.2)  # a couple of checks of an idle loop
            async with http.get(url) as response:
                idle = await response.text()
            assert gauge(idle, "monitor_event_loop_lag_seconds") < 0.2
            # A check falls due within 0.5 s of the block starting: it runs >= 0.5 s late.
            time.sleep(1.0)  # noqa: ASYNC251 - blocking the loop is what is measured
            await asyncio.sleep(0.7)  # the check that was due during the block has run
            async with http.get(url) as response:
                blocked = await response.text()
    finally:
        await server.stop()
    assert 0.45 <= gauge(blocked, "monitor_event_loop_lag_max_seconds") < 2.0


@pytest.mark.asyncio
async def test_the_lag_window_forgets_old_lag() -> None:
    metrics = Metrics()
    watch = asyncio.create_task(metrics.watch_event_loop(interval_s=0.05, window_s=0.5))
    try:
        await asyncio.sleep(0.2)
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is what is measured
        await asyncio.sleep(0.15)
        assert lag_max(metrics) >= 0.2  # 0.3 s less one interval
        await asyncio.sleep(1.0)  # past the window: only recent, small lags remain
        assert lag_max(metrics) < 0.2
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
