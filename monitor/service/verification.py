"""Zoom-in verification in the pipeline: crop a positive verdict's boxes, ask, gate.

:class:`Verifier` runs between the model's verdict and the hazard tracker (see
:mod:`monitor.model.verify` for the questions and the decision). For each hazard under
verification that the verdict reports and grounds with boxes, the largest ``max_crops`` boxes
are cropped with ``margin`` from the frame at its FULL resolution (the verdict was about the
frame shrunk to the pixel budget: the crop has the detail the model lacked), encoded on the
executor and asked about, one model request each (a slot per question, retried like frames).
The verdict that goes on carries the gated answer and the :class:`~monitor.model.verify.
Verification` (crops included, for the evidence store). Verdicts without a positive to verify
cost nothing: no crop, no request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

import numpy as np

from monitor.config import VerificationConfig, VlmConfig
from monitor.model.answer import GroundingBox, Hazard, Verdict
from monitor.model.client import CropReply, VlmError
from monitor.model.imaging import EncodedImage, ImageBudgetError, encode_for_model
from monitor.model.verify import (
    CheckOutcome,
    CropCheck,
    HazardCheck,
    Verification,
    crop_region,
    decide,
    gate,
)
from monitor.pixels import BgrImage

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class FullFrame(Protocol):
    """What verification needs of a frame: its full-resolution pixels."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    def to_bgr(self, width: int | None = None, height: int | None = None) -> BgrImage: ...


class CropSlot(Protocol):
    """A model slot that asks focused questions (:class:`monitor.model.client.ModelSlot`)."""

    async def check_crop(self, image: EncodedImage, hazard: Hazard, *,
                         max_tokens: int) -> CropReply: ...


class CropRequest(Protocol):
    """One question through its retries (:class:`monitor.model.client.ModelRequest`)."""

    def slot(self) -> AbstractAsyncContextManager[CropSlot]: ...


class CropClient(Protocol):
    """The model client (:class:`monitor.model.client.VlmClient`)."""

    def request(self, camera_id: str) -> AbstractAsyncContextManager[CropRequest]: ...


class Verifier:
    """One camera's zoom-in verification (see the module docstring)."""

    def __init__(self, camera_id: str, config: VerificationConfig, vlm: VlmConfig, *,
                 client: CropClient, executor: Executor) -> None:
        self.camera_id = camera_id
        self.hazards = tuple(Hazard(h) for h in config.hazards)
        self._config, self._vlm = config, vlm
        self._client, self._executor = client, executor
        self._last_outcome: dict[Hazard, CheckOutcome] = {}

    def wanted(self, verdict: Verdict, watched: Sequence[Hazard]) -> list[Hazard]:
        """The hazards of ``verdict`` that verification checks: watched, under verification,
        reported positive."""
        return [h for h in self.hazards if h in watched and verdict.answer.is_positive(h)]

    async def verify(self, verdict: Verdict, frame: FullFrame,
                     watched: Sequence[Hazard]) -> Verdict:
        """``verdict`` gated by the crops' answers, carrying its :class:`Verification`; as it
        is when nothing is to be verified."""
        hazards = self.wanted(verdict, watched)
        if not hazards:
            return verdict
        full: BgrImage | None = None
        results: list[HazardCheck] = []
        for hazard in hazards:
            boxes = sorted(verdict.answer.boxes(hazard), key=_area, reverse=True)
            boxes = boxes[: self._config.max_crops]
            if boxes and full is None:
                full = await self._run(frame.to_bgr)
            checks = []
            for box in boxes:
                assert full is not None  # noqa: S101 - decoded just above
                checks.append(await self._check(full, box, hazard))
            result = decide(hazard, tuple(checks))
            results.append(result)
            # INFO when the outcome changes (a persistent alert is re-verified every interval:
            # the same line each time would flood the journal), DEBUG otherwise.
            changed = self._last_outcome.get(hazard) is not result.outcome
            self._last_outcome[hazard] = result.outcome
            logger.log(logging.INFO if changed else logging.DEBUG,
                       "camera %s: zoom-in %s %s (%s)", self.camera_id, hazard.value,
                       result.outcome.value, "; ".join(_describe(c) for c in checks) or
                       "no box to aim at")
        verification = Verification(results=tuple(results), original=verdict.answer)
        return dataclasses.replace(verdict, answer=gate(verdict.answer, verification.results),
                                   verification=verification)

    async def _check(self, full: BgrImage, box: GroundingBox, hazard: Hazard) -> CropCheck:
        height, width = full.shape[:2]
        try:
            region = crop_region(box, width, height, margin=self._config.margin)
        except ValueError as exc:
            return CropCheck(box=box, region=(0, 0, 0, 0), answer=None, error=str(exc))
        left, top, right, bottom = region
        crop = np.ascontiguousarray(full[top:bottom, left:right])
        try:
            image = await self._run(self._encode, crop)
            reply = await self._ask(image, hazard)
        except (VlmError, ImageBudgetError) as exc:
            return CropCheck(box=box, region=region, answer=None, error=str(exc), image=crop)
        return CropCheck(box=box, region=region, answer=reply.answer, image=crop,
                         prompt_tokens=reply.prompt_tokens,
                         completion_tokens=reply.completion_tokens, latency_s=reply.latency_s)

    async def _ask(self, image: EncodedImage, hazard: Hazard) -> CropReply:
        async with self._client.request(self.camera_id) as request:
            while True:
                # A failure worth retrying ends this block quietly; the next slot backs off.
                async with request.slot() as slot:
                    return await slot.check_crop(image, hazard,
                                                 max_tokens=self._config.max_tokens)

    def _encode(self, crop: BgrImage) -> EncodedImage:
        vlm = self._vlm
        return encode_for_model(crop, max_pixels=vlm.max_pixels, min_pixels=vlm.min_pixels,
                                jpeg_quality=vlm.jpeg_quality)

    async def _run(self, work: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)


def _area(box: GroundingBox) -> int:
    x1, y1, x2, y2 = box.bbox_2d
    return (x2 - x1) * (y2 - y1)


def _describe(check: CropCheck) -> str:
    if check.answer is None:
        return f"{check.box.bbox_2d}: {check.error}"
    seen = f" ({check.answer.seen})" if check.answer.seen else ""
    return f"{check.box.bbox_2d}: {check.answer.answer.value}{seen}"
