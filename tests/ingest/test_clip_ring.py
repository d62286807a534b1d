"""The evidence clips' packet ring and timing rules, pure: packets in, what is kept out.

Packets here are synthetic (bytes with a start code, 10 fps, a keyframe every 10 frames); the
real stream and the MP4 are tested in tests/service/test_clips.py.
"""

from __future__ import annotations

import pytest

from monitor.ingest.clips import (
    PACKET_OVERHEAD_BYTES,
    PacketRing,
    RingBudget,
    decoding_times,
    start_index,
    stream_offset,
)

FPS = 10
GOP = 10
FRAME = b"\x00\x00\x00\x01" + b"x" * 996  # 1000 bytes of Annex B
PACKET_BYTES = len(FRAME) + PACKET_OVERHEAD_BYTES


def feed(ring: PacketRing, seconds: float, *, start_frame: int = 0, arrival_offset: float = 100.0,
         frame: bytes = FRAME) -> None:
    """``seconds`` of video from frame ``start_frame``: pts = n / FPS, arriving at pts + offset."""
    for n in range(start_frame, start_frame + round(seconds * FPS)):
        pts = n / FPS
        ring.add(frame, n % GOP == 0, pts, None, pts + arrival_offset)


def ring(keep_s: float = 3.0, max_bytes: int = 10**9, budget: RingBudget | None = None,
         ) -> PacketRing:
    made = PacketRing("cam", keep_s=keep_s, max_bytes=max_bytes, budget=budget)
    made.reset("h264")
    return made


def test_keeps_whole_gops_covering_keep_s_and_no_more() -> None:
    packets = ring(keep_s=2.5)
    feed(packets, 10.0)
    taken = packets.take(since=0.0)
    assert taken is not None
    first = taken.packets[0]
    assert first.keyframe
    # Newest keyframe before 9.9 - 2.5 = 7.4 is at 7.0: 7.0 .. 9.9 is kept, nothing older.
    assert first.pts_s == pytest.approx(7.0)
    assert taken.packets[-1].pts_s == pytest.approx(9.9)
    assert packets.used_bytes == len(taken.packets) * PACKET_BYTES


def test_nothing_before_the_first_keyframe() -> None:
    packets = ring()
    feed(packets, 1.5, start_frame=5)  # frames 5..19: the keyframe at frame 10
    taken = packets.take(since=0.0)
    assert taken is not None
    assert taken.packets[0].pts_s == pytest.approx(1.0)
    assert len(taken.packets) == 10


def test_byte_cap_drops_oldest_gops_and_a_gop_too_big_waits_for_the_next_keyframe() -> None:
    packets = ring(keep_s=60, max_bytes=25 * PACKET_BYTES)
    feed(packets, 5.0)
    assert packets.used_bytes <= 25 * PACKET_BYTES
    taken = packets.take(since=0.0)
    assert taken is not None
    assert taken.packets[0].keyframe
    assert taken.packets[0].pts_s == pytest.approx(3.0)  # 2 whole GOPs + nothing partial
    small = ring(keep_s=60, max_bytes=5 * PACKET_BYTES)
    feed(small, 2.0)
    assert small.overflows >= 1
    assert small.used_bytes <= 5 * PACKET_BYTES
    partial = small.take(since=0.0)
    assert partial is None or partial.packets[0].keyframe


def test_total_budget_is_shared_and_the_growing_ring_gives_way() -> None:
    budget = RingBudget(35 * PACKET_BYTES)
    first, second = ring(keep_s=60, budget=budget), ring(keep_s=60, budget=budget)
    feed(first, 3.0)
    feed(second, 3.0)
    assert budget.used == first.used_bytes + second.used_bytes
    assert budget.used <= 35 * PACKET_BYTES + GOP * PACKET_BYTES  # over by at most a GOP
    assert second.used_bytes >= GOP * PACKET_BYTES  # its newest GOP is never given up
    first.reset("none")
    assert budget.used == second.used_bytes


def test_reset_forgets_the_connection_and_refuses_codecs_it_cannot_cut() -> None:
    packets = ring()
    feed(packets, 2.0)
    packets.reset("mjpeg")
    feed(packets, 2.0)
    assert packets.used_bytes == 0
    assert packets.take(since=0.0) is None
    assert packets.refused is not None
    assert "mjpeg" in packets.refused


def test_length_prefixed_packets_are_refused() -> None:
    packets = ring()
    feed(packets, 2.0, frame=b"\x00\x00\x03\xe8" + b"x" * 1000)  # AVCC, as in an MP4 file
    assert packets.used_bytes == 0
    assert packets.refused is not None
    assert "Annex B" in packets.refused


def test_take_from_a_moment_and_continue_after_it() -> None:
    packets = ring(keep_s=5.0)
    feed(packets, 6.0, arrival_offset=100.0)
    # Monotonic 104.5 is stream time 4.5: the keyframe at or before it is 4.0.
    head = packets.take(since=104.5)
    assert head is not None
    assert head.packets[0].pts_s == pytest.approx(4.0)
    feed(packets, 1.0, start_frame=60)
    tail = packets.take(since=0.0, after=head.packets[-1].sequence)
    assert tail is not None
    assert tail.packets[0].sequence == head.packets[-1].sequence + 1
    assert tail.packets[0].pts_s == pytest.approx(6.0)
    # A reconnect in between: the continuation is not the same stream.
    packets.reset("h264")
    feed(packets, 1.0)
    assert packets.take(since=0.0, after=tail.packets[-1].sequence) is None


def test_stream_offset_takes_the_least_delayed_arrival() -> None:
    packets = ring()
    for n, delay in enumerate((0.9, 0.5, 0.2, 0.7)):  # batched reads deliver late
        packets.add(FRAME, n == 0, n / FPS, None, 50.0 + n / FPS + delay)
    taken = packets.take(since=0.0)
    assert taken is not None
    assert stream_offset(taken.packets) == pytest.approx(50.2)
    assert start_index(taken.packets, since=0.0, offset=50.2) == 0


def test_decoding_times_without_and_with_reordering() -> None:
    assert decoding_times([0.0, 0.1, 0.2]) == [0.0, 0.1, 0.2]
    # I P B B in decoding order, shown I B B P.
    dts = decoding_times([0.0, 0.3, 0.1, 0.2])
    assert dts == sorted(dts)
    assert all(d <= p for d, p in zip(dts, [0.0, 0.3, 0.1, 0.2], strict=True))


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_s"):
        PacketRing("cam", keep_s=0, max_bytes=1)
    with pytest.raises(ValueError, match="max_bytes"):
        PacketRing("cam", keep_s=1, max_bytes=0)
    with pytest.raises(ValueError, match="total clip memory"):
        RingBudget(0)
