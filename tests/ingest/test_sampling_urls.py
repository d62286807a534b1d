"""Interval sampling decisions (pure) and URL credential handling."""

from __future__ import annotations

import itertools
import random
from urllib.parse import urlsplit

import pytest

from monitor.ingest.decode import BACKOFF_CAP_S, backoff_ceiling_s, backoff_delay
from monitor.ingest.sampling import IntervalSampler
from monitor.ingest.urls import with_credentials
from monitor.redaction import redact


def test_samples_newest_frame_once_per_interval() -> None:
    sampler = IntervalSampler(interval_s=2.0)
    assert not sampler.decide(0.0, None).take  # no frame yet
    assert sampler.decide(0.0, 1).take
    sampler.taken(0.0, 1)
    decision = sampler.decide(0.5, 5)
    assert not decision.take
    assert decision.wait_s == pytest.approx(1.5)
    assert sampler.decide(2.0, 9).take
    sampler.taken(2.0, 9)
    assert sampler.decide(4.0, 30).take


def test_never_the_same_frame_twice() -> None:
    sampler = IntervalSampler(interval_s=1.0)
    sampler.taken(0.0, 7)
    decision = sampler.decide(1.5, 7)  # stream stalled: frame 7 is still the newest
    assert not decision.take
    assert decision.wait_s <= 1.0


def test_falling_behind_skips_ticks_instead_of_bursting() -> None:
    sampler = IntervalSampler(interval_s=1.0)
    sampler.taken(0.0, 1)
    sampler.taken(5.0, 2)  # analysis took 5 s
    assert not sampler.decide(5.5, 3).take
    assert sampler.decide(6.0, 3).take


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        IntervalSampler(interval_s=0)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(attempt, 600.0, rng) for attempt in range(12)]
    # Full jitter (monitor.backoff): anywhere from 0 to the ceiling, which doubles to the cap.
    assert all(0.0 <= delay <= backoff_ceiling_s(attempt, 600.0)
               for attempt, delay in enumerate(delays))
    assert [backoff_ceiling_s(attempt, 600.0) for attempt in (0, 2, 11)] == \
        [1.0, 4.0, BACKOFF_CAP_S]
    # The draws use the whole range, half the ceiling on average.
    capped = [backoff_delay(30, 600.0, rng) for _ in range(2000)]
    assert min(capped) < BACKOFF_CAP_S / 10
    assert max(capped) > BACKOFF_CAP_S * 0.9
    assert abs(sum(capped) / len(capped) - BACKOFF_CAP_S / 2) < BACKOFF_CAP_S * 0.05


def test_backoff_stays_short_in_the_first_minute_of_an_outage_then_grows() -> None:
    # Attempts every 1, 2, 4 s and then at most every 4 s while the outage is under a
    # minute: a camera that answers again is read within 4 s (plus the connection's time).
    assert [backoff_ceiling_s(attempt, 0.0) for attempt in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert all(backoff_ceiling_s(attempt, outage) <= 4.0
               for attempt in range(40) for outage in (0.0, 15.0, 59.9))
    # A camera that stays dead: the cap doubles every 30 s after the first minute, to 30 s.
    late = [backoff_ceiling_s(30, outage) for outage in (60.0, 90.0, 120.0, 150.0, 3600.0)]
    assert late == [4.0, 8.0, 16.0, 30.0, 30.0]
    # Simulated: retries over an hour of outage, from the first failure.
    rng = random.Random(7)
    outage, attempt, tries = 0.0, 0, []
    while outage < 3600.0:
        tries.append(outage)
        outage += backoff_delay(attempt, outage, rng)
        attempt += 1
    gaps = [(earlier, later - earlier) for earlier, later in itertools.pairwise(tries)]
    assert max(gap for start, gap in gaps if start < 60.0) <= 4.0
    # Full jitter: half the 4 s ceiling on average, about 30 tries in the first minute.
    assert 20 <= sum(start < 60.0 for start in tries) <= 60
    # An hour in: tried about every 15 s on average (0-30 s each), not every few seconds.
    late = [gap for _start, gap in gaps[-40:]]
    assert BACKOFF_CAP_S / 3 <= sum(late) / len(late) <= BACKOFF_CAP_S * 2 / 3
    assert max(late) <= BACKOFF_CAP_S


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/ch1", "rtsp://admin:***@10.0.0.5:554/ch1"),
        ("rtsp://10.0.0.5/ch1", "rtsp://10.0.0.5/ch1"),
        ("rtsps://u:p%40ss@[fe80::1]:322/x?a=b", "rtsps://u:***@[fe80::1]:322/x?a=b"),
        ("/var/video/cam.mp4", "/var/video/cam.mp4"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_with_credentials_encodes_and_redacts() -> None:
    url = with_credentials("rtsp://10.0.0.5:554/ch1", "ad min", "p@ss:word/1")
    assert url == "rtsp://ad%20min:p%40ss%3Aword%2F1@10.0.0.5:554/ch1"
    assert urlsplit(url).password == "p%40ss%3Aword%2F1"
    assert "p%40ss" not in redact(url)
    assert with_credentials("rtsp://h/x", None, "pw") == "rtsp://h/x"
