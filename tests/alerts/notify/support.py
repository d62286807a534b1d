"""Channels, events and running workers for the notification tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from monitor.alerts.notify.delivery import ChannelWorker
from monitor.alerts.outbox import Outbox
from monitor.alerts.payloads import EventPayload, SnapshotRef
from monitor.notifyconfig import NotifyChannelConfig
from tests.alerts.notify import services as svc
from tests.alerts.notify.services import FakeServices

CHANNEL = TypeAdapter(NotifyChannelConfig)


def channel_for(kind: str, fake: FakeServices, **fields: Any) -> Any:
    """A ``[[notify]]`` table of ``kind`` pointed at ``fake``, with its secrets."""
    table: dict[str, Any] = {"name": f"{kind}-1", "type": kind, "timeout_s": 1.5,
                             "retry_cap_s": 1.0, "events": ["start", "update", "end"]}
    if kind == "telegram":
        table.update(bot_token=svc.TELEGRAM_TOKEN, chat_id="-1001234", api_url=fake.url(kind))
    else:
        table["url"] = fake.url(kind)
    if kind == "webhook":
        table.update(secret=svc.WEBHOOK_SECRET, headers={"X-Tenant": "site-7"})
    elif kind == "dingtalk":
        table["secret"] = svc.DINGTALK_SECRET
    elif kind == "feishu":
        table["secret"] = svc.FEISHU_SECRET
    elif kind == "ntfy":
        table["token"] = svc.NTFY_TOKEN
    table.update(fields)
    return CHANNEL.validate_python(table)


def event_payload(kind: str = "start", *, camera: str = "cam1", event_id: str = "alert-1",
                  revision: int | None = None, hazard: str = "fire",
                  snapshot: Path | None = None, url: str | None = None) -> EventPayload:
    """An event step as the pipeline hands it over."""
    ended = kind == "end"
    return EventPayload.model_validate({
        "id": event_id, "revision": revision if revision is not None else (
            0 if kind == "start" else 1),
        "type": kind, "camera": camera, "hazard": hazard,
        "started_at": "2026-12-02T01:00:00.000+00:00",
        "ended_at": "2026-12-02T01:01:00.000+00:00" if ended else None,
        "at": "2026-12-02T01:00:05.000+00:00", "detail": "flames near the pallets",
        "confirming_verdicts": 2, "verdicts": [], "missing_helmets": None,
        "end_reason": "cleared" if ended else None,
        "snapshot": SnapshotRef(path=str(snapshot), url=url) if snapshot else None,
    })


def worker_for(channel: Any, directory: Path) -> ChannelWorker:
    """A channel worker over a queue in ``directory``."""
    return ChannelWorker(channel, Outbox(directory / f"{channel.name}.sqlite3"))


@contextlib.asynccontextmanager
async def sending(*workers: ChannelWorker) -> AsyncIterator[None]:
    """The workers' sending tasks for the block, cancelled after it."""
    tasks = [asyncio.create_task(worker.supervise(), name=f"test.notify[{worker.name}]")
             for worker in workers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll ``condition`` until true (fails the test after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)
