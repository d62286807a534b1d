"""The durable outbox (SQLite): order, acknowledgement, bounds, coalescing, crash safety."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, cast

import pytest

from monitor.alerts.outbox import OpenAlert, Outbox, OutboxError, Outgoing
from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import HazardTracker, TrackerSettings
from monitor.config import MqttConfig
from monitor.ingest.source import StreamStatus
from monitor.model.answer import Answer, Hazard
from monitor.service.supervisor import status_payload
from tests.conftest import ROOT


def event(index: int) -> Outgoing:
    return Outgoing("monitor/events", f"event {index}".encode(), 1, retain=False)


def state(value: str, topic: str = "monitor/cam/fire") -> Outgoing:
    return Outgoing(topic, value.encode(), 1, retain=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_in_order_until_acknowledged_and_kept_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    outbox = Outbox(path)
    for index in range(5):
        outbox.put([event(index)])
    head = outbox.head(3)
    assert [m.payload for m in head] == [b"event 0", b"event 1", b"event 2"]
    outbox.ack(head[0].seq)
    outbox.close()
    reopened = Outbox(path)
    assert reopened.depth == 4
    assert [m.payload for m in reopened.head()] == [f"event {i}".encode() for i in range(1, 5)]
    assert reopened.size_bytes == 4 * len(b"event 1")


def test_retained_state_is_coalesced(tmp_path: Path) -> None:
    outbox = Outbox(None)
    outbox.put([event(0), state("ON")])
    outbox.put([event(1), state("OFF")])
    assert [(m.topic, m.payload) for m in outbox.head()] == [
        ("monitor/events", b"event 0"), ("monitor/events", b"event 1"),
        ("monitor/cam/fire", b"OFF")]
    assert outbox.depth == 3


def test_count_bound_drops_oldest_events_first_counted_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(None, max_messages=10)
    outbox.put([state("ON")])
    with caplog.at_level(logging.ERROR, logger="monitor.alerts.outbox"):
        for index in range(20):
            outbox.put([event(index)])
    assert outbox.depth == 10
    assert outbox.dropped == 11
    payloads = [m.payload for m in outbox.head()]
    assert payloads[0] == b"ON"  # state survives; the oldest events went
    assert payloads[1:] == [f"event {i}".encode() for i in range(11, 20)]
    assert "outbox full" in caplog.text
    assert "the broker unreachable?" in caplog.text
    assert len(caplog.records) == 1  # logged once, not per message


def test_a_notification_channels_queue_names_its_channel_when_full(
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(None, max_messages=2, peer="channel pager")
    with caplog.at_level(logging.ERROR, logger="monitor.alerts.outbox"):
        for index in range(4):
            outbox.put([event(index)])
    assert "channel pager unreachable?" in caplog.text
    assert "broker" not in caplog.text


def test_byte_bound(tmp_path: Path) -> None:
    outbox = Outbox(None, max_bytes=2000)
    for _ in range(10):
        outbox.put([Outgoing("t", b"x" * 500, 1, retain=False)])
    assert outbox.size_bytes <= 2000
    assert outbox.depth == 4
    assert outbox.dropped == 6


def test_age_bound_spares_retained_state(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outbox = Outbox(None, max_age_s=60, clock=clock)
    outbox.put([event(0), state("ON")])
    clock.now += 30
    outbox.put([event(1)])
    clock.now += 40
    with caplog.at_level(logging.ERROR, logger="monitor.alerts.outbox"):
        assert [m.payload for m in outbox.head()] == [b"ON", b"event 1"]
    assert outbox.expired == 1
    assert "older than 60 s" in caplog.text


def test_open_alerts_and_owned_topics(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.put([event(0), state("ON")], open_alert=OpenAlert("e1", "cam", "fire", "{}"),
               owner=("cam", "fire"))
    outbox.put([state("{}", "monitor/cam/status")], owner=("cam", None))
    outbox.close()
    outbox = Outbox(path)
    assert outbox.open_alerts() == [OpenAlert("e1", "cam", "fire", "{}")]
    assert outbox.owned_topics() == [("monitor/cam/fire", "cam", "fire"),
                                     ("monitor/cam/status", "cam", None)]
    outbox.put([event(1), state("OFF")], close_alert="e1")
    assert outbox.open_alerts() == []
    outbox.disown(["monitor/cam/status"])
    assert [t for t, _, _ in outbox.owned_topics()] == ["monitor/cam/fire"]


def test_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutboxError, match=r"file/sub/outbox.sqlite3: cannot open"):
        Outbox(blocker / "sub" / "outbox.sqlite3")


def test_committed_messages_survive_sigkill(tmp_path: Path) -> None:
    """A process killed right after put() returned loses nothing."""
    path = tmp_path / "outbox.sqlite3"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from monitor.alerts.outbox import Outbox, Outgoing\n"
        f"outbox = Outbox(Path({str(path)!r}))\n"
        "for i in range(200):\n"
        "    outbox.put([Outgoing('monitor/events', str(i).encode(), 1, False)])\n"
        "print('stored', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"stored\n"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    outbox = Outbox(path)
    assert [int(m.payload) for m in outbox.head(500)] == list(range(200))


def test_one_state_directory_serves_one_process(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path)
    # A second daemon on the same state_dir (here: a second opener) is refused by name.
    with pytest.raises(OutboxError, match=rf"in use by another monitor process \(pid "
                                          rf"{os.getpid()}\); each daemon needs a state_dir"):
        Outbox(path)
    first.close()
    second = Outbox(path)  # released on close (and by the kernel when a process dies)
    second.close()


class SyncAtCommit:
    """The ``synchronous`` level each COMMIT of a real connection ran under, from its trace.

    SQLite applies the level in effect when a transaction commits, and the connection's level
    changes only by ``PRAGMA synchronous=...``; folding the statements traced on the real
    connection, from the level read from it at the start, gives each commit's level.
    """

    LEVELS: ClassVar[dict[str, int]] = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

    def __init__(self, db: sqlite3.Connection) -> None:
        self.level = int(db.execute("PRAGMA synchronous").fetchone()[0])
        self.commits: list[int] = []
        db.set_trace_callback(self._traced)

    def _traced(self, statement: str) -> None:
        text = statement.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS="):
            value = text.split("=", 1)[1].strip()
            self.level = self.LEVELS[value] if value in self.LEVELS else int(value)
        elif text == "COMMIT":
            self.commits.append(self.level)

    def take(self) -> list[int]:
        commits, self.commits = self.commits, []
        return commits


FULL, NORMAL = 2, 1


def test_events_commit_with_fsync_and_state_without(tmp_path: Path) -> None:
    """An event (or alert bookkeeping) is fsynced at commit; retained state and acks are not,
    and the connection is back at NORMAL after every transaction."""
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    db = outbox._db
    trace = SyncAtCommit(db)
    assert trace.level == NORMAL

    outbox.put([state("ON")])
    assert trace.take() == [NORMAL]
    outbox.put([event(0)])
    assert trace.take() == [FULL]
    outbox.put([event(1), state("ON")], open_alert=OpenAlert("e1", "cam", "fire", "{}"),
               owner=("cam", "fire"))
    assert trace.take() == [FULL]
    outbox.put([state("OFF")], close_alert="e1")  # the alert bookkeeping alone is durable
    assert trace.take() == [FULL]
    outbox.put([state("{}", "monitor/cam/status")], owner=("cam", None))
    assert trace.take() == [NORMAL]
    stored = outbox.head()  # its expiry check is a transaction too
    for message in stored:
        outbox.ack(message.seq)
    assert trace.take() == [NORMAL] * (1 + len(stored))  # no fsync: a lost ack means a resend
    db.set_trace_callback(None)
    assert db.execute("PRAGMA synchronous").fetchone()[0] == NORMAL


def test_failed_event_write_leaves_the_connection_at_normal(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    broken = Outgoing("monitor/events", b"x", cast("int", None), retain=False)  # NOT NULL qos
    with pytest.raises(OutboxError, match="cannot write"):
        outbox.put([event(0), broken])
    assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == NORMAL
    assert outbox.depth == 0  # rolled back, counters too
    trace = SyncAtCommit(outbox._db)
    outbox.put([state("ON")])
    assert trace.take() == [NORMAL]


def test_publisher_events_are_durable_and_its_state_is_not(tmp_path: Path) -> None:
    """What :class:`MqttPublisher` stores: an alert event durably, status and verdicts not."""
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=1, client_id="monitor-sync"),
                              Outbox(tmp_path / "outbox.sqlite3"))
    trace = SyncAtCommit(publisher.outbox._db)
    tracker = HazardTracker("cam", [Hazard.FIRE], TrackerSettings(confirm_frames=1,
                                                                  clear_frames=1))
    fire = Answer.model_validate({"fire": {"answer": "yes"}, "smoke": {"answer": "no"},
                                        "helmet": {"status": "all_worn"}})
    (start,) = tracker.update(fire, 1_700_000_000.0)
    publisher.publish_event(start)
    assert trace.take() == [FULL]
    publisher.publish_status(status_payload(StreamStatus("cam", "rtsp://cam/", online=True),
                                            1_700_000_001.0))
    publisher.set_hazard_state("cam", Hazard.SMOKE, on=False)
    assert trace.take() == [NORMAL, NORMAL]
