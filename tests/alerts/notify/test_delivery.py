"""Each channel against a local server that speaks its service's API: signatures and message
shapes as documented, retries on rate limits, 5xx and timeouts, refusals, order, restarts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import simplejpeg
from prometheus_client import CollectorRegistry, generate_latest

from monitor.alerts.notify import channels
from monitor.alerts.notify.delivery import NotifyCollector, NotifyHub
from monitor.alerts.outbox import Outbox
from monitor.redaction import register_secrets
from tests.alerts.notify import services as svc
from tests.alerts.notify.services import FakeServices
from tests.alerts.notify.support import (
    channel_for,
    event_payload,
    sending,
    wait_for,
    worker_for,
)

HTTP_TYPES = ["webhook", "wecom", "dingtalk", "feishu", "telegram", "ntfy"]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeServices]:
    services = FakeServices(timeout_sleep_s=2.0)
    await services.start()
    try:
        yield services
    finally:
        await services.stop()


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    pixels = np.full((48, 64, 3), 200, np.uint8)
    pixels[10:30, 20:40] = (255, 80, 0)
    path = tmp_path / "evidence.jpg"
    path.write_bytes(simplejpeg.encode_jpeg(pixels, colorspace="RGB"))
    return path


@pytest.fixture(autouse=True)
def quick_rate_limit_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # The chat robots name no wait for their rate-limit errcodes (we wait a minute); tests
    # must not.
    monkeypatch.setattr(channels, "RATE_LIMIT_WAIT_S", 0.2)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", HTTP_TYPES)
async def test_an_alert_reaches_each_service_in_its_documented_shape(
        kind: str, fake: FakeServices, jpeg: Path, tmp_path: Path) -> None:
    channel = channel_for(kind, fake)
    worker = worker_for(channel, tmp_path)
    payload = event_payload(snapshot=jpeg, url="https://evidence.example/cam1/1.jpg")
    expected_messages = 2 if kind == "wecom" else 1
    async with sending(worker):
        worker.offer(payload)
        # Until acknowledged: the server records a message before its answer arrives.
        await wait_for(lambda: len(fake.accepted) >= expected_messages
                       and worker.outbox.depth == 0)
    image = jpeg.read_bytes()
    first = fake.accepted[0]
    assert first.service == kind
    if kind == "webhook":
        assert first.data["event"]["id"] == "alert-1"
        assert first.data["notification"]["key"] == "alert-1:0"
        assert first.headers["Idempotency-Key"] == "alert-1:0"
        assert first.headers["X-Tenant"] == "site-7"
    elif kind == "wecom":
        assert first.data["msgtype"] == "markdown"
        assert "cam1" in first.data["markdown"]["content"]
        second = fake.accepted[1].data
        assert second["msgtype"] == "image"
        assert second["image"]["md5"] == hashlib.md5(image, usedforsecurity=False).hexdigest()
    elif kind == "dingtalk":
        assert first.data["msgtype"] == "markdown"
        assert "![evidence](https://evidence.example/cam1/1.jpg)" in first.data["markdown"][
            "text"]
    elif kind == "feishu":
        assert first.data["msg_type"] == "text"
        assert "Fire on camera cam1" in first.data["content"]["text"]
    elif kind == "telegram":
        assert first.data["method"] == "sendPhoto"
        assert first.data["chat_id"] == "-1001234"
        assert first.body == image
        assert "flames near the pallets" in first.data["caption"]
    elif kind == "ntfy":
        assert first.data["method"] == "PUT"
        assert first.data["filename"] == "evidence.jpg"
        assert first.body == image
        assert first.data["priority"] == "4"
        assert "fire" in first.data["tags"]
    assert len(fake.accepted) == expected_messages
    assert worker.outbox.depth == 0
    assert worker.stats.sent == expected_messages


@pytest.mark.asyncio
async def test_chinese_text_without_image_goes_as_text_messages(
        fake: FakeServices, tmp_path: Path) -> None:
    telegram = worker_for(channel_for("telegram", fake, language="zh"), tmp_path)
    ntfy = worker_for(channel_for("ntfy", fake, language="zh"), tmp_path)
    async with sending(telegram, ntfy):
        telegram.offer(event_payload())
        ntfy.offer(event_payload())
        await wait_for(lambda: len(fake.accepted) >= 2)
    by_service = {accepted.service: accepted for accepted in fake.accepted}
    assert by_service["telegram"].data["method"] == "sendMessage"
    assert "火焰" in by_service["telegram"].data["text"]
    assert by_service["ntfy"].data["method"] == "POST"
    assert "火焰" in by_service["ntfy"].body.decode()
    assert by_service["ntfy"].data["title"].startswith("=?utf-8?")  # RFC 2047


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", HTTP_TYPES)
async def test_rate_limits_5xx_and_timeouts_are_retried_until_delivered_once(
        kind: str, fake: FakeServices, tmp_path: Path) -> None:
    fake.then(kind, "rate", "5xx", "timeout")
    worker = worker_for(channel_for(kind, fake), tmp_path)
    async with sending(worker):
        worker.offer(event_payload())
        await wait_for(lambda: len(fake.accepted) >= 1 and worker.stats.sent == 1)
    # Four requests at least (a loaded machine may time out one more): delivered once.
    assert fake.requests[:4] == [kind] * 4
    assert len(fake.accepted) == 1
    assert worker.stats.retried >= 3
    assert worker.stats.last_error is None
    assert worker.reasons() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", HTTP_TYPES)
async def test_a_refused_key_is_logged_once_shown_and_kept_until_fixed(
        kind: str, fake: FakeServices, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    fake.then(kind, "refuse", "refuse", "refuse")
    worker = worker_for(channel_for(kind, fake), tmp_path)
    registry = CollectorRegistry()
    registry.register(NotifyCollector(NotifyHub([worker])))
    caplog.set_level(logging.INFO, logger="monitor.alerts.notify")
    async with sending(worker):
        worker.offer(event_payload())
        await wait_for(lambda: worker.stats.refusals >= 2)
        (reason,) = worker.reasons()
        assert reason.startswith(f"notify {kind}-1: refused by the service")
        assert "fix:" in reason
        metrics = generate_latest(registry).decode()
        assert f'monitor_notify_refused{{channel="{kind}-1"}} 1.0' in metrics
        assert worker.outbox.depth == 1  # kept, not dropped
        # The "fix": the service accepts.
        await wait_for(lambda: len(fake.accepted) == 1 and worker.outbox.depth == 0)
    refusals = [r for r in caplog.records if "refused by the service" in r.getMessage()]
    assert len(refusals) == 1
    assert worker.reasons() == []
    assert worker.outbox.depth == 0


@pytest.mark.asyncio
async def test_a_message_the_service_rejects_is_dropped_not_blocking(
        fake: FakeServices, tmp_path: Path) -> None:
    fake.then("webhook", "reject")  # HTTP 422: this message, not the channel
    worker = worker_for(channel_for("webhook", fake), tmp_path)
    async with sending(worker):
        worker.offer(event_payload(event_id="bad"))
        worker.offer(event_payload(event_id="good"))
        await wait_for(lambda: len(fake.accepted) == 1 and worker.outbox.depth == 0)
    assert fake.accepted[0].headers["Idempotency-Key"] == "good:0"
    assert worker.stats.dropped == 1
    assert worker.outbox.depth == 0


@pytest.mark.asyncio
async def test_a_channel_that_is_down_delays_no_other_and_keeps_order_per_camera(
        fake: FakeServices, tmp_path: Path) -> None:
    down = worker_for(channel_for("webhook", fake, name="down", timeout_s=0.5), tmp_path)
    fake.then("webhook", *["timeout"] * 1000)
    healthy = worker_for(channel_for("feishu", fake), tmp_path)
    hub = NotifyHub([down, healthy])
    steps = [("cam1", "a", "start"), ("cam2", "b", "start"), ("cam1", "a", "end"),
             ("cam2", "b", "end"), ("cam1", "c", "start")]
    async with sending(down, healthy):
        for camera, alert, kind in steps:
            hub.event(event_payload(kind, camera=camera, event_id=alert))
        await wait_for(lambda: sum(a.service == "feishu" for a in fake.accepted) == 5)
        assert not any(a.service == "webhook" for a in fake.accepted)  # still timing out
        fake.script["webhook"].clear()  # the webhook's service comes back
        await wait_for(lambda: sum(a.service == "webhook" for a in fake.accepted) == 5)
    hooks = [a.data["notification"]["key"] for a in fake.accepted if a.service == "webhook"]
    assert hooks == ["a:0", "b:0", "a:1", "b:1", "c:0"]
    hub.close()


@pytest.mark.asyncio
async def test_queued_notifications_survive_a_restart_in_order(
        fake: FakeServices, tmp_path: Path) -> None:
    await fake.stop()  # the service is unreachable in the first run
    channel = channel_for("webhook", fake)
    first = worker_for(channel, tmp_path)
    async with sending(first):
        for number in range(3):
            first.offer(event_payload(event_id=f"alert-{number}"))
        await wait_for(lambda: first.stats.retried >= 1)
    first.outbox.close()
    await fake.start()
    channel = channel_for("webhook", fake)
    second = worker_for(channel, tmp_path)
    assert second.outbox.depth == 3
    async with sending(second):
        await wait_for(lambda: len(fake.accepted) == 3)
    assert [a.headers["Idempotency-Key"] for a in fake.accepted] == [
        "alert-0:0", "alert-1:0", "alert-2:0"]


@pytest.mark.asyncio
async def test_a_storm_becomes_one_digest(fake: FakeServices, tmp_path: Path) -> None:
    channel = channel_for("webhook", fake, rate_limit={"max_messages": 2, "window_s": 1.0})
    worker = worker_for(channel, tmp_path)
    async with sending(worker):
        for number in range(12):
            worker.offer(event_payload("start" if number % 2 == 0 else "end",
                                       event_id=f"storm-{number // 2}"))
        await wait_for(lambda: len(fake.accepted) == 3)
        await asyncio.sleep(1.2)  # nothing more comes: the digest covered all ten
    kinds = [a.data["notification"]["kind"] for a in fake.accepted]
    assert kinds == ["start", "end", "digest"]
    digest = fake.accepted[2].data["notification"]["text"]
    assert "10 notification(s)" in digest
    assert worker.limiter.held_back == 10


@pytest.mark.asyncio
async def test_no_configured_secret_in_logs_reasons_metrics_or_queues(
        fake: FakeServices, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    workers = [worker_for(channel_for(kind, fake), tmp_path) for kind in HTTP_TYPES]
    for worker in workers:
        register_secrets(worker.channel.secret_values())
        fake.then(worker.channel.type, "refuse", "5xx")
    hub = NotifyHub(workers)
    registry = CollectorRegistry()
    registry.register(NotifyCollector(hub))
    caplog.set_level(logging.DEBUG)
    texts = []
    async with sending(*workers):
        hub.event(event_payload())
        await wait_for(lambda: all(len([r for r in fake.requests if r == w.channel.type]) >= 2
                                   for w in workers))
        texts.extend(hub.reasons())
        texts.append(generate_latest(registry).decode())
        texts.extend(bytes(row.payload).decode() for w in workers for row in w.outbox.head())
        await wait_for(lambda: len(fake.accepted) >= 6)
    texts.extend(record.getMessage() for record in caplog.records)
    everything = "\n".join(texts)
    assert "refused by the service" in everything
    for secret in svc.SECRETS:
        assert secret not in everything, secret
    hub.close()


def test_outbox_queue_file_per_channel(tmp_path: Path) -> None:
    fake = FakeServices(port=1)
    hub = NotifyHub.open([channel_for("webhook", fake), channel_for("ntfy", fake),
                          channel_for("feishu", fake, enabled=False)], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.sqlite3")) == [
        "ntfy-1.sqlite3", "webhook-1.sqlite3"]
    hub.close()
    assert Outbox(tmp_path / "ntfy-1.sqlite3").depth == 0


@pytest.mark.asyncio
async def test_an_image_over_the_services_limit_goes_out_shrunk(
        fake: FakeServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    big = tmp_path / "big.jpg"
    big.write_bytes(simplejpeg.encode_jpeg(noise, quality=95, colorspace="RGB"))
    limit = big.stat().st_size // 3
    monkeypatch.setattr(channels, "WECOM_IMAGE_BYTES", limit)
    worker = worker_for(channel_for("wecom", fake), tmp_path)
    async with sending(worker):
        worker.offer(event_payload(snapshot=big))
        await wait_for(lambda: len(fake.accepted) == 2)
    image = base64.b64decode(fake.accepted[1].data["image"]["base64"])
    assert 0 < len(image) <= limit
    assert image[:2] == b"\xff\xd8"
