"""``monitor eval DIR``: how well the model (and the prompt, and the pixel budget) does on a
user's own labelled images.

The manifest (``DIR/manifest.csv`` by default) has a header row and one row per image::

    image,fire,smoke,helmet
    yard-0001.jpg,yes,no,all_worn
    gate-0042.jpg,no,no,some_missing
    dock-0007.jpg,no,yes,

``fire`` and ``smoke`` are ``yes`` or ``no``; ``helmet`` is ``all_worn``, ``some_missing``,
``none_worn`` or ``no_person``; an empty cell leaves that hazard of that image unscored.
Image paths are relative to the manifest's folder.

Scoring, per hazard (``no_helmet`` is positive for ``some_missing`` and ``none_worn``): a
verdict is a hit when it says the hazard is there. ``uncertain`` is not a hit (an uncertain
answer never raises an alert), so it counts against recall on positive images, and it is shown
as its own column of the confusion table. Images the model could not judge (server error,
invalid answer) are listed as failures and left out of precision and recall.

Pure scoring (:func:`score`) is separate from running the requests (:func:`evaluate_dir`).
"""

from __future__ import annotations

import asyncio
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config import VlmConfig
from monitor.model.answer import Answer, Decision, Hazard, HelmetStatus
from monitor.model.client import VlmClient
from monitor.tools.analyze import ImageResult, analyse_bytes

_YES_NO = {"yes": True, "no": False}
_HELMET_TRUTH = {status.value: status for status in HelmetStatus
                 if status is not HelmetStatus.UNCERTAIN}
PREDICTED_COLUMNS = ("yes", "no", "uncertain", "failed")


class EvalError(ValueError):
    """The manifest or an image it names is unusable (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class Label:
    """The truth about one image; ``None`` where the manifest leaves a hazard unlabelled."""

    image: str
    fire: bool | None
    smoke: bool | None
    helmet: HelmetStatus | None

    def truth(self, hazard: Hazard) -> bool | None:
        """Whether ``hazard`` is present (``None``: not labelled)."""
        if hazard is Hazard.FIRE:
            return self.fire
        if hazard is Hazard.SMOKE:
            return self.smoke
        if self.helmet is None:
            return None
        return self.helmet in (HelmetStatus.SOME_MISSING, HelmetStatus.NONE_WORN)


def read_manifest(path: Path) -> list[Label]:
    """Parse the manifest; :class:`EvalError` names the line and the bad value."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EvalError(f"{path}: no manifest (write one: image,fire,smoke,helmet per "
                        f"line; see `monitor eval --help`)") from None
    except OSError as exc:
        raise EvalError(f"{path}: cannot read ({exc.strerror})") from None
    rows = list(csv.DictReader(text.splitlines()))
    missing = {"image", "fire", "smoke", "helmet"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise EvalError(f"{path}: expected a header row 'image,fire,smoke,helmet' and at least "
                        f"one image (missing: {', '.join(sorted(missing)) or 'rows'})")
    labels = []
    for number, row in enumerate(rows, start=2):

        def cell(name: str, table: dict[str, Any], row: dict[str, str] = row,
                 number: int = number) -> Any:
            value = (row.get(name) or "").strip().lower()
            if not value:
                return None
            if value not in table:
                raise EvalError(f"{path}:{number}: {name} is {value!r}; expected one of "
                                f"{', '.join(table)} or empty")
            return table[value]

        image = (row.get("image") or "").strip()
        if not image:
            raise EvalError(f"{path}:{number}: the image column is empty")
        labels.append(Label(image=image, fire=cell("fire", _YES_NO),
                            smoke=cell("smoke", _YES_NO), helmet=cell("helmet", _HELMET_TRUTH)))
    return labels


def _predicted(answer: Answer | None, hazard: Hazard) -> str:
    if answer is None:
        return "failed"
    if answer.is_positive(hazard):
        return "yes"
    if hazard is Hazard.NO_HELMET:
        return "uncertain" if answer.helmet.status is HelmetStatus.UNCERTAIN else "no"
    finding = answer.fire if hazard is Hazard.FIRE else answer.smoke
    return "uncertain" if finding.answer is Decision.UNCERTAIN else "no"


@dataclass(slots=True)
class HazardScore:
    """Counts and rates for one hazard."""

    hazard: Hazard
    confusion: dict[str, dict[str, int]] = field(default_factory=lambda: {
        truth: dict.fromkeys(PREDICTED_COLUMNS, 0) for truth in ("yes", "no")})

    @property
    def true_positives(self) -> int:
        """Positive images the model called positive."""
        return self.confusion["yes"]["yes"]

    @property
    def false_positives(self) -> int:
        """Negative images the model called positive."""
        return self.confusion["no"]["yes"]

    @property
    def false_negatives(self) -> int:
        """Positive images the model called negative or uncertain (failures excluded)."""
        return self.confusion["yes"]["no"] + self.confusion["yes"]["uncertain"]

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); ``None`` without any positive call."""
        called = self.true_positives + self.false_positives
        return self.true_positives / called if called else None

    @property
    def recall(self) -> float | None:
        """TP / (TP + FN); ``None`` without any positive image."""
        present = self.true_positives + self.false_negatives
        return self.true_positives / present if present else None

    @property
    def f1(self) -> float | None:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        if p is None or r is None or p + r == 0:
            return None
        return 2 * p * r / (p + r)


@dataclass(frozen=True, slots=True)
class Miss:
    """An image where the model's call differs from the label."""

    image: str
    hazard: Hazard
    truth: str
    predicted: str
    detail: str


@dataclass(slots=True)
class Report:
    """Everything ``monitor eval`` prints."""

    total: int
    scores: dict[Hazard, HazardScore]
    helmet_confusion: dict[str, dict[str, int]]
    latencies: list[float]
    misses: list[Miss]
    failures: list[tuple[str, str]]
    unavailable: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def latency_percentiles(self) -> dict[str, float | None]:
        """p50, p90, p99 of the answered requests (nearest rank)."""
        return {f"p{p}": _percentile(self.latencies, p) for p in (50, 90, 99)}

    def to_json(self) -> dict[str, Any]:
        """Machine output."""
        return {
            "images": self.total,
            "hazards": {h.value: {
                "precision": s.precision, "recall": s.recall, "f1": s.f1,
                "true_positives": s.true_positives, "false_positives": s.false_positives,
                "false_negatives": s.false_negatives, "confusion": s.confusion,
            } for h, s in self.scores.items()},
            "helmet_confusion": self.helmet_confusion,
            "latency_s": self.latency_percentiles(),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "misses": [{"image": m.image, "hazard": m.hazard.value, "truth": m.truth,
                        "predicted": m.predicted, "detail": m.detail} for m in self.misses],
            "failures": [{"image": image, "error": error} for image, error in self.failures],
        }


def _percentile(values: Sequence[float], percent: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def score(labels: Sequence[Label], results: Sequence[ImageResult]) -> Report:
    """Score results against labels (same order). Pure."""
    scores = {hazard: HazardScore(hazard) for hazard in Hazard}
    statuses = [s.value for s in HelmetStatus] + ["failed"]
    helmet_confusion = {truth: dict.fromkeys(statuses, 0) for truth in _HELMET_TRUTH}
    report = Report(total=len(labels), scores=scores, helmet_confusion=helmet_confusion,
                    latencies=[], misses=[], failures=[])
    for label, result in zip(labels, results, strict=True):
        answer = result.analysis.answer if result.analysis is not None else None
        if result.analysis is None:
            report.failures.append((label.image, result.error or "failed"))
            report.unavailable += result.failure == "unavailable"
        else:
            report.latencies.append(result.analysis.latency_s)
            report.prompt_tokens += result.analysis.prompt_tokens or 0
            report.completion_tokens += result.analysis.completion_tokens or 0
        for hazard in Hazard:
            truth = label.truth(hazard)
            if truth is None:
                continue
            predicted = _predicted(answer, hazard)
            truth_word = "yes" if truth else "no"
            scores[hazard].confusion[truth_word][predicted] += 1
            if answer is not None and predicted != truth_word:
                report.misses.append(Miss(label.image, hazard, truth_word, predicted,
                                          answer.detail(hazard)))
        if label.helmet is not None:
            column = answer.helmet.status.value if answer is not None else "failed"
            helmet_confusion[label.helmet.value][column] += 1
    return report


async def evaluate_dir(config: VlmConfig, directory: Path, *, manifest: Path | None = None,
                       context: str = "") -> Report:
    """Analyse every image of the manifest (as many at once as the pool allows) and score."""
    manifest = manifest or directory / "manifest.csv"
    labels = read_manifest(manifest)
    base = manifest.parent
    blobs = []
    for label in labels:
        path = base / label.image
        try:
            blobs.append(await asyncio.to_thread(path.read_bytes))
        except OSError as exc:
            raise EvalError(f"{manifest}: image {label.image}: cannot read "
                            f"({exc.strerror})") from None
    client = VlmClient(config)
    capacity = config.max_concurrency * max(1, len(config.endpoints))
    slots = asyncio.Semaphore(capacity)

    async def one(label: Label, data: bytes) -> ImageResult:
        async with slots:
            return await analyse_bytes(client, config, label.image, data, context=context)

    try:
        results = await asyncio.gather(*(one(label, data)
                                         for label, data in zip(labels, blobs, strict=True)))
    finally:
        await client.aclose()
    return score(labels, results)


def _rate(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.3f}"


def format_report(report: Report) -> str:
    """The report as text: rates, confusion tables, latency, misses, failures."""
    lines = [f"{report.total} images; {len(report.failures)} not analysed", "",
             "hazard      precision  recall  F1     (TP FP FN)"]
    for hazard, s in report.scores.items():
        lines.append(f"{hazard.value:<11} {_rate(s.precision)}      {_rate(s.recall)}   "
                     f"{_rate(s.f1)}  ({s.true_positives} {s.false_positives} "
                     f"{s.false_negatives})")
    for hazard, s in report.scores.items():
        lines += ["", f"{hazard.value}: truth \\ model  " + "  ".join(
            f"{c:>9}" for c in PREDICTED_COLUMNS)]
        for truth in ("yes", "no"):
            lines.append(f"  {truth:<18}" + "  ".join(f"{s.confusion[truth][c]:>9}"
                                                       for c in PREDICTED_COLUMNS))
    columns = list(next(iter(report.helmet_confusion.values())))
    lines += ["", "hard hats: truth \\ model  " + " ".join(f"{c:>12}" for c in columns)]
    for truth, row in report.helmet_confusion.items():
        lines.append(f"  {truth:<22}" + " ".join(f"{row[c]:>12}" for c in columns))
    pct = report.latency_percentiles()
    shown = ", ".join(f"{k} {'-' if v is None else f'{v:.2f} s'}" for k, v in pct.items())
    lines += ["", (f"latency: {shown}; tokens: {report.prompt_tokens} prompt, "
                   f"{report.completion_tokens} completion")]
    if report.misses:
        lines += ["", "misses:"]
        lines += [f"  {m.image}: {m.hazard.value} is {m.truth}, model said {m.predicted}"
                  + (f" ({m.detail})" if m.detail else "") for m in report.misses]
    if report.failures:
        lines += ["", "not analysed:"]
        lines += [f"  {image}: {error}" for image, error in report.failures]
    return "\n".join(lines)
