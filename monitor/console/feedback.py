"""Operator labels as a folder ``monitor eval`` reads: JPEGs plus ``manifest.csv``.

Each false alarm or missed hazard adds the frame the model judged (the JPEG as it was sent,
without drawn boxes or captions, so a later evaluation sees what the model saw) and one
manifest row ``image,fire,smoke,helmet`` with the operator's label for that hazard; the other
hazards' cells stay empty (unscored), as :func:`monitor.tools.evaluate.read_manifest` allows.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import threading
import time
from pathlib import Path

from monitor.model.answer import Hazard, HelmetStatus

MANIFEST = "manifest.csv"
HEADER = ("image", "fire", "smoke", "helmet")


def label_row(image: str, hazard: Hazard, *, present: bool) -> tuple[str, str, str, str]:
    """The manifest row saying ``hazard`` is (``present``) or is not in ``image``."""
    word = "yes" if present else "no"
    if hazard is Hazard.FIRE:
        return image, word, "", ""
    if hazard is Hazard.SMOKE:
        return image, "", word, ""
    helmet = HelmetStatus.SOME_MISSING if present else HelmetStatus.ALL_WORN
    return image, "", "", helmet.value


class FeedbackFolder:
    """Appends labelled frames to ``directory`` (created on first use); thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    @property
    def manifest(self) -> Path:
        """The manifest's path."""
        return self.directory / MANIFEST

    def add(self, jpeg: bytes, *, camera_id: str, hazard: Hazard, present: bool,
            at: float | None = None) -> Path:
        """Write ``jpeg`` and its label; returns the image's path. Blocking: call it off the
        event loop."""
        at = time.time() if at is None else at
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
        kind = "missed" if present else "false-alarm"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:
                name = f"{camera_id}-{stamp}-{kind}-{hazard.value}-{next(self._counter)}.jpg"
                image = self.directory / name
                if not image.exists():
                    break
            image.write_bytes(jpeg)
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            new = not self.manifest.exists() or self.manifest.stat().st_size == 0
            if new:
                writer.writerow(HEADER)
            writer.writerow(label_row(name, hazard, present=present))
            with self.manifest.open("a", encoding="utf-8") as manifest:
                manifest.write(text.getvalue())
                manifest.flush()
                os.fsync(manifest.fileno())
        return image
