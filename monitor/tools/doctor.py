"""``monitor doctor``: check, on the box, what a new installation usually gets wrong.

One line per check, ``OK`` or ``FAIL`` with the reason, and a non-zero exit when anything
failed: the configuration, the state directory, the broker (reachable, credentials accepted),
the model server (reachable, serving the configured model name), and every enabled camera
(opens and delivers a frame). Every check has a deadline; none prints a secret.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import openai
from openai import AsyncOpenAI

from monitor.alerts.publisher import AckingClient
from monitor.config import ConfigError, MonitorConfig, load_config
from monitor.errors import exception_reason
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import stream_source
from monitor.redaction import redact
from monitor.tools.notifytest import check_channels

BROKER_TIMEOUT_S = 5.0
MODEL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``OK   name: detail`` or ``FAIL name: detail``."""
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, ok=True, detail=detail)


def _fail(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, ok=False, detail=detail)


def check_state_dir(config: MonitorConfig) -> CheckResult:
    """The state directory exists (or can be created) and is writable."""
    state_dir = getattr(config, "state_dir", None)
    if state_dir is None:
        return _ok("state directory", "not used by this configuration")
    path = Path(state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return _fail("state directory", f"{path}: not writable ({exc.strerror}); as root: "
                           f"install -d -o monitor -g monitor {path}")
    return _ok("state directory", f"{path} is writable")


async def check_broker(config: MonitorConfig) -> CheckResult:
    """Connect to the broker with the configured credentials and protocol; with MQTT 5, also
    publish one message (not retained) to ``PREFIX/doctor``: the broker's answer says whether
    its ACL lets this client write under the prefix. Then disconnect."""
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    v5 = mqtt.protocol == "5"
    client = AckingClient(
        hostname=mqtt.host, port=mqtt.port, username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        identifier=f"{mqtt.client_id}-doctor", timeout=BROKER_TIMEOUT_S,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311)
    probe = f"{mqtt.topic_prefix}/doctor"
    refusal = None
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_S):
            async with client:
                if v5:
                    refusal = await client.deliver(probe, b'{"check":"monitor doctor"}',
                                                   qos=1, retain=False)
    except TimeoutError:
        return _fail("mqtt broker", f"{where}: no answer within "
                           f"{BROKER_TIMEOUT_S:g} s")
    except aiomqtt.MqttError as exc:
        return _fail("mqtt broker", f"{where}: {exc}")
    user = f" as {mqtt.username}" if mqtt.username else " (anonymous)"
    if refusal is not None:
        return _fail("mqtt broker", f"{where}: connected{user}, but the broker refused a "
                                    f"message to {probe} ({refusal}): its ACL must let this "
                                    f"client write {mqtt.topic_prefix}/#")
    checked = f"; it takes messages under {mqtt.topic_prefix}/" if v5 else ""
    return _ok("mqtt broker", f"{where}: connected{user}{checked}")


async def check_model(config: MonitorConfig) -> CheckResult:
    """The model server answers ``/v1/models`` and serves the configured name."""
    vlm = config.vlm
    where = redact(vlm.base_url)
    client = AsyncOpenAI(base_url=vlm.base_url, api_key=vlm.api_key.get_secret_value(),
                         timeout=MODEL_TIMEOUT_S, max_retries=0)
    try:
        page = await client.models.list()
        names = [model.id for model in page.data]
    except openai.APIConnectionError as exc:
        reason = exception_reason(exc.__cause__ or exc)
        return _fail("model server", f"{where}: cannot connect ({reason})")
    except openai.APIStatusError as exc:
        return _fail("model server", f"{where}: HTTP {exc.status_code}")
    finally:
        await client.close()
    if vlm.model not in names:
        return _fail("model server", f"{where} serves {', '.join(names) or 'no model'}, not "
                           f"{vlm.model!r}: set [vlm] model to the server's "
                           f"--served-model-name")
    return _ok("model server", f"{where} serves {vlm.model!r}")


async def check_camera(config: MonitorConfig, camera_id: str) -> CheckResult:
    """Open one camera and wait for its first frame."""
    camera = next(c for c in config.cameras if c.id == camera_id)
    source = stream_source(config, camera)
    reader = CameraReader(source)
    deadline = source.open_timeout_s + source.read_timeout_s
    reader.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < deadline:
            frame = reader.latest()
            if frame is not None:
                status = reader.status
                return _ok(f"camera {camera_id}",
                           f"{source.redacted_url}: {frame.width}x{frame.height} "
                           f"{status.codec or ''} after {time.monotonic() - started:.1f} s")
            await asyncio.sleep(0.1)
        error = reader.status.last_error or "no frame"
        return _fail(f"camera {camera_id}",
                     f"{source.redacted_url}: {error} (waited {deadline:g} s)")
    finally:
        reader.stop()
        await asyncio.to_thread(reader.join, 2.0)


async def run_checks(config: MonitorConfig) -> list[CheckResult]:
    """All checks; cameras are checked concurrently (each has its own deadline)."""
    checks: list[Callable[[], Awaitable[CheckResult]]] = [
        lambda: check_broker(config), lambda: check_model(config),
    ]
    results = [await asyncio.to_thread(check_state_dir, config)]
    results.extend([await check() for check in checks])
    cameras = [camera.id for camera in config.cameras if camera.enabled]
    results.extend(await asyncio.gather(*(check_camera(config, c) for c in cameras)))
    results.extend(CheckResult(f"notify {c.name}", c.ok, c.detail)
                   for c in await asyncio.to_thread(check_channels, config))
    return results


def doctor(path: Path, emit: Callable[[str], None]) -> int:
    """Run every check for the configuration at ``path``; 0 when all pass, 1 otherwise,
    78 when the configuration itself is invalid."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            emit(f"FAIL config: {problem}")
        return 78
    enabled = sum(1 for camera in config.cameras if camera.enabled)
    emit(f"OK   config: {path} ({enabled} enabled camera(s))")
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        emit("OK   credentials: read from $CREDENTIALS_DIRECTORY")
    results = asyncio.run(run_checks(config))
    for result in results:
        emit(result.line())
    return 0 if all(result.ok for result in results) else 1
