"""``monitor notify-test CHANNEL`` and the notification checks of ``monitor doctor``.

``notify-test`` sends one test message straight to the service (not through the queue, so it
works while the daemon runs) and prints what the service answered: the HTTP status, the
errcode and, for a refusal, the fix. ``doctor`` sends nothing: per channel it reports what
waits in the queue and, when the daemon's ``/readyz`` answers, the refusal it reports.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from monitor.alerts.notify.delivery import ChannelWorker
from monitor.alerts.notify.messages import probe_notification
from monitor.alerts.outbox import Outbox
from monitor.alerts.payloads import iso_time
from monitor.config import MonitorConfig
from monitor.redaction import redact, register_secrets

READYZ_TIMEOUT_S = 3.0
STALE_QUEUE_S = 300.0
"""doctor: a notification waiting longer than this means the channel is not delivering."""


class UnknownChannelError(Exception):
    """The configuration has no channel of that name."""


def find_channel(config: MonitorConfig, name: str) -> Any:
    """The ``[[notify]]`` table named ``name``.

    Raises:
        UnknownChannelError: names the channels there are.
    """
    for channel in config.notify:
        if channel.name == name:
            return channel
    known = ", ".join(channel.name for channel in config.notify) or "none configured"
    raise UnknownChannelError(f"no notify channel {name!r} (channels: {known})")


async def notify_test(config: MonitorConfig, name: str) -> tuple[bool, str]:
    """Send one test message on channel ``name``: (delivered, what the service answered)."""
    register_secrets(config.secret_values())
    channel = find_channel(config, name)
    worker = ChannelWorker(channel, Outbox(None))
    try:
        outcome = await worker.deliver(probe_notification(channel, iso_time(time.time())))
    finally:
        worker.outbox.close()
    line = f"notify {name} ({channel.type}): {outcome.kind}: {redact(outcome.detail)}"
    if outcome.fix:
        line += f"; fix: {outcome.fix}"
    return outcome.delivered, line


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    """``doctor``'s verdict on one channel."""

    name: str
    ok: bool
    detail: str


def queue_state(path: Any, now: float) -> tuple[int, float | None]:
    """(notifications waiting, age of the oldest in seconds) of a channel's queue file."""
    if not path.exists():
        return 0, None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            count, oldest = db.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
        except sqlite3.Error:
            return 0, None
    return int(count), (now - float(oldest)) if oldest is not None else None


def daemon_reasons(config: MonitorConfig) -> list[str] | None:
    """The running daemon's ``/readyz`` reasons, or ``None`` when it does not answer."""
    telemetry = config.telemetry
    if not telemetry.enabled:
        return None
    host = "127.0.0.1" if telemetry.host in {"0.0.0.0", "::", ""} else telemetry.host  # noqa: S104
    url = f"http://{host}:{telemetry.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=READYZ_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503 while not ready: the body still says why
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        reasons = json.loads(body).get("reasons", [])
    except (ValueError, AttributeError):
        return None
    return [str(reason) for reason in reasons]


def check_channels(config: MonitorConfig) -> list[ChannelCheck]:
    """One check per enabled channel (blocking: run it in a thread)."""
    channels = [channel for channel in config.notify if channel.enabled]
    if not channels:
        return []
    reasons = daemon_reasons(config)
    now = time.time()
    checks = []
    for channel in channels:
        name = channel.name
        depth, oldest = queue_state(config.state_dir / "notify" / f"{name}.sqlite3", now)
        reported = [r for r in reasons or [] if r.startswith(f"notify {name}:")]
        if reported:
            checks.append(ChannelCheck(name, ok=False, detail=redact(reported[0])))
        elif oldest is not None and oldest > STALE_QUEUE_S:
            checks.append(ChannelCheck(name, ok=False, detail=(
                f"{depth} notification(s) waiting, the oldest for {oldest:.0f} s; the daemon "
                f"is not delivering (run `monitor notify-test {name}`)")))
        else:
            daemon = "the daemon reports no problem" if reasons is not None else \
                "daemon not reachable on /readyz"
            checks.append(ChannelCheck(name, ok=True, detail=(
                f"{channel.type}, {depth} waiting; {daemon} (`monitor notify-test {name}` "
                f"sends a test message)")))
    return checks
