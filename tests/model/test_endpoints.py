"""The endpoint pool's decisions without HTTP: breaker states, routing, fair hand-over."""

from __future__ import annotations

import asyncio
import random

import pytest

from monitor.model.endpoints import CircuitBreaker, Endpoint, EndpointPool, NoEndpointError


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, probe_initial_s=1.0)
    assert not breaker.record_failure(0.0, "a")
    assert not breaker.record_failure(1.0, "b")
    assert not breaker.record_success()  # a success in between resets the count
    assert not breaker.record_failure(2.0, "c")
    assert not breaker.record_failure(3.0, "d")
    assert breaker.record_failure(4.0, "e")  # third in a row: opens
    assert breaker.open
    assert breaker.opened_at == 4.0
    assert breaker.last_failure == "e"
    assert not breaker.record_failure(5.0, "f")  # already open: no second "opened"


def test_breaker_probes_back_off_with_jitter_and_close_on_answer() -> None:
    breaker = CircuitBreaker(threshold=1, probe_initial_s=1.0, probe_max_s=8.0)
    breaker.record_failure(0.0, "down")
    rng = random.Random(1)
    delays = []
    for _ in range(6):
        delays.append(breaker.probe_delay(rng))
        assert not breaker.record_probe(ok=False, reason="still down")
    # Full jitter under a ceiling that doubles from 1 s up to the cap of 8 s.
    for delay, ceiling in zip(delays, (1.0, 2.0, 4.0, 8.0, 8.0, 8.0), strict=True):
        assert 0.0 <= delay <= ceiling
    assert max(delays[3:]) > 2.0  # the ceiling grew: later probes can wait longer
    assert breaker.record_probe(ok=True)
    assert not breaker.open
    assert breaker.failed_probes == 0


async def _never(endpoint: Endpoint) -> str | None:
    return "down"


def _pool(*capacities: int, threshold: int = 1) -> EndpointPool:
    endpoints = [Endpoint(name=f"e{i}", capacity=c,
                          breaker=CircuitBreaker(threshold=threshold, probe_initial_s=60))
                 for i, c in enumerate(capacities)]
    return EndpointPool(endpoints, probe=_never)


@pytest.mark.asyncio
async def test_least_in_flight_then_fifo_hand_over() -> None:
    pool = _pool(2, 1)
    first = await pool.acquire(1)
    second = await pool.acquire(1)
    third = await pool.acquire(1)
    assert {first.name, second.name} == {"e0", "e1"}
    assert third.name == "e0"  # the only one with room left
    waiters = [asyncio.create_task(pool.acquire(1)) for _ in range(3)]
    await asyncio.sleep(0)
    pool.release(second)
    pool.release(first)
    await asyncio.sleep(0)
    assert [w.done() for w in waiters] == [True, True, False]  # first come, first served
    assert {waiters[0].result().name, waiters[1].result().name} == {first.name, second.name}
    pool.release(third)
    assert (await waiters[2]).name == third.name
    await pool.aclose()


@pytest.mark.asyncio
async def test_wait_times_out_and_all_down_fails_at_once() -> None:
    pool = _pool(1)
    held = await pool.acquire(1)
    with pytest.raises(NoEndpointError, match="no free slot"):
        await pool.acquire(0.05)
    waiter = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0)
    pool.record_failure(held, "HTTP 503: overloaded")  # opens: the queue fails with it
    with pytest.raises(NoEndpointError, match="out of service"):
        await waiter
    with pytest.raises(NoEndpointError, match="HTTP 503: overloaded"):
        await pool.acquire(5)
    pool.release(held)
    assert held.in_flight == 0
    await pool.aclose()


@pytest.mark.asyncio
async def test_cancelled_waiter_gives_its_slot_back() -> None:
    pool = _pool(1)
    held = await pool.acquire(1)
    waiter = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0)
    pool.release(held)  # hands the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert held.in_flight == 0
    assert (await pool.acquire(1)) is held
    await pool.aclose()


def _headroom_pool(*specs: tuple[int, int]) -> EndpointPool:
    """A pool of endpoints given as (capacity, headroom)."""
    endpoints = [Endpoint(name=f"e{i}", capacity=capacity, headroom=headroom,
                          breaker=CircuitBreaker(threshold=1, probe_initial_s=60))
                 for i, (capacity, headroom) in enumerate(specs)]
    return EndpointPool(endpoints, probe=_never)


@pytest.mark.asyncio
async def test_headroom_lets_that_many_requests_more_in_flight_then_requests_wait() -> None:
    pool = _headroom_pool((2, 1))
    held = [await pool.acquire(1) for _ in range(3)]  # two in the batch, one queued there
    assert held[0].in_flight == 3
    assert pool.describe() == ["e0: in service, 3/2+1 in flight"]
    with pytest.raises(NoEndpointError, match=r"e0 3/2\+1"):
        await pool.acquire(0.05)
    pool.release(held[0])
    assert (await pool.acquire(1)) is held[0]
    await pool.aclose()


@pytest.mark.asyncio
async def test_a_free_place_in_a_batch_goes_before_a_place_in_a_queue() -> None:
    # e0 serves one at a time and may queue one more; e1 serves four. Fewest in flight alone
    # would queue the fourth request on e0 (1 in flight) while e1 (2) has room in its batch.
    pool = _headroom_pool((1, 1), (4, 0))
    names = [(await pool.acquire(1)).name for _ in range(6)]
    assert names == ["e0", "e1", "e1", "e1", "e1", "e0"]  # e0's queue once every batch is full
    await pool.aclose()
