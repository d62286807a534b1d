"""One backoff rule for every retry in the process: capped exponential growth, full jitter.

Full jitter ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015): each delay is
drawn uniformly between 0 and the ceiling, which spreads the retries of many cameras (or
requests) that failed together far better than a fixed fraction of the ceiling, and costs no
more attempts on average. Callers that know more about the outage compute their own ceiling
(the camera reader keeps it short during the first minute of an outage) and draw the delay
with :func:`full_jitter_s`.

Pure: the random source is passed in, so tests seed it.
"""

from __future__ import annotations

import random

MAX_DOUBLINGS = 16
"""The exponent stops growing here (2**16 times the base: far beyond any cap in use)."""


def ceiling_s(attempt: int, *, base_s: float, cap_s: float, factor: float = 2.0) -> float:
    """The longest wait before retry number ``attempt`` (0 for the first retry):
    ``base_s * factor**attempt``, at most ``cap_s``."""
    return float(min(cap_s, base_s * factor ** min(max(attempt, 0), MAX_DOUBLINGS)))


def full_jitter_s(ceiling: float, rng: random.Random) -> float:
    """A delay drawn uniformly from ``[0, ceiling]``."""
    return rng.uniform(0.0, max(0.0, ceiling))


def backoff_s(attempt: int, rng: random.Random, *, base_s: float, cap_s: float,
              factor: float = 2.0) -> float:
    """The delay before retry number ``attempt``: full jitter under :func:`ceiling_s`."""
    return full_jitter_s(ceiling_s(attempt, base_s=base_s, cap_s=cap_s, factor=factor), rng)
