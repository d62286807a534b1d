"""The durable outbox (SQLite): order, acknowledgement, bounds, coalescing, crash safety."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.outbox import OpenAlert, Outbox, OutboxError, Outgoing
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
    with caplog.at_level(logging.ERROR, logger="monitor.outbox"):
        for index in range(20):
            outbox.put([event(index)])
    assert outbox.depth == 10
    assert outbox.dropped == 11
    payloads = [m.payload for m in outbox.head()]
    assert payloads[0] == b"ON"  # state survives; the oldest events went
    assert payloads[1:] == [f"event {i}".encode() for i in range(11, 20)]
    assert "outbox full" in caplog.text
    assert len(caplog.records) == 1  # logged once, not per message


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
    with caplog.at_level(logging.ERROR, logger="monitor.outbox"):
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
        "from monitor.outbox import Outbox, Outgoing\n"
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
