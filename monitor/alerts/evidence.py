"""Evidence: the frame that started or updated an alert, as a JPEG with the boxes drawn.

Files live under ``<state_dir>/snapshots/<camera>/<YYYYMMDD>/``, named after the time, hazard,
event id and revision, so an event's ``snapshot.path`` points at exactly the frame behind it.
Retention keeps the directory bounded by count, age and bytes (oldest removed first), checked
after every save: an edge box's disk must never fill up with evidence.

Boxes come from the verdict: every ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` object found
in the hazard's part of the answer (the model's grounding form), in pixels of the frame, clipped
to it. The lookup walks the answer instead of naming fields, so the drawing keeps working while
the answer schema grows boxes for more hazards.

Everything that touches pixels or the disk is blocking: call :meth:`SnapshotStore.save` from a
worker thread, never from the event loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from monitor.alerts.payloads import Box, SnapshotRef
from monitor.model.answer import Answer, Hazard
from monitor.pixels import BgrImage

logger = logging.getLogger(__name__)

_SECTION = {Hazard.FIRE: "fire", Hazard.SMOKE: "smoke", Hazard.NO_HELMET: "helmet"}
_LABEL = {Hazard.FIRE: "fire", Hazard.SMOKE: "smoke", Hazard.NO_HELMET: "no hard hat"}
_COLOUR = (0, 0, 255)  # BGR red: the usual colour of an alarm
EVIDENCE_SUFFIXES = ("*.jpg", "*.mp4")
"""The files retention counts: evidence images and evidence clips."""


class SnapshotError(Exception):
    """The evidence image could not be written (path and reason)."""


def boxes_for(answer: Answer, hazard: Hazard) -> list[Box]:
    """The boxes the model gave for ``hazard`` (any ``bbox_2d`` object in its section)."""
    section = answer.model_dump(mode="json").get(_SECTION[hazard])
    return [Box(label=label, x1=x1, y1=y1, x2=x2, y2=y2)
            for label, (x1, y1, x2, y2) in _find_boxes(section, _LABEL[hazard])]


def _find_boxes(node: Any, default_label: str) -> Iterator[tuple[str, tuple[float, ...]]]:
    if isinstance(node, dict):
        bbox = node.get("bbox_2d")
        if isinstance(bbox, list) and len(bbox) == 4 \
                and all(isinstance(v, int | float) for v in bbox):
            label = node.get("label")
            yield (label if isinstance(label, str) and label else default_label,
                   tuple(float(v) for v in bbox))
        for value in node.values():
            yield from _find_boxes(value, default_label)
    elif isinstance(node, list):
        for item in node:
            yield from _find_boxes(item, default_label)


def draw(image: BgrImage, boxes: Sequence[Box], caption: str) -> BgrImage:
    """A copy of ``image`` with ``boxes`` and their labels drawn, and a caption on top."""
    out = image.copy()
    height, width = out.shape[:2]
    thickness = max(2, round(min(width, height) / 300))
    scale = max(0.5, min(width, height) / 800)
    for box in boxes:
        x1, x2 = (int(np.clip(v, 0, width - 1)) for v in (box.x1, box.x2))
        y1, y2 = (int(np.clip(v, 0, height - 1)) for v in (box.y1, box.y2))
        cv2.rectangle(out, (x1, y1), (x2, y2), _COLOUR, thickness)
        _text(out, _ascii(box.label), (x1, max(y1 - thickness, 0)), scale, thickness)
    _text(out, _ascii(caption), (0, 0), scale, thickness, below=True)
    return out


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts have ASCII glyphs only; other characters would print as '?'.
    cleaned = text.encode("ascii", "ignore").decode().strip()
    return cleaned or "?"


def _text(image: BgrImage, text: str, origin: tuple[int, int], scale: float, thickness: int,
          *, below: bool = False) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, max(1, thickness - 1))
    x, y = origin
    top = y if below else max(0, y - text_h - baseline)
    cv2.rectangle(image, (x, top), (x + text_w + 4, top + text_h + baseline + 4), _COLOUR, -1)
    cv2.putText(image, text, (x + 2, top + text_h + 2), font, scale, (255, 255, 255),
                max(1, thickness - 1), cv2.LINE_AA)


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    mtime: float
    size: int


class SnapshotStore:
    """Evidence JPEGs under one directory, with retention by count, age and bytes."""

    def __init__(self, directory: Path, *, max_count: int = 1000,
                 max_age_s: float = 30 * 86400, max_bytes: int = 1024 ** 3,
                 jpeg_quality: int = 85, url_prefix: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.jpeg_quality = jpeg_quality
        self.url_prefix = url_prefix.rstrip("/") if url_prefix else None
        self._clock = clock
        self.removed = 0

    def path_for(self, camera_id: str, hazard: Hazard, event_id: str, revision: int,
                 at: float) -> Path:
        """Where the image of one event step goes."""
        when = datetime.fromtimestamp(at, UTC)
        name = f"{when:%H%M%S}-{hazard.value}-{event_id[:12]}-r{revision}.jpg"
        return self.directory / camera_id / f"{when:%Y%m%d}" / name

    def reference(self, path: Path, topic: str | None) -> SnapshotRef:
        """The event's pointer to ``path`` (with a URL when ``url_prefix`` is set)."""
        url = None
        if self.url_prefix is not None:
            url = f"{self.url_prefix}/{path.relative_to(self.directory).as_posix()}"
        return SnapshotRef(path=str(path), url=url, topic=topic)

    def save(self, image: BgrImage, boxes: Sequence[Box], caption: str, path: Path) -> bytes:
        """Draw, encode and write atomically (blocking); returns the JPEG bytes.

        Raises:
            SnapshotError: the image cannot be encoded or written.
        """
        ok, encoded = cv2.imencode(".jpg", draw(image, boxes, caption),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise SnapshotError(f"{path}: JPEG encoding failed")
        data = encoded.tobytes()
        temporary = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            # Rename: a reader never sees a half-written file.
            temporary.replace(path)
        except OSError as exc:
            raise SnapshotError(f"{path}: cannot write: {exc.strerror or exc}") from exc
        self.prune(keep=path)
        return data

    def _files(self) -> list[_File]:
        files = []
        # Evidence clips (``.mp4``, written by the service next to the images) count too.
        for path in (p for suffix in EVIDENCE_SUFFIXES for p in self.directory.rglob(suffix)):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            files.append(_File(path, info.st_mtime, info.st_size))
        files.sort(key=lambda f: (f.mtime, str(f.path)))
        return files

    def prune(self, keep: Path | None = None) -> int:
        """Apply retention (oldest first); returns how many files were removed."""
        files = self._files()
        cutoff = self._clock() - self.max_age_s
        total = sum(f.size for f in files)
        count = len(files)
        removed = 0
        for item in files:
            too_old = item.mtime < cutoff
            if item.path == keep or not (too_old or count > self.max_count
                                         or total > self.max_bytes):
                continue
            try:
                item.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("snapshots: cannot remove %s: %s", item.path, exc)
                continue
            total -= item.size
            count -= 1
            removed += 1
            self._remove_empty_parents(item.path.parent)
        self.removed += removed
        return removed

    def _remove_empty_parents(self, directory: Path) -> None:
        while directory != self.directory and self.directory in directory.parents:
            try:
                os.rmdir(directory)  # noqa: PTH106 - only removes it when empty
            except OSError:
                return
            directory = directory.parent
