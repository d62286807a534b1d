"""monitor against the real vLLM OpenAI server (CPU build, tiny random-weight Qwen2.5-VL).

The simulator is ours; users run vLLM. These tests start vLLM once per session the way the
unit ``systemd/vllm-qwen2.5-vl.service`` does (``scripts/vllm-serve`` + its env file, only the
model path, port and sizes overridden: ``tests/support/vllm_server.py``) and check what monitor
sends against it: ``monitor analyze`` end to end, prompt-token counts against vLLM's own
``usage``, that the structured-output form monitor uses is enforced, the errors a user meets,
and the daemon with an RTSP camera, including vLLM going away and coming back mid-run.

The answers are random text (random weights), but constrained decoding makes them valid JSON;
token counts, limits and error messages are vLLM's real ones.

Skipped, with the reason, when vLLM could not be installed here (``scripts/vllm-cpu-env.sh``,
which ``make test`` runs first). The server-restart test is last in this file on purpose: it
costs a second server start (~45 s).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openai
import pytest
from pydantic import BaseModel

from monitor.config import VerificationConfig, VlmConfig
from monitor.model import answer as verdict_module
from monitor.model.answer import Answer, Hazard, answer_json_schema
from monitor.model.client import VlmClient, VlmRequestRejectedError, VlmUnavailableError
from monitor.model.endpoints import PROBE_MAX_S
from monitor.model.imaging import EncodedImage, encode_for_model, image_tokens
from monitor.model.verify import CropAnswer, parse_crop_answer
from monitor.sim.broker import MosquittoBroker, free_port
from tests.conftest import ROOT
from tests.support.mqtt_client import Subscriber, wait_until
from tests.support.processes import clean_env
from tests.support.rtsp import RtspServer, rtsp_server_available
from tests.support.vllm_server import (
    SERVED_MODEL_NAME,
    SIZES,
    VllmServer,
    VllmServerError,
    count_text_tokens,
    ensure_tiny_model,
    environment_problem,
    launcher_argv,
    vllm_version,
)

pytestmark = [pytest.mark.vllm]

QWEN_MAX_PIXELS = 16384 * 28 * 28
"""Qwen2.5-VL's own largest image (and the most ``vlm.max_pixels`` accepts)."""


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny Qwen2.5-VL, built once (cached across sessions in .cache/monitor-tests)."""
    problem = environment_problem()
    if problem:
        pytest.skip(problem)
    try:
        return ensure_tiny_model()
    except VllmServerError as exc:
        pytest.fail(str(exc))


# Module scope, not session: every user is in this module, and a session-scoped server would
# hold its ~2 GB and its processes through the rest of the suite. Still one start per run
# (plus the restart test's).
@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM server for these tests (a start costs ~45 s of CPU)."""
    server = VllmServer(tiny_model, log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        server.start()
    except VllmServerError as exc:
        # Installed but not starting is a failure, not a skip: the unit's flags may be wrong.
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def test_launcher_builds_the_units_command(vllm_server: VllmServer) -> None:
    """The server under test runs the unit's flags; only the model, port and sizes differ."""
    # The version the README names as tested.
    assert vllm_version().startswith("vllm-cpu 0.32.0 ")
    argv = launcher_argv(vllm_server.model, vllm_server.port)
    flags = dict(zip(argv, [*argv[1:], ""], strict=True))
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flags["--model"] == str(vllm_server.model)
    assert flags["--served-model-name"] == SERVED_MODEL_NAME
    assert flags["--host"] == "127.0.0.1"
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 1, "video": 0}
    assert json.loads(flags["--structured-outputs-config"])["backend"] == "xgrammar"
    assert json.loads(flags["--mm-processor-kwargs"])["max_pixels"] == \
        int(SIZES["SERVE_MAX_PIXELS"])
    assert flags["--max-model-len"] == SIZES["SERVE_MAX_MODEL_LEN"]
    assert "--enforce-eager" in argv


# --- monitor analyze: verdicts and exact prompt-token counts ---------------------------------


def schema_model() -> type[BaseModel]:
    """The pydantic model whose JSON Schema monitor sends as ``response_format`` (found by
    comparing schemas, so the tests follow the client when the wire form changes)."""
    schema = answer_json_schema()
    for candidate in vars(verdict_module).values():
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) \
                and candidate is not BaseModel and candidate.model_json_schema() == schema:
            return candidate
    pytest.fail("no model in monitor.model.answer has the schema answer_json_schema() returns")


def validates(text: str) -> bool:
    """Whether ``text`` is, as a whole, JSON of the answer schema monitor sent (no prose, no
    code fence, nothing cut off)."""
    try:
        schema_model().model_validate_json(text)
    except ValueError:
        return False
    return True


def write_image(path: Path, width: int, height: int) -> Path:
    """A deterministic picture (gradient, a warm blob, a figure) of ``width`` x ``height``."""
    rng = np.random.default_rng(width * 10007 + height)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                      np.full_like(x, 90)], axis=-1).astype(np.uint8)
    cv2.circle(image, (width // 3, height // 2), max(4, height // 8), (0, 80, 255), -1)
    cv2.rectangle(image, (2 * width // 3, height // 3), (2 * width // 3 + width // 20,
                  height // 3 + height // 4), (40, 40, 40), -1)
    noise = rng.integers(0, 12, image.shape, dtype=np.uint8)
    cv2.imwrite(str(path), cv2.add(image, noise))
    return path


def run_analyze(server_url: str, *args: str, timeout_s: float = 120) -> \
        subprocess.CompletedProcess[str]:
    """``monitor analyze --json ...`` as a user runs it (a separate process)."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", "analyze", "--base-url", server_url, "--json", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=clean_env(),
        check=False)


async def estimated_prompt_tokens(config: VlmConfig, image: EncodedImage) -> int:
    """What the prompt of ``image`` costs by monitor's own rules: the text of the exact body
    monitor's client sends (its chat template and tokenizer applied, the image as one
    placeholder) plus the image tokens by Qwen2.5-VL's pixel rule.

    monitor's client has no prompt-token estimate of its own yet (only the image's tokens,
    ``EncodedImage.tokens``); the text part is counted with the served model's tokenizer.
    """
    client = VlmClient(config)
    try:
        body = client.request_body(image)
    finally:
        await client.aclose()
    text_tokens, images = await asyncio.to_thread(count_text_tokens, body)
    assert images == 1
    return text_tokens - images + image.tokens


@pytest.mark.parametrize("case", [
    # (width, height, max_pixels, image tokens). The default budget (1280 tokens of 28x28
    # pixels) shrinks a 1080p frame to 1316x728.
    (1920, 1080, None, 1222),
    (1280, 720, None, 1196),
    (448, 448, None, 256),
    # Qwen's full budget: the frame is only snapped to the 28-pixel grid (1932x1092).
    (1920, 1080, QWEN_MAX_PIXELS, 2691),
], ids=["1920x1080", "1280x720", "448x448", "1920x1080-full-budget"])
@pytest.mark.asyncio
async def test_analyze_counts_tokens_like_vllm(
        vllm_server: VllmServer, tmp_path: Path,
        case: tuple[int, int, int | None, int]) -> None:
    width, height, max_pixels, expected_image_tokens = case
    path = write_image(tmp_path / f"frame-{width}x{height}.png", width, height)
    extra = ["--max-pixels", str(max_pixels)] if max_pixels else []
    result = await asyncio.to_thread(run_analyze, vllm_server.base_url, *extra, str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    [output] = json.loads(result.stdout)
    assert output["ok"], output
    # The answer validates against the verdict schema as sent, not only after lenient parsing.
    assert validates(output["raw"]), output["raw"]
    sent = output["image"]
    assert (sent["width"], sent["height"]) == (width, height)
    assert sent["image_tokens"] == expected_image_tokens == image_tokens(
        height, width, max_pixels=max_pixels or VlmConfig().max_pixels)
    config = VlmConfig(base_url=vllm_server.base_url,
                       max_pixels=max_pixels or VlmConfig().max_pixels)
    image = EncodedImage(jpeg=b"", width=sent["sent_width"], height=sent["sent_height"],
                         source_width=width, source_height=height)
    assert output["prompt_tokens"] == await estimated_prompt_tokens(config, image)
    assert output["completion_tokens"] > 0


# --- structured output ---------------------------------------------------------------------


def answer_is_enforced(server: VllmServer, body: dict[str, Any]) -> bool:
    """Whether this request form makes the server answer JSON of the verdict schema, exactly
    (no prose, no code fence): the random-weight model writes whitespace unless constrained."""
    with openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0,
                       timeout=60) as client:
        try:
            completion = client.chat.completions.create(**body)
        except openai.BadRequestError:
            return False
    return validates(completion.choices[0].message.content or "")


@pytest.mark.asyncio
async def test_structured_output_form_is_enforced(vllm_server: VllmServer,
                                                  tmp_path: Path) -> None:
    config = VlmConfig(base_url=vllm_server.base_url)
    frame = cv2.imread(str(write_image(tmp_path / "frame.png", 640, 360)))
    image = encode_for_model(np.asarray(frame, dtype=np.uint8), max_pixels=config.max_pixels)
    client = VlmClient(config)
    try:
        body = client.request_body(image)
    finally:
        await client.aclose()
    assert body["response_format"]["type"] == "json_schema"
    assert await asyncio.to_thread(answer_is_enforced, vllm_server, body)

    # The check itself tells forms apart: vLLM silently ignores the legacy guided_json extra
    # (HTTP 200, unconstrained text), so a client relying on it fails here.
    schema = body["response_format"]["json_schema"]["schema"]
    legacy = {k: v for k, v in body.items() if k != "response_format"}
    legacy["extra_body"] = {"guided_json": schema}
    assert not await asyncio.to_thread(answer_is_enforced, vllm_server, legacy)


@pytest.mark.asyncio
async def test_zoom_in_question_form_is_enforced(vllm_server: VllmServer,
                                                 tmp_path: Path) -> None:
    # The focused question's tiny schema, as the client sends it, within its max_tokens.
    config = VlmConfig(base_url=vllm_server.base_url)
    frame = cv2.imread(str(write_image(tmp_path / "crop.png", 160, 120)))
    image = encode_for_model(np.asarray(frame, dtype=np.uint8), max_pixels=config.max_pixels)
    client = VlmClient(config)
    try:
        body = client.crop_request_body(image, Hazard.NO_HELMET,
                                        max_tokens=VerificationConfig().max_tokens)
    finally:
        await client.aclose()

    def ask() -> tuple[str, str]:
        with openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", max_retries=0,
                           timeout=60) as api:
            choice = api.chat.completions.create(**body).choices[0]
        return choice.message.content or "", choice.finish_reason

    text, finish_reason = await asyncio.to_thread(ask)
    assert finish_reason == "stop", text
    assert CropAnswer.model_validate_json(text) == parse_crop_answer(text)


# --- errors as a user meets them ------------------------------------------------------------


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_image_too_large_for_the_context(vllm_server: VllmServer, tmp_path: Path) -> None:
    # 2560x1440 at Qwen's full budget: 4641 image tokens, more than --max-model-len 4096.
    path = write_image(tmp_path / "big.png", 2560, 1440)
    result = run_analyze(vllm_server.base_url, "--max-pixels", str(QWEN_MAX_PIXELS), str(path))
    no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    [output] = json.loads(result.stdout)
    assert output["failure"] == "rejected"
    assert "4641 image tokens" in output["error"]
    assert "maximum context length (4096)" in output["error"]
    assert "lower vlm.max_pixels or raise vLLM's --max-model-len" in output["error"]


def test_unknown_served_model_name(vllm_server: VllmServer, tmp_path: Path) -> None:
    path = write_image(tmp_path / "frame.png", 448, 448)
    result = run_analyze(vllm_server.base_url, "--model", "Qwen2.5-VL-7B", str(path))
    no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    [output] = json.loads(result.stdout)
    assert output["failure"] == "rejected"
    assert "HTTP 404" in output["error"]
    assert "Valid aliases: Qwen2.5-VL" in output["error"]
    assert "vlm.model must equal vLLM's --served-model-name" in output["error"]


def test_invalid_image_file(vllm_server: VllmServer, tmp_path: Path) -> None:
    path = tmp_path / "not-an-image.jpg"
    path.write_bytes(b"<html>404 Not Found</html>")
    result = run_analyze(vllm_server.base_url, str(path))
    no_traceback(result)
    assert result.returncode == 65, result.stdout + result.stderr
    [output] = json.loads(result.stdout)
    assert output["failure"] == "bad_image"
    assert "cannot decode image" in output["error"]


@pytest.mark.asyncio
async def test_image_the_server_cannot_decode(vllm_server: VllmServer) -> None:
    """Bytes that reach vLLM but are no image: a refusal that names it, breaker untouched."""
    client = VlmClient(VlmConfig(base_url=vllm_server.base_url, breaker_failures=1))
    try:
        broken = EncodedImage(jpeg=b"\xff\xd8\xff\xe0 truncated", width=448, height=448,
                              source_width=448, source_height=448)
        with pytest.raises(VlmRequestRejectedError, match="HTTP 400: Failed to load image"):
            await client.analyse_image(broken)
        # A refused request says nothing about the server's health.
        assert client.describe() == [f"{client.endpoint}: in service, 0/8+1 in flight"]
    finally:
        await client.aclose()


def test_server_not_running(tmp_path: Path) -> None:
    """No server on the configured port: exit 69 with the reason, no traceback."""
    path = write_image(tmp_path / "frame.png", 448, 448)
    result = run_analyze(f"http://127.0.0.1:{free_port()}/v1", "--timeout", "5", str(path))
    no_traceback(result)
    assert result.returncode == 69, result.stdout + result.stderr
    [output] = json.loads(result.stdout)
    assert output["failure"] == "unavailable"
    assert "cannot connect" in output["error"]


# --- the daemon with an RTSP camera and real vLLM -------------------------------------------


def daemon_config(path: Path, broker: MosquittoBroker, server: VllmServer, rtsp_url: str,
                  metrics_port: int) -> None:
    path.write_text(f"""
state_dir = "{path.parent / 'state'}"

[vlm]
base_url = "{server.base_url}"
timeout_s = 30
breaker_probe_s = 0.5

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "monitor-real-vllm"

[defaults]
interval_s = 1.0
change_gate = false
open_timeout_s = 10
read_timeout_s = 10

[telemetry]
port = {metrics_port}

[logging]
level = "DEBUG"

[[cameras]]
id = "yard"
url = "{rtsp_url}"
""")


def vlm_requests(metrics_port: int, outcome: str) -> float:
    """``monitor_vlm_requests_total`` for ``outcome``, summed over endpoints (0 if none, or
    while the daemon's telemetry port is not listening yet)."""
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except urllib.error.URLError:
        return 0.0
    pattern = re.compile(r'^monitor_vlm_requests_total\{[^}]*outcome="' + re.escape(outcome)
                         + r'"[^}]*\} ([0-9.e+]+)$', re.M)
    return sum(float(value) for value in pattern.findall(text))


class DaemonProcess:
    """``monitor run`` as a subprocess with its log in a file."""

    def __init__(self, config: Path) -> None:
        self.log_path = config.with_suffix(".log")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "-c", str(config)], stdout=log,
                stderr=subprocess.STDOUT, cwd=ROOT, env=clean_env())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def rtsp_camera(scene_clips: dict[str, Path]) -> Iterator[str]:
    available, reason = rtsp_server_available()
    if not available:
        pytest.fail(f"RTSP test server unavailable ({reason}); `make test` installs it")
    with RtspServer({"yard": scene_clips["fire"]}) as server:
        yield server.url("yard")


@pytest.mark.asyncio
async def test_daemon_with_real_vllm(vllm_server: VllmServer, mosquitto: MosquittoBroker,
                                     rtsp_camera: str, tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    metrics_port = free_port()
    daemon_config(config, mosquitto, vllm_server, rtsp_camera, metrics_port)
    subscriber = Subscriber(mosquitto)
    await subscriber.start()
    daemon = DaemonProcess(config)
    try:
        await wait_until(lambda: len(subscriber.on("monitor/yard/verdict")) >= 3, 90,
                         "three verdicts from real vLLM")
        ok = await asyncio.to_thread(vlm_requests, metrics_port, "ok")
        assert daemon.process.poll() is None, daemon.log()[-3000:]
    finally:
        code = await daemon.stop()
        await subscriber.stop()
    log = daemon.log()
    assert code == 0, log[-3000:]
    verdicts = [m.json() for m in subscriber.on("monitor/yard/verdict")]
    assert ok >= len(verdicts) >= 3
    # The 640x360 scene costs 299 image tokens (644x364 on the grid) plus the prompt's text:
    # the verdicts carry vLLM's usage, which must match monitor's own count.
    image = EncodedImage(jpeg=b"", width=644, height=364, source_width=640, source_height=360)
    expected = await estimated_prompt_tokens(VlmConfig(base_url=vllm_server.base_url), image)
    for verdict in verdicts:
        Answer.model_validate(verdict["answer"])
        assert verdict["prompt_tokens"] == expected
        assert verdict["completion_tokens"] > 0
    assert "Traceback" not in log


# Last on purpose: it stops the session's server and starts it again (~45 s, up to about
# two minutes when the probes' backoff has reached its cap).
@pytest.mark.asyncio
async def test_server_stopped_and_restarted_mid_run(
        vllm_server: VllmServer, mosquitto: MosquittoBroker, rtsp_camera: str,
        tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    metrics_port = free_port()
    daemon_config(config, mosquitto, vllm_server, rtsp_camera, metrics_port)
    subscriber = Subscriber(mosquitto)
    await subscriber.start()
    daemon = DaemonProcess(config)
    # A client of our own as well, to watch its breaker open and close.
    client = VlmClient(VlmConfig(base_url=vllm_server.base_url, breaker_failures=1,
                                 breaker_probe_s=0.5, max_retries=0))
    frame = encode_for_model(np.full((448, 448, 3), 128, dtype=np.uint8), max_pixels=1003520)

    def ok() -> float:
        return vlm_requests(metrics_port, "ok")

    try:
        await wait_until(lambda: ok() >= 2, 90, "two ok requests before the outage")
        await asyncio.to_thread(vllm_server.stop)
        events_at_stop = len(subscriber.on("monitor/events"))

        with pytest.raises(VlmUnavailableError, match="cannot connect"):
            await client.analyse_image(frame)
        [line] = client.describe()
        assert "out of service" in line, line
        await wait_until(lambda: vlm_requests(metrics_port, "unavailable") >= 1, 60,
                         "the daemon counting an unavailable model")
        await wait_until(lambda: "out of service" in daemon.log(), 30,
                         "the daemon's breaker opening")
        assert daemon.process.poll() is None, daemon.log()[-3000:]
        ok_during_outage = ok()
        # The outage raised and cleared nothing: no verdict, no event.
        assert subscriber.on("monitor/events")[events_at_stop:] == []

        await asyncio.to_thread(vllm_server.start)
        # After an outage this long (the server's restart alone takes tens of seconds) the
        # probes' backoff has reached its cap: the next probe comes within PROBE_MAX_S (full
        # jitter), for our client and for the daemon alike.
        await wait_until(lambda: "in service" in client.describe()[0], PROBE_MAX_S + 15,
                         "our client's breaker closing after the restart")
        await client.analyse_image(frame)
        await wait_until(lambda: ok() > ok_during_outage, PROBE_MAX_S + 15,
                         "ok requests again after the restart")
        assert daemon.process.poll() is None, daemon.log()[-3000:]
    finally:
        await client.aclose()
        code = await daemon.stop()
        await subscriber.stop()
    log = daemon.log()
    assert code == 0, log[-3000:]
    assert "back in service" in log
    assert "Traceback" not in log
