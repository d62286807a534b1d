"""The one backoff rule: capped exponential ceilings, full jitter below them."""

from __future__ import annotations

import random
import statistics

from monitor.backoff import backoff_s, ceiling_s, full_jitter_s


def test_ceilings_grow_by_the_factor_up_to_the_cap() -> None:
    assert [ceiling_s(n, base_s=0.5, cap_s=8.0) for n in range(7)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [ceiling_s(n, base_s=1.0, cap_s=30.0, factor=1.5) for n in range(3)] == [
        1.0, 1.5, 2.25]
    assert ceiling_s(10_000, base_s=1.0, cap_s=30.0) == 30.0  # no overflow for long outages
    assert ceiling_s(-1, base_s=1.0, cap_s=30.0) == 1.0


def test_delays_are_spread_over_the_whole_range_below_the_ceiling() -> None:
    rng = random.Random(7)
    draws = [full_jitter_s(4.0, rng) for _ in range(4000)]
    assert min(draws) >= 0.0
    assert max(draws) <= 4.0
    # Full jitter, not "half to full": the lower half is used as often as the upper one.
    assert sum(1 for d in draws if d < 2.0) / len(draws) > 0.45
    assert 1.9 < statistics.fmean(draws) < 2.1
    assert full_jitter_s(0.0, rng) == 0.0


def test_backoff_is_jitter_under_the_ceiling_and_reproducible() -> None:
    delays = [backoff_s(n, random.Random(3), base_s=1.0, cap_s=30.0) for n in range(8)]
    assert delays == [backoff_s(n, random.Random(3), base_s=1.0, cap_s=30.0) for n in range(8)]
    for attempt, delay in enumerate(delays):
        assert 0.0 <= delay <= ceiling_s(attempt, base_s=1.0, cap_s=30.0)
