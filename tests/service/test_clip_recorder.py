"""The clip recorder between a real camera reader (a local H.264 file played in real time) and
the evidence store: the start event's reference, the later step's ``ready``, what channels get,
the store's retention over clips, and an alert on a camera whose ring has nothing yet."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from monitor.alerts.evidence import SnapshotStore
from monitor.alerts.payloads import ClipPayload
from monitor.alerts.tracker import AlertEvent, EventType
from monitor.clipconfig import ClipSettings
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import StreamSource
from monitor.model.answer import Hazard
from monitor.service.clips import ClipRecorder
from tests.support.readers import running, wait_until

SETTINGS = ClipSettings(pre_roll_s=1.5, post_roll_s=0.5, max_bytes=16 * 1024 * 1024)


def start_event(event_id: str, at: float) -> AlertEvent:
    return AlertEvent(event_id=event_id, type=EventType.START, camera_id="file",
                      hazard=Hazard.FIRE, started_at=at, ended_at=None, at=at,
                      detail="flames", verdicts=())


@pytest.mark.asyncio
async def test_clips_are_announced_ready_later_and_kept_by_the_store_retention(
        scene_clips: dict[str, Path], tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots", max_count=1)
    recorder = ClipRecorder(store, None, max_total_bytes=64 * 1024 * 1024)
    heard: list[ClipPayload] = []
    recorder.add_listener(heard.append)
    ring = recorder.ring("file", SETTINGS)
    # Nothing received yet: the alert goes out without a clip.
    assert recorder.clip_for(start_event("a" * 32, time.time())) is None
    reader = CameraReader(StreamSource(camera_id="file", url=str(scene_clips["quiet"]),
                                       loop=True, interval_s=1.0), ring=ring)
    paths = []
    with running(reader):
        wait_until(lambda: ring.packets >= 25, 20, "2.5 s of packets")
        for event_id in ("b" * 32, "c" * 32):
            start = start_event(event_id, time.time())
            reference = recorder.clip_for(start)
            assert reference is not None
            assert reference.ready is False
            assert recorder.finished_path(event_id) is None
            path = await recorder.wait_for_clip(event_id, timeout_s=15)
            assert path is not None
            assert str(path) == reference.path
            paths.append(path)
            # A later step of the alert says the clip is there.
            update = dataclasses.replace(start, type=EventType.UPDATE, revision=1)
            later = recorder.clip_for(update)
            assert later is not None
            assert later.ready is True
            assert later.path == reference.path
    recorder.close()
    deadline = time.monotonic() + 5
    while len(heard) < len(paths) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # the announcement runs on the loop, after the file is done
    assert [p.path for p in heard] == [str(p) for p in paths]
    assert all(p.ready and p.duration_s and p.duration_s >= SETTINGS.pre_roll_s for p in heard)
    # Retention counts clips: with max_count = 1 the first clip went when the second came.
    assert not paths[0].exists()
    assert paths[1].exists()
    recorder.forget("file")
    assert recorder.budget.used == 0
