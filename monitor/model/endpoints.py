"""The pool of model servers: least-in-flight routing, fair waiting, circuit breakers.

* Every endpoint has a capacity (its ``max_concurrency``, to match vLLM's ``--max-num-seqs``)
  and a ``headroom``: that many requests more may be in flight, which the server queues, so a
  place that frees in its batch is taken at once by a request already there instead of idling
  while the next camera's frame is encoded and sent (``vlm.queue_headroom``). A request takes
  a slot on the endpoint with the fewest requests in flight among those with a free slot and
  a closed breaker.
* When no slot is free, requests wait in one queue; a freed slot goes to the waiting request
  :func:`monitor.model.priority.next_waiter` picks: alerting cameras first, then overdue ones,
  then by the camera's ``priority``, then the camera analysed least recently (so when the GPUs
  are the bottleneck equal cameras are each analysed equally less often); with
  ``prioritise=False``, first come, first served.
* :class:`CircuitBreaker` (pure: takes ``now``, returns decisions) takes an endpoint out after
  ``threshold`` consecutive failures; the pool then probes its ``GET /v1/models`` with jittered,
  doubling delays until it answers, and puts it back.
* All endpoints out: :meth:`EndpointPool.acquire` fails at once with the reason of each, so
  callers keep going (cameras keep being read) and no request piles up behind a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from monitor.backoff import backoff_s
from monitor.model.priority import ROUTINE_URGENCY, Urgency, next_waiter

logger = logging.getLogger(__name__)

PROBE_MAX_S = 60.0
"""Longest delay between two probes of an endpoint that is out of service."""


class NoEndpointError(Exception):
    """No endpoint can take a request: all are out of service, or none freed in time."""


@dataclass(slots=True)
class CircuitBreaker:
    """Closed (in service) or open (out of service, being probed). Pure: no clock, no I/O."""

    threshold: int
    probe_initial_s: float
    probe_max_s: float = PROBE_MAX_S
    open: bool = False
    consecutive_failures: int = 0
    opened_at: float | None = None
    last_failure: str | None = None
    failed_probes: int = 0

    def record_success(self) -> bool:
        """A request succeeded; True when this closes an open breaker."""
        self.consecutive_failures = 0
        return self._close()

    def record_failure(self, now: float, reason: str) -> bool:
        """A request failed (connection, timeout, 429, 5xx); True when the breaker opens."""
        self.consecutive_failures += 1
        self.last_failure = reason
        if not self.open and self.consecutive_failures >= self.threshold:
            self.open = True
            self.opened_at = now
            self.failed_probes = 0
            return True
        return False

    def probe_delay(self, rng: random.Random) -> float:
        """Seconds until the next probe: doubling from ``probe_initial_s``, capped, with full
        jitter (:mod:`monitor.backoff`) so several daemons do not probe a recovering server
        in step."""
        return backoff_s(self.failed_probes, rng, base_s=self.probe_initial_s,
                         cap_s=self.probe_max_s)

    def record_probe(self, *, ok: bool, reason: str | None = None) -> bool:
        """A probe answered (``ok``) or not; True when this closes the breaker."""
        if ok:
            self.consecutive_failures = 0
            return self._close()
        self.failed_probes += 1
        if reason:
            self.last_failure = reason
        return False

    def _close(self) -> bool:
        was_open = self.open
        self.open = False
        self.opened_at = None
        self.failed_probes = 0
        return was_open


@dataclass(eq=False, slots=True)
class Endpoint:
    """One server of the pool; ``client`` is whatever the caller talks to it with."""

    name: str
    """Label for logs and metrics: never contains credentials."""
    capacity: int
    """Requests the server serves at once (its batch: vLLM's ``--max-num-seqs``)."""
    breaker: CircuitBreaker
    headroom: int = 0
    """Requests in flight beyond ``capacity``: they wait in the server's queue."""
    in_flight: int = 0
    served: int = 0
    probe_task: asyncio.Task[None] | None = None

    @property
    def limit(self) -> int:
        """Requests that may be in flight on this endpoint: its capacity and its headroom."""
        return self.capacity + self.headroom

    def describe(self) -> str:
        """One status line: in service or why not."""
        if self.breaker.open:
            # No "for N s": cameras log their error when its text changes, so it stays put
            # for as long as the outage does.
            return (f"{self.name}: out of service after {self.breaker.threshold} consecutive "
                    f"failures (last: {self.breaker.last_failure}); probing GET /v1/models")
        return f"{self.name}: in service, {self.in_flight}/{self.limit_text} in flight"

    @property
    def limit_text(self) -> str:
        """The limit as status lines show it: ``8``, or ``8+1`` with headroom."""
        return f"{self.capacity}+{self.headroom}" if self.headroom else str(self.capacity)


Probe = Callable[[Endpoint], Awaitable[str | None]]


@dataclass(eq=False, slots=True)
class _Waiter:
    """A request waiting for a slot: its future, its urgency, its arrival number."""

    future: asyncio.Future[Endpoint]
    urgency: Urgency
    arrival: int
"""Asks an endpoint whether it answers: ``None`` when it does, else the reason it does not."""


@dataclass(eq=False)
class EndpointPool:
    """Slots on several endpoints, handed out fairly; see the module docstring."""

    endpoints: list[Endpoint]
    probe: Probe
    on_in_flight: Callable[[str, int], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    prioritise: bool = True
    """Hand freed slots out by urgency (:mod:`monitor.model.priority`); off: first come,
    first served."""
    _waiters: list[_Waiter] = field(default_factory=list)
    _arrivals: int = 0
    _closed: bool = False

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("the pool needs at least one endpoint")

    # -- slots --

    async def acquire(self, timeout_s: float, urgency: Urgency | None = None) -> Endpoint:
        """A slot on the best endpoint; wait up to ``timeout_s``, served in the order of
        ``urgency`` (see the module docstring; ``None``: a routine request).

        Raises:
            NoEndpointError: every endpoint is out of service (at once), or no slot freed
                within ``timeout_s``.
        """
        if self._closed:
            raise NoEndpointError("the model client is closed")
        if not self._waiters:
            endpoint = self._best()
            if endpoint is not None:
                self._take(endpoint)
                return endpoint
        self._raise_if_all_down()
        waiter: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        self._arrivals += 1
        entry = _Waiter(waiter, urgency or ROUTINE_URGENCY, self._arrivals)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                endpoint = await waiter
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # The slot was handed over just as this wait was cancelled: give it back.
                self.release(waiter.result())
            if isinstance(exc, TimeoutError):
                raise NoEndpointError(
                    f"no free slot on any endpoint within {timeout_s:g} s "
                    f"({self._slots_summary()})") from None
            raise
        return endpoint

    def release(self, endpoint: Endpoint) -> None:
        """Give a slot back (every :meth:`acquire` is paired with one release)."""
        endpoint.in_flight -= 1
        self._report(endpoint)
        self._dispatch()

    def _take(self, endpoint: Endpoint) -> None:
        endpoint.in_flight += 1
        endpoint.served += 1
        self._report(endpoint)

    def _report(self, endpoint: Endpoint) -> None:
        if self.on_in_flight is not None:
            self.on_in_flight(endpoint.name, endpoint.in_flight)

    def _best(self) -> Endpoint | None:
        """The in-service endpoint with a free slot and the fewest requests in flight (ties:
        the one with more room, then the one that served fewer, so load spreads evenly); one
        with a free place in its batch before any whose next request would wait in its queue
        (headroom), so a queue forms only once every batch is full."""
        candidates = [e for e in self.endpoints
                      if not e.breaker.open and e.in_flight < e.limit]
        if not candidates:
            return None
        return min(candidates,
                   key=lambda e: (e.in_flight >= e.capacity, e.in_flight,
                                  e.in_flight / e.capacity, e.served))

    def _dispatch(self) -> None:
        while self._waiters:
            endpoint = self._best()
            if endpoint is None:
                return
            waiter = self._pop_next().future
            if waiter.done():
                continue
            self._take(endpoint)
            waiter.set_result(endpoint)

    def _pop_next(self) -> _Waiter:
        """Remove and return the waiting request the next free slot goes to."""
        index = next_waiter([(w.urgency, w.arrival) for w in self._waiters], time.monotonic(),
                            prioritise=self.prioritise)
        return self._waiters.pop(index)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    @property
    def all_down(self) -> bool:
        """Every endpoint is out of service."""
        return all(e.breaker.open for e in self.endpoints)

    def _raise_if_all_down(self) -> None:
        if all(e.breaker.open for e in self.endpoints):
            raise NoEndpointError(self.down_reason())

    def down_reason(self) -> str:
        """Why no endpoint can take a request now."""
        lines = "; ".join(e.describe() for e in self.endpoints)
        count = len(self.endpoints)
        which = "the only model endpoint is" if count == 1 \
            else f"all {count} model endpoints are"
        return f"{which} out of service: {lines}"

    def _slots_summary(self) -> str:
        return ", ".join(f"{e.name} {e.in_flight}/{e.limit_text}"
                         + (" out of service" if e.breaker.open else "")
                         for e in self.endpoints)

    # -- health --

    def record_success(self, endpoint: Endpoint) -> None:
        """A request on ``endpoint`` got an answer from the server."""
        if endpoint.breaker.record_success():
            logger.info("model endpoint %s: answers again; back in service", endpoint.name)
            self._dispatch()

    def record_failure(self, endpoint: Endpoint, reason: str) -> None:
        """A request on ``endpoint`` failed in a way that says the server is unwell."""
        if endpoint.breaker.record_failure(time.monotonic(), reason):
            logger.warning("model endpoint %s: out of service after %d consecutive failures "
                           "(last: %s); probing GET /v1/models until it answers",
                           endpoint.name, endpoint.breaker.threshold, reason)
            self._start_probe(endpoint)
            if all(e.breaker.open for e in self.endpoints):
                # Nobody can serve the queue: fail it now rather than let it wait it out.
                reason_all = self.down_reason()
                while self._waiters:
                    waiter = self._waiters.pop(0).future
                    if not waiter.done():
                        waiter.set_exception(NoEndpointError(reason_all))

    def _start_probe(self, endpoint: Endpoint) -> None:
        if self._closed or (endpoint.probe_task is not None and not endpoint.probe_task.done()):
            return
        endpoint.probe_task = asyncio.get_running_loop().create_task(
            self._probe_until_up(endpoint), name=f"vlm.probe[{endpoint.name}]")

    async def _probe_until_up(self, endpoint: Endpoint) -> None:
        while endpoint.breaker.open and not self._closed:
            delay = endpoint.breaker.probe_delay(self.rng)
            logger.debug("model endpoint %s: next probe in %.1f s", endpoint.name, delay)
            await asyncio.sleep(delay)
            if not endpoint.breaker.open:
                return  # a request that was in flight succeeded meanwhile
            problem = await self.probe(endpoint)
            if endpoint.breaker.record_probe(ok=problem is None, reason=problem):
                logger.info("model endpoint %s: GET /v1/models answers; back in service",
                            endpoint.name)
                self._dispatch()

    def describe(self) -> list[str]:
        """One status line per endpoint."""
        return [e.describe() for e in self.endpoints]

    async def aclose(self) -> None:
        """Stop probing and fail whoever still waits for a slot."""
        self._closed = True
        probes = [e.probe_task for e in self.endpoints if e.probe_task is not None]
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._waiters:
            waiter = self._waiters.pop(0).future
            if not waiter.done():
                waiter.set_exception(NoEndpointError("the model client is closed"))
