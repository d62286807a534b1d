"""Evidence images: boxes drawn, atomic files, retention by count, age and bytes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from monitor.alerts.evidence import SnapshotStore, boxes_for
from monitor.alerts.payloads import Box
from monitor.model.answer import Answer, Hazard
from monitor.pixels import BgrImage

T0 = 1_764_200_000.0


def grey(width: int = 320, height: int = 180) -> BgrImage:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def test_boxes_come_from_the_hazards_part_of_the_answer() -> None:
    answer = Answer.model_validate({
        "fire": {"answer": "no"}, "smoke": {"answer": "no"},
        "helmet": {"status": "some_missing", "missing_count": 2, "boxes": [
            {"bbox_2d": [10, 20, 60, 120], "label": "no_helmet"},
            {"bbox_2d": [200, 30, 150, 90]}]}})
    boxes = boxes_for(answer, Hazard.NO_HELMET)
    assert boxes == [Box(label="no_helmet", x1=10, y1=20, x2=60, y2=120),
                     Box(label="no hard hat", x1=150, y1=30, x2=200, y2=90)]
    assert boxes_for(answer, Hazard.FIRE) == []


def test_saved_jpeg_has_the_boxes_drawn(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, url_prefix="https://nvr.example/evidence/")
    path = store.path_for("gate-1", Hazard.NO_HELMET, "a" * 32, 1, T0)
    assert path.parent.parent.name == "gate-1"
    box = Box(label="no hard hat", x1=100, y1=60, x2=200, y2=170)
    data = store.save(grey(), [box], "NO_HELMET gate-1 安全帽", path)
    assert data[:2] == b"\xff\xd8"
    assert path.read_bytes() == data
    assert not list(tmp_path.rglob("*.tmp"))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    blue, green, red = (int(v) for v in image[120, 100])  # on the box's left edge
    assert red > 180
    assert max(green, blue) < 80
    assert tuple(int(v) for v in image[120, 150]) == (128, 128, 128)  # inside: untouched
    reference = store.reference(path, "monitor/gate-1/no_helmet/snapshot")
    assert reference.url is not None
    assert reference.url.startswith("https://nvr.example/evidence/gate-1/")
    assert reference.path == str(path)


def test_boxes_outside_the_frame_are_clipped(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.path_for("cam", Hazard.FIRE, "b" * 32, 0, T0)
    box = Box(label="fire", x1=-50, y1=-50, x2=5000, y2=5000)
    assert store.save(grey(), [box], "FIRE", path)


def save_files(store: SnapshotStore, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = store.path_for("cam", Hazard.FIRE, f"{index:032d}", 0, T0 + index)
        store.save(grey(), [], "FIRE", path)
        os.utime(path, (T0 + index, T0 + index))
        paths.append(path)
    return paths


def test_retention_by_count(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=3, clock=lambda: T0 + 100)
    paths = save_files(store, 5)
    assert [p.exists() for p in paths] == [False, False, True, True, True]


def test_retention_by_age(tmp_path: Path) -> None:
    now = [T0 + 10]
    store = SnapshotStore(tmp_path, max_age_s=3600, clock=lambda: now[0])
    paths = save_files(store, 3)
    now[0] = T0 + 3601.5
    assert store.prune() == 2
    assert [p.exists() for p in paths] == [False, False, True]
    assert not (tmp_path / "cam" / "missing").exists()


def test_retention_by_bytes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, clock=lambda: T0 + 100)
    paths = save_files(store, 4)
    size = paths[0].stat().st_size
    store.max_bytes = size * 2 + size // 2
    store.prune()
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.jpg")) <= store.max_bytes
