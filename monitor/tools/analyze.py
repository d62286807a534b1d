"""One-shot analyses: ``monitor analyze IMAGE...`` and ``monitor probe CAMERA``.

The seed guide's curl test as a command: each image goes through exactly the production path
(:func:`~monitor.model.imaging.encode_for_model`, :class:`~monitor.model.client.VlmClient`)
and comes back as
a verdict with its latency and token counts. Images are local paths, ``http(s)`` URLs (fetched
here and sent as data URLs, like camera frames) or ``-`` for standard input.

Exit codes (sysexits.h): 0 every image analysed; 69 the model server could not be reached;
65 an image could not be read or decoded; 1 the server refused a request or gave an answer
that is not a verdict.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import cv2

from monitor.config import CameraConfig, MonitorConfig, VlmConfig
from monitor.model.answer import Answer, Hazard
from monitor.model.client import (
    Analysis,
    VlmAnswerError,
    VlmClient,
    VlmError,
    VlmRequestRejectedError,
    VlmUnavailableError,
)
from monitor.model.imaging import ImageBudgetError, decode_jpeg, encode_for_model
from monitor.redaction import redact

EX_OK = 0
EX_FAILED = 1
EX_DATAERR = 65
EX_UNAVAILABLE = 69
FETCH_TIMEOUT_S = 30.0
MAX_IMAGE_BYTES = 64 * 1024 * 1024

Failure = Literal["unavailable", "rejected", "invalid_answer", "bad_image"]


class ImageInputError(ValueError):
    """An image argument cannot be read, fetched or decoded (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What ``analyze`` found out about one image."""

    source: str
    analysis: Analysis | None = None
    failure: Failure | None = None
    error: str | None = None
    raw_text: str | None = None
    frame_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Machine output: the verdict (boxes in the original image's pixels) and its cost."""
        data: dict[str, Any] = {"image": self.source, "ok": self.analysis is not None,
                                **self.extra}
        if self.analysis is None:
            data.update(failure=self.failure, error=self.error)
            if self.raw_text is not None:
                data["raw"] = self.raw_text
            return data
        a = self.analysis
        data.update(
            answer=a.answer.model_dump(mode="json"), latency_s=round(a.latency_s, 3),
            prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens,
            endpoint=a.endpoint, finish_reason=a.finish_reason,
            image={"width": a.image.source_width, "height": a.image.source_height,
                   "sent_width": a.image.width, "sent_height": a.image.height,
                   "image_tokens": a.image.tokens},
            raw=a.raw_text,
        )
        return data


def exit_code(results: Sequence[ImageResult]) -> int:
    """The command's exit status for these results (see the module docstring)."""
    failures = {r.failure for r in results if r.failure is not None}
    if "unavailable" in failures:
        return EX_UNAVAILABLE
    if "bad_image" in failures:
        return EX_DATAERR
    return EX_FAILED if failures else EX_OK


async def read_image(spec: str, session: aiohttp.ClientSession | None = None) -> bytes:
    """The bytes of ``spec``: ``-`` (standard input), an ``http(s)`` URL, or a file path.

    Raises:
        ImageInputError
    """
    if spec == "-":
        data: bytes = await asyncio.to_thread(sys.stdin.buffer.read)
        if not data:
            raise ImageInputError("-: standard input is empty (pipe an image into it)")
        return data
    if spec.startswith(("http://", "https://")):
        shown = redact(spec)
        owned = session is None
        session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S))
        try:
            async with session.get(spec) as response:
                if response.status != 200:
                    raise ImageInputError(f"{shown}: HTTP {response.status} {response.reason}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise ImageInputError(f"{shown}: larger than {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
                data = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ImageInputError(f"{shown}: cannot fetch ({exc or type(exc).__name__})") \
                from None
        finally:
            if owned:
                await session.close()
        return data
    path = Path(spec)
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise ImageInputError(f"{spec}: no such file") from None
    except OSError as exc:
        raise ImageInputError(f"{spec}: cannot read ({exc.strerror})") from None
    if not data:
        raise ImageInputError(f"{spec}: the file is empty (0 bytes), not an image")
    return data


def _failure(exc: VlmError) -> Failure:
    if isinstance(exc, VlmUnavailableError):
        return "unavailable"
    if isinstance(exc, VlmRequestRejectedError):
        return "rejected"
    return "invalid_answer"


async def analyse_bytes(client: VlmClient, config: VlmConfig, source: str, data: bytes, *,
                        context: str = "",
                        hazards: Sequence[Hazard] | None = None) -> ImageResult:
    """Decode, budget, encode and analyse one image's bytes."""
    try:
        frame = await asyncio.to_thread(decode_jpeg, data)
        image = await asyncio.to_thread(encode_for_model, frame, max_pixels=config.max_pixels,
                                        min_pixels=config.min_pixels,
                                        jpeg_quality=config.jpeg_quality)
    except (ValueError, ImageBudgetError) as exc:
        return ImageResult(source, failure="bad_image", error=f"{source}: {exc}")
    size = (image.source_width, image.source_height)
    try:
        analysis = await client.analyse_image(image, context=context, hazards=hazards)
    except VlmError as exc:
        raw = exc.raw_text if isinstance(exc, VlmAnswerError) else None
        return ImageResult(source, failure=_failure(exc), error=str(exc), raw_text=raw,
                           frame_size=size)
    return ImageResult(source, analysis=analysis, frame_size=size)


async def analyse_sources(config: VlmConfig, sources: Sequence[str], *, context: str = "",
                          hazards: Sequence[Hazard] | None = None) -> list[ImageResult]:
    """Analyse each image in turn (one at a time: the latencies printed are each image's)."""
    client = VlmClient(config)
    results: list[ImageResult] = []
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as session:
            for source in sources:
                try:
                    data = await read_image(source, session)
                except ImageInputError as exc:
                    results.append(ImageResult(source, failure="bad_image", error=str(exc)))
                    continue
                results.append(await analyse_bytes(client, config, source, data,
                                                   context=context, hazards=hazards))
    finally:
        await client.aclose()
    return results


def describe_answer(answer: Answer) -> str:
    """One line: each hazard's answer, with where and what for the positive ones."""

    def hazard(name: str, finding: Any) -> str:
        text = f"{name} {finding.answer.value}"
        detail = ", ".join(p for p in (finding.location, finding.description) if p)
        return f"{text} ({detail})" if detail else text

    helmet = answer.helmet
    hats = f"hard hats {helmet.status.value}"
    if helmet.missing_count:
        hats += f", {helmet.missing_count} without"
    if helmet.boxes:
        hats += " at " + " ".join(str(box.bbox_2d) for box in helmet.boxes)
    if helmet.description:
        hats += f" ({helmet.description})"
    return " | ".join((hazard("fire", answer.fire), hazard("smoke", answer.smoke), hats))


def format_result(result: ImageResult, *, raw: bool = False) -> str:
    """Human output for one image: the verdict, then latency and tokens (or the error)."""
    if result.analysis is None:
        lines = [f"{result.source}: NOT ANALYSED ({result.failure}): {result.error}"]
        if raw and result.raw_text is not None:
            lines.append(f"  raw: {result.raw_text}")
        return "\n".join(lines)
    a = result.analysis
    lines = [
        f"{result.source}: {describe_answer(a.answer)}",
        (f"  {a.latency_s:.2f} s, {a.prompt_tokens} prompt + {a.completion_tokens} "
         f"completion tokens; {a.image.source_width}x{a.image.source_height} sent as "
         f"{a.image.width}x{a.image.height} ({a.image.tokens} image tokens) to {a.endpoint}"),
    ]
    if raw:
        lines.append(f"  raw: {a.raw_text}")
    return "\n".join(lines)


# --- probe ---------------------------------------------------------------------------------------


class ProbeError(Exception):
    """The camera gave no frame (the message says why) or is not configured."""


class ProbeDataError(ProbeError):
    """The camera's source opened but is not video (a text file, a still image): exit 65."""


def find_camera(config: MonitorConfig, camera_id: str) -> CameraConfig:
    """The configured camera ``camera_id``, or :class:`ProbeError` listing the known ones."""
    for camera in config.cameras:
        if camera.id == camera_id:
            return camera
    known = ", ".join(c.id for c in config.cameras) or "none"
    raise ProbeError(f"no camera {camera_id!r} in the configuration (configured: {known})")


async def grab_frame(config: MonitorConfig, camera: CameraConfig) -> Any:
    """One decoded frame from ``camera`` (via :mod:`monitor.ingest.reader`, as the daemon reads it),
    within the camera's open and read deadlines."""
    from monitor.ingest.reader import CameraReader  # noqa: PLC0415 - PyAV only when probing
    from monitor.ingest.source import stream_source  # noqa: PLC0415

    reader = CameraReader(stream_source(config, camera))
    deadline = time.monotonic() + config.defaults.open_timeout_s + config.defaults.read_timeout_s
    reader.start()
    try:
        while (frame := reader.latest()) is None:
            # One connection only: its failure already says why (a 401 or a file that is no
            # video cannot succeed on a retry, and a probe is a diagnosis, not a vigil).
            failed = reader.status.reconnects > 0
            if failed or time.monotonic() > deadline or not reader.is_alive():
                status = reader.status
                error = ProbeDataError if status.not_video else ProbeError
                raise error(f"camera {camera.id}: no frame from "
                            f"{status.url} ({status.last_error or 'timed out'})")
            await asyncio.sleep(0.05)  # the reader thread has no awaitable hand-off
        return frame
    finally:
        reader.stop()
        await asyncio.to_thread(reader.join, 2.0)


async def probe_camera(config: MonitorConfig, camera_id: str, out: Path) -> ImageResult:
    """Grab one frame of a configured camera, save it as JPEG at ``out``, analyse it."""
    camera = find_camera(config, camera_id)
    frame = await grab_frame(config, camera)
    bgr = await asyncio.to_thread(frame.to_bgr)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ProbeError(f"camera {camera_id}: the frame could not be encoded as JPEG")
    try:
        await asyncio.to_thread(out.write_bytes, jpeg.tobytes())
    except OSError as exc:
        raise ProbeError(f"{out}: cannot write ({exc.strerror})") from None
    client = VlmClient(config.vlm)
    try:
        result = await analyse_bytes(client, config.vlm, str(out), jpeg.tobytes(),
                                     context=camera.context,
                                     hazards=[Hazard(h) for h in config.camera_hazards(camera)])
    finally:
        await client.aclose()
    return ImageResult(result.source, analysis=result.analysis, failure=result.failure,
                       error=result.error, raw_text=result.raw_text,
                       frame_size=result.frame_size,
                       extra={"camera": camera_id, "saved": str(out)})
