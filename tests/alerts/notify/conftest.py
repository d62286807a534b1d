"""Fixtures of the notification tests: the local servers that play the chat services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.alerts.notify.services import FakeServices


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeServices]:
    """One local HTTP server per run that speaks webhook, WeCom, DingTalk, Feishu, Telegram
    and ntfy as their documentation describes them (see ``services.py``)."""
    services = FakeServices()
    await services.start()
    try:
        yield services
    finally:
        await services.stop()
