"""One real daemon for the console's tests: synthetic file cameras, the VLM simulator, a real
Mosquitto, the console on a free port with a token and a login. Module-scoped: started once
per test module, in its own thread and event loop, so tests (and Selenium) stay synchronous."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from monitor.config import MonitorConfig, config_from_mapping
from monitor.service.supervisor import Supervisor
from monitor.sim.broker import BrokerError, MosquittoBroker
from monitor.sim.server import SimServer

TOKEN = "console-token-7f3a9c"
USER, PASSWORD = "operator", "hunter2-console-pw"
VLM_KEY = "vlm-secret-key-91x"
HOSTILE_CONTEXT = "<script>window.pwned=1</script> gate & <b>yard</b>"


@dataclass
class MqttLog:
    """Every message seen on ``monitor/#`` (a paho client on its own thread)."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[dict[str, Any]]:
        """The JSON payloads of ``monitor/events``."""
        with self.lock:
            return [json.loads(p) for t, p in self.messages if t == "monitor/events"]


@dataclass
class ConsoleDaemon:
    """A running daemon and what the tests need of it."""

    url: str
    config: MonitorConfig
    supervisor: Supervisor
    sim_url: str
    mqtt: MqttLog
    feedback: Path
    loop: asyncio.AbstractEventLoop
    """The daemon's event loop (for feeding its sink from a test: call_soon_threadsafe)."""

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Poll ``predicate`` until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def daemon_config(tmp: Path, broker: MosquittoBroker, sim_url: str,
                  clips: dict[str, Path]) -> MonitorConfig:
    """Three file cameras (a fire with a zone, a quiet gate with a hostile context, a worker
    without a hard hat) sampled twice a second; the console with a token and a login."""
    return config_from_mapping({
        "vlm": {"base_url": sim_url, "timeout_s": 10, "api_key": VLM_KEY},
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "console-test"},
        "defaults": {"interval_s": 0.5, "confirm_frames": 2, "clear_frames": 2,
                     "change_gate": False},
        "telemetry": {"port": 0},
        "console": {"token": TOKEN, "username": USER, "password": PASSWORD,
                    "false_alarm_hold_s": 60, "feedback_dir": str(tmp / "feedback"),
                    "mqtt_commands": True},
        "cameras": [
            {"id": "yard", "url": str(clips["fire"]), "loop": True,
             "zones": {"tank": [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]]}},
            {"id": "gate", "url": str(clips["quiet"]), "loop": True,
             "context": HOSTILE_CONTEXT},
            {"id": "scaffold", "url": str(clips["no_helmet"]), "loop": True},
        ],
        "state_dir": str(tmp / "state"),
    }, source="console-test")


def follow_mqtt(broker: MosquittoBroker) -> tuple[paho.Client, MqttLog]:
    """A paho client on its own thread logging ``monitor/#``."""
    log = MqttLog()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="console-test-viewer")

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        with log.lock:
            log.messages.append((message.topic, bytes(message.payload)))

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe("monitor/#", qos=1)
    client.loop_start()
    return client, log


class DaemonThread:
    """The simulator and the supervisor in one event loop on a thread of their own."""

    def __init__(self, tmp: Path, broker: MosquittoBroker, clips: dict[str, Path]) -> None:
        self._tmp, self._broker, self._clips = tmp, broker, clips
        self.started: dict[str, Any] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._shutdown = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="console-daemon", daemon=True)

    def start(self, timeout_s: float = 60) -> None:
        """Start and wait until the console listens."""
        self._thread.start()
        if not self._ready.wait(timeout_s) or "error" in self.started:
            pytest.fail(f"daemon did not start: {self.started.get('error')!r}")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the daemon runs on."""
        return self._loop

    def stop(self) -> None:
        """Shut the daemon down in order and close the loop."""
        self._loop.call_soon_threadsafe(self._shutdown.set)
        self._thread.join(20)
        if not self._thread.is_alive():
            self._loop.close()

    async def _run(self) -> None:
        sim = SimServer()
        await sim.start()
        try:
            config = daemon_config(self._tmp, self._broker, sim.base_url, self._clips)
            supervisor = Supervisor.open(config)
            run = asyncio.create_task(supervisor.run(self._shutdown))
            while supervisor.health.port is None and not run.done():
                await asyncio.sleep(0.05)
            self.started.update(config=config, supervisor=supervisor, sim_url=sim.base_url)
            self._ready.set()
            await run
        finally:
            await sim.stop()

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self._run())
        except Exception as exc:  # noqa: BLE001 - reported by start() or the failing test
            self.started["error"] = exc
            self._ready.set()


@pytest.fixture(scope="module")
def console_daemon(tmp_path_factory: pytest.TempPathFactory,
                   scene_clips: dict[str, Path]) -> Iterator[ConsoleDaemon]:
    """The daemon (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("console")
    broker = MosquittoBroker()
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc))
    client, log = follow_mqtt(broker)
    daemon = DaemonThread(tmp, broker, scene_clips)
    try:
        daemon.start()
        started = daemon.started
        supervisor = started["supervisor"]
        yield ConsoleDaemon(url=f"http://127.0.0.1:{supervisor.health.port}",
                            config=started["config"], supervisor=supervisor,
                            sim_url=started["sim_url"], mqtt=log, feedback=tmp / "feedback",
                            loop=daemon.loop)
    finally:
        daemon.stop()
        with contextlib.suppress(Exception):
            client.loop_stop()
            client.disconnect()
        broker.stop()
