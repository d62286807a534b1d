"""Token benchmark: what one camera costs the GPU, the seed guide's request vs ``monitor``'s.

Part 1, one 1920x1080 frame (the ``no_helmet`` scene: two workers, one without a hard hat),
sent over real HTTP to the VLM simulator, whose ``usage`` counts image tokens by Qwen2.5-VL's
rule (``smart_resize``, 28x28 pixels a token) and text tokens by a Qwen2-tokenizer estimate
(:func:`monitor.sim.server.estimate_text_tokens`):

* ``seed``: the guide's request as it is: its system prompt, the image first at full
  resolution, its Chinese question asking for the 【…】 free-text format, no ``max_tokens``, no
  ``response_format``; the simulator answers in that format, explaining every answer as
  Qwen2.5-VL does;
* ``monitor``: the request :class:`monitor.model.client.VlmClient` builds with the default settings
  (``zh``, JSON schema, ``max_tokens`` 256, the ``max`` pixel budget), sent by the client
  itself, and the same request at each smaller preset of
  :data:`monitor.model.client.PIXEL_BUDGET_PRESETS`.

Columns: prompt and completion tokens (from ``usage``); "uncached": prompt tokens vLLM must
compute when its automatic prefix cache holds the requests' common prefix (16-token blocks: the
system prompt and, for ``monitor``, the instructions; the seed puts the image before its
question, so only the system prompt is shared); prefill FLOPs of Qwen2.5-VL-7B for the whole
prompt (no cache credit), by::

    FLOPs = 2*N*T + 2*L*d*T^2                          language model, T prompt tokens
          + 2*Nv*P + 4*dv*P*(nf*P + nw*W)              vision encoder, P = 4*I patches
          + 2*Nm*I                                     patch merger, I image tokens

with N = 6.53e9 non-embedding parameters, L = 28 layers, d = 3584 (causal attention: QK^T and
AV at half of 2*T^2*d each); Nv = 6.30e8 (32 blocks, width dv = 1280), nf = 4 full-attention
blocks, nw = 28 window blocks of W = 64 patches (112 px windows); Nm = 4.46e7. The person row:
how many pixels tall a 100-pixel person of the 1080p frame is in the image the model sees.

Part 2, GPU tokens per camera-minute on a synthetic site: a static 1080p view (no traffic)
where, over ``--minutes`` minutes sampled every 2 s, a worker with a hard hat passes, a worker
without one stands for a while, and smoke drifts by. ``seed`` shape: every sample is sent as in
part 1. ``monitor``: the daemon's rules - the change gate (:mod:`monitor.ingest.changegate`, default
threshold; an unchanged scene is re-checked after ``max_verdict_age_s`` = 60 s), bypassed while
the last answer was positive, with confirm-now (the next frame 0.5 s after a positive that is
not confirmed yet) - and the default request. Tokens = prompt + completion, from the
simulator's ``usage``. Last, what zoom-in verification (:mod:`monitor.service.verification`)
adds to ``monitor default``: its focused questions about crops of positive verdicts' boxes,
for ``no_helmet`` only (the default ``[verification]``) and for every hazard; it costs nothing
on frames without a positive.

Usage (from the repository root)::

    .venv/bin/python -m bench.tokens               # both parts, 10 simulated minutes
    .venv/bin/python -m bench.tokens --minutes 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import cv2

from monitor.alerts.tracker import HazardTracker, TrackerSettings
from monitor.config import DefaultsConfig, VerificationConfig, VlmConfig
from monitor.ingest.changegate import ChangeGate, thumbnail_size
from monitor.model.answer import Hazard
from monitor.model.client import PIXEL_BUDGET_PRESETS, VlmClient
from monitor.model.imaging import EncodedImage, encode_for_model, smart_resize
from monitor.model.prompts import SYSTEM_PROMPTS, instructions
from monitor.service.verification import Verifier
from monitor.sim.scenes import BgrImage, Scene, ScriptedObject, render_frame
from monitor.sim.server import SimServer, estimate_text_tokens

WIDTH, HEIGHT = 1920, 1080
_INLINE = ThreadPoolExecutor(max_workers=1)
"""Crops and their JPEGs for the verifier (one thread: the benchmark is sequential)."""
INTERVAL_S = 2.0
CONFIRM_GAP_S = 0.5
PREFIX_BLOCK = 16
"""vLLM's prefix cache works in KV-cache blocks of 16 tokens."""

SEED_SYSTEM = "您是一个专业的安全检测 AI 助手。"
SEED_QUESTION = (
    "请分析以下图片，并回答以下三个问题：1. 图像中是否存在火灾迹象？例如火焰、烧焦物等。"
    "2. 图像中是否有明显的烟雾？描述其位置和范围。3. 图像中人员是否正确佩戴了安全帽？"
    "指出哪些人未佩戴或佩戴不规范。请以清晰、简洁的方式输出结果。如果有不确定的地方，"
    "请说明“无法确定”。请用中文输出，采用以下格式：【火灾检测】：[是/否/不确定] "
    "【烟雾检测】：[是/否/不确定] 【安全帽检测】：[全部正确佩戴/部分未佩戴/全部未佩戴/不确定] "
    "如为“是”或“部分未佩戴”，请在描述中指出具体细节。"
)
"""The seed guide's test request, verbatim (shared/seed/qwen2.5-vl-guide.md)."""

# Qwen2.5-VL-7B (config.json of Qwen/Qwen2.5-VL-7B-Instruct).
LLM_PARAMS = 6.53e9
LLM_LAYERS = 28
LLM_WIDTH = 3584
VIT_PARAMS = 6.30e8
VIT_WIDTH = 1280
VIT_FULL_BLOCKS = 4
VIT_WINDOW_BLOCKS = 28
VIT_WINDOW_PATCHES = 64
MERGER_PARAMS = 4.46e7


def prefill_flops(prompt_tokens: int, image_tokens: int) -> float:
    """Qwen2.5-VL-7B prefill FLOPs by the formula of the module docstring."""
    t, i = prompt_tokens, image_tokens
    p = 4 * i
    language = 2 * LLM_PARAMS * t + 2 * LLM_LAYERS * LLM_WIDTH * t * t
    vision = 2 * VIT_PARAMS * p + 4 * VIT_WIDTH * p * (VIT_FULL_BLOCKS * p
                                                       + VIT_WINDOW_BLOCKS * VIT_WINDOW_PATCHES)
    return language + vision + 2 * MERGER_PARAMS * i


def cached_prefix(texts_before_image: list[str], messages_before: int) -> int:
    """Tokens of the shared prefix vLLM can reuse, rounded down to whole 16-token blocks."""
    tokens = sum(estimate_text_tokens(text) for text in texts_before_image)
    tokens += 5 * messages_before + 3  # chat template: role headers of the messages so far
    return tokens // PREFIX_BLOCK * PREFIX_BLOCK


def jpeg_url(image: BgrImage, quality: int = 95) -> str:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def seed_body(image: BgrImage) -> dict[str, object]:
    """The guide's request, with the frame as a data URL (the guide used a web URL)."""
    return {"model": "Qwen2.5-VL", "messages": [
        {"role": "system", "content": SEED_SYSTEM},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": jpeg_url(image)}},
            {"type": "text", "text": SEED_QUESTION},
        ]},
    ]}


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request cost."""

    prompt: int
    completion: int
    image_tokens: int
    uncached: int
    sent_height: int

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt + self.completion


async def seed_request(http: aiohttp.ClientSession, sim: SimServer, image: BgrImage) -> Cost:
    async with http.post(f"{sim.base_url}/chat/completions", json=seed_body(image)) as response:
        payload = await response.json()
        if response.status != 200:
            raise RuntimeError(f"seed request failed: {payload}")
    usage = payload["usage"]
    height, width = smart_resize(image.shape[0], image.shape[1], max_pixels=16384 * 784)
    prefix = cached_prefix([SEED_SYSTEM], 1)  # the image comes first in the user turn
    return Cost(usage["prompt_tokens"], usage["completion_tokens"],
                (height // 28) * (width // 28), usage["prompt_tokens"] - prefix, height)


async def monitor_request(client: VlmClient, config: VlmConfig, image: EncodedImage) -> Cost:
    analysis = await client.analyse_image(image)
    prefix = cached_prefix([SYSTEM_PROMPTS[config.language],
                            instructions(config.language, structured=True)], 1)
    prompt = analysis.prompt_tokens or 0
    return Cost(prompt, analysis.completion_tokens or 0, image.tokens, prompt - prefix,
                image.height)


FRAMES: dict[str, tuple[tuple[ScriptedObject, ...], str]] = {
    "quiet": ((ScriptedObject("worker_helmet", 0.0, 1e9, x=0.30, y=0.88),
               ScriptedObject("worker_helmet", 0.0, 1e9, x=0.70, y=0.86)),
              "two workers with hard hats, nothing to report (most frames of a site)"),
    "no_helmet": ((ScriptedObject("worker_helmet", 0.0, 1e9, x=0.30, y=0.88),
                   ScriptedObject("worker_no_helmet", 0.0, 1e9, x=0.70, y=0.86)),
                  "one of two workers without a hard hat (an alert frame, with a box)"),
}


def frame_1080p(kind: str) -> BgrImage:
    """A 1920x1080 frame of the site: ``quiet`` or ``no_helmet`` (see :data:`FRAMES`)."""
    scene = Scene(width=WIDTH, height=HEIGHT, fps=25, gop=50, duration_s=20.0,
                  objects=FRAMES[kind][0], name=kind)
    return render_frame(scene, 8.0)


POSITIVE_S = 70.0
"""Seconds of the 10-minute script in which a hazard is visible (no hard hat 40, smoke 30)."""


def site(minutes: float) -> Scene:
    """A static view with occasional activity, scaled to ``minutes`` (events per 10 min)."""
    k = minutes / 10.0

    def span(start: float, end: float) -> tuple[float, float]:
        return start * k, end * k

    return Scene(width=WIDTH, height=HEIGHT, fps=25, gop=50, duration_s=minutes * 60,
                 traffic=False, name="site", objects=(
                     ScriptedObject("worker_helmet", 0.0, 1e9, x=0.20, y=0.90),
                     ScriptedObject("worker_helmet", *span(90, 150), x=0.55, y=0.80),
                     ScriptedObject("worker_no_helmet", *span(300, 340), x=0.75, y=0.86),
                     ScriptedObject("smoke", *span(450, 480), x=0.45, y=0.30),
                 ))


async def part_one(sim: SimServer, http: aiohttp.ClientSession,
                   kind: str) -> dict[str, Cost]:
    frame = frame_1080p(kind)
    costs = {"seed (full frame, free text)": await seed_request(http, sim, frame)}
    for name, pixels in PIXEL_BUDGET_PRESETS.items():
        config = VlmConfig(base_url=sim.base_url, max_pixels=pixels)
        client = VlmClient(config)
        try:
            image = encode_for_model(frame, max_pixels=pixels)
            label = f"monitor {name}" + (" (default)" if pixels == VlmConfig().max_pixels
                                         else "")
            costs[label] = await monitor_request(client, config, image)
        finally:
            await client.aclose()
    return costs


def print_part_one(kind: str, costs: dict[str, Cost]) -> None:
    print(f"Part 1: one {WIDTH}x{HEIGHT} frame, {kind}: {FRAMES[kind][1]}")
    print(f"{'request':<30} {'image':>6} {'prompt':>7} {'uncached':>8} {'completion':>10} "
          f"{'TFLOPs':>7} {'person px':>9}")
    seed = next(iter(costs.values()))
    for name, cost in costs.items():
        # The server resizes the seed's full frame to 1092 lines (smart_resize): a person
        # grows slightly; nothing above 100 % adds detail, so the row shows at most 100.
        person = min(100.0, 100 * cost.sent_height / HEIGHT)
        flops = prefill_flops(cost.prompt, cost.image_tokens) / 1e12
        print(f"{name:<30} {cost.image_tokens:>6} {cost.prompt:>7} {cost.uncached:>8} "
              f"{cost.completion:>10} {flops:>7.2f} {person:>9.1f}")
    default = next(c for n, c in costs.items() if "default" in n)
    flops_ratio = (prefill_flops(seed.prompt, seed.image_tokens)
                   / prefill_flops(default.prompt, default.image_tokens))
    print(f"default vs seed: {seed.prompt / default.prompt:.2f}x fewer prompt tokens "
          f"({seed.uncached / default.uncached:.2f}x uncached), "
          f"{seed.completion / default.completion:.2f}x fewer completion tokens, "
          f"{flops_ratio:.2f}x fewer prefill FLOPs")
    print()


async def seed_shape(sim: SimServer, http: aiohttp.ClientSession, scene: Scene,
                     duration: float) -> tuple[int, int]:
    """Every sample sent as the seed's request: (tokens, requests)."""
    tokens = requests = 0
    t = 0.0
    while t < duration:
        tokens += (await seed_request(http, sim, render_frame(scene, t))).total
        requests += 1
        t += INTERVAL_S
    return tokens, requests


@dataclass(frozen=True, slots=True)
class _StillFrame:
    """A rendered frame as the verifier sees a camera's frame (full resolution)."""

    image: BgrImage

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def to_bgr(self, width: int | None = None, height: int | None = None) -> BgrImage:
        return self.image


async def monitor_shape(sim: SimServer, scene: Scene, duration: float, *,
                        confirm_now: bool, verified: tuple[Hazard, ...] = (),
                        zoom: list[int] | None = None) -> tuple[int, int]:
    """The daemon's sampling rules and default request: (tokens, requests).

    Change gate with the default threshold and ``max_verdict_age_s``, bypassed while the last
    answer was positive; with ``confirm_now`` a positive answer for a hazard whose alert is not
    raised yet brings the next sample forward to 0.5 s after it (``sampler.expedite``), as the
    daemon does; raised alerts are re-checked at the normal interval.
    """
    defaults = DefaultsConfig()
    gate = ChangeGate(max_verdict_age_s=defaults.max_verdict_age_s,
                      area_threshold=defaults.change_threshold)
    tracker = HazardTracker("bench", list(Hazard), TrackerSettings.from_config(defaults))
    config = VlmConfig(base_url=sim.base_url)
    client = VlmClient(config)
    # Zoom-in verification as the daemon runs it (monitor.service.verification), on the
    # hazards ``verified``; its tokens and questions are added to ``zoom`` as well.
    verifier = Verifier("bench", VerificationConfig(hazards=[h.value for h in verified]),
                        config, client=client, executor=_INLINE)
    tokens = requests = 0
    positive = confirming = False
    t = 0.0
    try:
        while t < duration:
            frame = render_frame(scene, t)
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            thumb = cv2.resize(grey, thumbnail_size(WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
            analyse = positive or gate.check(thumb, t).analyse
            if analyse:
                gate.analysed(thumb, t)
                image = encode_for_model(frame, max_pixels=config.max_pixels)
                analysis = await client.analyse_image(image)
                tokens += (analysis.prompt_tokens or 0) + (analysis.completion_tokens or 0)
                requests += 1
                verdict = await verifier.verify(analysis.verdict("bench", t), _StillFrame(frame),
                                                list(Hazard))
                if verdict.verification is not None and zoom is not None:
                    tokens += verdict.verification.tokens
                    zoom[0] += verdict.verification.tokens
                    zoom[1] += sum(len(r.checks) for r in verdict.verification.results)
                answer = verdict.answer
                positive = any(answer.is_positive(h) for h in Hazard)
                tracker.update(answer, t)
                # As the daemon's _confirm_now: hurry only positives not yet confirmed.
                confirming = any(answer.is_positive(h) and not tracker.is_active(h)
                                 for h in Hazard)
            t += CONFIRM_GAP_S if confirm_now and analyse and confirming else INTERVAL_S
    finally:
        await client.aclose()
    return tokens, requests


async def main_async(minutes: float, skip_site: bool) -> None:
    started = time.monotonic()
    async with SimServer() as sim, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60)) as http:
        for kind in FRAMES:
            print_part_one(kind, await part_one(sim, http, kind))
        if skip_site:
            return
        scene = site(minutes)
        duration = minutes * 60.0
        seed, seed_n = await seed_shape(sim, http, scene, duration)
        monitor, monitor_n = await monitor_shape(sim, scene, duration, confirm_now=True)
        plain, plain_n = await monitor_shape(sim, scene, duration, confirm_now=False)
        zoom_default, zoom_all = [0, 0], [0, 0]
        helmet_only, _ = await monitor_shape(sim, scene, duration, confirm_now=True,
                                             verified=(Hazard.NO_HELMET,), zoom=zoom_default)
        verified_all, _ = await monitor_shape(sim, scene, duration, confirm_now=True,
                                              verified=tuple(Hazard), zoom=zoom_all)
    print(f"Part 2: GPU tokens per camera-minute, static 1080p site with occasional activity "
          f"(positives {POSITIVE_S * minutes / 10:g} s of {minutes * 60:g} s), "
          f"{INTERVAL_S:g} s interval, {minutes:g} simulated minutes")
    print(f"seed shape                  {seed / minutes:>8.0f} tokens/min  ({seed_n} requests)")
    print(f"monitor default             {monitor / minutes:>8.0f} tokens/min  ({monitor_n} "
          f"requests: change gate + confirm-now)   ratio {seed / monitor:.1f}x")
    print(f"monitor, no confirm-now     {plain / minutes:>8.0f} tokens/min  ({plain_n} "
          f"requests: positives re-checked every {INTERVAL_S:g} s)   ratio {seed / plain:.1f}x")
    print("zoom-in verification on positives (what it adds to monitor default, per "
          "camera-minute):")
    for label, total, (extra, questions) in (
            ("no_helmet (the default)", helmet_only, zoom_default),
            ("fire, smoke and no_helmet", verified_all, zoom_all)):
        print(f"  {label:<26} {total / minutes:>8.0f} tokens/min  (+{extra / minutes:.0f} "
              f"tokens/min, {questions} questions; x{total / monitor:.3f} of monitor default)")
    print(f"(ran in {time.monotonic() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="simulated minutes of the site in part 2 (default 10)")
    parser.add_argument("--only-frame", action="store_true", help="part 1 only")
    args = parser.parse_args()
    asyncio.run(main_async(args.minutes, args.only_frame))


if __name__ == "__main__":
    main()
