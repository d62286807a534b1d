"""The slot order under overload (pure: urgencies and ``now`` in, the chosen request out), and
the endpoint pool handing freed slots out in that order."""

from __future__ import annotations

import asyncio

import pytest

from monitor.model.endpoints import CircuitBreaker, Endpoint, EndpointPool
from monitor.model.priority import (
    ALERTING,
    OVERDUE,
    ROUTINE,
    Urgency,
    camera_urgency,
    next_waiter,
)


def quiet(last: float, *, priority: int = 0, overdue_at: float = 1e9) -> Urgency:
    return Urgency(priority=priority, last_verdict_at=last, overdue_at=overdue_at)


def test_an_alerting_camera_goes_before_any_quiet_one_whatever_their_priority() -> None:
    waiting = [(quiet(1.0, priority=100), 1), (quiet(0.5, priority=50), 2),
               (Urgency(alerting=True, last_verdict_at=9.0), 3)]
    assert next_waiter(waiting, now=10.0) == 2


def test_an_overdue_camera_goes_before_higher_priority_routine_ones() -> None:
    waiting = [(quiet(8.0, priority=100), 1), (quiet(1.0, overdue_at=9.0), 2)]
    assert next_waiter(waiting, now=10.0) == 1
    # Not yet overdue at 8.5: the priority decides.
    assert next_waiter(waiting, now=8.5) == 0


def test_a_camera_without_a_verdict_yet_counts_as_overdue() -> None:
    never = Urgency(priority=0)
    assert never.tier(0.0) == OVERDUE
    assert Urgency(alerting=True).tier(0.0) == ALERTING
    assert quiet(1.0).tier(2.0) == ROUTINE
    assert next_waiter([(quiet(1.0, priority=9), 1), (never, 2)], now=2.0) == 1


def test_among_equals_the_least_recently_analysed_goes_first_then_the_first_to_ask() -> None:
    waiting = [(quiet(5.0), 1), (quiet(3.0), 2), (quiet(4.0), 3)]
    assert next_waiter(waiting, now=6.0) == 1
    tied = [(quiet(3.0), 7), (quiet(3.0), 4)]
    assert next_waiter(tied, now=6.0) == 1


def test_without_prioritising_the_first_to_ask_goes_first() -> None:
    waiting = [(quiet(1.0), 5), (Urgency(alerting=True), 9), (quiet(0.0, priority=9), 6)]
    assert next_waiter(waiting, now=2.0, prioritise=False) == 0


def test_nobody_waiting_is_an_error() -> None:
    with pytest.raises(ValueError, match="no request is waiting"):
        next_waiter([], now=0.0)


def test_camera_urgency_turns_overdue_one_interval_before_max_verdict_age() -> None:
    urgency = camera_urgency(alerting=False, priority=3, last_verdict_at=100.0,
                             max_verdict_age_s=60.0, interval_s=2.0)
    assert urgency.overdue_at == 158.0
    assert urgency.tier(157.9) == ROUTINE
    assert urgency.tier(158.0) == OVERDUE
    # An interval longer than max_verdict_age_s: overdue at once after each verdict.
    short = camera_urgency(alerting=False, priority=0, last_verdict_at=100.0,
                           max_verdict_age_s=5.0, interval_s=10.0)
    assert short.overdue_at == 100.0


def changed(last: float, *, priority: int = 0) -> Urgency:
    return Urgency(priority=priority, last_verdict_at=last, overdue_at=1e9,
                   scene_changed=lambda: True)


def test_a_changed_scene_goes_before_unchanged_cameras_of_equal_priority() -> None:
    # Analysed most recently, yet its scene changed since: it goes first among equals.
    waiting = [(quiet(1.0), 1), (changed(5.0), 2), (quiet(2.0), 3)]
    assert next_waiter(waiting, now=6.0) == 1
    # Among changed ones, fairness again: the least recently analysed.
    both = [(changed(5.0), 1), (changed(3.0), 2), (quiet(1.0), 3)]
    assert next_waiter(both, now=6.0) == 1


def test_a_changed_scene_never_outranks_alerting_overdue_or_higher_priority_cameras() -> None:
    assert next_waiter([(changed(1.0), 1), (Urgency(alerting=True, last_verdict_at=9.0), 2)],
                       now=10.0) == 1
    assert next_waiter([(changed(1.0), 1), (quiet(8.0, overdue_at=9.0), 2)], now=10.0) == 1
    assert next_waiter([(changed(1.0), 1), (quiet(8.0, priority=1), 2)], now=10.0) == 1
    assert not quiet(1.0).changed()


def test_the_scene_change_is_read_when_the_slot_is_handed_out_not_when_asked() -> None:
    flag = {"changed": False}
    live = Urgency(last_verdict_at=5.0, overdue_at=1e9, scene_changed=lambda: flag["changed"])
    waiting = [(quiet(1.0), 1), (live, 2)]
    assert next_waiter(waiting, now=6.0) == 0
    flag["changed"] = True
    assert next_waiter(waiting, now=6.0) == 1
    # The probe is no part of equality (the pipeline's tests compare urgencies).
    assert live == Urgency(last_verdict_at=5.0, overdue_at=1e9)


async def _no_probe(endpoint: Endpoint) -> str | None:
    return None


def pool(*, prioritise: bool = True, headroom: int = 0) -> EndpointPool:
    endpoint = Endpoint(name="gpu", capacity=1, headroom=headroom,
                        breaker=CircuitBreaker(threshold=3, probe_initial_s=1.0))
    return EndpointPool([endpoint], probe=_no_probe, prioritise=prioritise)


async def served_order(the_pool: EndpointPool, urgencies: list[Urgency]) -> list[int]:
    """Hold every slot, queue one request per urgency, then free a slot repeatedly: the order
    in which the queued requests got it."""
    order: list[int] = []
    held = [await the_pool.acquire(1.0) for _ in range(the_pool.endpoints[0].limit)]

    async def ask(index: int, urgency: Urgency) -> None:
        endpoint = await the_pool.acquire(5.0, urgency)
        order.append(index)
        await asyncio.sleep(0)
        the_pool.release(endpoint)

    tasks = []
    for index, urgency in enumerate(urgencies):
        tasks.append(asyncio.create_task(ask(index, urgency)))
        await asyncio.sleep(0)  # arrive in list order
    assert the_pool.waiting == len(urgencies)
    the_pool.release(held[0])
    await asyncio.gather(*tasks)
    for endpoint in held[1:]:
        the_pool.release(endpoint)
    return order


@pytest.mark.asyncio
@pytest.mark.parametrize("headroom", [0, 2])
async def test_the_pool_hands_a_freed_slot_to_the_most_urgent_waiting_request(
        headroom: int) -> None:
    # The same order whether or not requests may queue on the server (vlm.queue_headroom).
    urgencies = [quiet(1.0), quiet(2.0, priority=5), Urgency(alerting=True, last_verdict_at=3.0),
                 quiet(0.5)]
    assert await served_order(pool(headroom=headroom), urgencies) == [2, 1, 3, 0]


@pytest.mark.asyncio
async def test_the_pool_serves_a_request_whose_scene_changed_while_it_waited_first() -> None:
    the_pool = pool()
    held = await the_pool.acquire(1.0)
    flag = {"changed": False}
    live = Urgency(last_verdict_at=9.0, overdue_at=1e9, scene_changed=lambda: flag["changed"])
    order: list[str] = []

    async def ask(name: str, urgency: Urgency) -> None:
        endpoint = await the_pool.acquire(5.0, urgency)
        order.append(name)
        await asyncio.sleep(0)
        the_pool.release(endpoint)

    tasks = [asyncio.create_task(ask("old", quiet(1.0))),
             asyncio.create_task(ask("fire", live))]
    await asyncio.sleep(0)
    assert the_pool.waiting == 2
    flag["changed"] = True  # the fire starts while both wait
    the_pool.release(held)
    await asyncio.gather(*tasks)
    assert order == ["fire", "old"]


@pytest.mark.asyncio
async def test_the_pool_without_priority_serves_in_arrival_order() -> None:
    urgencies = [quiet(1.0), quiet(2.0, priority=5), Urgency(alerting=True, last_verdict_at=3.0)]
    assert await served_order(pool(prioritise=False), urgencies) == [0, 1, 2]
