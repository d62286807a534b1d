"""The durable outbox between the tracker and the broker: SQLite in WAL mode.

Every MQTT message is written here *before* it is published and deleted only after the broker
acknowledged it (PUBACK at QoS 1), so a broker outage or a killed daemon delays messages but
does not lose them; the publisher sends them in insertion order after (re)connecting. Delivery
is at-least-once: a message acknowledged by the broker but not yet deleted when the process died
goes out again, and subscribers de-duplicate with the event id.

Bounds (every buffer has one): ``max_messages`` and ``max_bytes`` drop the oldest messages past
the cap, ``max_age_s`` drops messages that waited too long; each drop is counted and logged.
Retained messages (state) are coalesced instead: a new retained message replaces a pending one
for the same topic, since only the latest state matters, so they are never dropped for age.

The database also remembers what outlives a process: the alerts that are raised (so a restarted
daemon can end them instead of leaving them open forever) and the retained topics the daemon
owns (so the topics of a camera removed from the configuration can be cleared).

Durability: every committed transaction survives a crash or SIGKILL of the process (WAL). What
an OS crash or a power cut may take depends on what was stored, and power cuts are what fires
cause. A transaction that stores an *event* (a message that is not retained) or changes the
raised alerts commits with ``synchronous=FULL``: SQLite fsyncs the WAL before ``put`` returns,
so the alert (and the ``ON``/``OFF`` stored with it) is on the disk once the pipeline has
handed it over. Retained state stored on its own (status, verdicts, snapshots, discovery:
many a minute) and acknowledgements commit with
``synchronous=NORMAL``, without fsync: a power cut may lose the last few of them, which costs a
re-sent message or a state value that the next one replaces (the WAL fsync of the next event,
or of a checkpoint, makes everything before it durable too).

Writes run on the event loop. A NORMAL commit takes tens of microseconds; a FULL one adds an
fdatasync of the WAL: ``bench/outbox.py`` measured 0.23 ms median and 0.62 ms p99 per event
store (44 µs for a state message) on ext4 on a virtual disk, and 1-2 ms median while that disk
was busy with other writes; slow flash can take far longer. That stays on the loop on purpose:
events are rare (an alert's start, changes of its count, its end), and moving the write off
the loop would let ``put`` return before the event is on the disk, which is the guarantee this
is for. A slow disk shows up as ``monitor_event_loop_lag_max_seconds`` on ``/metrics``.

Exceptions::

    Exception
    └── OutboxError  (the database cannot be opened or written: path and reason)
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS open_alerts (
    event_id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    hazard TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS owned_topics (
    topic TEXT PRIMARY KEY,
    camera TEXT,
    hazard TEXT
);
"""


class OutboxError(Exception):
    """The outbox database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to store: where, what, how."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Stored:
    """A message in the outbox, in send order (``seq``)."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert that was raised and has not ended yet (its latest event payload, JSON)."""

    event_id: str
    camera: str
    hazard: str
    payload: str


class Outbox:
    """The on-disk queue; ``path=None`` keeps it in memory (tests, one-off tools)."""

    def __init__(self, path: Path | None, *, max_messages: int = 10_000,
                 max_bytes: int = 256 * 1024 * 1024, max_age_s: float = 7 * 86400,
                 clock: Callable[[], float] = time.time, peer: str = "the broker") -> None:
        self.path = path
        self.peer = peer
        """Where the messages go, as the log lines name it (a notification channel's queue
        says ``channel <name>``)."""
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self.dropped = 0
        """Messages dropped past ``max_messages``/``max_bytes`` (this process)."""
        self.expired = 0
        """Messages dropped past ``max_age_s`` (this process)."""
        where = ":memory:" if path is None else str(path)
        self._lock: int | None = None
        """File descriptor of ``<outbox>.lock`` (a bare descriptor: leaked, it only lasts
        as long as the process, as the lock should)."""
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._lock = _lock_exclusively(path)
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE) so a
            # message and the alert bookkeeping that goes with it commit together.
            # check_same_thread=False: the daemon is built on the main thread and used on the
            # loop thread; only one thread uses it at a time.
            self._db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._count, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        except (OSError, sqlite3.Error) as exc:
            if self._lock is not None:
                os.close(self._lock)
            raise OutboxError(f"outbox {where}: cannot open: {exc}") from exc
        if self._count:
            logger.info("outbox %s: %d message(s) from a previous run waiting for %s",
                        where, self._count, peer)

    @property
    def depth(self) -> int:
        """Messages waiting for the broker."""
        return int(self._count)

    @property
    def size_bytes(self) -> int:
        """Payload bytes waiting for the broker."""
        return int(self._bytes)

    def put(self, messages: Sequence[Outgoing], *, open_alert: OpenAlert | None = None,
            close_alert: str | None = None, owner: tuple[str, str | None] | None = None,
            ) -> None:
        """Store ``messages`` (and the alert bookkeeping) in one transaction.

        ``owner`` = (camera, hazard or None) records the retained topics as owned by that
        camera/hazard so they can be cleared when it leaves the configuration. A transaction
        with an event (a message that is not retained) or alert bookkeeping is fsynced before
        this returns (see "Durability" in the module docstring).
        """
        durable = (open_alert is not None or close_alert is not None
                   or any(not message.retain for message in messages))
        try:
            with self._transaction(durable=durable):
                for message in messages:
                    self._insert(message, owner)
                if open_alert is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO open_alerts VALUES (?, ?, ?, ?)",
                        (open_alert.event_id, open_alert.camera, open_alert.hazard,
                         open_alert.payload))
                if close_alert is not None:
                    self._db.execute("DELETE FROM open_alerts WHERE event_id = ?",
                                     (close_alert,))
                self._enforce_bounds()
        except sqlite3.Error as exc:
            self._recount()  # the transaction was rolled back: so are our counters
            raise OutboxError(f"outbox {self.path or ':memory:'}: cannot write: {exc}") from exc

    def _recount(self) -> None:
        try:
            self._count, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        except sqlite3.Error:
            logger.exception("outbox %s: cannot count the stored messages", self.path)

    def _insert(self, message: Outgoing, owner: tuple[str, str | None] | None) -> None:
        if message.retain:
            # Only the latest state of a topic matters: replace a pending one.
            for (size,) in self._db.execute(
                    "DELETE FROM outbox WHERE topic = ? AND retain = 1 RETURNING LENGTH(payload)",
                    (message.topic,)).fetchall():
                self._count -= 1
                self._bytes -= size
            if owner is not None:
                self._db.execute("INSERT OR REPLACE INTO owned_topics VALUES (?, ?, ?)",
                                 (message.topic, owner[0], owner[1]))
        self._db.execute(
            "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
            (message.topic, message.payload, message.qos, int(message.retain), self._clock()))
        self._count += 1
        self._bytes += len(message.payload)

    def _enforce_bounds(self) -> None:
        dropped = 0
        while self._count > self.max_messages or (self._bytes > self.max_bytes
                                                  and self._count > 1):
            # Oldest first, events before retained state (state is coalesced, so it is small,
            # and dropping it would leave a stale value on the broker).
            row = self._db.execute(
                "SELECT seq, topic, LENGTH(payload) FROM outbox "
                "ORDER BY retain, seq LIMIT 1").fetchone()
            if row is None:
                break
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
            self._count -= 1
            self._bytes -= row[2]
            dropped += 1
            last_topic = row[1]
        if dropped:
            before = self.dropped
            self.dropped += dropped
            if before == 0 or before // 100 != self.dropped // 100:
                logger.error("outbox full (%d messages, %d bytes max; %s unreachable?): "
                             "dropped the oldest (%s); %d dropped so far", self.max_messages,
                             self.max_bytes, self.peer, last_topic, self.dropped)

    def _expire(self) -> None:
        cutoff = self._clock() - self.max_age_s
        with self._transaction():
            rows = self._db.execute(
                "DELETE FROM outbox WHERE retain = 0 AND created_at < ? "
                "RETURNING LENGTH(payload)", (cutoff,)).fetchall()
        if rows:
            self._count -= len(rows)
            self._bytes -= sum(size for (size,) in rows)
            self.expired += len(rows)
            logger.error("outbox: dropped %d message(s) older than %.0f s (%s unreachable "
                         "that long?); %d expired so far", len(rows), self.max_age_s,
                         self.peer, self.expired)

    def head(self, limit: int = 100) -> list[Stored]:
        """The oldest ``limit`` messages, in send order (expired ones dropped first)."""
        try:
            self._expire()
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, created_at FROM outbox "
                "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path or ':memory:'}: cannot read: {exc}") from exc
        return [Stored(seq, topic, bytes(payload), qos, bool(retain), created)
                for seq, topic, payload, qos, retain, created in rows]

    def ack(self, seq: int) -> None:
        """The broker has the message: delete it (no-op if a newer state replaced it)."""
        try:
            with self._transaction():
                rows = self._db.execute("DELETE FROM outbox WHERE seq = ? "
                                        "RETURNING LENGTH(payload)", (seq,)).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path or ':memory:'}: cannot write: {exc}") from exc
        for (size,) in rows:
            self._count -= 1
            self._bytes -= size

    def pending_retained_topics(self) -> set[str]:
        """Topics with a retained message waiting to be sent."""
        rows = self._db.execute("SELECT DISTINCT topic FROM outbox WHERE retain = 1")
        return {str(topic) for (topic,) in rows.fetchall()}

    def open_alerts(self) -> list[OpenAlert]:
        """The alerts raised and not ended, oldest first."""
        rows = self._db.execute(
            "SELECT event_id, camera, hazard, payload FROM open_alerts ORDER BY rowid")
        return [OpenAlert(*row) for row in rows.fetchall()]

    def owned_topics(self) -> list[tuple[str, str | None, str | None]]:
        """(topic, camera, hazard) of every retained topic this daemon published."""
        rows = self._db.execute("SELECT topic, camera, hazard FROM owned_topics ORDER BY topic")
        return [(str(topic), camera, hazard) for topic, camera, hazard in rows.fetchall()]

    def disown(self, topics: Iterable[str]) -> None:
        """Forget topics once they were cleared."""
        with self._transaction():
            self._db.executemany("DELETE FROM owned_topics WHERE topic = ?",
                                 [(topic,) for topic in topics])

    def close(self) -> None:
        """Close the database (what it holds stays on disk) and let another process have it."""
        self._db.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    def _transaction(self, *, durable: bool = False) -> _Transaction:
        return _Transaction(self._db, durable=durable)


def _lock_exclusively(path: Path) -> int:
    """Take ``<outbox>.lock`` for this process, or raise :class:`OutboxError` naming the
    process that holds it: two daemons on one state directory would send each other's
    messages and end each other's alerts. The kernel drops the lock when the process dies,
    so a crash leaves nothing to clean up."""
    lock_path = path.with_name(path.name + ".lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
        os.close(descriptor)
        holder = f" (pid {owner})" if owner.isdigit() else ""
        raise OutboxError(
            f"outbox {path}: in use by another monitor process{holder}; each daemon needs a "
            f"state_dir of its own") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return descriptor


class _Transaction:
    """``with``: BEGIN IMMEDIATE … COMMIT, or ROLLBACK on an exception.

    ``durable``: the commit fsyncs the WAL (``synchronous=FULL`` for this transaction only;
    the connection's level is a per-connection setting that applies at commit, so it is set
    before BEGIN and put back to NORMAL after COMMIT or ROLLBACK).
    """

    def __init__(self, db: sqlite3.Connection, *, durable: bool = False) -> None:
        self._db = db
        self._durable = durable

    def __enter__(self) -> None:
        if self._durable:
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._relax()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._relax()

    def _relax(self) -> None:
        if self._durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
