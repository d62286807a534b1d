"""Keyframe decoders shared between cameras: the parameter-set key, the pool's rules, and real
H.264 keyframes of two cameras decoded in turn."""

from __future__ import annotations

import fractions
import threading
from typing import Any

import av
import av.error
import numpy as np
import pytest

from monitor.ingest.decoders import (
    KeyframeDecoderPool,
    annex_b_decoder,
    h264_parameter_sets,
    shared_decoders_per_key,
)

SPS = b"\x67\x64\x00\x28\xac"
PPS = b"\x68\xee\x3c\xb0"
IDR = b"\x65\x88\x84\x00\x33"
SEI = b"\x06\x05\x01\x02"


@pytest.mark.parametrize(("data", "expected"), [
    (b"\0\0\0\1" + SPS + b"\0\0\0\1" + PPS + b"\0\0\0\1" + IDR,
     b"\0\0\0\1" + SPS + b"\0\0\0\1" + PPS),
    (b"\0\0\0\1" + SPS + b"\0\0\1" + PPS + b"\0\0\1" + IDR, b"\0\0\0\1" + SPS + b"\0\0\1" + PPS),
    (b"\0\0\0\1" + IDR, b""),
    (b"\0\0\0\1" + SEI + b"\0\0\0\1" + SPS + b"\0\0\0\1" + IDR, b""),
    (b"\0\0\0\1" + SPS + b"\0\0\0\1" + PPS[:2], b"\0\0\0\1" + SPS),  # cut short: SPS only
    (b"\x12\x34", b""),
    (b"", b""),
])
def test_parameter_sets_are_the_sps_and_pps_in_front(data: bytes, expected: bytes) -> None:
    assert h264_parameter_sets(data) == expected


class FakeDecoder:
    def __init__(self, key: bytes, outputs: list[list[str]]) -> None:
        self.key = key
        self.outputs = outputs
        self.flushed = 0

    def decode(self, packet: Any) -> list[str]:
        if packet == "bad":
            raise av.error.InvalidDataError(1, "bad")
        return self.outputs.pop(0) if self.outputs else [f"{self.key.decode()}:{packet}"]

    def flush_buffers(self) -> None:
        self.flushed += 1


def test_pool_reuses_the_last_idle_decoder_and_creates_one_only_when_none_is_idle() -> None:
    created: list[FakeDecoder] = []

    def create(key: bytes) -> FakeDecoder:
        created.append(FakeDecoder(key, []))
        return created[-1]

    pool = KeyframeDecoderPool(create, keys=2, per_key=1)
    assert pool.decode(b"a", "1") == ["a:1"]
    assert pool.decode(b"a", "2") == ["a:2"]
    assert len(created) == 1  # one decoder for every camera of that set-up
    assert pool.decode(b"b", "3") == ["b:3"]
    assert len(created) == 2
    assert pool.idle() == 2
    pool.decode(b"c", "4")  # a third set-up: the least recently used one (a) is forgotten
    assert pool.idle() == 2
    pool.decode(b"a", "5")
    assert len(created) == 4


def test_pool_flushes_a_decoder_that_gave_nothing_and_drops_one_that_failed() -> None:
    created: list[FakeDecoder] = []

    def create(key: bytes) -> FakeDecoder:
        created.append(FakeDecoder(key, [[]]))  # the first decode gives no picture
        return created[-1]

    pool = KeyframeDecoderPool(create, per_key=2)
    assert pool.decode(b"a", "1") == []
    assert created[0].flushed == 1  # nothing held back for the next camera's keyframe
    with pytest.raises(av.error.InvalidDataError):
        pool.decode(b"a", "bad")
    assert pool.idle() == 0  # a decoder that failed is not handed to another camera
    assert pool.decode(b"a", "2") == []
    assert len(created) == 2


def test_pool_makes_at_most_per_key_decoders_and_cameras_wait_for_one() -> None:
    # All cameras' first keyframes arrive together (sent on PLAY): they must not make a
    # decoder (and a frame pool) each.
    release = threading.Event()
    started = threading.Semaphore(0)
    created: list[FakeDecoder] = []

    class Slow(FakeDecoder):
        def decode(self, packet: Any) -> list[str]:
            started.release()
            release.wait(5)
            return super().decode(packet)

    def create(key: bytes) -> FakeDecoder:
        created.append(Slow(key, []))
        return created[-1]

    pool = KeyframeDecoderPool(create, per_key=1, wait_s=10)
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda n=n: results.append(pool.decode(b"a", str(n))))
               for n in range(3)]
    for thread in threads:
        thread.start()
    assert started.acquire(timeout=5)
    assert not started.acquire(timeout=0.2)  # the others wait for the one decoder
    release.set()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [["a:0"], ["a:1"], ["a:2"]]
    assert len(created) == 1


def test_a_camera_that_waited_too_long_decodes_with_a_decoder_of_its_own() -> None:
    # On a machine too loaded for the shared decoders, cameras must still get pictures.
    release = threading.Event()
    started = threading.Event()
    created: list[FakeDecoder] = []

    class Slow(FakeDecoder):
        def decode(self, packet: Any) -> list[str]:
            if packet == "slow":
                started.set()
                release.wait(5)
            return super().decode(packet)

    def create(key: bytes) -> FakeDecoder:
        created.append(Slow(key, []))
        return created[-1]

    pool = KeyframeDecoderPool(create, per_key=1, wait_s=0.05)
    holder = threading.Thread(target=pool.decode, args=(b"a", "slow"))
    holder.start()
    assert started.wait(5)
    assert pool.decode(b"a", "quick") == ["a:quick"]  # did not wait for the slow one
    release.set()
    holder.join(5)
    assert len(created) == 2
    assert pool.idle() == 1  # the camera's own decoder was not kept


def _keyframes(width: int, height: int, level: int, count: int = 3) -> list[bytes]:
    """``count`` H.264 keyframes (Annex B, SPS and PPS in front of each), one flat colour."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 25)
    encoder.options = {"x264-params": "keyint=1:repeat-headers=1", "preset": "ultrafast"}
    packets: list[bytes] = []
    for index in range(count):
        image = np.full((height, width, 3), level, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    packets += [bytes(packet) for packet in encoder.encode(None)]
    return packets


def test_a_keyframe_without_parameter_sets_is_not_decoded_with_another_cameras() -> None:
    # A shared decoder would decode it with the last SPS and PPS it saw, whoever sent them.
    other = annex_b_decoder("h264", keyframes_only=True)
    (picture,) = other.decode(av.Packet(_keyframes(96, 64, 30, count=1)[0]))
    assert picture.width == 96
    keyframe = _keyframes(96, 64, 220, count=1)[0]
    bare = keyframe[len(h264_parameter_sets(keyframe)):]
    assert annex_b_decoder("h264", keyframes_only=True).decode(av.Packet(bare)) == []


def test_cameras_sharing_decoders_get_their_own_pictures() -> None:
    bright = _keyframes(64, 48, 220)
    dark = _keyframes(96, 64, 30)
    first = annex_b_decoder("h264", keyframes_only=True)
    second = annex_b_decoder("h264", keyframes_only=True)
    for key_a, key_b in zip(bright, dark, strict=True):
        (picture_a,) = first.decode(av.Packet(key_a))
        (picture_b,) = second.decode(av.Packet(key_b))
        assert (picture_a.width, picture_a.height) == (64, 48)
        assert (picture_b.width, picture_b.height) == (96, 64)
        luma_a = picture_a.to_ndarray()[:48]
        luma_b = picture_b.to_ndarray()[:64]
        assert luma_a.mean() > 150
        assert luma_b.mean() < 50


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_a_set_up_gets_one_shared_decoder_per_two_cores(cores: int, expected: int) -> None:
    # Each decoder's frame pool keeps buffers for the pictures its cameras hold: fewer pools.
    assert shared_decoders_per_key(cores) == expected
