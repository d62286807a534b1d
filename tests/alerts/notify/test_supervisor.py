"""The supervisor's wiring: events the sink takes reach the channels, a refused channel is a
/readyz reason and a metric."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.alerts.notify.delivery import NotifyHub
from monitor.alerts.outbox import Outbox
from monitor.alerts.tracker import AlertEvent, EventType, Observation
from monitor.config import config_from_mapping
from monitor.model.answer import Hazard
from monitor.service.supervisor import Supervisor
from tests.alerts.notify import services as svc
from tests.alerts.notify.services import FakeServices
from tests.alerts.notify.support import wait_for, worker_for


def start_event() -> AlertEvent:
    seen = Observation(1_700_000_000.0, positive=True, detail="flames")
    return AlertEvent(event_id="e1", type=EventType.START, camera_id="cam1",
                      hazard=Hazard.FIRE, started_at=1_700_000_000.0, ended_at=None,
                      at=1_700_000_000.0, detail="flames", verdicts=(seen, seen), revision=0)


@pytest.mark.asyncio
async def test_sink_events_reach_the_channel_and_a_refusal_is_reported(
        fake: FakeServices, tmp_path: Path) -> None:
    config = config_from_mapping({"state_dir": str(tmp_path), "notify": [{
        "name": "hook", "type": "webhook", "url": fake.url("webhook"),
        "secret": svc.WEBHOOK_SECRET, "retry_cap_s": 1, "timeout_s": 2}]})
    worker = worker_for(config.notify[0], tmp_path)
    supervisor = Supervisor(config, Outbox(None), NotifyHub([worker]))
    fake.then("webhook", "refuse", "refuse")
    task = asyncio.create_task(worker.supervise())
    try:
        supervisor.sink.event(start_event())
        assert supervisor.outbox.depth == 2  # MQTT's event and ON, stored first
        await wait_for(lambda: worker.stats.refusals >= 1)
        reasons = supervisor.readiness().reasons
        assert any(r.startswith("notify hook: refused by the service (HTTP 403") for r in reasons)
        metrics = supervisor.metrics.render().decode()
        assert 'monitor_notify_refused{channel="hook"} 1.0' in metrics
        assert 'monitor_notify_queue_depth{channel="hook"} 1.0' in metrics
        await wait_for(lambda: len(fake.accepted) == 1 and worker.stats.sent == 1)
    finally:
        task.cancel()
        supervisor.notify.close()
    assert fake.accepted[0].headers["Idempotency-Key"] == "e1:0"
    assert not any(r.startswith("notify") for r in supervisor.readiness().reasons)
    assert 'monitor_notify_sent_total{channel="hook"} 1.0' in supervisor.metrics.render().decode()
