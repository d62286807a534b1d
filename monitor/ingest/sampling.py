"""When a camera's frame is analysed. Pure: takes ``now`` and the newest frame's number.

One frame per ``interval_s``: the newest one when the interval is due, and never the same frame
twice (a stalled stream yields no analyses rather than repeats of a stale picture). Ticks keep a
fixed cadence from the first sample; when analysis ran longer than an interval, the next sample
is due at once and the missed ticks are skipped, not queued.

Freshness: when frames come seldom (keyframe-only decoding: one per GOP) the newest frame can be
most of a GOP old when the tick is due. Given the newest frame's age and the expected gap between
frames, the sampler waits for the next frame instead when that one is nearer than the current is
old, takes it on arrival and moves its cadence onto the arrivals, so later ticks find a frame
that has just come in.

Confirm-now: after a positive verdict, :meth:`IntervalSampler.expedite` makes the next new
frame due ``min_gap_s`` after the previous sample instead of a whole interval later, so an
alert is confirmed (or dismissed) within about one model round trip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SampleDecision:
    """``take`` the newest frame now, or wait ``wait_s`` before asking again."""

    take: bool
    wait_s: float
    needs_frame: bool = False
    """Due, but the newest frame was already taken: wait for a new frame (at most ``wait_s``)."""


@dataclass(slots=True)
class IntervalSampler:
    """Samples one frame per ``interval_s``."""

    interval_s: float
    idle_poll_s: float = 0.05
    """How soon to look again when the interval is due but no new frame has arrived."""
    _next_due: float | None = None
    _last_sequence: int | None = None
    _last_taken_at: float | None = None
    _realign: bool = False

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    def decide(self, now: float, newest_sequence: int | None, *,
               newest_age_s: float | None = None,
               frame_gap_s: float | None = None) -> SampleDecision:
        """Whether to analyse the newest frame (numbered ``newest_sequence``) at ``now``.

        ``newest_age_s`` (how long ago that frame arrived) and ``frame_gap_s`` (how often
        frames arrive) are optional; with both, a stale frame is passed over for the next one
        when it is due sooner than half a gap from now (see the module docstring).
        """
        if self._next_due is not None and now < self._next_due:
            return SampleDecision(take=False, wait_s=self._next_due - now)
        wait = min(self.idle_poll_s, self.interval_s)
        if newest_sequence is None or newest_sequence == self._last_sequence:
            return SampleDecision(take=False, wait_s=wait, needs_frame=True)
        if newest_age_s is not None and frame_gap_s is not None \
                and frame_gap_s <= self.interval_s and newest_age_s > frame_gap_s / 2 \
                and newest_age_s < frame_gap_s \
                and (self._next_due is None or now - self._next_due < frame_gap_s / 2):
            # The next frame arrives within half a gap and will be fresh: wait for it.
            self._realign = True
            return SampleDecision(take=False, wait_s=wait, needs_frame=True)
        return SampleDecision(take=True, wait_s=0.0)

    def taken(self, now: float, sequence: int) -> None:
        """Record that frame ``sequence`` was taken at ``now``; schedules the next tick."""
        self._last_sequence = sequence
        self._last_taken_at = now
        if self._next_due is None or now - self._next_due >= self.interval_s or self._realign:
            # First sample, fell behind by a whole interval, or waited for a fresh frame:
            # restart the cadence from now.
            self._realign = False
            self._next_due = now + self.interval_s
        else:
            self._next_due += self.interval_s

    @property
    def next_due(self) -> float | None:
        """When the next sample is due (``None`` before the first)."""
        return self._next_due

    def expedite(self, min_gap_s: float) -> None:
        """Confirm-now: the next new frame is due ``min_gap_s`` after the last sample.

        The cadence restarts from that sample, so a confirmation does not add a burst of
        catch-up samples afterwards.
        """
        if min_gap_s < 0:
            raise ValueError(f"min_gap_s must not be negative, got {min_gap_s}")
        if self._last_taken_at is None:
            return
        due = self._last_taken_at + min_gap_s
        if self._next_due is None or due < self._next_due:
            self._next_due = due
