"""Quiet hours: a channel with a ``schedule`` sends nothing outside it (urgent hazards aside)
and one digest of what it held back once the schedule is active again; an unknown schedule
name is refused at load."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.alerts.notify.delivery import ChannelWorker
from monitor.alerts.notify.health_messages import health_notification_for
from monitor.alerts.notify.messages import notification_for
from monitor.alerts.notify.quiet import QuietHours
from monitor.alerts.outbox import Outbox
from monitor.alerts.payloads import HealthEventPayload
from monitor.config import ConfigError, config_from_mapping
from monitor.rules.schedules import WeeklySchedule
from monitor.service.supervisor import Supervisor
from tests.alerts.notify.services import FakeServices
from tests.alerts.notify.support import channel_for, event_payload, sending, wait_for

WORKDAYS = {day: ["08:00-18:00"] for day in ("monday", "tuesday", "wednesday", "thursday",
                                            "friday")}
DAY_SHIFT = WeeklySchedule.parse("day-shift", "UTC", WORKDAYS)
NIGHT = datetime(2026, 12, 2, 2, 0, tzinfo=UTC).timestamp()  # a Wednesday, 02:00
MORNING = datetime(2026, 12, 2, 8, 0, tzinfo=UTC).timestamp()


def health_payload() -> HealthEventPayload:
    return HealthEventPayload.model_validate({
        "id": "health-1", "type": "start", "camera": "gate", "problem": "frozen",
        "started_at": "2026-12-02T01:58:00.000+00:00", "ended_at": None,
        "at": "2026-12-02T02:00:00.000+00:00", "detail": "the same picture for 60 s"})


def test_outside_the_schedule_held_back_then_one_digest(fake: FakeServices) -> None:
    channel = channel_for("webhook", fake, events=["start", "end", "health"])
    quiet = QuietHours(DAY_SHIFT, urgent_hazards=["fire"])
    smoke, _ = notification_for(channel, event_payload(hazard="smoke"))
    smoke_end, _ = notification_for(channel, event_payload("end", hazard="smoke"))
    fire, _ = notification_for(channel, event_payload(hazard="fire"))
    frozen, _ = health_notification_for(channel, health_payload())
    assert not quiet.admit(smoke, NIGHT)
    assert not quiet.admit(smoke_end, NIGHT + 60)
    assert not quiet.admit(frozen, NIGHT + 120)
    assert quiet.admit(fire, NIGHT + 180)  # urgent: pages at night
    assert quiet.digest(NIGHT + 240, "en") is None  # still quiet
    digest = quiet.digest(MORNING, "en")
    assert digest is not None
    assert digest.kind == "digest"
    assert "3 notification(s) were held back outside schedule day-shift" in digest.text
    assert "ALERT Smoke x1" in digest.text
    assert "Cleared Smoke x1" in digest.text
    assert "Camera problem picture frozen x1" in digest.text
    assert "Cameras: cam1, gate" in digest.text
    assert quiet.held_back == 3
    assert quiet.digest(MORNING + 60, "en") is None  # said once
    assert quiet.admit(smoke, MORNING + 60)  # active: everything goes


def test_nothing_held_back_means_no_digest(fake: FakeServices) -> None:
    quiet = QuietHours(DAY_SHIFT)
    assert quiet.digest(MORNING, "zh") is None
    fire, _ = notification_for(channel_for("webhook", fake), event_payload())
    assert not quiet.admit(fire, NIGHT)  # no urgent hazards: fire waits too
    digest = quiet.digest(MORNING, "zh")
    assert digest is not None
    assert "非值守时段" in digest.text


@pytest.mark.asyncio
async def test_a_quiet_channel_delivers_urgent_at_night_and_the_digest_in_the_morning(
        fake: FakeServices, tmp_path: Path) -> None:
    now = [NIGHT]
    # ntfy: the webhook's signature would carry the injected (stale) clock's timestamp.
    channel = channel_for("ntfy", fake, schedule="day-shift", urgent_hazards=["fire"])
    worker = ChannelWorker(channel, Outbox(tmp_path / "quiet.sqlite3"), clock=lambda: now[0],
                           schedule=DAY_SHIFT)
    async with sending(worker):
        worker.offer(event_payload(hazard="smoke", event_id="smoke-1"))
        worker.offer(event_payload("end", hazard="smoke", event_id="smoke-1"))
        worker.offer(event_payload(hazard="fire", event_id="fire-1"))
        await wait_for(lambda: len(fake.accepted) == 1)
        assert worker.quiet is not None
        assert worker.quiet.held_back == 2  # the smoke steps were never queued
        now[0] = MORNING  # the schedule starts: the next turn (within a second) sends it
        await wait_for(lambda: len(fake.accepted) == 2)
    first, second = fake.accepted
    assert first.data["title"] == "ALERT: Fire on camera cam1"
    assert first.data["priority"] == "4"
    assert second.data["title"] == "Held back during quiet hours"
    assert "2 notification(s) were held back outside schedule day-shift" in second.body.decode()
    assert "Cleared Smoke x1, ALERT Smoke x1" in second.body.decode()


def test_an_unknown_schedule_name_is_refused_with_one_clear_line() -> None:
    notify = [{"name": "night-pager", "type": "ntfy", "url": "https://ntfy.example/t",
               "schedule": "day-shfit"}]
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"notify": notify, "schedules": {"day-shift": WORKDAYS}})
    assert caught.value.problems == [
        ("<config>: notify.0.schedule: unknown schedule 'day-shfit' of channel 'night-pager' "
         "(defined: day-shift)")]
    config = config_from_mapping({"notify": [{**notify[0], "schedule": "day-shift"}],
                                  "schedules": {"day-shift": WORKDAYS}})
    assert config.notify[0].schedule == "day-shift"


@pytest.mark.asyncio
async def test_the_daemon_gives_each_channel_its_schedule(tmp_path: Path) -> None:
    config = config_from_mapping({
        "state_dir": str(tmp_path), "schedules": {"day-shift": WORKDAYS},
        "notify": [{"name": "office", "type": "ntfy", "url": "https://ntfy.example/office",
                    "schedule": "day-shift", "urgent_hazards": ["fire", "smoke"]},
                   {"name": "pager", "type": "ntfy", "url": "https://ntfy.example/pager"}]})
    supervisor = Supervisor.open(config)
    try:
        office, pager = supervisor.notify.workers
        assert office.quiet is not None
        assert office.quiet.schedule.name == "day-shift"
        assert not office.quiet.schedule.is_active(NIGHT)
        assert office.quiet.urgent_hazards == {"fire", "smoke"}
        assert pager.quiet is None
    finally:
        supervisor.notify.close()
        supervisor.outbox.close()
