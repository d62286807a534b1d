"""``monitor demo``: the whole pipeline on a laptop, with nothing but Python and mosquitto.

Two synthetic cameras (a yard where a fire starts and is put out, a scaffold where one worker
has no hard hat) play as looping local videos in real time; the VLM simulator stands in for
Qwen2.5-VL on vLLM; a private mosquitto is started unless a broker is given. The daemon is the
real one; the lines printed come from a real MQTT subscription, exactly what an alarm panel
would receive. The operator console runs too: its address and this run's login token are
printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import tempfile
import time
from pathlib import Path

import aiomqtt

from monitor.config import config_from_mapping
from monitor.service.supervisor import Supervisor
from monitor.sim.broker import BrokerError, MosquittoBroker
from monitor.sim.scenes import PRESETS, write_scene
from monitor.sim.server import SimServer

DEMO_CAMERAS = {"yard-fire": "fire", "scaffold": "no_helmet"}
"""Demo camera id → scene preset."""

_ICONS = {"fire": "FIRE", "smoke": "SMOKE", "no_helmet": "NO HARD HAT"}


class DemoError(RuntimeError):
    """The demo cannot start (a missing tool, a port in use); the message says what to do."""


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def format_message(topic: str, payload: bytes, prefix: str) -> str | None:
    """One readable terminal line for an MQTT message, or ``None`` to stay quiet."""
    text = payload.decode(errors="replace")
    if topic == f"{prefix}/events":
        event = json.loads(text)
        what = _ICONS.get(event["hazard"], event["hazard"])
        if event["type"] == "update":
            return (f"[{_clock()}] UPDATE  {what:<12} camera {event['camera']:<10} "
                    f"{event.get('missing_helmets') or 0} without hard hat  "
                    f"[event {event['id'][:8]}]")
        if event["type"] == "start":
            extra = ""
            if event.get("missing_helmets"):
                extra = f" ({event['missing_helmets']} without hard hat)"
            return (f"[{_clock()}] ALERT   {what:<12} camera {event['camera']:<10} "
                    f"started{extra}: {event['detail'] or '-'}  [event {event['id'][:8]}]")
        return (f"[{_clock()}] CLEARED {what:<12} camera {event['camera']:<10} "
                f"ended  [event {event['id'][:8]}]")
    levels = topic.split("/")
    if topic == f"{prefix}/availability":
        return f"[{_clock()}] daemon  {text}"
    if len(levels) == 3 and levels[2] in _ICONS:
        return f"[{_clock()}] state   {topic} = {text}"
    if len(levels) == 3 and levels[2] == "status":
        status = json.loads(text)
        state = status.get("state") or ("online" if status["online"] else "offline")
        if status.get("last_error") and not status["online"]:
            state += f" ({status['last_error']})"
        return f"[{_clock()}] camera  {levels[1]} {state}"
    return None


class TerminalView:
    """The demo's terminal lines: :func:`format_message`, with a retained topic's line
    printed only when what it says changes (a camera's status is republished when its
    measured frame rate settles, or as a heartbeat: the terminal says "online" once)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._shown: dict[str, str] = {}

    def line(self, topic: str, payload: bytes, *, retained_topic: bool) -> str | None:
        """The line to print for this message, or ``None``."""
        line = format_message(topic, payload, self._prefix)
        if line is None or not retained_topic:
            return line
        said = line.split("] ", 1)[-1]  # without the clock
        if self._shown.get(topic) == said:
            return None
        self._shown[topic] = said
        return line


async def _print_alerts(host: str, port: int, prefix: str, ready: asyncio.Event) -> None:
    view = TerminalView(prefix)
    async with aiomqtt.Client(host, port, identifier="monitor-demo-viewer") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        ready.set()
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                topic = str(message.topic)
                line = view.line(topic, bytes(payload),
                                 retained_topic=topic != f"{prefix}/events")
                if line:
                    print(line, flush=True)


async def run_demo(*, duration_s: float, mqtt_host: str | None, mqtt_port: int,
                   language: str, console_port: int = 0) -> int:
    """Run the demo for ``duration_s`` seconds (or until Ctrl-C); returns the exit code.
    The operator console listens on ``console_port`` (0: a free one; its address is
    printed)."""
    prefix = "monitor"
    console_token = secrets.token_urlsafe(12)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitor-demo-")))
        print(f"[{_clock()}] writing synthetic camera videos to {workdir} ...", flush=True)
        cameras = []
        for camera_id, preset in DEMO_CAMERAS.items():
            path = workdir / f"{camera_id}.mp4"
            await asyncio.to_thread(write_scene, PRESETS[preset](), path)
            cameras.append({"id": camera_id, "url": str(path), "loop": True})
        if mqtt_host is None:
            broker = MosquittoBroker()
            try:
                await asyncio.to_thread(broker.start)
            except BrokerError as exc:
                raise DemoError(str(exc)) from exc
            stack.callback(broker.stop)
            mqtt_host, mqtt_port = broker.host, broker.port
            print(f"[{_clock()}] started mosquitto on {mqtt_host}:{mqtt_port}", flush=True)
        sim = SimServer()
        await sim.start()
        try:
            config = config_from_mapping({
                "vlm": {"base_url": sim.base_url, "language": language, "timeout_s": 10},
                "mqtt": {"host": mqtt_host, "port": mqtt_port, "topic_prefix": prefix,
                         "client_id": "monitor-demo"},
                "defaults": {"interval_s": 1.0, "confirm_frames": 2, "clear_frames": 2},
                "telemetry": {"port": console_port},
                # A token of this run only: the operator console's buttons need one.
                "console": {"token": console_token},
                "cameras": cameras,
                # The demo's outbox and evidence images are its own, not the service's.
                "state_dir": str(workdir / "state"),
            }, source="demo")
            print(f"[{_clock()}] VLM simulator at {sim.base_url}; watching "
                  f"{', '.join(DEMO_CAMERAS)} for {duration_s:g} s (Ctrl-C stops)", flush=True)
            print(f"[{_clock()}] subscribe yourself: mosquitto_sub -h {mqtt_host} -p {mqtt_port}"
                  f" -t '{prefix}/#' -v", flush=True)
            shutdown = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, shutdown.set)
            viewer_ready = asyncio.Event()
            viewer = asyncio.create_task(_print_alerts(mqtt_host, mqtt_port, prefix,
                                                       viewer_ready), name="demo.viewer")
            await asyncio.wait_for(viewer_ready.wait(), timeout=10)
            loop.call_later(duration_s, shutdown.set)
            supervisor = Supervisor.open(config)
            daemon = asyncio.create_task(supervisor.run(shutdown), name="demo.daemon")
            listening = asyncio.ensure_future(supervisor.health.listening.wait())
            await asyncio.wait({daemon, listening}, return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if supervisor.health.port is not None:
                print(f"[{_clock()}] operator console: http://127.0.0.1:"
                      f"{supervisor.health.port}/ (log in with token {console_token})",
                      flush=True)
            await daemon
            await asyncio.sleep(0.5)  # let the viewer print the final "offline"
            viewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await viewer
        finally:
            await sim.stop()
    print(f"[{_clock()}] demo finished", flush=True)
    return 0
