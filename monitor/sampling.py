"""When a camera's frame is analysed. Pure: takes ``now`` and the newest frame's number.

One frame per ``interval_s``: the newest one when the interval is due, and never the same frame
twice (a stalled stream yields no analyses rather than repeats of a stale picture). Ticks keep a
fixed cadence from the first sample; when analysis ran longer than an interval, the next sample
is due at once and the missed ticks are skipped, not queued.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SampleDecision:
    """``take`` the newest frame now, or wait ``wait_s`` before asking again."""

    take: bool
    wait_s: float


@dataclass(slots=True)
class IntervalSampler:
    """Samples one frame per ``interval_s``."""

    interval_s: float
    idle_poll_s: float = 0.05
    """How soon to look again when the interval is due but no new frame has arrived."""
    _next_due: float | None = None
    _last_sequence: int | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    def decide(self, now: float, newest_sequence: int | None) -> SampleDecision:
        """Whether to analyse the newest frame (numbered ``newest_sequence``) at ``now``."""
        if self._next_due is not None and now < self._next_due:
            return SampleDecision(take=False, wait_s=self._next_due - now)
        if newest_sequence is None or newest_sequence == self._last_sequence:
            return SampleDecision(take=False, wait_s=min(self.idle_poll_s, self.interval_s))
        return SampleDecision(take=True, wait_s=0.0)

    def taken(self, now: float, sequence: int) -> None:
        """Record that frame ``sequence`` was taken at ``now``; schedules the next tick."""
        self._last_sequence = sequence
        if self._next_due is None or now - self._next_due >= self.interval_s:
            # First sample, or we fell behind by a whole interval: restart the cadence.
            self._next_due = now + self.interval_s
        else:
            self._next_due += self.interval_s
