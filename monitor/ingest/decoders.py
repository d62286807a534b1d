"""Keyframe decoders: cheaper than the stream's own, and for H.264 shared between cameras.

A decoder's frame pool and tables are most of what a camera holds in memory; with keyframes
only, no state carries from one keyframe to the next, so cameras whose streams have the same
set-up share a few decoders (:class:`KeyframeDecoderPool`) and each holds only its newest
picture, in its mailbox. ``bench/ingest.py`` measures what this saves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import av.error

from monitor.ingest.rtsp import START_CODE

logger = logging.getLogger(__name__)

SHARED_DECODER_KEYS = 16
"""Stream set-ups (H.264 parameter sets) whose idle keyframe decoders are kept for sharing."""


def shared_decoders_per_key(cores: int | None = None) -> int:
    """How many shared keyframe decoders one stream set-up may have: one per two cores.

    Each decoder has a frame pool of its own, and a picture's buffer goes back to the pool of
    the decoder that made it: when a camera's keyframes are decoded now by one decoder, now by
    another, each pool keeps buffers for the pictures its cameras hold at their peak (up to
    one 3.1 MB 1080p picture per camera in every pool). Fewer decoders, fewer such copies; the
    reader threads and the encoder pool need the other cores. Measured with
    ``bench/ingest.py``'s client at N=8 on 2 cores (one run each, ``site`` clip): 11.4 MB per
    camera with two decoders, 10.4 MB with one.
    """
    return max(1, (cores if cores is not None else os.cpu_count() or 1) // 2)


DECODER_WAIT_S = 0.25
"""Longest wait for a shared keyframe decoder before decoding with one of the camera's own.
Short: handing decoders from camera to camera is a chain of thread wake-ups, and on an
overloaded machine (load average 20-40 here) each wake-up waits its turn for a core; threads
decoding side by side do not. 8 cameras' keyframes at once on 2 cores take about 50 ms."""
PARAMETER_SETS_MAX_BYTES = 4096
"""How far into an Annex B keyframe its parameter sets are looked for."""
MMAP_THRESHOLD_BYTES = 256 * 1024
"""Blocks this large are mapped, not carved from a heap (see
:func:`keep_pictures_out_of_the_heap`)."""
_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (``malloc.h``)."""
_HEAP_TUNED = False


def keyframe_decoder(context: Any) -> Any:
    """A decoder for keyframes only, faster than the stream's own.

    Each keyframe decodes on its own, so the in-loop deblocking filter can be skipped: its
    small blur is invisible after shrinking to the model's budget, no later frame references
    the result (no drift), and it saves ~15 % of the decode. A separate context keeps the
    stream's decoder exact for ``all`` mode. Falls back to the stream's context (with
    ``skip_frame``) where the codec cannot be set up this way. H.264 keyframe decoders are
    shared between cameras whose streams have the same extradata
    (:class:`KeyframeDecoderPool`).
    """
    extradata = bytes(context.extradata or b"")
    if context.name == "h264" and extradata:
        return _SharedDecoder(_AVCC_KEYFRAME_DECODERS, extradata)
    try:
        decoder = av.CodecContext.create(context.name, "r")
        decoder.extradata = context.extradata
        decoder.options = {"skip_loop_filter": "all", "flags2": "+fast"}
    except (av.error.FFmpegError, ValueError):
        context.skip_frame = "NONKEY"
        return context
    decoder.thread_count = 1
    decoder.skip_frame = "NONKEY"
    return decoder


def annex_b_decoder(codec: str, keyframes_only: bool) -> Any:
    """An H.264 or H.265 decoder for the built-in receiver's Annex B frames.

    ``low_delay``: a picture comes out of the decoder with its own packet, not one frame
    later (with keyframes only, "one frame later" is one GOP later). Keyframes-only decoders
    also skip the loop filter (see :func:`keyframe_decoder`).
    """
    if keyframes_only and codec == "h264":
        return _SharedDecoder(_ANNEX_B_KEYFRAME_DECODERS)
    decoder = av.CodecContext.create(codec, "r")
    options = {"flags": "+low_delay", "flags2": "+fast"}
    if keyframes_only:
        options["skip_loop_filter"] = "all"
    decoder.options = options
    decoder.thread_count = 1
    return decoder


def h264_parameter_sets(data: bytes) -> bytes:
    """The SPS and PPS NAL units (with their start codes) in front of an Annex B H.264 frame,
    as the built-in receiver puts them before every keyframe; ``b""`` when there are none.

    Start codes (3 or 4 bytes) cannot occur inside a NAL unit (emulation prevention), so the
    next one ends each unit.
    """
    end = 0
    while True:
        header = end + (4 if data.startswith(START_CODE, end) else
                        3 if data.startswith(START_CODE[1:], end) else len(data))
        if header >= len(data) or data[header] & 0x1F not in {7, 8}:
            return data[:end]
        following = data.find(START_CODE[1:], header)
        if following < 0:
            return data[:end]
        end = following - 1 if data[following - 1] == 0 else following


class KeyframeDecoderPool:
    """Idle H.264 keyframe decoders, shared by all cameras whose streams have the same set-up
    (``key``: the parameter sets), so that memory does not grow by a decoder per camera.

    A decoder's frame pool and tables are most of what a camera held (about 10 MB at 1080p:
    two picture buffers of 3.1 MB with their motion tables, the context's tables): H.264
    keeps the last picture as a reference and needs a second buffer for the next, whatever
    ``refs`` says. Keyframes-only decoding carries no state from one keyframe to the next
    (each is an IDR picture: it clears the references and, with ``low_delay``, comes out with
    its own packet), so any idle decoder of the same set-up can decode any camera's next
    keyframe. A camera then holds only its newest picture, in its mailbox.

    The most recently used idle decoder is taken first, so one decoder does nearly all the work
    and its frame pool holds the cameras' pictures; another is created only when all are busy,
    up to ``per_key`` (by default one per two cores: :func:`shared_decoders_per_key`), and then
    a camera waits for one to come free: in turn, a decoder is handed straight to the camera
    that waited longest (no herd of threads woken for one decoder). Without that bound, the
    cameras' first keyframes (all sent at once on PLAY) made a decoder each: a peak of 9.5 MB
    per camera at 48 cameras against 4.9 MB steady. A camera that waited ``wait_s`` (a machine
    so loaded that a few decoding threads get too small a share of the CPU) decodes with a
    decoder of its own, not kept. A decode that fails or gives no picture leaves nothing behind
    for the next camera: the decoder is dropped or flushed. At most ``keys`` set-ups are
    remembered (the least recently used are forgotten).
    """

    def __init__(self, create: Callable[[bytes], Any], *, keys: int = SHARED_DECODER_KEYS,
                 per_key: int | None = None, wait_s: float = DECODER_WAIT_S) -> None:
        self._create = create
        self._keys = keys
        self._per_key = per_key or shared_decoders_per_key()
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._idle: dict[bytes, list[Any]] = {}
        """Insertion order is recency of use (a used key is re-inserted at the end)."""
        self._busy: dict[bytes, int] = {}
        """Decoders in use per key (a decoder handed straight to a waiter stays counted)."""
        self._waiting: dict[bytes, deque[_Waiter]] = {}

    def decode(self, key: bytes, packet: Any) -> list[Any]:
        """Decode ``packet`` with an idle decoder for ``key``, a new one while fewer than
        ``per_key`` exist, else the next one to come free: cameras wait in turn, for at most
        ``wait_s``, then decode with a decoder of their own that is not kept."""
        decoder, shared = self._acquire(key)
        try:
            if decoder is None:
                decoder = self._create(key)
            pictures = list(decoder.decode(packet))
            if not pictures:
                decoder.flush_buffers()  # nothing pending may come out for another camera
        except BaseException:
            decoder = None  # a decoder that failed is not handed to another camera
            raise
        finally:
            if shared:
                self._release(key, decoder)
        return pictures

    def _acquire(self, key: bytes) -> tuple[Any, bool]:
        """A decoder for ``key`` (``None``: create one) and whether it belongs to the pool."""
        with self._lock:
            idle = self._idle.get(key)
            if idle and not self._waiting.get(key):
                self._busy[key] = self._busy.get(key, 0) + 1
                return idle.pop(), True
            if self._busy.get(key, 0) < self._per_key:
                self._busy[key] = self._busy.get(key, 0) + 1
                return None, True
            waiter = _Waiter()
            self._waiting.setdefault(key, deque()).append(waiter)
        waiter.ready.wait(self._wait_s)
        with self._lock:
            if waiter.ready.is_set():
                return waiter.decoder, True  # handed over (None: make a new one in its place)
            queue = self._waiting[key]
            queue.remove(waiter)
            if not queue:
                del self._waiting[key]
        return None, False  # all busy for too long (an overloaded machine): decode apart

    def _release(self, key: bytes, decoder: Any) -> None:
        """Hand ``decoder`` (``None``: it failed) to the first waiting camera, or keep it."""
        with self._lock:
            queue = self._waiting.get(key)
            if queue:
                waiter = queue.popleft()
                if not queue:
                    del self._waiting[key]
                waiter.decoder = decoder
                waiter.ready.set()
                return
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
            if decoder is not None:
                idle = self._idle.pop(key, [])
                self._idle[key] = idle
                idle.append(decoder)
                while len(self._idle) > self._keys:
                    del self._idle[next(iter(self._idle))]

    def idle(self) -> int:
        """How many idle decoders are kept (all keys)."""
        with self._lock:
            return sum(len(decoders) for decoders in self._idle.values())


@dataclass(slots=True)
class _Waiter:
    """A camera waiting for a shared decoder (handed over directly, in turn)."""

    ready: threading.Event = field(default_factory=threading.Event)
    decoder: Any = None


@dataclass(slots=True)
class _SharedDecoder:
    """A camera's keyframe decoder, decoding with a :class:`KeyframeDecoderPool`; ``key``
    fixed (the stream's extradata) or, when ``None``, read from each Annex B keyframe.

    A keyframe without parameter sets in front is not self-contained (it decodes with the
    last SPS and PPS its decoder saw, which in a shared one may be another camera's): it goes
    to a decoder of this camera's own.
    """

    pool: KeyframeDecoderPool
    key: bytes | None = None
    _own: Any = None

    def decode(self, packet: Any) -> list[Any]:
        key = self.key
        if key is None:
            key = h264_parameter_sets(bytes(memoryview(packet)[:PARAMETER_SETS_MAX_BYTES]))
        if key:
            return self.pool.decode(key, packet)
        if self._own is None:
            self._own = _new_keyframe_decoder(None)
        return list(self._own.decode(packet))


def keep_pictures_out_of_the_heap() -> None:
    """Have glibc serve allocations of 256 KiB and more with ``mmap`` from now on (once per
    process; a no-op where the C library has no ``mallopt``).

    glibc's default threshold rises to the size of the largest block freed (up to 32 MB), so
    after the first picture is released every 1080p plane (2 MB, 0.5 MB) is carved from the
    heap of the thread that asked, between the receivers' and encoders' short-lived blocks;
    freed space there is rarely returned. Measured with 16 cameras read by the built-in
    receiver: 8.5 MB per camera with the default, 5.1 MB with this, for a picture of 3.1 MB.
    Decoders' frame pools keep their buffers, so pictures are not mapped afresh each time.
    """
    global _HEAP_TUNED  # noqa: PLW0603 - one process-wide setting, made once
    if _HEAP_TUNED:
        return
    _HEAP_TUNED = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        logger.debug("mallopt is not available: the C library's allocator keeps its defaults")


def _new_keyframe_decoder(extradata: bytes | None) -> Any:
    """An H.264 keyframes-only decoder (see :func:`keyframe_decoder`): Annex B input with
    in-band parameter sets when ``extradata`` is ``None``, else the stream's ``avcC``."""
    keep_pictures_out_of_the_heap()
    decoder = av.CodecContext.create("h264", "r")
    if extradata:
        decoder.extradata = extradata
    decoder.options = {"flags": "+low_delay", "flags2": "+fast", "skip_loop_filter": "all"}
    decoder.thread_count = 1
    decoder.skip_frame = "NONKEY"
    return decoder


_ANNEX_B_KEYFRAME_DECODERS = KeyframeDecoderPool(lambda _key: _new_keyframe_decoder(None))
"""The built-in receiver's H.264 keyframes (parameter sets in band, the key read from them)."""
_AVCC_KEYFRAME_DECODERS = KeyframeDecoderPool(_new_keyframe_decoder)
"""FFmpeg's demuxer's H.264 keyframes (the key: the stream's extradata, given to the decoder)."""
